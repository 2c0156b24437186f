"""TensorRT engines from the exported ONNX, on TensorRT 10.x (vehicles: 10.3) and 11.x.

Version gate: `plan_build` (builders/tensorrt_plan.py, pure): strongly typed builds on TensorRT >= 10.12
and 11.x (precision from the ONNX: Q/DQ for INT8, an FP16 ONNX for FP16), weakly typed ones with
BuilderFlag.FP16 / INT8 and a Q/DQ ONNX on 10.0 - 10.11; implicit calibration is never used.

Network creation flags (`network_flags`): STRONGLY_TYPED is set on 10.12 - 10.x only. TensorRT 11
deprecates the flag (every network is strongly typed; the flag is ignored), so 11.x gets no flag
at all and code keeps working when the deprecated name goes.

INT8 calibration: --calibration-method is honoured on both paths: ONNX Runtime's
quantize_static takes minmax / entropy / percentile, ModelOpt takes minmax (its "max") and
entropy (its default when none is given); a method the tool lacks is a BuildError. ModelOpt
treats `nodes_to_exclude` as regular expressions, so node names are passed escaped and anchored
(`^name$`): a name such as `/head/Conv.1` must not exclude other nodes. The ArgMax and the
final Resize (onnxruntime_build.float_tail) are always excluded. A quantiser that raises is
reported as a BuildFailure naming the tool and the ONNX, never as a bare traceback.

Build flow: Builder -> create_network(flags) (no EXPLICIT_BATCH: always explicit since 10.0)
-> OnnxParser (every error printed with its node) -> builder config (workspace pool limit,
DETAILED profiling so the engine can be inspected, optimisation profile for dynamic inputs,
timing cache loaded and saved) -> build_serialized_network -> IEngineInspector precision
check -> only then the engine is written (temp file + rename) with its sidecar JSON.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from lix_deploy.artifact import ArtifactInfo, sha256_file, write_sidecar as write_artifact_sidecar
from lix_deploy.runtime.backends.base import BackendUnavailableError
from lix_deploy.runtime.backends.tensorrt_common import (ALWAYS_STRONGLY_TYPED_FROM, STRONGLY_TYPED_FROM,  # noqa: F401
                                                         import_tensorrt, parse_trt_version)

from .atomic import atomic_write_bytes
from .cache import EngineKey, cached_engine_path, decide
from .candidate import CandidateRequest
from .inspect import PrecisionSummary, PrecisionVerdict, check_precision, parse_engine_information
from .onnxruntime_build import (CALIBRATION_METHODS, BuildError, BuildFailure, argmax_reads_dequantized,
                                exclusions, has_qdq, input_name_and_batch, is_fp16, quantize_int8, save_model)
from .report import BuildReport, Stopwatch
from .tensorrt_plan import BuildPlan, plan_build

ONNX_TRANSFORMS = ("none", "modelopt_int8", "ort_int8", "modelopt_fp16")
#: --calibration-method -> ModelOpt's calibration_method (it has no percentile calibration)
MODELOPT_CALIBRATION = {"minmax": "max", "entropy": "entropy"}
DEFAULT_CALIBRATION = {"ort_int8": "minmax", "modelopt_int8": "entropy"}


def require_tensorrt():
    """The tensorrt module for a build, or BuildError saying how to get it (CPU machines cannot)."""
    try:
        return import_tensorrt()
    except BackendUnavailableError as err:
        cause = err.__context__ or err  # the ImportError / OSError itself, not the runtime's install hint
        raise BuildError(
            "TensorRT is not importable here (the PyPI 'tensorrt' wheels fetch NVIDIA's libraries at install "
            "time and need a GPU machine); use --backend onnxruntime, or run on a machine with TensorRT 10/11 "
            f"({type(cause).__name__}: {cause})"
        ) from None


def modelopt_available() -> bool:
    """NVIDIA ModelOpt's ONNX tools importable (quantize and AutoCast)?"""
    try:
        return importlib.util.find_spec("modelopt.onnx.quantization") is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- ONNX preparation


def calibration_method_for(transform: str, requested: str | None) -> str:
    """The calibration method the plan's quantiser will use (--calibration-method, or its default)."""
    method = requested or DEFAULT_CALIBRATION.get(transform, "minmax")
    if transform == "modelopt_int8" and method not in MODELOPT_CALIBRATION:
        raise BuildError(f"--calibration-method {method}: ModelOpt calibrates with "
                         f"{' or '.join(MODELOPT_CALIBRATION)} only; pick one of those")
    if transform == "ort_int8" and method not in CALIBRATION_METHODS:
        raise BuildError(f"--calibration-method {method} is not one of {', '.join(CALIBRATION_METHODS)}")
    return method


