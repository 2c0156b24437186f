"""Build a deployable artefact from the FP32 export, and ship it only if it stays accurate.

    python -m lix_deploy.build_engine --onnx student.onnx --precision int8 --calib calib/vkitti2

Backends: `onnxruntime` writes an ONNX file (FP32: ORT-optimised graph; INT8: per-channel Q/DQ
calibrated on the calibration set, uint8 activations by default for x86 CPUs' fast kernels;
FP16: float16 graph with float32 I/O);
`tensorrt` writes a serialized engine plus its `<engine>.json` sidecar (see
lix_deploy.builders.tensorrt_build for the TensorRT 10 / 11 differences); `auto` picks TensorRT
when it and a GPU are present (`choose_build_backend`).

The accuracy gate then runs the candidate and the FP32 ONNX on held-out frames (the last
--eval-frames of the calibration set, never used for calibration, or --eval-set), on the
basis the frames allow (lix_deploy.accuracy): with labels, the mIoU drop must not exceed
--max-miou-drop points; without labels (calib --no-labels) there is no mIoU to compare, so
the candidate must agree with FP32 on at least --min-pixel-agreement % of the pixels and, for
every class, on at least --min-class-agreement % of the pixels FP32 gives it. The log line and
the report's accuracy.basis say which basis decided. A rejected candidate is discarded and the
FP32 artefact of the same backend is written instead, at --out when --out was given (so the
path the caller deploys always holds a model; the report's `fallback` says it is the FP32
one), else at the default FP32 name beside the ONNX; the exit code is 3. Every file is written
to a temp name and renamed into place, so an interrupted build leaves either the previous file
or nothing.

Exit codes (lix_deploy.cli): 0 built and accepted; 1 the build itself failed; 2 bad arguments or
inputs; 3 rejected by the accuracy gate (FP32 artefact kept).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lix_deploy import accuracy
from lix_deploy.artifact import BACKENDS, PRECISIONS, ArtifactInfo, read_metadata, sha256_file
from lix_deploy.builders import cache as engine_cache
from lix_deploy.builders import onnxruntime_build as ortb
from lix_deploy.builders.onnxruntime_build import BuildError, BuildFailure
from lix_deploy.builders.report import BuildReport, Stopwatch, report_path
from lix_deploy.cli import EXIT_OK, EXIT_REFUSED, ToolParser, run_tool


def build_parser() -> ToolParser:
    parser = ToolParser("build_engine",
        "Turn the FP32 ONNX export into an FP32 / FP16 / INT8 artefact for ONNX Runtime or TensorRT, gate it "
        "against the FP32 model (mIoU drop with labels, agreement without), and write a JSON build report.")
    parser.add_argument("--onnx", required=True, type=Path, help="FP32 ONNX written by lix_deploy.export")
    parser.add_argument("--precision", required=True, choices=PRECISIONS, help="precision of the artefact")
    parser.add_argument("--calib", required=True, type=Path,
                        help="calibration set directory (lix_deploy.calib): INT8 scales and, with labels.npy, "
                             "the accuracy gate's ground truth")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="onnxruntime (ONNX file), tensorrt (engine), auto = tensorrt when importable "
                             "with a GPU, else onnxruntime")
    parser.add_argument("--out", type=Path, default=None,
                        help="artefact path (default: next to the ONNX, <stem>.<precision>.onnx / .engine)")
    parser.add_argument("--max-miou-drop", type=float, default=1.0,
                        help="with labels: largest accepted mIoU drop against FP32, in points (negative: demand "
                             "a gain)")
    parser.add_argument("--min-pixel-agreement", type=float, default=100 * accuracy.DEFAULT_MIN_PIXEL_AGREEMENT,
                        metavar="PERCENT",
                        help="without labels: least accepted share of pixels where the candidate and FP32 agree")
    parser.add_argument("--min-class-agreement", type=float, default=100 * accuracy.DEFAULT_MIN_CLASS_AGREEMENT,
                        metavar="PERCENT",
                        help="without labels: least accepted agreement of every class (share of the pixels FP32 "
                             "gives the class that the candidate gives it too; classes under "
                             f"{100 * accuracy.DEFAULT_MIN_CLASS_SHARE:g} %% of the pixels are not gated)")
    parser.add_argument("--exclude-nodes", nargs="*", default=None, metavar="NODE",
                        help="INT8: ONNX node names kept in float (default: the first Conv and the classifier "
                             "Conv, found by graph traversal; give no names to quantise everything)")
    parser.add_argument("--int8-activations", choices=ortb.INT8_ACTIVATIONS, default="uint8",
                        help="ONNX Runtime backend only: uint8 (asymmetric) activations run x86 CPUs' fast u8 x s8 "
                             "kernels; int8 (symmetric) is what TensorRT needs (the tensorrt backend always uses it)")
    parser.add_argument("--calibration-method", choices=ortb.CALIBRATION_METHODS, default=None,
                        help="INT8 calibration: ONNX Runtime takes all three (default minmax), ModelOpt minmax or "
                             "entropy (default entropy)")
    parser.add_argument("--eval-frames", type=int, default=None,
                        help="frames for the accuracy gate: held out from the END of the calibration set "
                             "(default: a quarter, at least 1), or the first N of --eval-set (default: all)")
    parser.add_argument("--eval-set", type=Path, default=None,
                        help="separate calibration-format directory for the gate (then every --calib frame "
                             "calibrates)")
    parser.add_argument("--workspace-mb", type=int, default=2048, help="TensorRT workspace memory pool limit (MiB)")
    parser.add_argument("--timing-cache", type=Path, default=None,
                        help="TensorRT timing cache file, loaded if present and saved after the build "
                             "(valid on the same GPU and TensorRT version)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="TensorRT engine cache: engines named by (TensorRT, GPU, ONNX sha256, precision, "
                             "shapes); a matching one is reused instead of rebuilt")
    parser.add_argument("--max-batch", type=int, default=1,
                        help="TensorRT: largest batch of the optimisation profile when the batch is dynamic")
    return parser


# --------------------------------------------------------------------------- inputs


@dataclass
class Frames:
    """Calibration frames and the gate's held-out frames (labels optional)."""

    calibration: np.ndarray
    evaluation: np.ndarray
    labels: np.ndarray | None
    description: dict


