"""Figures for reports: loss curves, per-class IoU bars, qualitative prediction grids.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global figure state, no display
needed) and written atomically. Inputs are plain data (CSV logs, metrics dicts, numpy maps),
so the figures can be redrawn from a finished run without torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lix_train.data.classes import IGNORE_INDEX
from lix_train.engine.logging import read_csv


def _save(fig: Figure, out_path: str | Path, dpi: int = 120) -> Path:
    """Render with Agg to a temp file beside `out_path`, then rename (format from the suffix)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fmt = out_path.suffix.lstrip(".").lower() or "png"
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    FigureCanvasAgg(fig)
    fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, out_path)
    return out_path


def _column(rows: Sequence[Mapping[str, str]], key: str) -> np.ndarray:
    values = []
    for row in rows:
        try:
            values.append(float(row.get(key) or "nan"))
        except ValueError:
            values.append(math.nan)
    return np.asarray(values, dtype=float)


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average (TensorBoard-style smoothing); weight 0 returns the input."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight {weight} must be in [0, 1)")
    out, running = np.empty_like(values), None
    for i, value in enumerate(values):
        running = value if running is None or math.isnan(running) else weight * running + (1 - weight) * value
        out[i] = running
    return out


# What each logged term is (the trainer logs the weighted terms the distiller returns, and their sum).
LOSS_LABELS = {
    "loss": "total (sum of the terms)",
    "loss_h": "L_H: cross-entropy on the labels",
    "loss_l": "lambda_L x L_L: logit distillation",
    "loss_f": "lambda_F x L_F: feature distillation",
}


def plot_loss_curves(train_csv: str | Path, out_path: str | Path, eval_csv: str | Path | None = None,
                     smooth: float = 0.0, title: str | None = None) -> Path:
    """Every loss column of train.csv (and the learning rate, and mIoU from eval.csv) against iteration."""
    rows = read_csv(train_csv)
    if not rows:
        raise ValueError(f"{train_csv}: no training rows to plot")
    iters = _column(rows, "iteration")
    loss_keys = [k for k in rows[0] if k == "loss" or k.startswith("loss_")]
    eval_rows = read_csv(eval_csv) if eval_csv else []
    panels = 2 + bool(eval_rows)
    fig = Figure(figsize=(6.5, 2.6 * panels))
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    for key in loss_keys:
        style = {"color": "black", "linestyle": "--", "linewidth": 1.2} if key == "loss" else {"linewidth": 1.0}
        axes[0].plot(iters, ema(_column(rows, key), smooth), label=LOSS_LABELS.get(key, key), **style)
    positive = all(np.nanmin(_column(rows, k)) > 0 for k in loss_keys if np.isfinite(_column(rows, k)).any())
    if loss_keys and positive:
        axes[0].set_yscale("log")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize="small")
    axes[1].plot(iters, _column(rows, "lr"), color="tab:gray")
    axes[1].set_ylabel("learning rate")
    if eval_rows:
        axes[2].plot(_column(eval_rows, "iteration"), 100 * _column(eval_rows, "miou"), marker="o", color="tab:green")
        axes[2].set_ylabel("mIoU (%)")
    axes[-1].set_xlabel("iteration")
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        axes[0].set_title(title)
    return _save(fig, out_path)