def exclusion_patterns(names: Sequence[str]) -> list[str]:
    """ModelOpt's nodes_to_exclude are regular expressions: match each node name exactly, nothing else."""
    return [f"^{re.escape(name)}$" for name in names]


def prepare_onnx(plan: BuildPlan, onnx_path: Path, work_dir: Path, calibration_inputs: np.ndarray | None,
                 nodes_to_exclude: Sequence[str] | None, input_name: str = "image",
                 calibration_method: str | None = None, details: dict | None = None) -> tuple[Path, list[str]]:
    """Apply the plan's ONNX transform; returns (ONNX to parse, nodes kept in high precision).

    `details`, when given, receives what was done (tool, calibration method, float tail) for the report.
    """
    details = {} if details is None else details
    if plan.onnx_transform == "none":
        return onnx_path, []
    out = work_dir / f"{onnx_path.stem}.{plan.precision}.{plan.onnx_transform}.onnx"
    if plan.onnx_transform in ("modelopt_int8", "ort_int8") and calibration_inputs is None:
        raise BuildError("--precision int8 needs calibration frames: pass --calib calib/NAME")
    if plan.onnx_transform == "ort_int8":
        method = calibration_method_for(plan.onnx_transform, calibration_method)
        result = quantize_int8(onnx_path, out, calibration_inputs, nodes_to_exclude, method, activations="int8")
        details.update(tool="onnxruntime.quantization.quantize_static", calibration_method=method,
                       float_tail=result.float_tail)
        return out, result.excluded_nodes
    if plan.onnx_transform == "modelopt_int8":
        import onnx

        method = calibration_method_for(plan.onnx_transform, calibration_method)
        model = onnx.load(str(onnx_path), load_external_data=False)
        excluded, tail = exclusions(model, nodes_to_exclude)
        patterns = exclusion_patterns(list(dict.fromkeys(excluded + tail)))
        details.update(tool="modelopt.onnx.quantization.quantize", calibration_method=method, float_tail=tail,
                       nodes_to_exclude=patterns)
        try:
            from modelopt.onnx.quantization import quantize as modelopt_quantize

            modelopt_quantize(
                onnx_path=str(onnx_path), quantize_mode="int8",
                calibration_data={input_name: np.asarray(calibration_inputs, dtype=np.float32)},
                calibration_method=MODELOPT_CALIBRATION[method], nodes_to_exclude=patterns,
                high_precision_dtype="fp16", output_path=str(out),
            )
        except Exception as err:  # ModelOpt raises whatever its passes raise: name the step, keep the cause
            raise BuildFailure(f"ModelOpt INT8 quantisation of {onnx_path} failed ({type(err).__name__}: {err}); "
                               "retry with --exclude-nodes, or without ModelOpt (ONNX Runtime Q/DQ, "
                               "pip uninstall nvidia-modelopt)") from err
        if not out.is_file():
            raise BuildFailure(f"ModelOpt INT8 quantisation of {onnx_path} wrote no {out}")
        quantized_argmax = argmax_reads_dequantized(onnx.load(str(out), load_external_data=False))
        if quantized_argmax:
            raise BuildFailure(f"ModelOpt quantised the logits in front of ArgMax {', '.join(quantized_argmax)} "
                               f"although {', '.join(tail)} were excluded")
        return out, excluded
    if plan.onnx_transform == "modelopt_fp16":
        details.update(tool="modelopt.onnx.autocast.convert_to_mixed_precision")
        try:
            from modelopt.onnx.autocast import convert_to_mixed_precision

            model = convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16",
                                               keep_io_types=True)
        except Exception as err:
            raise BuildFailure(f"ModelOpt AutoCast (FP16) of {onnx_path} failed ({type(err).__name__}: {err}); "
                               "pass an FP16-converted ONNX, or build fp32 / int8") from err
        save_model(model, out)
        return out, []
    raise BuildError(f"unknown ONNX transform {plan.onnx_transform!r}")


# --------------------------------------------------------------------------- shapes and GPU


