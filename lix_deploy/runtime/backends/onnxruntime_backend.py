"""ONNX Runtime backend: the best available execution provider, I/O discovered from the session.

Provider choice and provider options are pure functions of what ONNX Runtime reports, so they
are tested without a GPU. `InferenceSession.run` is thread-safe, so one session serves every
thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lix_deploy.artifact import ArtifactError, ArtifactInfo, ArtifactNotFoundError

from .base import BackendOptions, BackendUnavailableError, InferenceOutput, check_batch

REEXPORT_HINT = ("re-export it with python -m lix_deploy.export (or build it again with "
                 "python -m lix_deploy.build_engine)")

__all__ = [
    "PROVIDER_PRIORITY", "PROVIDER_ALIASES", "ProviderSettings", "select_providers", "provider_options",
    "provider_config", "import_onnxruntime", "OnnxRuntimeBackend", "open_backend",
]

TENSORRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
PROVIDER_PRIORITY = (TENSORRT_EP, CUDA_EP, CPU_EP)
PROVIDER_ALIASES = {"tensorrt": TENSORRT_EP, "trt": TENSORRT_EP, "cuda": CUDA_EP, "cpu": CPU_EP}
_GPU_HINT = (
    "the TensorRT and CUDA providers come with `onnxruntime-gpu`; if `onnxruntime` and `onnxruntime-gpu` "
    "are both installed the GPU providers vanish: pip uninstall -y onnxruntime onnxruntime-gpu && "
    "pip install onnxruntime-gpu (run `python -m lix_deploy.doctor`)"
)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendUnavailableError("onnxruntime", "onnxruntime",
                                      f"pip install onnxruntime (CPU) or onnxruntime-gpu ({err})") from None
    return onnxruntime


def select_providers(available: Sequence[str], requested: Sequence[str] | None = None) -> list[str]:
    """Execution providers to use, best first.

    requested=None: every provider of TensorRT > CUDA > CPU that `available` lists (CPU always
    last, as ONNX Runtime's own fallback). Otherwise the requested ones, in the given order
    (full names or aliases "tensorrt", "cuda", "cpu"); one that is not available is an error,
    never a silent CPU fallback.
    """
    available = list(available)
    if requested is None:
        chosen = [p for p in PROVIDER_PRIORITY if p in available]
        return chosen if CPU_EP in chosen else chosen + [CPU_EP]
    if isinstance(requested, str):
        requested = [requested]
    chosen = []
    for name in requested:
        full = PROVIDER_ALIASES.get(str(name).lower(), str(name))
        if full not in available:
            hint = f"; {_GPU_HINT}" if full in (TENSORRT_EP, CUDA_EP) else ""
            raise ValueError(f"execution provider {name!r} is not available (available: "
                             f"{', '.join(available) or 'none'}){hint}")
        if full not in chosen:
            chosen.append(full)
    if not chosen:
        raise ValueError("providers must name at least one execution provider")
    return chosen


@dataclass(frozen=True)
class ProviderSettings:
    """Options for the GPU providers.

    trt_cache_dir: where the TensorRT EP keeps engines and its timing cache (None: no cache, so
    every start rebuilds, which takes minutes on a Jetson). fp16 / int8: TensorRT EP precision
    flags (int8 is for Q/DQ models and needs no calibration table). input_name, input_hw and
    max_batch describe the input so the TensorRT EP gets an optimisation profile instead of
    rebuilding for every new batch size.
    """

    device_id: int = 0
    trt_cache_dir: str | None = None
    fp16: bool = False
    int8: bool = False
    input_name: str = "image"
    input_hw: tuple[int, int] | None = None
    max_batch: int = 1
    dynamic_batch: bool = False

    def __post_init__(self):
        if self.device_id < 0:
            raise ValueError(f"device_id must be >= 0, got {self.device_id}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")


def provider_options(provider: str, settings: ProviderSettings) -> dict[str, str]:
    """ONNX Runtime provider options (all strings) for one provider."""
    if provider == TENSORRT_EP:
        options = {"device_id": str(settings.device_id), "trt_fp16_enable": str(settings.fp16),
                   "trt_int8_enable": str(settings.int8)}
        if settings.trt_cache_dir:
            options.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(settings.trt_cache_dir),
                           trt_timing_cache_enable="True", trt_timing_cache_path=str(settings.trt_cache_dir))
        if settings.dynamic_batch and settings.input_hw is not None:
            h, w = settings.input_hw
            shape = lambda n: f"{settings.input_name}:{n}x3x{h}x{w}"  # noqa: E731
            options.update(trt_profile_min_shapes=shape(1), trt_profile_opt_shapes=shape(1),
                           trt_profile_max_shapes=shape(settings.max_batch))
        return options
    if provider == CUDA_EP:
        # kSameAsRequested: the arena grows by what is asked, not in doubling chunks (long-running nodes)
        return {"device_id": str(settings.device_id), "arena_extend_strategy": "kSameAsRequested"}
    return {}


def provider_config(available: Sequence[str], requested: Sequence[str] | None,
                    settings: ProviderSettings) -> tuple[list[str], list[dict[str, str]]]:
    """(providers, provider_options) as InferenceSession(providers=..., provider_options=...) takes them."""
    providers = select_providers(available, requested)
    return providers, [provider_options(p, settings) for p in providers]


def _static_dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class OnnxRuntimeBackend:
    """An ONNX file run by ONNX Runtime.

    Args:
        path: the .onnx file.
        providers: None for the best available (TensorRT > CUDA > CPU), or a list of names/aliases.
        settings: GPU provider options; input facts are filled in from the model.
        intra_op_threads: CPU threads per inference (None: ONNX Runtime's default).
        info: the artefact's ArtifactInfo when known (its precision picks TensorRT EP flags).
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, *,
                 settings: ProviderSettings | None = None, intra_op_threads: int | None = None, info=None,
                 max_batch: int = 8):
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactNotFoundError(self.path, "ONNX model not found")
        options = ort.SessionOptions()
        # Subnormal floats can run 10-100x slower on x86 CPUs and carry no useful signal in a
        # segmentation network; flushing them keeps latency independent of the input.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        if intra_op_threads is not None:
            if intra_op_threads < 1:
                raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
            options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Inspect the model on the CPU first: cheap, and it tells the GPU providers the input shape.
        try:
            probe = ort.InferenceSession(str(self.path), options, providers=[CPU_EP])
        except Exception as err:  # InvalidProtobuf, InvalidArgument, Fail (missing external data), ...
            reason = str(err).split(" failed:", 1)[-1].strip() or type(err).__name__
            raise ArtifactError(self.path, f"ONNX Runtime cannot load this model ({type(err).__name__}: "
                                           f"{reason[:200]}): the file is truncated, corrupt or not an ONNX "
                                           f"model, or its external weights (NAME.onnx.data) are missing; "
                                           f"{REEXPORT_HINT}") from None
        inputs = probe.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(self.path, f"expected one input tensor (the image), found "
                                           f"{[i.name for i in inputs]}: {REEXPORT_HINT}")
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise ArtifactError(self.path, f"input {inputs[0].name!r} must be [N, 3, H, W], got {shape}: "
                                           f"{REEXPORT_HINT}")
        self.input_name = inputs[0].name
        self.output_names = tuple(o.name for o in probe.get_outputs())
        self.metadata = dict(probe.get_modelmeta().custom_metadata_map)
        height, width = _static_dim(shape[2]), _static_dim(shape[3])
        if height is None or width is None:
            if info is None:
                raise ArtifactError(self.path, f"input H, W are dynamic ({shape}) and no input size is known: "
                                               "pass info=, or re-export with static sizes (the default)")
            height, width = info.input_size
        self.input_hw = (height, width)
        self.dynamic_batch = _static_dim(shape[0]) is None
        self.max_batch = max_batch if self.dynamic_batch else shape[0]

        base = settings or ProviderSettings()
        precision = getattr(info, "precision", "fp32")
        self.settings = ProviderSettings(
            device_id=base.device_id, trt_cache_dir=base.trt_cache_dir,
            fp16=base.fp16 or precision == "fp16", int8=base.int8 or precision == "int8",
            input_name=self.input_name, input_hw=self.input_hw, max_batch=self.max_batch,
            dynamic_batch=self.dynamic_batch,
        )
        chosen, chosen_options = provider_config(ort.get_available_providers(), providers, self.settings)
        if chosen == [CPU_EP]:
            self._session = probe
        else:
            del probe
            self._session = ort.InferenceSession(str(self.path), options, providers=chosen,
                                                 provider_options=chosen_options)
        self.providers = tuple(self._session.get_providers())
        self._labels_index = self._find_output("labels", rank=3)
        self._logits_index = self._find_output("logits", rank=4, required=False)

    def _find_output(self, name: str, rank: int, required: bool = True) -> int | None:
        if name in self.output_names:
            return self.output_names.index(name)
        # Not named by the LIX convention: fall back to the only output of the expected rank.
        matches = [i for i, o in enumerate(self._session.get_outputs()) if len(o.shape) == rank]
        if len(matches) == 1:
            return matches[0]
        if required:
            raise ArtifactError(self.path, f"no {name!r} output (outputs: {list(self.output_names)}): "
                                           f"{REEXPORT_HINT}")
        return None

    def infer(self, batch: np.ndarray) -> InferenceOutput:
        batch = check_batch(batch, self.input_hw, self.max_batch, self.dynamic_batch)
        results = self._session.run(None, {self.input_name: batch})
        logits = results[self._logits_index] if self._logits_index is not None else None
        return InferenceOutput(labels=results[self._labels_index], logits=logits)

    def describe(self) -> dict:
        ort = import_onnxruntime()
        return {"backend": self.name, "onnxruntime": ort.__version__, "providers": list(self.providers),
                "input": self.input_name, "input_hw": list(self.input_hw), "max_batch": self.max_batch,
                "outputs": list(self.output_names)}

    def close(self) -> None:
        self._session = None


def open_backend(path: Path, options: BackendOptions) -> tuple[OnnxRuntimeBackend, ArtifactInfo]:
    """The runtime factory (lix_deploy.backend_table): the session, and the metadata read from it.

    An explicit `options.info` replaces the model's metadata; it also gives the precision flags of the
    TensorRT provider.
    """
    settings = ProviderSettings(device_id=options.device_id, fp16=options.fp16,
                                trt_cache_dir=str(options.trt_cache_dir) if options.trt_cache_dir else None)
    backend = OnnxRuntimeBackend(path, options.providers, settings=settings, intra_op_threads=options.intra_op_threads,
                                 info=options.info, max_batch=options.max_batch)
    return backend, options.info or ArtifactInfo.from_props(backend.metadata, path)