def plot_val_curves(curves: Mapping[str, Sequence[tuple[float, float]]], out_path: str | Path,
                    finals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
                    title: str | None = None) -> Path:
    """Validation mIoU against iteration, one line per run (label -> [(iteration, mIoU fraction)]), and
    optional end points of runs at other budgets (label -> [(budget, mIoU)]) as hollow markers."""
    if not curves:
        raise ValueError("no curves to plot")
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.subplots()
    for index, (label, points) in enumerate(curves.items()):
        colour = f"C{index}"
        its, values = zip(*points) if points else ((), ())
        ax.plot(its, [100 * v for v in values], marker="o", markersize=3, color=colour, label=label)
        ends = (finals or {}).get(label) or ()
        if ends:
            b, v = zip(*ends)
            ax.plot(b, [100 * x for x in v], linestyle="none", marker="D", markerfacecolor="none", color=colour,
                    label=f"{label}: final score of a run with that budget")
    ax.set_xlabel("iteration")
    ax.set_ylabel("val mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title, fontsize="medium")
    return _save(fig, out_path)


def plot_per_class_iou(results: Mapping[str, Mapping[str, float]], out_path: str | Path,
                       title: str | None = None) -> Path:
    """Grouped bars of per-class IoU (fractions) for one or several models, mIoU in the legend.

    `results` maps a model name to its per-class IoU dict (metrics["per_class_iou"]); all
    models must share the class names. NaN (class absent from the evaluated set) is drawn as
    an empty slot marked "n/a".
    """
    if not results:
        raise ValueError("plot_per_class_iou: no results given")
    names = list(next(iter(results.values())))
    for model, ious in results.items():
        if list(ious) != names:
            raise ValueError(f"plot_per_class_iou: {model!r} has classes {list(ious)}, expected {names}")
    count, models = len(names), list(results)
    width = 0.8 / len(models)
    fig = Figure(figsize=(max(6.0, 0.55 * count * max(1, len(models) / 2)), 3.8))
    ax = fig.subplots()
    x = np.arange(count)
    for i, model in enumerate(models):
        values = 100 * np.asarray([results[model][n] for n in names], dtype=float)
        valid = values[~np.isnan(values)]
        miou = f"{valid.mean():.1f}" if valid.size else "n/a"
        offsets = x - 0.4 + width * (i + 0.5)
        ax.bar(offsets, np.nan_to_num(values), width, label=f"{model} (mIoU {miou})")
        for offset in offsets[np.isnan(values)]:
            ax.text(offset, 1, "n/a", rotation=90, ha="center", va="bottom", fontsize="x-small")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, out_path)


def plot_qualitative(
    rgbs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    palette: np.ndarray,
    out_path: str | Path,
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Path:
    """Grid with one row per image: RGB | ground truth | one column per model (e.g. teacher, student).

    `rgbs` are uint8 HxWx3, `labels` and predictions HxW class ids, `palette` a (256, 3) uint8
    lookup table (ClassSet.palette()); ignored pixels are drawn black. With `class_names`, a
    colour legend is added below the grid.
    """
    rows = len(rgbs)
    if rows == 0 or len(labels) != rows or any(len(p) != rows for p in predictions.values()):
        raise ValueError(f"plot_qualitative: need the same number (> 0) of images, labels and predictions per "
                         f"model; got {rows}, {len(labels)}, {[len(p) for p in predictions.values()]}")
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.shape != (256, 3):
        raise ValueError(f"plot_qualitative: palette must be a (256, 3) uint8 table, got {palette.shape}")
    palette = palette.copy()
    palette[ignore_index] = 0
    titles = ["RGB", "ground truth", *predictions]
    height, width = np.asarray(rgbs[0]).shape[:2]
    cell = 2.6
    fig = Figure(figsize=(cell * len(titles), cell * rows * height / width))
    axes = fig.subplots(rows, len(titles), squeeze=False)
    for r in range(rows):
        maps = [np.asarray(labels[r])] + [np.asarray(p[r]) for p in predictions.values()]
        images = [np.asarray(rgbs[r], dtype=np.uint8)] + [palette[m.astype(np.uint8)] for m in maps]
        for c, image in enumerate(images):
            axes[r, c].imshow(image, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize="small")
    if class_names:
        handles = [Patch(color=palette[i] / 255.0, label=name) for i, name in enumerate(class_names)]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 7), fontsize="x-small",
                   bbox_to_anchor=(0.5, 0.0), frameon=False)
    return _save(fig, out_path)