def resolve_profile(shape: Sequence[int | None], *, min_batch: int = 1, opt_batch: int = 1, max_batch: int = 1,
                    size: tuple[int, int] | None = None) -> list[list[int]]:
    """[min, opt, max] shapes for one NCHW input whose dims may be None (dynamic).

    A dynamic batch takes min/opt/max_batch; dynamic H, W take `size` (e.g. the export's
    lix.input_size) for all three, so one engine serves one camera resolution without rebuilds.
    """
    if len(shape) != 4:
        raise BuildError(f"expected an NCHW input, got shape {list(shape)}")
    if not (1 <= min_batch <= opt_batch <= max_batch):
        raise BuildError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}")
    n, c, h, w = shape
    if c is None:
        raise BuildError("the channel dimension of the input must be static (3)")
    if (h is None or w is None) and size is None:
        raise BuildError("the ONNX input has dynamic height/width: pass --height/--width (or export with "
                         "static sizes, the default)")
    hh = h if h is not None else size[0]
    ww = w if w is not None else size[1]
    batches = (n, n, n) if n is not None else (min_batch, opt_batch, max_batch)
    return [[b, c, hh, ww] for b in batches]


def probe_gpu() -> tuple[str, str]:
    """(GPU name, compute capability "8.7") of device 0: cuda-python, then nvidia-smi; BuildError if none."""
    try:
        from cuda.bindings import runtime as cudart

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
            return name.strip("\x00 "), f"{props.major}.{props.minor}"
    except Exception:  # absent, or an insufficient-driver error on a CPU machine
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            name, cc = [part.strip() for part in out.splitlines()[0].split(",")[:2]]
            return name, cc
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    raise BuildError("no CUDA GPU found (cuda-python and nvidia-smi both failed); TensorRT engines are built "
                     "on the GPU that runs them")


# --------------------------------------------------------------------------- the build


@dataclass
class EngineBuild:
    """Result of build_tensorrt_engine: the written engine, its inspection and the precision verdict."""

    path: Path
    plan: BuildPlan
    summary: PrecisionSummary
    verdict: PrecisionVerdict
    timing_cache: Path | None = None
    parser_warnings: list[str] = field(default_factory=list)


def format_parser_error(error) -> str:
    """One line per ONNX parser error with the failing node, whatever the TensorRT version exposes."""
    parts = []
    for attr, label in (("node", "node #"), ("node_name", "node "), ("node_operator", "op "), ("code", "code ")):
        getter = getattr(error, attr, None)
        if callable(getter):
            try:
                value = getter()
            except Exception:
                continue
            if value not in (None, "", -1):
                parts.append(f"{label}{value}")
    desc = error.desc() if callable(getattr(error, "desc", None)) else str(error)
    return f"{desc} ({', '.join(parts)})" if parts else str(desc)


def network_flags(trt, plan: BuildPlan) -> int:
    """create_network flags: STRONGLY_TYPED on 10.12 - 10.x; none on 11.x, where every network is strongly
    typed and the flag is deprecated (ignored); none for a weakly typed build."""
    if not plan.strongly_typed:
        return 0
    if parse_trt_version(plan.trt_version)[:2] >= ALWAYS_STRONGLY_TYPED_FROM:
        return 0
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    if flag is None:
        raise BuildError(f"TensorRT {plan.trt_version} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED; "
                         "a strongly typed build needs TensorRT >= 10.12")
    return 1 << int(flag)


def build_tensorrt_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    plan: BuildPlan,
    key: EngineKey,
    *,
    workspace_mb: int = 2048,
    timing_cache: str | Path | None = None,
    profile: Mapping[str, Sequence[Sequence[int]]] | None = None,
    info: ArtifactInfo,
    min_fraction: float = 0.0,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> EngineBuild:
    """Parse, configure, build, inspect; write the engine + sidecar only if the precision took effect."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        for line in errors:
            log(f"TensorRT ONNX parser: {line}")
        raise BuildFailure(f"{onnx_path}: TensorRT could not parse the ONNX ({len(errors)} error(s)): "
                         + " | ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(int(d) < 0 for d in network.get_input(i).shape)]
    if dynamic:
        opt_profile = builder.create_optimization_profile()
        for tensor in dynamic:
            if not profile or tensor.name not in profile:
                raise BuildError(f"input {tensor.name!r} has dynamic shape {list(tensor.shape)}: an optimisation "
                                 "profile (min/opt/max) is needed")
            low, opt, high = (tuple(int(v) for v in s) for s in profile[tensor.name])
            opt_profile.set_shape(tensor.name, low, opt, high)
        config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log(f"timing cache {cache_path} was built on another GPU / TensorRT version; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildFailure(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    data = bytes(serialized)
    summary, verdict = inspect_serialized(trt, logger, data, plan.precision, min_fraction)
    if not verdict.passed:
        raise BuildFailure(f"engine not written: {verdict.message}")
    engine_path = Path(engine_path)
    atomic_write_bytes(engine_path, data)
    write_sidecar(engine_path, info, key, plan, summary)
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    return EngineBuild(engine_path, plan, summary, verdict, cache_path)


def inspect_serialized(trt, logger, data: bytes, precision: str, min_fraction: float = 0.0
                       ) -> tuple[PrecisionSummary, PrecisionVerdict]:
    """Deserialize, run IEngineInspector (JSON), and check that `precision` took effect."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise BuildFailure("TensorRT could not deserialize the engine it just built")
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    summary = parse_engine_information(text)
    return summary, check_precision(summary, precision, min_fraction)