def _load_set(path: Path):
    from lix_deploy.calib import load_calibration_set

    if not path.is_dir():
        raise BuildError(f"{path}: calibration set directory not found (make one with python -m lix_deploy.calib)")
    return load_calibration_set(path)


def split_frames(num: int, eval_frames: int | None, needs_calibration: bool) -> tuple[slice, slice]:
    """(calibration slice, evaluation slice) of one set: the gate's frames are the last ones.

    Without calibration (fp32 / fp16) every frame is an evaluation frame unless N is given.
    """
    if eval_frames is not None and eval_frames < 1:
        raise BuildError(f"--eval-frames must be >= 1, got {eval_frames}")
    if not needs_calibration:
        n = num if eval_frames is None else min(eval_frames, num)
        return slice(0, 0), slice(num - n, num)
    if num < 2:
        raise BuildError(f"the calibration set has {num} frame(s): INT8 needs at least 2 (some calibrate, "
                         "the rest gate), or pass --eval-set")
    n = max(1, num // 4) if eval_frames is None else eval_frames
    if n >= num:
        raise BuildError(f"--eval-frames {n} leaves no calibration frame out of {num}; use fewer or --eval-set")
    return slice(0, num - n), slice(num - n, num)


def load_frames(args: argparse.Namespace, info: ArtifactInfo) -> Frames:
    inputs, labels, manifest = _load_set(args.calib)
    size = tuple(info.input_size)
    if tuple(inputs.shape[2:]) != size:
        raise BuildError(f"{args.calib}: frames are {inputs.shape[2]}x{inputs.shape[3]} but the model takes "
                         f"{size[0]}x{size[1]}; make the calibration set with python -m lix_deploy.calib "
                         f"--height {size[0]} --width {size[1]} (or --onnx {args.onnx})")
    needs_calibration = args.precision == "int8"
    description = {"dir": str(args.calib), "name": manifest.get("name"), "frames": int(len(inputs)),
                   "tensor_sha256": manifest.get("tensor_sha256")}
    if args.eval_set is not None:
        eval_inputs, eval_labels, eval_manifest = _load_set(args.eval_set)
        n = len(eval_inputs) if args.eval_frames is None else min(args.eval_frames, len(eval_inputs))
        description.update(eval_set=str(args.eval_set), eval_frames=n, calibration_frames=int(len(inputs)))
        return Frames(inputs, eval_inputs[:n], None if eval_labels is None else eval_labels[:n], description)
    calib, held = split_frames(len(inputs), args.eval_frames, needs_calibration)
    description.update(calibration_frames=calib.stop - calib.start if needs_calibration else 0,
                       eval_frames=held.stop - held.start, eval_source="calibration set tail")
    return Frames(inputs[calib], inputs[held], None if labels is None else labels[held], description)


def choose_build_backend(requested: str) -> str:
    """The backend to build for: auto -> tensorrt when TensorRT imports and a GPU answers, else onnxruntime."""
    if requested != "auto":
        return requested
    from lix_deploy.builders import tensorrt_build as trtb

    try:
        trtb.require_tensorrt()
        trtb.probe_gpu()
    except BuildError:
        return "onnxruntime"
    return "tensorrt"


def default_out(onnx: Path, backend: str, precision: str) -> Path:
    suffix = ".engine" if backend == "tensorrt" else ".onnx"
    return onnx.with_name(f"{onnx.stem}.{precision}{suffix}")


# --------------------------------------------------------------------------- building


def build_onnxruntime_candidate(args, onnx: Path, target: Path, frames: Frames, watch: Stopwatch, report: BuildReport) -> None:
    """Write the ONNX Runtime candidate to `target` (a temp path)."""
    if args.precision == "fp32":
        with watch("optimize"):
            ortb.optimize_fp32(onnx, target)
    elif args.precision == "fp16":
        with watch("convert_fp16"):
            ortb.convert_fp16(onnx, target)
    else:
        with watch("quantize"):
            method = args.calibration_method or "minmax"
            result = ortb.quantize_int8(onnx, target, frames.calibration, args.exclude_nodes, method,
                                        activations=args.int8_activations)
        report.excluded_nodes = result.excluded_nodes
        report.extra["quantization"] = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                                        "per_channel": True, "activations": args.int8_activations,
                                        "symmetric_activations": args.int8_activations == "int8",
                                        "method": method, "float_tail": result.float_tail,
                                        "preprocessed": result.preprocessed,
                                        "calibration_frames": result.calibration_frames}


