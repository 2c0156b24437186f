"""TensorRT backend (TensorRT 10 / 11 name-based I/O API) for serialized engines.

* I/O is discovered from the engine: num_io_tensors / get_tensor_name / get_tensor_mode /
  get_tensor_shape / get_tensor_dtype; nothing is hard-coded. Dtypes are honoured: an FP16-input
  engine (e.g. built from an FP16 ONNX without keep_io_types) is fed float16 (converted into a
  per-thread staging buffer), FP16 logits come back as float32, and a tensor type the runtime
  cannot feed or read (an integer or BF16 / FP8 image input, float labels) is refused at load
  with an ArtifactError naming the tensor, instead of bytes being reinterpreted.
* One ICudaEngine is shared; each thread that calls `infer` gets its own execution context,
  CUDA stream and device/host buffers (allocated once, at the largest batch), because an
  execution context and a stream must not be shared between threads. A ROS node has one
  inference thread, so in practice this is one set.
* Engines only load on the TensorRT version and GPU they were built for. The sidecar JSON
  (`<engine>.json`, written by build_engine) records both; a mismatch is reported before
  TensorRT is asked to deserialize, with what to rebuild.
* `tensorrt` and cuda-python are imported lazily, so this module imports anywhere.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lix_deploy.artifact import ArtifactError, ArtifactInfo, ArtifactNotFoundError, read_metadata

from . import cuda_memory
from .base import BackendOptions, BackendUnavailableError, EngineMismatchError, InferenceOutput, check_batch
from .cuda_memory import DeviceMemory, Stream, load_device_memory
from .tensorrt_common import MIN_SUPPORTED, TRTVersion, import_tensorrt, parse_trt_version, typing_mode

__all__ = ["check_runtime_version", "read_engine_key", "check_engine_compatibility", "TensorRTBackend",
           "open_backend"]


def check_runtime_version(text: str) -> TRTVersion:
    """The installed TensorRT's version, or an error when it predates the name-based I/O API (10.0)."""
    version = parse_trt_version(text)
    if (version.major, version.minor) < MIN_SUPPORTED:
        raise BackendUnavailableError(
            "tensorrt", "tensorrt",
            f"TensorRT {version} is installed but this runtime uses the TensorRT 10+ I/O API "
            "(execute_async_v3, set_tensor_address); upgrade to TensorRT >= 10")
    return version


def read_engine_key(engine_path: str | Path) -> dict | None:
    """The build key in an engine's sidecar (`lix.engine_key`: trt_version, gpu_name, compute_capability, ...).

    None when the sidecar has none (then only TensorRT's own deserialization check applies).
    """
    sidecar = Path(engine_path).with_name(Path(engine_path).name + ".json")
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    key = data.get("lix.engine_key", data.get("engine_key"))
    if isinstance(key, str):
        try:
            key = json.loads(key)
        except ValueError:
            key = None
    if isinstance(key, dict):
        return key
    flat = {k: data[k] for k in ("trt_version", "compute_capability", "gpu_name") if k in data}
    return flat or None


def check_engine_compatibility(key: Mapping[str, Any] | None, runtime_version: str, compute_capability: str,
                               engine_path: str | Path = "<engine>") -> list[str]:
    """Raise EngineMismatchError if the engine was built for another TensorRT version or GPU.

    Returns warnings for what could not be checked (no key). TensorRT engines are tied to the
    exact major.minor.patch and to the GPU's compute capability.
    """
    if not key:
        return [f"{engine_path}: no build key in the sidecar JSON; TensorRT version and GPU not checked"]
    problems = []
    built_version = key.get("trt_version")
    if built_version:
        if parse_trt_version(built_version) != parse_trt_version(runtime_version):
            problems.append(f"built with TensorRT {built_version}, this machine has TensorRT {runtime_version}")
    built_cc = key.get("compute_capability")
    if built_cc and str(built_cc).strip() != str(compute_capability).strip():
        gpu = f" ({key['gpu_name']})" if key.get("gpu_name") else ""
        problems.append(f"built for compute capability {built_cc}{gpu}, this GPU is {compute_capability}")
    if problems:
        raise EngineMismatchError(
            f"{engine_path}: cannot run this engine here: {'; '.join(problems)}. Rebuild it on this machine "
            "from the ONNX: python -m lix_deploy.build_engine --onnx MODEL.onnx")
    return []


INPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
LABEL_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.int32, np.int64, np.uint16))
LOGIT_DTYPES = INPUT_DTYPES
REBUILD_HINT = ("rebuild the engine from the FP32 export with python -m lix_deploy.build_engine (float32 or "
                "float16 image input, integer labels)")


@dataclass
class _TensorSpec:
    name: str
    is_input: bool
    shape: tuple[int, ...]  # engine shape, -1 for dynamic
    max_shape: tuple[int, ...]  # largest shape this engine accepts (buffers are sized for it)
    dtype: np.dtype


