"""Run logs: train.csv / eval.csv plus TensorBoard, written by rank 0 only.

CSV is the record plots and reports read; TensorBoard is for watching a run live. When a run
resumes at iteration i, rows after i (written between the last checkpoint and the crash) are
dropped, so the files describe one consistent history.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping


TRAIN_CSV = "train.csv"
EVAL_CSV = "eval.csv"
TENSORBOARD_DIR = "tensorboard"


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV log as dicts ([] when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, header: list[str], rows: list[Mapping[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


class CsvLog:
    """Append-only CSV keyed by an "iteration" column; new columns extend the header."""

    def __init__(self, path: str | Path, keep_until: int | None = None):
        self.path = Path(path)
        rows = read_csv(self.path)
        self.header: list[str] = list(rows[0].keys()) if rows else []
        if keep_until is not None and rows:
            kept = [r for r in rows if _iteration(r) is not None and _iteration(r) <= keep_until]
            if len(kept) != len(rows):
                _write_rows(self.path, self.header, kept)

    def write(self, row: Mapping[str, Any]) -> None:
        new_columns = [k for k in row if k not in self.header]
        if new_columns or not self.path.is_file():
            self.header += new_columns
            _write_rows(self.path, self.header, read_csv(self.path))
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.header).writerow({k: _fmt(v) for k, v in row.items()})


def _iteration(row: Mapping[str, str]) -> int | None:
    try:
        return int(row.get("iteration") or "")
    except ValueError:
        return None


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


class Throughput:
    """Images per second since the last `rate()` call."""

    def __init__(self):
        self.images, self.start = 0, time.perf_counter()

    def add(self, images: int) -> None:
        self.images += images

    def rate(self) -> float:
        now = time.perf_counter()
        value = self.images / max(now - self.start, 1e-9)
        self.images, self.start = 0, now
        return value


class RunLogger:
    """Training and evaluation scalars to CSV and TensorBoard; a silent no-op when not enabled."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True,
                 start_iteration: int = 0):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.train_csv = self.eval_csv = None
        self.writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.train_csv = CsvLog(self.run_dir / TRAIN_CSV, keep_until=start_iteration)
        self.eval_csv = CsvLog(self.run_dir / EVAL_CSV, keep_until=start_iteration)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

            self.writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=start_iteration + 1)

    def log_train(self, iteration: int, values: Mapping[str, float]) -> None:
        """One row of train.csv (iteration, lr, losses, img/s ...) and the same TensorBoard scalars."""
        if not self.enabled:
            return
        self.train_csv.write({"iteration": iteration, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, iteration)

    def log_eval(self, iteration: int, metrics: Mapping[str, Any]) -> None:
        """mIoU, pixel accuracy and per-class IoU (columns iou/<class>) to eval.csv and TensorBoard."""
        if not self.enabled:
            return
        row: dict[str, Any] = {"iteration": iteration, "miou": metrics["miou"], "pixel_acc": metrics["pixel_acc"]}
        row.update({f"iou/{name}": value for name, value in metrics.get("per_class_iou", {}).items()})
        self.eval_csv.write(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "iteration" and not (isinstance(value, float) and math.isnan(value)):
                    self.writer.add_scalar(f"eval/{key}", value, iteration)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
