"""Latency, memory and accuracy of every way to run the student, measured in one process on the same frames.

    python -m lix_deploy.benchmark --checkpoint RUN/student.pt --onnx student.onnx \\
        --artefacts student.int8.onnx student.fp16.engine --calib calib/vkitti2 --frames 100 --out bench.json

Backends: PyTorch eager (when torch imports and --checkpoint is given), the FP32 ONNX on ONNX
Runtime, every --artefacts file (ONNX on ONNX Runtime, engines on TensorRT, both through the
deployment runtime's Segmenter), and the RGB+X teacher in PyTorch for reference (latency only:
its X input is zeros here, so its labels are not comparable).

Per backend: load time, latency p50 / p95 / p99 and mean over --frames single-frame calls
after --warmup calls (host <-> device copies included, as a node sees it), FPS = 1000 / mean,
memory: peak RSS (the process's real resident-set peak while the backend loaded and ran: VmHWM
from /proc/self/status after resetting it through /proc/self/clear_refs; where that reset is
not permitted, getrusage's ru_maxrss, the peak over the process's whole life, which
`rss_method` then says) and RSS growth (that peak minus the RSS before loading; VmRSS end minus
start without the reset), CUDA memory growth when cuda-python or torch.cuda can tell, and against the reference (PyTorch eager, else the FP32 ONNX): pixel agreement and
mIoU of its labels, plus mIoU against ground truth when the calibration set has labels.npy.
Speed is reported, never asserted: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lix_deploy import accuracy
from lix_deploy.engines.atomic import atomic_write_bytes, atomic_write_json
from lix_deploy.engines.report import package_versions
from lix_deploy.runtime.latency import summarize_ms

Loader = Callable[[], tuple[Callable[[np.ndarray], np.ndarray], Callable[[], None]]]
CSV_FIELDS = ("name", "backend", "precision", "artefact", "load_s", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "fps",
              "peak_rss_mb", "rss_growth_mb", "rss_method", "cuda_mb", "agreement", "miou_vs_reference", "miou_vs_labels", "error")


# --------------------------------------------------------------------------- measurements (pure)


def latency_summary(latencies_ms: np.ndarray) -> dict[str, float]:
    """p50 / p95 / p99 / mean in ms and FPS (1000 / mean) of a set of single-frame latencies."""
    if np.asarray(latencies_ms).size == 0:
        raise ValueError("no latencies to summarise (--frames must be >= 1)")
    stats = summarize_ms(latencies_ms)
    mean = stats["mean_ms"]
    return {"p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "p99_ms": stats["p99_ms"], "mean_ms": mean,
            "fps": 1000.0 / mean if mean > 0 else float("inf")}


def read_proc_status(text: str | None = None) -> dict[str, int]:
    """VmRSS / VmHWM (kB) from /proc/self/status (or the given text); empty where /proc is absent."""
    if text is None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            return {}
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[name] = int(parts[0])
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write "5" to /proc/self/clear_refs); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def max_rss_kb() -> int | None:
    """getrusage(RUSAGE_SELF).ru_maxrss in kB (Linux reports kB, macOS bytes): the process's lifetime peak."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)


class MemoryProbe:
    """Peak RSS, RSS growth and CUDA memory growth across a block of work, in MiB (module doc)."""

    def __init__(self) -> None:
        self.peak_resettable = reset_peak_rss()
        self.start = read_proc_status()
        self.cuda_start = cuda_used_bytes()

    def finish(self) -> dict:
        end = read_proc_status()
        start_rss = self.start.get("VmRSS")
        if self.peak_resettable and "VmHWM" in end:
            peak_kb, method = end["VmHWM"], "peak: VmHWM reset before loading; growth: peak - VmRSS before"
            growth_kb = peak_kb - start_rss if start_rss is not None else None
        else:
            peak_kb = max_rss_kb()
            method = "peak: ru_maxrss (process lifetime); growth: VmRSS after - VmRSS before (not a peak)"
            growth_kb = end["VmRSS"] - start_rss if "VmRSS" in end and start_rss is not None else None
        cuda_end = cuda_used_bytes()
        cuda = (cuda_end - self.cuda_start) / 2**20 if cuda_end is not None and self.cuda_start is not None else None
        return {"peak_rss_mb": None if peak_kb is None else peak_kb / 1024,
                "rss_growth_mb": None if growth_kb is None else growth_kb / 1024, "rss_method": method,
                "cuda_mb": cuda}


