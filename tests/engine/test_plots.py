"""Figures are drawn from plain data and written atomically as real image files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.image import imread

from lix_train.data.classes import IGNORE_INDEX, VKITTI2
from lix_train.engine.logging import CsvLog
from lix_train.engine.plots import ema, plot_loss_curves, plot_per_class_iou, plot_qualitative

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_loss_curves_from_the_training_logs(tmp_path):
    train, evals = CsvLog(tmp_path / "train.csv"), CsvLog(tmp_path / "eval.csv")
    for i in range(1, 11):
        train.write({"iteration": 10 * i, "lr": 0.01 * (1 - i / 11), "loss_h": 2.0 / i, "loss_l": 0.5 / i,
                     "loss": 2.5 / i, "img_s": 50.0})
    for i in (5, 10):
        evals.write({"iteration": 10 * i, "miou": 0.05 * i, "pixel_acc": 0.08 * i})
    out = plot_loss_curves(tmp_path / "train.csv", tmp_path / "figs" / "loss.png", tmp_path / "eval.csv", smooth=0.5)
    assert _is_png(out) and sorted(p.name for p in out.parent.iterdir()) == ["loss.png"]
    with pytest.raises(ValueError, match="no training rows"):
        plot_loss_curves(tmp_path / "missing.csv", tmp_path / "x.png")


def test_per_class_iou_bars_for_several_models(tmp_path):
    names = VKITTI2.names[:4]
    results = {
        "teacher": dict(zip(names, [0.9, 0.7, math.nan, 0.5])),
        "student": dict(zip(names, [0.8, 0.4, math.nan, 0.2])),
    }
    out = plot_per_class_iou(results, tmp_path / "iou.png", title="vKITTI2 val")
    assert _is_png(out)
    with pytest.raises(ValueError, match="expected"):
        plot_per_class_iou({"a": {"road": 1.0}, "b": {"sky": 1.0}}, tmp_path / "bad.png")


def test_qualitative_grid(tmp_path):
    gen = np.random.default_rng(0)
    rgbs = [gen.integers(0, 255, (24, 64, 3), dtype=np.uint8) for _ in range(2)]
    labels = [gen.integers(0, VKITTI2.num_classes, (24, 64)).astype(np.uint8) for _ in range(2)]
    labels[0][:4] = IGNORE_INDEX
    preds = {"teacher": [l.copy() for l in labels], "student": [np.zeros((24, 64), np.uint8)] * 2}
    out = plot_qualitative(rgbs, labels, preds, VKITTI2.palette(), tmp_path / "grid.png", VKITTI2.names)
    assert _is_png(out)
    height, width = imread(out).shape[:2]
    assert width > height  # four columns side by side
    with pytest.raises(ValueError, match="same number"):
        plot_qualitative(rgbs, labels[:1], preds, VKITTI2.palette(), tmp_path / "bad.png")


def test_ema_identities():
    values = np.array([1.0, 3.0, 2.0, 5.0])
    assert np.array_equal(ema(values, 0.0), values)
    assert np.allclose(ema(np.full(5, 2.0), 0.9), 2.0)
    assert ema(values, 0.5)[1] == pytest.approx(2.0)


def test_summary_table_labels_units_and_val_columns():
    from lix_train.report import format_table

    scores = {"per_class_iou": {"Road": 0.5}, "miou": 0.5, "pixel_acc": 0.75}
    table = format_table({"teacher": scores, "student": scores, "student_val": scores}, title="test split")
    assert "in percent (metrics.json holds the same scores as fractions in [0, 1])" in table
    assert "student_val: scored on the val split" in table
    assert "val split" not in format_table({"teacher_val": scores, "student_val": scores})


def test_loss_curve_legend_says_what_each_term_is(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    import lix_train.engine.plots as plots

    rows = "iteration,lr,loss_h,loss_l,loss_f,loss\n10,0.1,1.0,0.5,0.2,1.7\n20,0.1,0.8,0.4,0.2,1.4\n"
    (tmp_path / "train.csv").write_text(rows)
    seen = {}
    save = plots._save

    def capture(fig: Figure, out_path, dpi=120):
        seen["labels"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        seen["title"] = fig.axes[0].get_title()
        return save(fig, out_path, dpi)

    monkeypatch.setattr(plots, "_save", capture)
    plot_loss_curves(tmp_path / "train.csv", tmp_path / "loss.png", title="student loss curves (lix)")
    assert "L_H: cross-entropy on the labels" in seen["labels"] and "total (sum of the terms)" in seen["labels"]
    assert any("logit distillation" in label for label in seen["labels"])
    assert seen["title"] == "student loss curves (lix)"