@dataclass
class _ThreadState:
    """What one thread owns: an execution context, a stream, and buffers sized for max_batch."""

    context: Any
    stream: Stream
    device: dict[str, int] = field(default_factory=dict)
    host: dict[str, np.ndarray] = field(default_factory=dict)
    thread_name: str = ""
    input_shape: tuple[int, ...] | None = None


class TensorRTBackend:
    """A serialized TensorRT engine.

    Args:
        path: the engine file (its `<engine>.json` sidecar holds the metadata and build key).
        device_id: CUDA device.
        memory: DeviceMemory (default: cuda-python on `device_id`; `load_device_memory(id, "pycuda")` for pycuda).
        trt: the tensorrt module (tests pass a fake).
        check_compatibility: compare the sidecar's TensorRT version / compute capability with this machine.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, *, device_id: int = 0, memory: DeviceMemory | None = None, trt=None,
                 info=None, check_compatibility: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactNotFoundError(self.path, "TensorRT engine not found; build one with "
                                                   "python -m lix_deploy.build_engine --backend tensorrt")
        self._trt = trt or import_tensorrt()
        self.trt_version = check_runtime_version(self._trt.__version__)
        self._memory = memory or load_device_memory(device_id)
        self.warnings: list[str] = []
        if check_compatibility:
            self.warnings += check_engine_compatibility(read_engine_key(self.path), str(self.trt_version),
                                                        self._memory.compute_capability(), self.path)
        with self._memory.activate():
            self._logger = self._trt.Logger(self._trt.Logger.WARNING)
            self._runtime = self._trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineMismatchError(
                f"{self.path}: TensorRT {self.trt_version} could not deserialize this engine (built with another "
                "TensorRT version or for another GPU, or not an engine file); rebuild it on this machine with "
                "python -m lix_deploy.build_engine")
        self._specs = self._discover_io()
        inputs = [s for s in self._specs if s.is_input]
        if len(inputs) != 1:
            raise ArtifactError(self.path, f"expected one input tensor, found {[s.name for s in inputs]}; "
                                           f"{REBUILD_HINT}")
        self._input = inputs[0]
        if self._input.dtype not in INPUT_DTYPES:
            raise ArtifactError(self.path, f"input {self._input.name!r} is {self._input.dtype}, the runtime feeds "
                                           f"float32 RGB 0..255 (or float16 to an FP16-input engine); {REBUILD_HINT}")
        self.input_name = self._input.name
        self.output_names = tuple(s.name for s in self._specs if not s.is_input)
        if len(self._input.max_shape) != 4 or self._input.shape[2] < 1 or self._input.shape[3] < 1:
            raise ArtifactError(self.path, f"input {self.input_name!r} must be [N, 3, H, W] with static H, W, "
                                           f"got {self._input.shape}; {REBUILD_HINT}")
        self.input_hw = (int(self._input.shape[2]), int(self._input.shape[3]))
        self.dynamic_batch = self._input.shape[0] < 0
        self.max_batch = int(self._input.max_shape[0])
        self._labels = self._output_named("labels", rank=3)
        self._logits = self._output_named("logits", rank=4, required=False)
        if self._labels.dtype not in LABEL_DTYPES:
            raise ArtifactError(self.path, f"output {self._labels.name!r} is {self._labels.dtype}, expected integer "
                                           f"class ids; {REBUILD_HINT}")
        if self._logits is not None and self._logits.dtype not in LOGIT_DTYPES:
            raise ArtifactError(self.path, f"output {self._logits.name!r} is {self._logits.dtype}, expected float "
                                           f"logits; {REBUILD_HINT}")
        self.input_dtype = self._input.dtype
        self._local = threading.local()
        self._states: list[_ThreadState] = []
        self._lock = threading.Lock()
        self._closed = False

    # ---- discovery -------------------------------------------------------------------------
    def _discover_io(self) -> list[_TensorSpec]:
        trt, engine = self._trt, self._engine
        specs = []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            trt_dtype = engine.get_tensor_dtype(name)
            try:
                dtype = np.dtype(trt.nptype(trt_dtype))
            except (TypeError, KeyError, ValueError):  # BF16, FP8, INT4 ...: no numpy equivalent
                raise ArtifactError(self.path, f"tensor {name!r} is {trt_dtype}, which this runtime cannot "
                                               f"{'feed' if is_input else 'read'}; {REBUILD_HINT}") from None
            max_shape = shape
            if is_input and any(d < 0 for d in shape):
                # profile 0: (min, opt, max); buffers are sized for max
                max_shape = tuple(int(d) for d in engine.get_tensor_profile_shape(name, 0)[2])
            specs.append(_TensorSpec(name, is_input, shape, max_shape, dtype))
        batch = next((s.max_shape[0] for s in specs if s.is_input), 1)
        for spec in specs:  # outputs: replace a dynamic batch by the input's max batch
            if not spec.is_input and spec.shape and spec.shape[0] < 0:
                spec.max_shape = (batch,) + spec.shape[1:]
            if any(d < 0 for d in spec.max_shape):
                raise ArtifactError(self.path, f"tensor {spec.name!r} has dynamic dimensions other than the batch "
                                               f"({spec.shape}); {REBUILD_HINT} with static H, W")
        return specs

    def _output_named(self, name: str, rank: int, required: bool = True) -> _TensorSpec | None:
        outputs = [s for s in self._specs if not s.is_input]
        for spec in outputs:
            if spec.name == name:
                return spec
        same_rank = [s for s in outputs if len(s.shape) == rank]
        if len(same_rank) == 1:
            return same_rank[0]
        if required:
            raise ArtifactError(self.path, f"no {name!r} output (outputs: {[s.name for s in outputs]}); "
                                           f"{REBUILD_HINT}")
        return None

    # ---- per-thread state ------------------------------------------------------------------
    def _state(self) -> _ThreadState:
        if self._closed:
            raise RuntimeError(f"{self.path}: backend is closed")
        state = getattr(self._local, "state", None)
        if state is not None:
            return state
        with self._memory.activate():
            context = self._engine.create_execution_context()
            if context is None:
                raise RuntimeError(f"{self.path}: could not create an execution context (out of GPU memory?)")
            state = _ThreadState(context=context, stream=self._memory.create_stream(),
                                 thread_name=threading.current_thread().name)
            for spec in self._specs:
                nbytes = int(np.prod(spec.max_shape)) * spec.dtype.itemsize
                state.device[spec.name] = self._memory.malloc(nbytes)
                if not spec.is_input or spec.dtype != np.float32:  # an FP16 input needs a staging buffer
                    state.host[spec.name] = np.empty(spec.max_shape, spec.dtype)
                context.set_tensor_address(spec.name, state.device[spec.name])
        with self._lock:
            self._states.append(state)
        self._local.state = state
        return state

    @property
    def thread_count(self) -> int:
        """How many threads hold an execution context (for diagnostics and tests)."""
        with self._lock:
            return len(self._states)

    # ---- inference -------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> InferenceOutput:
        batch = check_batch(batch, self.input_hw, self.max_batch, self.dynamic_batch)
        state = self._state()
        memory, context = self._memory, state.context
        with memory.activate():
            if self.dynamic_batch and state.input_shape != batch.shape:
                if not context.set_input_shape(self.input_name, tuple(batch.shape)):
                    raise ValueError(f"{self.path}: TensorRT rejected input shape {batch.shape}")
                state.input_shape = batch.shape
            if self._input.dtype != np.float32:  # FP16-input engine: convert, never reinterpret float32 bytes
                staged = state.host[self.input_name].reshape(-1)[: batch.size].reshape(batch.shape)
                np.copyto(staged, batch, casting="same_kind")
                batch = staged
            memory.copy_to_device(state.device[self.input_name], batch, state.stream)
            if not context.execute_async_v3(state.stream.handle):
                raise RuntimeError(f"{self.path}: TensorRT execute_async_v3 failed (see the TensorRT log above)")
            views = {}
            for spec in (self._labels, self._logits):
                if spec is None:
                    continue
                shape = tuple(int(d) for d in context.get_tensor_shape(spec.name))
                view = state.host[spec.name].reshape(-1)[: int(np.prod(shape))].reshape(shape)
                memory.copy_to_host(view, state.device[spec.name], state.stream)
                views[spec.name] = view
            memory.synchronize(state.stream)
        # copies: the host buffers are reused by this thread's next call
        labels = views[self._labels.name].copy()
        logits = views[self._logits.name].astype(np.float32) if self._logits is not None else None
        return InferenceOutput(labels=labels, logits=logits)

    def describe(self) -> dict:
        return {"backend": self.name, "tensorrt": str(self.trt_version), "typing": typing_mode(self.trt_version),
                "device": self._memory.device_name(), "compute_capability": self._memory.compute_capability(),
                "input": self.input_name, "input_dtype": str(self.input_dtype), "input_hw": list(self.input_hw),
                "max_batch": self.max_batch,
                "outputs": list(self.output_names), "threads": self.thread_count}

    def close(self) -> None:
        """Free every thread's buffers, streams and contexts, then the engine."""
        with self._lock:
            states, self._states, self._closed = self._states, [], True
        with self._memory.activate():
            for state in states:
                for pointer in state.device.values():
                    self._memory.free(pointer)
                self._memory.destroy_stream(state.stream)
                state.context = None
            self._engine = None


def open_backend(path: Path, options: BackendOptions) -> tuple[TensorRTBackend, ArtifactInfo]:
    """The runtime factory (lix_deploy.backend_table): the engine, with the metadata of its `<engine>.json`."""
    if options.providers is not None:
        raise ValueError("providers apply to the onnxruntime backend only")
    info = options.info or read_metadata(path)
    # TensorRT first: without it, the engine is what cannot run (not a missing cuda-python)
    trt = import_tensorrt(path)
    memory = cuda_memory.load_device_memory(options.device_id, options.cuda_library)
    return TensorRTBackend(path, device_id=options.device_id, info=info, trt=trt, memory=memory), info