def build_tensorrt_candidate(args, onnx: Path, target: Path, precision: str, frames: Frames, info: ArtifactInfo,
                   watch: Stopwatch, report: BuildReport, work: Path) -> Path:
    """Build (or reuse from --cache-dir) the engine; returns where the candidate engine is."""
    from lix_deploy.builders import tensorrt_build as trtb

    trt = trtb.require_tensorrt()
    gpu_name, capability = trtb.probe_gpu()
    import onnx as onnx_lib

    model = onnx_lib.load(str(onnx), load_external_data=False)
    plan = trtb.plan_build(trt.__version__, precision, onnx_has_qdq=ortb.has_qdq(model),
                           onnx_is_fp16=ortb.is_fp16(model), have_modelopt=trtb.modelopt_available())
    for note in plan.notes:
        print(f"build_engine: {note}", file=sys.stderr)
    details: dict = {}
    with watch("prepare_onnx"):
        parsed, excluded = trtb.prepare_onnx(plan, onnx, work, frames.calibration, args.exclude_nodes,
                                             info.input_name, calibration_method=args.calibration_method,
                                             details=details)
    input_name, batch = ortb.input_name_and_batch(model)
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in next(i for i in model.graph.input if i.name == input_name).type.tensor_type.shape.dim]
    shapes = trtb.resolve_profile(dims, max_batch=args.max_batch, opt_batch=1, size=info.input_size)
    key = engine_cache.EngineKey(str(trt.__version__), gpu_name, capability, sha256_file(parsed), precision,
                                 {input_name: shapes})
    report.excluded_nodes = excluded
    report.extra.update(plan=plan.to_dict(), engine_key=key.to_dict())
    if details:
        report.extra["quantization" if precision == "int8" else "conversion"] = details
    engine_path = target
    if args.cache_dir is not None:
        engine_path = engine_cache.cached_engine_path(args.cache_dir, onnx.stem, key)
        decision = engine_cache.decide(engine_path, key)
        print(f"build_engine: {decision.message}", file=sys.stderr)
        report.extra["cache"] = {"path": str(engine_path), "reused": decision.reuse, "message": decision.message}
        if decision.reuse:
            return engine_path
    with watch("tensorrt_build"):
        built = trtb.build_tensorrt_engine(parsed, engine_path, plan, key, workspace_mb=args.workspace_mb,
                                  timing_cache=args.timing_cache, profile={input_name: shapes}, info=info)
    report.extra["inspection"] = {**built.summary.to_dict(), "verdict": built.verdict.to_dict()}
    print(f"build_engine: {built.verdict.message}", file=sys.stderr)
    return engine_path


def _place(candidate: Path, out: Path) -> None:
    """Move (or copy, from the engine cache) the candidate and its sidecar onto `out`, atomically each."""
    from lix_deploy.artifact import atomic_output, sidecar_path

    for src, dst in ((sidecar_path(candidate), sidecar_path(out)), (candidate, out)):
        if not src.is_file() or src.resolve() == dst.resolve():
            continue
        with atomic_output(dst) as tmp:
            shutil.copyfile(src, tmp)