def write_sidecar(engine_path: Path, info: ArtifactInfo, key: EngineKey, plan: BuildPlan,
                  summary: PrecisionSummary) -> Path:
    """`<engine>.json` (artifact.write_sidecar): the ONNX's lix.* metadata + build key, plan, inspection."""
    extra = dict(info.extra)
    extra["lix.engine_key"] = json.dumps(key.to_dict(), sort_keys=True)
    extra["lix.engine_plan"] = json.dumps(plan.to_dict(), sort_keys=True)
    extra["lix.engine_layers"] = json.dumps(summary.to_dict(), sort_keys=True)
    engine_info = dataclasses.replace(info, precision=plan.precision, extra=extra)
    return write_artifact_sidecar(engine_path, engine_info)


# --------------------------------------------------------------------------- build_engine's interface


def build_candidate(request: CandidateRequest, watch: Stopwatch, report: BuildReport) -> Path:
    """build_engine's builder interface (builders.candidate): the engine (+ sidecar) at request.target, or the
    one in request.cache_dir built from the same key (TensorRT, GPU, parsed ONNX, precision, shapes)."""
    import onnx

    trt = require_tensorrt()
    gpu_name, capability = probe_gpu()
    model = onnx.load(str(request.onnx), load_external_data=False)
    plan = plan_build(trt.__version__, request.precision, onnx_has_qdq=has_qdq(model), onnx_is_fp16=is_fp16(model),
                      have_modelopt=modelopt_available())
    for note in plan.notes:
        print(f"build_engine: {note}", file=sys.stderr)
    details: dict = {}
    with watch("prepare_onnx"):
        parsed, excluded = prepare_onnx(plan, request.onnx, request.work, request.calibration, request.exclude_nodes,
                                        request.info.input_name, calibration_method=request.calibration_method,
                                        details=details)
    profile = input_profile(model, request.max_batch, request.info.input_size)
    key = EngineKey(str(trt.__version__), gpu_name, capability, sha256_file(parsed), request.precision, profile)
    report.excluded_nodes = excluded
    report.extra.update(plan=plan.to_dict(), engine_key=key.to_dict())
    if details:
        report.extra["quantization" if request.precision == "int8" else "conversion"] = details
    engine_path = request.target
    if request.cache_dir is not None:
        engine_path = cached_engine_path(request.cache_dir, request.onnx.stem, key)
        decision = decide(engine_path, key)
        print(f"build_engine: {decision.message}", file=sys.stderr)
        report.extra["cache"] = {"path": str(engine_path), "reused": decision.reuse, "message": decision.message}
        if decision.reuse:
            return engine_path
    with watch("tensorrt_build"):
        built = build_tensorrt_engine(parsed, engine_path, plan, key, workspace_mb=request.workspace_mb,
                                      timing_cache=request.timing_cache, profile=profile, info=request.info)
    report.extra["inspection"] = {**built.summary.to_dict(), "verdict": built.verdict.to_dict()}
    print(f"build_engine: {built.verdict.message}", file=sys.stderr)
    return engine_path


def input_profile(model, max_batch: int, size: tuple[int, int]) -> dict[str, list[list[int]]]:
    """{input name: [min, opt, max] shape} for the ONNX model's one input (resolve_profile)."""
    input_name, _ = input_name_and_batch(model)
    graph_input = next(i for i in model.graph.input if i.name == input_name)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    return {input_name: resolve_profile(dims, max_batch=max_batch, opt_batch=1, size=size)}