def cuda_used_bytes() -> int | None:
    """Device memory in use on GPU 0 (cuda-python cudaMemGetInfo), None without a GPU."""
    try:
        from cuda.bindings import runtime as cudart

        err, free, total = cudart.cudaMemGetInfo()
        return int(total - free) if int(err) == 0 else None
    except Exception:
        return None


# --------------------------------------------------------------------------- backends


@dataclass
class Target:
    """One thing to benchmark: a name, how to load it, and whether its labels are comparable."""

    name: str
    backend: str
    precision: str
    artefact: str
    load: Loader
    comparable: bool = True


@dataclass
class Result:
    name: str
    backend: str
    precision: str
    artefact: str
    load_s: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    fps: float | None = None
    peak_rss_mb: float | None = None  # the process's resident-set peak (absolute)
    rss_growth_mb: float | None = None  # how far that peak rose above the RSS before loading
    rss_method: str = ""
    cuda_mb: float | None = None
    agreement: float | None = None
    miou_vs_reference: float | None = None
    miou_vs_labels: float | None = None
    error: str = ""
    comparable: bool = True
    labels: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("labels")
        return data


def _torch_device(requested: str):
    import torch

    # Subnormal floats can cost 10-100x on x86 CPUs; the ONNX Runtime sessions flush them too,
    # so both sides are timed under the same rule.
    torch.set_flush_denormal(True)

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pytorch_student_target(checkpoint: Path, device: str, threads: int | None) -> Target:
    def load():
        import torch

        from lix_deploy.export import DeployGraph, load_student

        if threads:
            torch.set_num_threads(threads)
        student = load_student(checkpoint)
        dev = _torch_device(device)
        graph = DeployGraph(student.model, student.mean, student.std).to(dev).eval()

        def predict(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                labels = graph(torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(dev))
            return labels.cpu().numpy()

        return predict, (lambda: None)

    return Target("pytorch fp32 (eager)", "pytorch", "fp32", str(checkpoint), load)


def pytorch_teacher_target(checkpoint: Path, device: str, threads: int | None) -> Target:
    """The RGB + X teacher, X = zeros: its cost is what distillation saves, its labels are not compared."""

    def load():
        import torch

        from lix_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD
        from lix_deploy.export import load_lix_checkpoint
        from lix_train.engine.checkpoint import restore_checkpoint
        from lix_train.models import create_model

        if threads:
            torch.set_num_threads(threads)
        ckpt = load_lix_checkpoint(checkpoint)
        signature = ckpt.get("signature") or {}
        if not str(signature.get("name", "")).startswith("teacher"):
            raise ValueError(f"{checkpoint}: --teacher-checkpoint must hold a teacher, found {signature.get('name')!r}")
        model = create_model(signature["name"], **signature.get("config", {}))
        restore_checkpoint(ckpt, checkpoint, model=model)
        dev = _torch_device(device)
        model = model.to(dev).eval()
        transforms = ((ckpt.get("config") or {}).get("data") or {}).get("transforms") or {}
        mean = torch.tensor(transforms.get("mean", IMAGENET_MEAN), device=dev).view(1, 3, 1, 1) * 255
        std = torch.tensor(transforms.get("std", IMAGENET_STD), device=dev).view(1, 3, 1, 1) * 255
        x_channels = int(signature.get("config", {}).get("x_channels", 3))

        def predict(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                image = (torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(dev) - mean) / std
                x = torch.zeros(image.shape[0], x_channels, *image.shape[2:], device=dev)
                logits, _ = model(image, x)
            return logits.argmax(1).to(torch.uint8).cpu().numpy()

        return predict, (lambda: None)

    return Target("teacher rgb+x (eager, X=0)", "pytorch", "fp32", str(checkpoint), load, comparable=False)


def artefact_target(path: Path, threads: int | None, label: str | None = None) -> Target:
    from lix_deploy.artifact import read_metadata
    from lix_deploy.runtime.segmenter import resolve_backend

    backend = resolve_backend(path)
    precision = read_metadata(path).precision
    options = {"intra_op_threads": threads} if backend == "onnxruntime" and threads else {}
    name = label or f"{backend} {precision} ({path.name})"
    return Target(name, backend, precision, str(path), lambda: accuracy.artefact_predictor(path, backend, **options))


# --------------------------------------------------------------------------- running


def run_target(target: Target, frames: np.ndarray, timed: int, warmup: int) -> Result:
    """Load, warm up, time `timed` single-frame calls (cycling through `frames`), keep one pass of labels."""
    result = Result(target.name, target.backend, target.precision, target.artefact, comparable=target.comparable)
    probe = MemoryProbe()
    close = lambda: None  # noqa: E731
    try:
        start = time.perf_counter()
        predict, close = target.load()
        result.load_s = time.perf_counter() - start
        for i in range(warmup):
            predict(frames[i % len(frames): i % len(frames) + 1])
        latencies = np.empty(timed)
        labels = [None] * len(frames)
        for i in range(timed):
            k = i % len(frames)
            begin = time.perf_counter()
            out = predict(frames[k:k + 1])
            latencies[i] = (time.perf_counter() - begin) * 1000.0
            if labels[k] is None:
                labels[k] = np.asarray(out)[0]
        for k in range(len(frames)):  # frames the timed loop did not reach
            if labels[k] is None:
                labels[k] = np.asarray(predict(frames[k:k + 1]))[0]
        result.labels = np.stack(labels)
        for name, value in latency_summary(latencies).items():
            setattr(result, name, value)
    except Exception as err:  # one broken backend must not hide the others' figures
        result.error = f"{type(err).__name__}: {str(err)[:300]}"
    finally:
        try:
            close()
        finally:
            memory = probe.finish()
            result.peak_rss_mb, result.rss_growth_mb = memory["peak_rss_mb"], memory["rss_growth_mb"]
            result.rss_method, result.cuda_mb = memory["rss_method"], memory["cuda_mb"]
    return result


def score(results: list[Result], reference: Result | None, ground_truth: np.ndarray | None, num_classes: int) -> None:
    """Fill agreement / mIoU against the reference's labels and against ground truth."""
    for result in results:
        if result.labels is None:
            continue
        if not result.comparable:
            continue
        if ground_truth is not None:
            result.miou_vs_labels = accuracy.mean_iou(accuracy.confusion_matrix(result.labels, ground_truth,
                                                                                num_classes))
        if reference is not None and reference.labels is not None:
            result.agreement = accuracy.pixel_agreement(result.labels, reference.labels)
            result.miou_vs_reference = accuracy.mean_iou(accuracy.confusion_matrix(result.labels, reference.labels,
                                                                                   num_classes))


def format_table(results: list[Result], reference: str) -> str:
    """A fixed-width text table of the figures (None shown as '-')."""
    columns = [("backend", "name", "{}"), ("load s", "load_s", "{:.2f}"), ("p50 ms", "p50_ms", "{:.2f}"),
               ("p95 ms", "p95_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"), ("FPS", "fps", "{:.1f}"),
               ("peak RSS MiB", "peak_rss_mb", "{:.1f}"), ("RSS growth MiB", "rss_growth_mb", "{:.1f}"),
               ("CUDA MiB", "cuda_mb", "{:.1f}"),
               ("agree %", "agreement", "{:.2%}"), ("mIoU vs ref", "miou_vs_reference", "{:.2f}"),
               ("mIoU vs GT", "miou_vs_labels", "{:.2f}")]
    rows = []
    for r in results:
        cells = []
        for _, attr, fmt in columns:
            value = getattr(r, attr)
            cells.append("-" if value is None else fmt.format(value).rstrip("%") if attr == "agreement"
                         else fmt.format(value))
        if r.error:
            cells[1:] = [f"ERROR {r.error}"] + [""] * (len(cells) - 2)
        rows.append(cells)
    headers = [c[0] for c in columns]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]
                     + [f"(agreement and 'mIoU vs ref' against: {reference})"])