def _remove_stale(out: Path) -> list[str]:
    """Delete a previous artefact at `out` that the gate now rejects; returns what was removed."""
    from lix_deploy.artifact import sidecar_path

    removed = []
    for path in (out, sidecar_path(out)):
        if path.is_file():
            path.unlink()
            removed.append(str(path))
    return removed


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    onnx = args.onnx
    if not onnx.is_file():
        raise BuildError(f"--onnx {onnx}: file not found")
    info = read_metadata(onnx)
    if info.precision != "fp32":
        raise BuildError(f"--onnx {onnx} is a {info.precision} artefact; pass the FP32 export from lix_deploy.export")
    if args.workspace_mb < 1 or args.max_batch < 1:
        raise BuildError("--workspace-mb and --max-batch must be >= 1")
    for option, value in (("--min-pixel-agreement", args.min_pixel_agreement),
                          ("--min-class-agreement", args.min_class_agreement)):
        if not 0.0 <= value <= 100.0:
            raise BuildError(f"{option} {value:g} must be a percentage in [0, 100]")
    backend = choose_build_backend(args.backend)
    out = args.out or default_out(onnx, backend, args.precision)
    explicit_out = args.out is not None
    if out.resolve() == onnx.resolve():
        raise BuildError(f"--out {out} would overwrite the FP32 export; choose another path")
    if out.is_dir():
        raise BuildError(f"--out {out} is a directory; give a file name")
    frames = load_frames(args, info)
    watch = Stopwatch()
    report = BuildReport(backend=backend, precision=args.precision, onnx=str(onnx), onnx_sha256=sha256_file(onnx),
                         calibration=frames.description, timings=watch.timings)
    print(f"build_engine: {backend} {args.precision} from {onnx} ({len(frames.calibration)} calibration, "
          f"{len(frames.evaluation)} evaluation frames)", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        work = Path(tmp)
        target = work / out.name
        if backend == "tensorrt":
            candidate = build_tensorrt_candidate(args, onnx, target, args.precision, frames, info, watch, report, work)
        else:
            build_onnxruntime_candidate(args, onnx, target, frames, watch, report)
            candidate = target
        with watch("accuracy_gate"):
            result = _gate(onnx, candidate, backend, frames, info, args)
        report.accuracy = result.to_dict()
        report.extra["gate_basis"] = result.basis
        print(f"build_engine: {result.summary()}", file=sys.stderr)
        if result.passed:
            _place(candidate, out)
            report.artefact = str(out)
            report.decision = f"accepted: {args.precision} artefact written to {out}"
            report.write(report_path(out))
            print(f"build_engine: wrote {out} and {report_path(out)}", file=sys.stderr)
            return EXIT_OK
        # the FP32 fallback goes where the caller asked for the artefact (--out), so whatever
        # deploys that path gets a working model; without --out, to the default FP32 name
        if args.precision == "fp32":
            fallback = None
        else:
            fallback = out if explicit_out else default_out(onnx, backend, "fp32")
        removed = _remove_stale(out) if out.exists() and fallback != out else []
        if fallback is not None:
            with watch("fp32_fallback"):
                if backend == "tensorrt":
                    scratch = BuildReport(backend=backend, precision="fp32", onnx=str(onnx),
                                          onnx_sha256=report.onnx_sha256)
                    built = build_tensorrt_candidate(args, onnx, work / f"fp32-{fallback.name}", "fp32", frames, info,
                                           watch, scratch, work)
                    _place(built, fallback)
                    report.extra["fp32_fallback"] = scratch.extra
                else:
                    ortb.optimize_fp32(onnx, fallback)
        kept = fallback or onnx
        report.artefact = str(kept)
        report.extra["fallback"] = {"precision": "fp32", "path": str(kept), "at_out": kept == out,
                                    "rejected_precision": args.precision}
        report.decision = (f"rejected: {args.precision} {result.reason()} (basis: {result.basis_text()}); "
                           f"{kept} is the FP32 fallback" + (f"; removed the stale {', '.join(removed)}"
                                                             if removed else ""))
        report.write(report_path(out))
        print(f"build_engine: {report.decision}", file=sys.stderr)
        return EXIT_REFUSED


def _gate(onnx: Path, candidate: Path, backend: str, frames: Frames, info: ArtifactInfo, args: argparse.Namespace):
    reference, close_reference = accuracy.artefact_predictor(onnx, "onnxruntime")
    try:
        candidate_predictor, close_candidate = accuracy.artefact_predictor(candidate, backend)
        try:
            return accuracy.evaluate(reference, candidate_predictor, frames.evaluation, info.num_classes,
                                     args.max_miou_drop, frames.labels,
                                     min_pixel_agreement=args.min_pixel_agreement / 100.0,
                                     min_class_agreement=args.min_class_agreement / 100.0)
        finally:
            close_candidate()
    finally:
        close_reference()


def main(argv: list[str] | None = None) -> int:
    from lix_deploy.builders.inspect import InspectionError
    from lix_deploy.calib import CalibrationError

    return run_tool(build_parser(), argv, run, bad_input=(BuildError, CalibrationError),
                    failed=(BuildFailure, InspectionError))


if __name__ == "__main__":
    raise SystemExit(main())
