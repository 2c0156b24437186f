"""The study's figures: mIoU bars with per-seed points, per-class gains, the ablation panels, mIoU
against the student budget, the warm-start bars and the geometry-classes grid.

All but the last are drawn from table.json's data alone (no torch). The qualitative grid runs the
teacher, the RGB baseline and the distilled students (first seed) on the test frames richest
in the classes with the largest teacher-minus-baseline gap, and colours only those classes:
it shows where the geometric prior should reach the student, and whether it did.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lix_train.study.grid import BASELINE, NAMED_ROWS, XZEROS

PLOTS_DIR = "plots"
OTHER_GREY = (225, 225, 225)  # light: the classes in focus stand out against everything else
# Stand-ins for a class colour too close to another one in the figure (e.g. vKITTI2's grey Misc).
FALLBACK_COLOURS = ((228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0), (166, 86, 40))
MIN_COLOUR_DISTANCE = 60.0
# Line plots with a dozen rows: colours (no grey: the baselines; no green: the teacher) and markers
# cycle with coprime periods: ten rows get ten colours, and no two of the first 70 look alike.
LINE_COLOURS = ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                "black", "gold")
LINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _save(fig: Figure, out_path: Path) -> Path:
    """PNG through the Agg canvas to a temp file beside `out_path`, then rename."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    FigureCanvasAgg(fig)
    fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    os.replace(tmp, out_path)
    return out_path


