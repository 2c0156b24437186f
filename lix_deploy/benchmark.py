"""Latency, memory and accuracy of every way to run the student, measured in one process on the same frames.

    python -m lix_deploy.benchmark --checkpoint RUN/student.pt --onnx student.onnx \\
        --artefacts student.int8.onnx student.fp16.engine --calib calib/vkitti2 --frames 100 --out bench.json

Backends: PyTorch eager (when torch imports and --checkpoint is given), the FP32 ONNX on ONNX
Runtime, every --artefacts file (ONNX on ONNX Runtime, engines on TensorRT, both through the
deployment runtime's Segmenter), and the RGB+X teacher in PyTorch for reference (latency only:
its X input is zeros here, so its labels are not comparable).

Per backend: load time, latency p50 / p95 / p99 and mean over --frames single-frame calls
after --warmup calls (host <-> device copies included, as a node sees it), FPS = 1000 / mean,
memory: peak RSS, RSS growth and CUDA memory growth (lix_deploy.bench.memory), and against the
reference (PyTorch eager, else the FP32 ONNX): pixel agreement and mIoU of its labels, plus mIoU
against ground truth when the calibration set has labels.npy. Speed is reported, never
asserted: figures depend on the machine and its load.

This module is the CLI; the parts live in lix_deploy.bench (memory, targets, results, table).
Exit codes (lix_deploy.cli): 0 every backend ran; 1 some backend failed (its row says why);
2 bad input.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

from lix_deploy.bench.results import run_target, score
from lix_deploy.bench.table import format_table, to_csv
from lix_deploy.bench.targets import (Target, artefact_target, pytorch_student_target, pytorch_teacher_target,
                                      torch_importable, torch_version)
from lix_deploy.builders.atomic import atomic_write_bytes, atomic_write_json
from lix_deploy.builders.report import package_versions
from lix_deploy.cli import EXIT_FAILED, EXIT_OK, ToolParser, UsageError, count, run_tool


def build_parser() -> ToolParser:
    parser = ToolParser("benchmark",
        "Benchmark PyTorch eager, ONNX Runtime and TensorRT variants of the student (and the teacher) in one run "
        "on the same frames: latency percentiles, FPS, peak memory, and agreement / mIoU against PyTorch. Prints "
        "a table and writes JSON + CSV.")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="student checkpoint: PyTorch eager baseline and accuracy reference (needs torch)")
    parser.add_argument("--onnx", type=Path, default=None, help="FP32 ONNX export (ONNX Runtime baseline)")
    parser.add_argument("--artefacts", type=Path, nargs="*", default=[],
                        help="more artefacts: ONNX files (ONNX Runtime) and TensorRT engines")
    parser.add_argument("--teacher-checkpoint", type=Path, default=None,
                        help="RGB+X teacher checkpoint, timed in PyTorch with X = 0 (latency only)")
    parser.add_argument("--calib", type=Path, default=None,
                        help="calibration-format frame set (inputs.npy, optional labels.npy); default: random frames")
    parser.add_argument("--frames", type=count(1), default=50, help="timed single-frame calls per backend")
    parser.add_argument("--warmup", type=count(0), default=5, help="untimed calls before timing")
    parser.add_argument("--threads", type=count(1), default=None,
                        help="CPU threads for PyTorch and ONNX Runtime (default: each library's own)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="PyTorch device")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random frames (without --calib)")
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON report (CSV written beside it)")
    return parser


def _frames(args, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None, str]:
    if args.calib is not None:
        from lix_deploy.calib import CalibrationError, load_calibration_set

        inputs, labels, manifest = load_calibration_set(args.calib)
        if tuple(inputs.shape[2:]) != tuple(size):
            raise CalibrationError(args.calib, f"frames are {inputs.shape[2]}x{inputs.shape[3]}, the model "
                                               f"takes {size[0]}x{size[1]}")
        n = min(len(inputs), args.frames)
        return inputs[:n], None if labels is None else labels[:n], f"calibration set {manifest.get('name', args.calib)}"
    rng = np.random.default_rng(args.seed)
    n = min(args.frames, 8)
    return (rng.random((n, 3, *size)) * 255).astype(np.float32), None, f"{n} random frames (seed {args.seed})"


def run(args: argparse.Namespace) -> int:
    from lix_deploy.artifact import read_metadata

    paths = [p for p in [args.onnx, *args.artefacts] if p is not None]
    if not paths and args.checkpoint is None:
        raise UsageError("nothing to benchmark: give --checkpoint, --onnx and/or --artefacts")
    for path in paths + [p for p in (args.checkpoint, args.teacher_checkpoint) if p is not None]:
        if not path.is_file():
            raise UsageError(f"{path}: file not found")
    info = read_metadata(paths[0]) if paths else None
    targets: list[Target] = []
    torch_ok = torch_importable()
    if args.checkpoint is not None:
        if torch_ok:
            targets.append(pytorch_student_target(args.checkpoint, args.device, args.threads))
        else:
            print("benchmark: torch is not importable; skipping PyTorch eager", file=sys.stderr)
    if args.onnx is not None:
        targets.append(artefact_target(args.onnx, args.threads, label=None))
    targets += [artefact_target(p, args.threads) for p in args.artefacts]
    if args.teacher_checkpoint is not None and torch_ok:
        targets.append(pytorch_teacher_target(args.teacher_checkpoint, args.device, args.threads))
    if info is None:
        from lix_deploy.export import ExportError, load_student
        from lix_train.engine.checkpoint import CheckpointError

        try:  # only a checkpoint: the model size and classes come from it (here torch is importable)
            student = load_student(args.checkpoint)
        except (CheckpointError, ExportError) as err:
            raise UsageError(str(err)) from None
        size = student.trained_size or (256, 512)
        num_classes = student.class_set.num_classes
    else:
        size, num_classes = tuple(info.input_size), info.num_classes
    frames, labels, source = _frames(args, size)
    print(f"benchmark: {len(targets)} backends, {args.frames} timed + {args.warmup} warm-up calls each on "
          f"{source} ({size[0]}x{size[1]})", file=sys.stderr)
    results = []
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda it, **kw: it  # noqa: E731
    for target in tqdm(targets, desc="backends", file=sys.stderr):
        results.append(run_target(target, frames, args.frames, args.warmup))
    reference = next((r for r in results if r.backend == "pytorch" and r.labels is not None and r.comparable), None)
    reference = reference or next((r for r in results if args.onnx is not None and r.artefact == str(args.onnx)
                                   and r.labels is not None), None)
    score(results, reference, labels, num_classes)
    reference_name = reference.name if reference else "none"
    print(format_table(results, reference_name))
    report = {"frames": {"timed": args.frames, "warmup": args.warmup, "unique": int(len(frames)), "source": source,
                         "size": list(size), "labels": labels is not None},
              "reference": reference_name, "results": [r.to_dict() for r in results],
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
              "versions": package_versions(torch_version())}
    atomic_write_json(args.out, report)
    csv_path = args.out.with_suffix(".csv")
    atomic_write_bytes(csv_path, to_csv(results).encode())
    print(f"benchmark: wrote {args.out} and {csv_path}", file=sys.stderr)
    return EXIT_FAILED if any(r.error for r in results) else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    from lix_deploy.calib import CalibrationError

    return run_tool(build_parser(), argv, run, bad_input=(CalibrationError,))


if __name__ == "__main__":
    raise SystemExit(main())