def to_csv(results: list[Result]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow({k: ("" if v is None else v) for k, v in r.to_dict().items()})
    return buffer.getvalue()


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False,
        prog="python -m lix_deploy.benchmark",
        description="Benchmark PyTorch eager, ONNX Runtime and TensorRT variants of the student (and the teacher) "
                    "in one run on the same frames: latency percentiles, FPS, peak memory, and agreement / mIoU "
                    "against PyTorch. Prints a table and writes JSON + CSV.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="student checkpoint: PyTorch eager baseline and accuracy reference (needs torch)")
    parser.add_argument("--onnx", type=Path, default=None, help="FP32 ONNX export (ONNX Runtime baseline)")
    parser.add_argument("--artefacts", type=Path, nargs="*", default=[],
                        help="more artefacts: ONNX files (ONNX Runtime) and TensorRT engines")
    parser.add_argument("--teacher-checkpoint", type=Path, default=None,
                        help="RGB+X teacher checkpoint, timed in PyTorch with X = 0 (latency only)")
    parser.add_argument("--calib", type=Path, default=None,
                        help="calibration-format frame set (inputs.npy, optional labels.npy); default: random frames")
    parser.add_argument("--frames", type=int, default=50, help="timed single-frame calls per backend")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch and ONNX Runtime (default: each library's own)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="PyTorch device")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random frames (without --calib)")
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON report (CSV written beside it)")
    return parser


def _frames(args, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None, str]:
    if args.calib is not None:
        from lix_deploy.calib import load_calibration_set

        inputs, labels, manifest = load_calibration_set(args.calib)
        if tuple(inputs.shape[2:]) != tuple(size):
            raise ValueError(f"--calib {args.calib}: frames are {inputs.shape[2]}x{inputs.shape[3]}, the model "
                             f"takes {size[0]}x{size[1]}")
        n = min(len(inputs), args.frames)
        return inputs[:n], None if labels is None else labels[:n], f"calibration set {manifest.get('name', args.calib)}"
    rng = np.random.default_rng(args.seed)
    n = min(args.frames, 8)
    return (rng.random((n, 3, *size)) * 255).astype(np.float32), None, f"{n} random frames (seed {args.seed})"


def run(args: argparse.Namespace) -> int:
    from lix_deploy.artifact import read_metadata

    if args.frames < 1 or args.warmup < 0:
        raise ValueError("--frames must be >= 1 and --warmup >= 0")
    paths = [p for p in [args.onnx, *args.artefacts] if p is not None]
    if not paths and args.checkpoint is None:
        raise ValueError("nothing to benchmark: give --checkpoint, --onnx and/or --artefacts")
    for path in paths + [p for p in (args.checkpoint, args.teacher_checkpoint) if p is not None]:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
    info = read_metadata(paths[0]) if paths else None
    targets: list[Target] = []
    torch_ok = _torch_importable()
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
        from lix_deploy.export import load_student

        student = load_student(args.checkpoint)
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
              "versions": package_versions(_torch_version())}
    atomic_write_json(args.out, report)
    csv_path = args.out.with_suffix(".csv")
    atomic_write_bytes(csv_path, to_csv(results).encode())
    print(f"benchmark: wrote {args.out} and {csv_path}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_version() -> dict[str, str]:
    try:
        import torch

        return {"torch": torch.__version__}
    except ImportError:
        return {}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