def plot_miou_bars(table: Mapping[str, Any], out_path: Path) -> Path:
    """One bar per method (mean test mIoU, std whiskers), its seeds as points; teacher and control as lines."""
    rows = [m for m in table["methods"] if m["mean"] is not None]
    if not rows:
        raise ValueError("plot_miou_bars: no finished method runs to draw")
    fig = Figure(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.8))
    ax = fig.subplots()
    x = np.arange(len(rows))
    means = [100 * r["mean"] for r in rows]
    stds = [100 * (r["std"] or 0.0) for r in rows]
    colors = ["tab:gray" if r["method"] == BASELINE else "tab:blue" for r in rows]
    ax.bar(x, means, 0.6, yerr=stds, capsize=4, color=colors, alpha=0.75)
    for i, row in enumerate(rows):
        points = 100 * np.asarray(row["miou"], dtype=float)
        jitter = np.linspace(-0.12, 0.12, len(points)) if len(points) > 1 else np.zeros(1)
        ax.scatter(i + jitter, points, s=14, color="black", zorder=3, label="seeds" if i == 0 else None)
    teacher = table.get("teacher")
    if teacher:
        ax.axhline(100 * teacher["miou"], color="tab:green", linestyle="--",
                   label=f"teacher {100 * teacher['miou']:.1f}")
    for row in (table["ablations"].get("control") or {}).get("rows", []):
        if row["teacher_miou"] is not None:
            ax.axhline(100 * row["teacher_miou"], color="tab:red", linestyle=":",
                       label=f"teacher, X = zeros {100 * row['teacher_miou']:.1f}")
    ax.set_xticks(x)
    ax.set_xticklabels([r["method"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test mIoU (%)")
    ax.set_ylim(0, None)  # bars start at zero: a cut axis would exaggerate the differences
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("test mIoU: mean ± std over seeds, points = seeds")
    return _save(fig, out_path)


def plot_class_gains(table: Mapping[str, Any], out_path: Path) -> Path:
    """Heat map: per-class IoU gain over the RGB baseline (points), one row per model (the teacher
    first), each cell annotated. A study has a dozen rows and classes, too many for grouped bars.
    The colour scale is the students' (+-their largest gain): the teacher's far larger leads saturate,
    their numbers stay written in the cells."""
    series: dict[str, Mapping[str, float | None]] = {}
    if table.get("teacher") and table["teacher"].get("per_class_gain"):
        series["teacher"] = table["teacher"]["per_class_gain"]
    for row in table["methods"]:
        if row["method"] != BASELINE and row.get("per_class_gain"):
            series[row["method"]] = row["per_class_gain"]
    if not series:
        raise ValueError("plot_class_gains: no per-class gains (needs the baseline and another model)")
    names = list(next(iter(series.values())))
    values = np.asarray([[np.nan if gains.get(n) is None else 100 * gains[n] for n in names]
                         for gains in series.values()], dtype=float)
    students = values[1:] if "teacher" in series and len(series) > 1 else values
    scale = float(np.nanmax(np.abs(students))) if np.isfinite(students).any() else 1.0
    scale = max(scale, 1.0)
    fig = Figure(figsize=(max(6.0, 0.62 * len(names) + 2.5), max(2.6, 0.34 * len(series) + 1.8)))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=-scale, vmax=scale, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        text, colour = ("-", "black") if np.isnan(value) else (
            f"{value:+.1f}", "white" if abs(value) > 0.6 * scale else "black")
        ax.text(j, i, text, ha="center", va="center", fontsize="x-small", color=colour)
    if "teacher" in series and len(series) > 1:
        ax.axhline(0.5, color="black", linewidth=1.2)  # the teacher above, the RGB students below
    geometry = set(table.get("geometry_classes", []))
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([f"{n} *" if n in geometry else n for n in names], rotation=45, ha="right")
    ax.set_yticks(np.arange(len(series)))
    ax.set_yticklabels(list(series))
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02).set_label("IoU gain (points)")
    ax.set_title("per-class IoU gain over the RGB baseline, test (* = largest teacher gap;\n"
                 f"colours clipped at \u00b1{scale:.1f}, the students' largest)", fontsize="medium")
    return _save(fig, out_path)


def row_styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Matplotlib styles for the rows of a line plot: the baseline and its named rows (grid.NAMED_ROWS, e.g. the
    wide student) grey, each other method its own colour and marker, an X = zeros twin (`<method>_xzeros`) of a
    method in the plot its method's, dashed with hollow markers."""
    def twin_of(row: str) -> str | None:
        parent = row[:-len(XZEROS)] if row.endswith(XZEROS) else None
        return parent if parent in methods else None

    baselines = [m for m in methods if m == BASELINE or (m in NAMED_ROWS and NAMED_ROWS[m].method == BASELINE)]
    own = [m for m in methods if m not in baselines and twin_of(m) is None]
    styles: dict[str, dict[str, Any]] = {
        method: {"color": LINE_COLOURS[i % len(LINE_COLOURS)], "marker": LINE_MARKERS[i % len(LINE_MARKERS)],
                 "linestyle": "-"} for i, method in enumerate(own)}
    for method in baselines:
        styles[method] = ({"color": "tab:gray", "marker": "o", "linestyle": ":"} if method == BASELINE
                          else {"color": "dimgray", "marker": "s", "linestyle": "-."})
    for method in methods:
        if method not in styles:
            styles[method] = {**styles[twin_of(method)], "linestyle": "--", "markerfacecolor": "none"}
    return styles


def plot_budgets(table: Mapping[str, Any], out_path: Path) -> Path:
    """mIoU against the student's iterations, one line per row (mean, error bars = std over seeds),
    a test and a val panel (val alone in a val-only study), the teacher as a dashed line."""
    budgets = table.get("budgets") or {}
    rows = [r for r in budgets.get("rows", [])
            if any(c["mean"] is not None or c["val_mean"] is not None for c in r["by_budget"].values())]
    if not rows:
        raise ValueError("plot_budgets: no finished budget runs to draw")
    splits = [("val", "val_", budgets.get("teacher_val_miou"))]
    if not table.get("val_only"):  # a val-only study has no test panel to draw
        splits.insert(0, ("test", "", budgets.get("teacher_miou")))
    fig = Figure(figsize=(5.0 * len(splits), 3.8))
    panels = list(np.atleast_1d(fig.subplots(1, len(splits), sharey=True)))
    styles = row_styles([row["method"] for row in rows])
    for ax, (split, key, teacher) in zip(panels, splits):
        for row in rows:
            points = [(int(b), c[f"{key}mean"], c[f"{key}std"] or 0.0) for b, c in row["by_budget"].items()
                      if c[f"{key}mean"] is not None]
            if not points:
                continue
            x, mean, std = (np.asarray(v, dtype=float) for v in zip(*sorted(points)))
            ax.errorbar(x, 100 * mean, yerr=100 * std, capsize=3, label=row["method"], **styles[row["method"]])
        if teacher is not None:
            ax.axhline(100 * teacher, color="tab:green", linestyle="--", label=f"teacher {100 * teacher:.1f}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets["iters"])
        ax.set_xticklabels([str(b) for b in budgets["iters"]])
        ax.minorticks_off()
        ax.set_xlabel("student iterations")
        ax.set_title(f"{split} mIoU")
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("mIoU (%)")
    handles = {}
    for ax in panels:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    panels[-1].legend(list(handles.values()), list(handles), fontsize="small", loc="upper left",
                      bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("mIoU against the student budget: mean ± std over seeds")
    return _save(fig, out_path)


def plot_warm_start(table: Mapping[str, Any], out_path: Path) -> Path:
    """The warm-start rows: test mIoU bars (std whiskers) with the seeds as points, val means as
    diamonds; lines for the teacher and for where the baseline students started. A val-only study
    draws its val scores the same way (bars, seeds, the teacher's and the start's val)."""
    warm = table.get("warm_start") or {}
    val_only = bool(table.get("val_only"))
    split, key = ("val", "val_") if val_only else ("test", "")
    rows = [r for r in warm.get("rows", []) if r[f"{key}mean"] is not None]
    if not rows:
        raise ValueError("plot_warm_start: no finished warm-start runs to draw")
    fig = Figure(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.8))
    ax = fig.subplots()
    x = np.arange(len(rows))
    colors = ["tab:gray" if r["method"] == BASELINE else "tab:blue" for r in rows]
    ax.bar(x, [100 * r[f"{key}mean"] for r in rows], 0.6, yerr=[100 * (r[f"{key}std"] or 0.0) for r in rows],
           capsize=4, color=colors, alpha=0.75)
    for i, row in enumerate(rows):
        points = 100 * np.asarray(row[f"{key}miou"], dtype=float)
        jitter = np.linspace(-0.12, 0.12, len(points)) if len(points) > 1 else np.zeros(1)
        ax.scatter(i + jitter, points, s=14, color="black", zorder=3, label=f"{split}, per seed" if i == 0 else None)
        if not val_only and row.get("val_mean") is not None:
            ax.scatter([i], [100 * row["val_mean"]], s=28, marker="D", facecolors="none", edgecolors="tab:purple",
                       zorder=3, label="val mean" if i == 0 else None)
    teacher = table.get("teacher_val_miou") if val_only else warm.get("teacher_miou")
    if teacher is not None:
        ax.axhline(100 * teacher, color="tab:green", linestyle="--", label=f"teacher {100 * teacher:.1f}")
    start = warm.get("start_val_mean" if val_only else "start_mean")
    if start is not None:
        ax.axhline(100 * start, color="tab:gray", linestyle=":", label=f"start: baseline students {100 * start:.1f}")
    ax.set_xticks(x)
    ax.set_xticklabels([r["method"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel(f"{split} mIoU (%)")
    ax.set_ylim(0, None)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"warm start: +{warm['iters']} iterations from the baseline students")
    return _save(fig, out_path)


def finished_ablation_rows(table: Mapping[str, Any]) -> dict[str, list]:
    """{ablation: its rows with a finished student run}, for the ablations that have any."""
    rows = {name: [r for r in a["rows"] if r.get("mean") is not None and not r.get("teacher_only")]
            for name, a in table["ablations"].items()}
    return {name: finished for name, finished in rows.items() if finished}


def plot_ablations(table: Mapping[str, Any], out_path: Path, columns: int = 4) -> Path:
    """One panel per ablation axis: each variant's test mIoU per seed (dots) and mean (tick), its val
    mean (hollow diamond), the baseline's and the default method's test means as lines, and for
    axes that change the teacher, that variant's teacher (green x)."""
    axes_rows = finished_ablation_rows(table)
    if not axes_rows:
        raise ValueError("plot_ablations: no finished ablation runs to draw")
    means = {m["method"]: m["mean"] for m in table["methods"] if m["mean"] is not None}
    n_cols = min(columns, len(axes_rows))
    n_rows = -(-len(axes_rows) // n_cols)
    fig = Figure(figsize=(3.4 * n_cols, 2.9 * n_rows))
    panels = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (name, rows) in zip(panels, axes_rows.items()):
        ablation = table["ablations"][name]
        x = np.arange(len(rows))
        ax.scatter(x, [100 * r["mean"] for r in rows], s=500, marker="_", color="tab:blue", linewidths=2.5,
                   zorder=2, label="test mean")  # a tick, not a bar: the axis does not start at zero
        for i, row in enumerate(rows):
            ax.scatter(np.full(len(row["miou"]), i), 100 * np.asarray(row["miou"], dtype=float), s=12,
                       color="black", zorder=3, label="test, per seed" if i == 0 else None)
            if row.get("val_mean") is not None:
                ax.scatter([i], [100 * row["val_mean"]], s=28, marker="D", facecolors="none",
                           edgecolors="tab:purple", zorder=3, label="val mean" if i == 0 else None)
            if ablation.get("changes_teacher") and row.get("teacher_miou") is not None:
                ax.scatter([i], [100 * row["teacher_miou"]], s=30, marker="x", color="tab:green", zorder=3,
                           label="its teacher" if i == 0 else None)
        if BASELINE in means:
            ax.axhline(100 * means[BASELINE], color="tab:gray", linestyle="--", label="baseline, test mean")
        if ablation["method"] in means:
            ax.axhline(100 * means[ablation["method"]], color="tab:blue", linestyle=":",
                       label=f"{ablation['method']} defaults, test mean")
        values = [100 * v for r in rows for v in (*r["miou"], r.get("val_mean"), r.get("teacher_miou")
                                                    if ablation.get("changes_teacher") else None) if v is not None]
        values += [100 * means[k] for k in (BASELINE, ablation["method"]) if k in means]
        span = max(values) - min(values)
        ax.set_ylim(min(values) - 0.15 * span - 0.5, max(values) + 0.15 * span + 0.5)  # zoomed: see the baseline line
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_xticks(x)
        ax.set_xticklabels([r["variant"] for r in rows], rotation=30, ha="right", fontsize="small")
        ax.set_title(name, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    for ax in panels[len(axes_rows):]:
        ax.set_visible(False)
    panels[0].set_ylabel("mIoU (%)")
    handles = {}
    for ax in panels[:len(axes_rows)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize="small",
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("ablations: test mIoU per variant (y axes zoomed, not from zero)")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return _save(fig, out_path)


def focus_maps(maps: Sequence[np.ndarray], classes: Sequence[int], ignore_index: int) -> list[np.ndarray]:
    """Class maps with `classes` renumbered 0..k-1, every other class k ("other"), ignore kept."""
    lut = np.full(256, len(classes), dtype=np.uint8)
    for new, old in enumerate(classes):
        lut[old] = new
    lut[ignore_index] = ignore_index
    return [lut[np.asarray(m, dtype=np.uint8)] for m in maps]


def distinct_colours(colours: Sequence[Sequence[int]], other: Sequence[int] = OTHER_GREY) -> list[tuple[int, ...]]:
    """The class colours, each too close (RGB distance < MIN_COLOUR_DISTANCE) to `other` or to an
    earlier one replaced by the first fallback colour far enough from all kept so far."""
    kept: list[tuple[int, ...]] = [tuple(int(c) for c in other)]
    out = []
    for colour in colours:
        candidates = [tuple(int(c) for c in colour), *FALLBACK_COLOURS]
        chosen = next((c for c in candidates
                       if all(np.linalg.norm(np.subtract(c, k)) >= MIN_COLOUR_DISTANCE for k in kept)), candidates[-1])
        kept.append(chosen)
        out.append(chosen)
    return out


def pick_frames(labels: Sequence[np.ndarray], classes: Sequence[int], k: int) -> list[int]:
    """Indices of the k frames with the most pixels of `classes` (ties: earlier frame first)."""
    counts = [int(np.isin(label, list(classes)).sum()) for label in labels]
    return sorted(sorted(range(len(labels)), key=lambda i: (-counts[i], i))[:k])


def plot_geometry_examples(cfg, networks: Mapping[str, tuple[Any, str]], class_names: Sequence[str],
                           out_path: Path, frames: int = 4) -> Path:
    """RGB | truth | one column per network, on the test frames richest in `class_names`, only those coloured.

    `networks` maps a column title to (network, role) as heldout.example_predictions takes it.
    """
    import torch

    from lix_train.data.build import build_datasets, resolve_root
    from lix_train.data.classes import IGNORE_INDEX
    from lix_train.engine.plots import plot_qualitative
    from lix_train.heldout import example_predictions

    root = resolve_root(cfg.data, progress=False)
    test = build_datasets(cfg.data, cfg.data.modality, ("test",), root)["test"]
    class_set = test.class_set
    ids = [class_set.names.index(n) for n in class_names]
    labels = [np.asarray(test.source[i].label) for i in range(len(test))]
    indices = pick_frames(labels, ids, frames)
    rgbs, truths, predictions = example_predictions(networks, test, indices, cfg.eval, torch.device("cpu"),
                                                    cfg.data.transforms.mean, cfg.data.transforms.std)
    palette = np.zeros((256, 3), dtype=np.uint8)
    full = class_set.palette()
    for new, colour in enumerate(distinct_colours([full[old] for old in ids])):
        palette[new] = colour
    palette[len(ids)] = OTHER_GREY
    return plot_qualitative(rgbs, focus_maps(truths, ids, IGNORE_INDEX),
                            {name: focus_maps(p, ids, IGNORE_INDEX) for name, p in predictions.items()},
                            palette, out_path, class_names=[*class_names, "other classes"])


def load_student(path: Path):
    """A student network rebuilt from its student.pt signature, with its weights."""
    from lix_train.engine.checkpoint import load_checkpoint, restore_checkpoint
    from lix_train.experiment import network_from_signature

    ckpt = load_checkpoint(path)
    network = network_from_signature(ckpt["signature"])
    restore_checkpoint(ckpt, path, model=network, signature=ckpt["signature"])
    return network


def example_columns(table: Mapping[str, Any], planned: Sequence[Any]) -> dict[str, Path]:
    """Students in the qualitative grid (first finished seed each): baseline, the strongest other method, lix."""
    means = {m["method"]: m["mean"] for m in table["methods"] if m["mean"] is not None}
    others = [m for m in means if m not in (BASELINE, "lix")]
    wanted = [BASELINE, *(sorted(others, key=lambda m: -means[m])[:1]), "lix"]
    columns = {}
    for method in wanted:
        if method not in means:
            continue
        for run in planned:
            if run.spec.group == "methods" and run.spec.label == method and (run.run_dir / "student.pt").is_file():
                columns[method] = run.run_dir / "student.pt"
                break
    return columns


def draw_study_plots(out: Path, table: Mapping[str, Any], planned: Sequence[Any]) -> list[Path]:
    """out/plots/: miou_bars.png, class_gains.png, ablations.png, budgets.png, warm_start.png,
    geometry_examples.png (each when its inputs exist)."""
    folder = Path(out) / PLOTS_DIR
    written = []
    if any(m["mean"] is not None for m in table["methods"]):
        written.append(plot_miou_bars(table, folder / "miou_bars.png"))
    if any(m.get("per_class_gain") for m in table["methods"] if m["method"] != BASELINE) or (
            table.get("teacher") or {}).get("per_class_gain"):
        written.append(plot_class_gains(table, folder / "class_gains.png"))
    if finished_ablation_rows(table):
        written.append(plot_ablations(table, folder / "ablations.png"))
    if any(c["mean"] is not None or c["val_mean"] is not None
           for r in (table.get("budgets") or {}).get("rows", []) for c in r["by_budget"].values()):
        written.append(plot_budgets(table, folder / "budgets.png"))
    if any(r["mean"] is not None for r in (table.get("warm_start") or {}).get("rows", [])):
        written.append(plot_warm_start(table, folder / "warm_start.png"))
    main = [p for p in planned if p.spec.group == "methods"]
    frames = main[0].cfg.output.qualitative_frames if main else 0
    columns = example_columns(table, planned)
    if table.get("geometry_classes") and frames and columns and (main[0].teacher_dir / "teacher.pt").is_file():
        from lix_train.distill import load_teacher

        cfg = main[0].cfg
        networks = {"teacher": (load_teacher(cfg, main[0].teacher_dir / "teacher.pt"), "teacher")}
        networks.update({method: (load_student(path), "student") for method, path in columns.items()})
        written.append(plot_geometry_examples(cfg, networks, table["geometry_classes"],
                                              folder / "geometry_examples.png", frames))
    return written
