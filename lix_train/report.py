"""A finished run's report: metrics.json, the printed summary table, and the figures.

metrics.json is strict JSON (NaN, e.g. the IoU of a class absent from the test split, is
written as null) so any tool can read it. The table and the figures are drawn from the same
metrics dicts the engine's score_loader() returns.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from lix_train.data.sources import evenly_spaced

PLOTS_DIR = "plots"
VAL_SUFFIX = "_val"  # results scored on the val split (student_val): never drawn as the test split's
UNITS_NOTE = "IoU and pixel accuracy in percent (metrics.json holds the same scores as fractions in [0, 1])"
METRICS_UNITS = "IoU, mIoU and pixel accuracy as fractions in [0, 1] (summary.txt: percent); times in seconds"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.txt"


def json_safe(value: Any) -> Any:
    """Plain JSON values: NaN / inf -> None, paths -> str, tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Strict JSON, written atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def format_table(results: Mapping[str, Mapping[str, Any]], wall_times: Mapping[str, float | None] | None = None,
                 title: str = "") -> str:
    """Per-class IoU, mIoU and pixel accuracy (percent) with one column per model, then wall times."""
    models = list(results)
    names = list(next(iter(results.values()))["per_class_iou"])
    first = max(12, *(len(n) for n in names))
    col = max(9, *(len(m) + 2 for m in models))
    header = f"{'class':<{first}}" + "".join(f"{m + ' IoU':>{col + 4}}" for m in models)
    lines = [title] if title else []
    lines.append(UNITS_NOTE)
    val = [m for m in models if m.endswith(VAL_SUFFIX)]
    if val and len(val) < len(models):  # e.g. student_val beside a test split's teacher / student
        lines.append(f"{', '.join(val)}: scored on the val split, not the split named above")
    lines += [header, "-" * len(header)]
    for name in names:
        lines.append(f"{name:<{first}}" + "".join(f"{_pct(results[m]['per_class_iou'][name]):>{col + 4}}"
                                                  for m in models))
    lines.append("-" * len(header))
    lines.append(f"{'mIoU':<{first}}" + "".join(f"{_pct(results[m]['miou']):>{col + 4}}" for m in models))
    lines.append(f"{'pixel acc':<{first}}" + "".join(f"{_pct(results[m]['pixel_acc']):>{col + 4}}" for m in models))
    if wall_times:
        stage_width = max(len(stage) for stage in wall_times)
        lines += ["", "wall time"]
        for stage, seconds in wall_times.items():
            lines.append(f"  {stage:<{stage_width}}" + ("  -" if seconds is None else f"{seconds:9.1f} s"))
    return "\n".join(lines) + "\n"


def draw_plots(run_dir: Path, results: Mapping[str, Mapping[str, Any]], *, examples=None, class_set=None,
               extra_curves: Mapping[str, Path] | None = None, split: str = "test", title: str = "") -> list[Path]:
    """run_dir/plots/: loss curves of this run (and of `extra_curves`: name -> run folder), per-class
    IoU bars of `results` (scored on `split`), and the qualitative grid from `examples` = (rgbs,
    labels, predictions). `title` names this run's curves (e.g. the student and its method)."""
    from lix_train.engine.plots import plot_loss_curves, plot_per_class_iou, plot_qualitative

    out = Path(run_dir) / PLOTS_DIR
    written = []
    curves = {"loss_curves": Path(run_dir), **{f"{name}_loss_curves": d for name, d in (extra_curves or {}).items()}}
    for name, folder in curves.items():
        train_csv = folder / "train.csv"
        if train_csv.is_file():
            eval_csv = folder / "eval.csv"
            written.append(plot_loss_curves(train_csv, out / f"{name}.png", eval_csv if eval_csv.is_file() else None,
                                            smooth=0.6, title=(title or name.replace("_", " ")) if name == "loss_curves"
                                            else name.replace("_", " ")))
    scored = {m: r for m, r in results.items() if split == "val" or not m.endswith(VAL_SUFFIX)} or results
    written.append(plot_per_class_iou({m: r["per_class_iou"] for m, r in scored.items()},
                                      out / "per_class_iou.png", title=f"{split} IoU per class"))
    if examples is not None and class_set is not None and len(examples[0]):
        rgbs, labels, predictions = examples
        written.append(plot_qualitative(rgbs, labels, predictions, class_set.palette(), out / "qualitative.png",
                                        class_names=class_set.names))
    return written


def evenly_spaced_indices(count: int, k: int) -> Sequence[int]:
    """k indices spread over range(count), for picking qualitative examples across the split."""
    return evenly_spaced(count, k) if k > 0 else []


def git_commit(cwd: Path | None = None) -> str:
    """`git rev-parse HEAD` of the code's checkout, with "+dirty" when tracked files differ from it;
    "unknown" outside a git repository. Recorded by every run, so a table can name what made it."""
    where = cwd or Path(__file__).parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + ("+dirty" if dirty else "")


def software_environment() -> dict[str, str]:
    """The libraries and CPU kernels a run computed with. The same code and seed give the same weights on
    one machine, but not across machines whose torch / numpy / OpenCV versions or CPU vector kernels
    (AVX2 vs AVX-512) differ: numbers are comparable bit for bit only within one `label`."""
    import cv2
    import numpy
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "opencv": cv2.__version__, "cpu": _cpu_model(), "cpu_kernels": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        env["cuda"] = f"{torch.version.cuda} on {torch.cuda.get_device_name()}"
    env["label"] = ", ".join(f"{k} {env[k]}" for k in ("torch", "numpy", "opencv", "cpu_kernels", "cuda") if k in env)
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
