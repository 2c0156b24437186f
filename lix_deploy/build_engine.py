"""Build a deployable artefact from the FP32 export, and ship it only if it stays accurate.

    python -m lix_deploy.build_engine --onnx student.onnx --precision int8 --calib calib/vkitti2

Backends: `onnxruntime` writes an ONNX file (FP32: ORT-optimised graph; INT8: per-channel Q/DQ
calibrated on the calibration set, uint8 activations by default for x86 CPUs' fast kernels;
FP16: float16 graph with float32 I/O);
`tensorrt` writes a serialized engine plus its `<engine>.json` sidecar (see
lix_deploy.builders.tensorrt_build for the TensorRT 10 / 11 differences); `auto` picks TensorRT
when it and a GPU are present (`choose_build_backend`). Each backend's builder module (named in
lix_deploy.backend_table) writes the candidate through the same `build_candidate(request, watch, report)`.

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
from types import ModuleType

import numpy as np

from lix_deploy import accuracy, backend_table
from lix_deploy.artifact import PRECISIONS, ArtifactInfo, read_metadata, sha256_file
from lix_deploy.backend_table import AUTO, BACKENDS
from lix_deploy.builders import onnxruntime_build as ortb
from lix_deploy.builders.candidate import CandidateRequest
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
    parser.add_argument("--backend", choices=BACKENDS, default=AUTO,
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
    if requested != AUTO:
        return requested
    from lix_deploy.builders import tensorrt_build as trtb

    try:
        trtb.require_tensorrt()
        trtb.probe_gpu()
    except BuildError:
        return "onnxruntime"
    return "tensorrt"


def default_out(onnx: Path, backend: str, precision: str) -> Path:
    """<stem>.<precision><the backend's first suffix> beside the ONNX (lix_deploy.backend_table)."""
    return onnx.with_name(f"{onnx.stem}.{precision}{backend_table.entry(backend).suffixes[0]}")


# --------------------------------------------------------------------------- building


def candidate_request(args: argparse.Namespace, info: ArtifactInfo, frames: Frames, work: Path,
                      target: Path) -> CandidateRequest:
    """What the builder gets from the command line (builders.candidate)."""
    return CandidateRequest(onnx=args.onnx, target=target, precision=args.precision, info=info,
                            calibration=frames.calibration, work=work, exclude_nodes=args.exclude_nodes,
                            calibration_method=args.calibration_method, int8_activations=args.int8_activations,
                            workspace_mb=args.workspace_mb, timing_cache=args.timing_cache, cache_dir=args.cache_dir,
                            max_batch=args.max_batch)


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


def check_inputs(args: argparse.Namespace) -> ArtifactInfo:
    """The FP32 export's metadata, once the export and the numeric options are known to be usable."""
    if not args.onnx.is_file():
        raise BuildError(f"--onnx {args.onnx}: file not found")
    info = read_metadata(args.onnx)
    if info.precision != "fp32":
        raise BuildError(f"--onnx {args.onnx} is a {info.precision} artefact; pass the FP32 export from "
                         "lix_deploy.export")
    if args.workspace_mb < 1 or args.max_batch < 1:
        raise BuildError("--workspace-mb and --max-batch must be >= 1")
    for option, value in (("--min-pixel-agreement", args.min_pixel_agreement),
                          ("--min-class-agreement", args.min_class_agreement)):
        if not 0.0 <= value <= 100.0:
            raise BuildError(f"{option} {value:g} must be a percentage in [0, 100]")
    return info


def output_path(args: argparse.Namespace, backend: str) -> Path:
    """--out, or the default name beside the ONNX; never the export itself nor a directory."""
    out = args.out or default_out(args.onnx, backend, args.precision)
    if out.resolve() == args.onnx.resolve():
        raise BuildError(f"--out {out} would overwrite the FP32 export; choose another path")
    if out.is_dir():
        raise BuildError(f"--out {out} is a directory; give a file name")
    return out


def run(args: argparse.Namespace) -> int:
    info = check_inputs(args)
    backend = choose_build_backend(args.backend)
    out = output_path(args, backend)
    frames = load_frames(args, info)
    watch = Stopwatch()
    report = BuildReport(backend=backend, precision=args.precision, onnx=str(args.onnx),
                         onnx_sha256=sha256_file(args.onnx), calibration=frames.description, timings=watch.timings)
    print(f"build_engine: {backend} {args.precision} from {args.onnx} ({len(frames.calibration)} calibration, "
          f"{len(frames.evaluation)} evaluation frames)", file=sys.stderr)
    builder = backend_table.builder(backend)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        request = candidate_request(args, info, frames, Path(tmp), Path(tmp) / out.name)
        candidate = builder.build_candidate(request, watch, report)
        with watch("accuracy_gate"):
            result = _gate(args.onnx, candidate, backend, frames, info, args)
        report.accuracy = result.to_dict()
        report.extra["gate_basis"] = result.basis
        print(f"build_engine: {result.summary()}", file=sys.stderr)
        if result.passed:
            return _accept(candidate, out, report)
        return _reject(args, result, builder, request, out, report, watch)


def _accept(candidate: Path, out: Path, report: BuildReport) -> int:
    _place(candidate, out)
    report.artefact = str(out)
    report.decision = f"accepted: {report.precision} artefact written to {out}"
    report.write(report_path(out))
    print(f"build_engine: wrote {out} and {report_path(out)}", file=sys.stderr)
    return EXIT_OK


def _reject(args: argparse.Namespace, result: accuracy.GateResult, builder: ModuleType, request: CandidateRequest,
            out: Path, report: BuildReport, watch: Stopwatch) -> int:
    """Keep an FP32 artefact instead of the rejected candidate, and say so in the report."""
    # the FP32 fallback goes where the caller asked for the artefact (--out), so whatever
    # deploys that path gets a working model; without --out, to the default FP32 name
    if args.precision == "fp32":
        fallback = None
    else:
        fallback = out if args.out is not None else default_out(args.onnx, report.backend, "fp32")
    removed = _remove_stale(out) if out.exists() and fallback != out else []
    if fallback is not None:
        with watch("fp32_fallback"):
            _build_fallback(builder, request, fallback, report)
    kept = fallback or args.onnx
    report.artefact = str(kept)
    report.extra["fallback"] = {"precision": "fp32", "path": str(kept), "at_out": kept == out,
                                "rejected_precision": args.precision}
    report.decision = (f"rejected: {args.precision} {result.reason()} (basis: {result.basis_text()}); "
                       f"{kept} is the FP32 fallback" + (f"; removed the stale {', '.join(removed)}"
                                                         if removed else ""))
    report.write(report_path(out))
    print(f"build_engine: {report.decision}", file=sys.stderr)
    return EXIT_REFUSED


def _build_fallback(builder: ModuleType, request: CandidateRequest, fallback: Path, report: BuildReport) -> None:
    """The FP32 artefact at `fallback`, built like any candidate; its build details (if any) go to the report's
    fp32_fallback (its steps are timed as a whole, by the caller's fp32_fallback lap)."""
    scratch = BuildReport(backend=report.backend, precision="fp32", onnx=report.onnx, onnx_sha256=report.onnx_sha256)
    built = builder.build_candidate(request.fp32(request.work / f"fp32-{fallback.name}"), Stopwatch(), scratch)
    _place(built, fallback)
    if scratch.extra:
        report.extra["fp32_fallback"] = scratch.extra


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
