"""The study's tables as text: table.md (and the val-only table.md) and tuning.md, each written with its .json twin.

Percentage points with one decimal, mean ± sample std over seeds, the share of the teacher gap
closed in whole percent; every table starts with the command, the commits, the software and the
protocol it was made with. The numbers come from table.py (plain data, what the .json files hold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from lix_train.report import write_json, write_text
from lix_train.study.grid import BASELINE, row_label
from lix_train.study.table import gap_share

TABLE_MD = "table.md"
TABLE_JSON = "table.json"
TUNING_MD = "tuning.md"
TUNING_JSON = "tuning.json"


def write_tables(out: Path, table: Mapping[str, Any]) -> tuple[Path, Path]:
    """out/table.md and out/table.json, each written atomically."""
    return write_text(out / TABLE_MD, format_markdown(table)), write_json(out / TABLE_JSON, table)


def write_tuning(out: Path, tuning: Mapping[str, Any]) -> tuple[Path, Path]:
    """out/tuning.md and out/tuning.json, each written atomically."""
    return write_text(out / TUNING_MD, format_tuning(tuning)), write_json(out / TUNING_JSON, tuning)


# --- numbers -----------------------------------------------------------------------------------

def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    shown = round(100 * value, 1) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0
    return f"{shown:+.1f}" if signed else f"{shown:.1f}"


def _mean_std(row: Mapping[str, Any], key: str = "") -> str:
    """'48.1 ± 0.6' from row[key + 'mean'] and row[key + 'std'] ('val_' for the validation columns)."""
    if row.get(f"{key}mean") is None:
        return "-"
    std = row.get(f"{key}std")
    return _pct(row[f"{key}mean"]) + ("" if std is None else f" ± {100 * std:.1f}")


def _seeds(row: Mapping[str, Any]) -> str:
    return ", ".join(_pct(v) for v in row.get("miou", [])) or "-"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


# --- table.md ----------------------------------------------------------------------------------

def _header_lines(table: Mapping[str, Any], title: str, val_only: bool) -> list[str]:
    """The title, command, commits and protocol every table.md starts with."""
    return [f"# {title} ({table['protocol']['preset']} preset)", "",
            f"Command: `{table['command']}`  ", f"Commit: `{table['commit']}`  ",
            "Runs trained at: " + (", ".join(f"`{c}` ({n})" for c, n in table.get("run_commits", {}).items()) or "-")
            + "  ",
            "Software: " + ("; ".join(f"{e} ({n})" for e, n in table.get("run_environments", {}).items()) or "-"),
            "", "Protocol:", "", *_protocol_lines(table["protocol"], val_only), ""]


def _protocol_lines(p: Mapping[str, Any], val_only: bool = False) -> list[str]:
    t, s = p["teacher"], p["student"]
    scenes = ", ".join(p.get("test_scenes") or []) or "?"
    scored = ("scored on the validation drives only (eval.score_test false: the test split is never read)"
              if val_only else f"test split: {p.get('test_frames') or '?'} frames of the held-out scenes {scenes}")
    return [
        f"- Data: {p['dataset']} ({p['data_root']}), trained and scored at {p['resolution'][0]}x{p['resolution'][1]}; "
        f"{scored}, {p['eval_mode']}-image inference.",
        f"- Teacher: RGB+{p['modality']}, {t['encoder']} x{t['width']} (FPN {t['decoder_channels']}), "
        f"{t['fusion']} fusion; {t['iters']} iterations at batch {t['batch_size']}, {t['optimizer']} lr {t['lr']}.",
        f"- Student: RGB only, {s['encoder']} x{s['width']} (FPN {s['decoder_channels']}); {s['iters']} iterations at "
        f"batch {s['batch_size']}, {s['optimizer']} lr {s['lr']}, the same schedule and data for every method.",
        f"- Seeds: {', '.join(map(str, p['seeds']))} (student.train.seed). Seeds vary the student only: each "
        f"teacher config is trained once (teacher.train.seed {p['teacher_seed']}) and the frozen teacher is shared "
        "by every run.",
    ]


def _tuned_line(table: Mapping[str, Any]) -> str:
    if table.get("untuned"):
        return "Settings: every method at the preset's defaults (--untuned)."
    tuned = table.get("tuned") or {}
    if not tuned:
        return "Settings: every method at the preset's defaults (lix_train/study/tuned.yaml sets none)."
    listed = "; ".join(f"{m}: " + ", ".join(f"`{k}={v}`" for k, v in o.items()) for m, o in tuned.items())
    return (f"Settings: the preset's defaults, except the tuned ones (lix_train/study/tuned.yaml, each with its "
            f"evidence there): {listed}. Rows marked (tuned) use them.")


def format_markdown(table: Mapping[str, Any]) -> str:
    """table.md: protocol, the methods table, per-class gains, one table per ablation."""
    if table.get("val_only"):
        return format_val_markdown(table)
    p = table["protocol"]
    lines = [*_header_lines(table, "LIX-Seg comparison", val_only=False),
             "Test mIoU in %, mean ± sample std over seeds; gap closed = (student - baseline) / (teacher - baseline). "
             "Val: the same students on the validation drives, where settings are chosen (never on test).",
             ""]
    lines += [_tuned_line(table), ""]
    lines += ["## Methods", "", "| model | mIoU | per seed | vs baseline | gap closed | val mIoU |",
              "|---|---|---|---|---|---|"]
    teacher = table.get("teacher")
    if teacher:
        lines.append(f"| teacher (RGB+{p['modality']}) | {_pct(teacher['miou'])} | - | "
                     f"{_pct(teacher['delta_vs_baseline'], True)} | 100 % | - |")
    control = table["ablations"].get("control")
    if control:
        for row in control["rows"]:
            seeds = row.get("teacher_mious") or []
            score = _pct(row["teacher_miou"]) + ("" if row.get("teacher_std") is None else
                                                 f" ± {100 * row['teacher_std']:.1f}")
            per_seed = " / ".join(f"{100 * v:.1f}" for v in seeds) + " (teacher seeds)" if len(seeds) > 1 else "-"
            lines.append(f"| control: teacher architecture, X = zeros | {score} | {per_seed} | "
                         f"{_pct(row['delta_vs_baseline'], True)} | {_share(row['share_of_teacher_gap'])} | - |")
    for row in table["methods"]:
        lines.append(_method_line(row))
    lines += _choice_lines(table)
    lines += _check_lines(table)
    lines += _class_table(table)
    lines += _budget_lines(table)
    lines += _warm_lines(table)
    for name, ablation in table["ablations"].items():
        if name == "control":
            continue
        lines += [*_ablation_heading(name, ablation, own_teachers=True),
                  "| variant | teacher mIoU | mIoU | per seed | vs baseline | gap closed | val mIoU |",
                  "|---|---|---|---|---|---|---|"]
        for row in ablation["rows"]:
            lines.append(f"| {row['variant']} | {_pct(row['teacher_miou'])} | {_mean_std(row)} | {_seeds(row)} | "
                         f"{_pct(row['delta_vs_baseline'], True)} | {_share(row['gap_share'])} | "
                         f"{_mean_std(row, 'val_')} |")
    if table.get("missing"):
        lines += ["", f"Unfinished runs (left out above): {', '.join(table['missing'])}."]
    return "\n".join(lines) + "\n"


def _method_line(row: Mapping[str, Any]) -> str:
    return (f"| {_row_name(row)} | {_mean_std(row)} | {_seeds(row)} | {_pct(row['delta_vs_baseline'], True)} | "
            f"{_share(row['gap_share'])} | {_mean_std(row, 'val_')} |")


def _choice_lines(table: Mapping[str, Any]) -> list[str]:
    """The distiller the main table's val scores choose (table.val_choice), beside the package's default."""
    choice = table.get("val_choice")
    if not choice:
        return []
    runner = ("" if choice["runner_up"] is None else
              f"; next: {choice['runner_up']}, {100 * choice['margin']:.1f} points lower")
    line = (f"Chosen on val: **{choice['method']}**, the best val mean ({_pct(choice['val_mean'])}) among the "
            f"distillers scored at {choice['seeds']} seed{'s' if choice['seeds'] != 1 else ''}{runner}.")
    default = table.get("default_method")
    if default is not None:
        line += (f" The package default (`distill.method`) is `{default}`"
                 + (", the same." if default == choice["method"] else ": the evidence here chooses another."))
    return ["", line]


def _check_lines(table: Mapping[str, Any]) -> list[str]:
    """The val-chosen distiller's test checks against the baseline (table.checks)."""
    checks = table.get("checks")
    if not checks:
        return []
    m = checks["method"]
    budgets = "; ".join(f"at {b} iterations {_share(v)}" for b, v in checks["gap_share_by_budget"].items())
    lines = ["", f"Checks of {m} on test against the labels-only baseline:", "",
             f"- share of the teacher gap closed: {_share(checks['gap_share'])}" + (f" ({budgets})" if budgets else ""),
             f"- every {m} seed above every baseline seed: {'yes' if checks['every_seed_above'] else 'no'} "
             f"({checks['seeds']} and {checks['baseline_seeds']} seeds)"]
    if checks["xzeros_kept"] is not None:
        lines.append(f"- share of its gain kept by {m}_xzeros (its loss from the X = zeros teacher; geometry "
                     f"means well under 100 %): {_share(checks['xzeros_kept'])}")
    return lines


def _row_name(row: Mapping[str, Any]) -> str:
    name = row_label(row["method"])
    return name + (" (tuned)" if row.get("tuned") and name == row["method"] else "")


def _class_table(table: Mapping[str, Any]) -> list[str]:
    baseline = next((m for m in table["methods"] if m["method"] == BASELINE), None)
    if baseline is None or not baseline["per_class_iou"]:
        return []
    others = [m for m in table["methods"] if m["method"] != BASELINE]
    teacher = table.get("teacher")
    heads = (["teacher"] if teacher else []) + [m["method"] for m in others]
    geometry = set(table.get("geometry_classes", []))
    lines = ["", "## Per-class IoU gain over the RGB baseline (points)", "",
             "Classes marked * have the largest teacher-minus-baseline gap (where geometry matters most).", "",
             "| class | baseline IoU | " + " | ".join(heads) + " |", "|---" * (2 + len(heads)) + "|"]
    for name, base in baseline["per_class_iou"].items():
        gains = ([teacher["per_class_gain"].get(name)] if teacher else []) + [m["per_class_gain"].get(name)
                                                                             for m in others]
        label = f"{name} *" if name in geometry else name
        lines.append(f"| {label} | {_pct(base)} | " + " | ".join(_pct(g, True) for g in gains) + " |")
    return lines


def _budget_lines(table: Mapping[str, Any], val_only: bool = False) -> list[str]:
    """The budget section: test and val per budget, or val alone in a val-only study."""
    budgets = table.get("budgets")
    if not budgets:
        return []
    iters = [str(b) for b in budgets["iters"]]
    splits = ("val_",) if val_only else ("", "val_")
    heads = " | ".join(f"{b} {'val' if key else 'test'}" for b in iters for key in splits)
    lines = ["", "## Student iteration budgets", "",
             f"Each row at every budget (student.train.iters; {budgets['preset_iters']} is the preset's, the main "
             "table); the same seeds, data and teacher. " + ("Val " if val_only else "") +
             "mIoU in %, mean ± std over seeds.", "",
             f"| model | {heads} |", "|---" * (1 + len(splits) * len(iters)) + "|"]
    teacher = {"": budgets.get("teacher_miou"), "val_": budgets.get("teacher_val_miou")}
    if teacher[splits[0]] is not None:
        lines.append("| teacher | " + " | ".join(_pct(teacher[key]) for _ in iters for key in splits) + " |")
    for row in budgets["rows"]:
        cells = " | ".join(_mean_std(row["by_budget"][b], key) for b in iters for key in splits)
        lines.append(f"| {row['method']} | {cells} |")
    return lines


def _seed_list(seeds: Sequence[int] | None) -> str:
    """'seed 0' / 'seeds 0, 1, 2' ('their seeds' for a track with no runs)."""
    if not seeds:
        return "their seeds"
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def _warm_lines(table: Mapping[str, Any], val_only: bool = False) -> list[str]:
    """The warm-start section, against the baseline's own warm-start row; val columns alone in a val-only study."""
    warm = table.get("warm_start")
    if not warm:
        return []
    start = (f"{_pct(warm.get('start_val_mean'))} val mIoU" if val_only
             else f"{_pct(warm.get('start_mean'))} test mIoU")
    lines = ["", f"## Warm start: {warm['iters']} more iterations from the baseline students", "",
             "Every run starts from the finished baseline student of its seed (fresh optimiser and schedule); "
             f"the baseline row continues with labels only, the fair control: 'vs baseline' and the gap closed are "
             "measured against it. The baseline students it starts from "
             f"({_seed_list(warm.get('start_seeds'))}) scored {start}.", ""]
    if not val_only:
        return lines + ["| model | mIoU | per seed | vs baseline | gap closed | val mIoU |", "|---|---|---|---|---|---|",
                        *(_method_line(row) for row in warm["rows"])]
    base = next((row["val_mean"] for row in warm["rows"] if row["method"] == BASELINE), None)
    teacher = table.get("teacher_val_miou")
    return lines + ["| model | val mIoU | per seed | vs baseline | gap closed |", "|---|---|---|---|---|",
                    *(_val_method_line(row, base, teacher) for row in warm["rows"])]


def _ablation_heading(name: str, ablation: Mapping[str, Any], own_teachers: bool) -> list[str]:
    """`## Ablation NAME: description` and what it varies; `own_teachers`: say that a changed teacher is each
    variant's own reference."""
    varies = f"Method {ablation['method']}; varies {', '.join(f'`{k}`' for k in ablation['keys'])}"
    tail = ("; each variant has its own teacher, and its gap closed is measured against that teacher."
            if own_teachers and ablation["changes_teacher"] else ".")
    return ["", f"## Ablation `{name}`: {ablation['description']}", "", varies + tail, ""]


# --- table.md of a val-only study --------------------------------------------------------------

def format_val_markdown(table: Mapping[str, Any]) -> str:
    """table.md of a val-only study: the same sections as format_markdown, every score on val."""
    p = table["protocol"]
    base = next((m["val_mean"] for m in table["methods"] if m["method"] == BASELINE), None)
    teacher = table.get("teacher_val_miou")
    lines = [*_header_lines(table, "LIX-Seg comparison on val", val_only=True),
             "Val mIoU in %, mean ± sample std over seeds; gap closed = (student - baseline) / (teacher - baseline), "
             "all on the validation drives, where settings are chosen. No run read the test split.", "",
             _tuned_line(table), "",
             "## Methods", "", "| model | val mIoU | per seed | vs baseline | gap closed |", "|---|---|---|---|---|"]
    if teacher is not None:
        lines.append(f"| teacher (RGB+{p['modality']}) | {_pct(teacher)} | - | "
                     f"{_pct(None if base is None else teacher - base, True)} | 100 % |")
    lines += [_val_method_line(row, base, teacher) for row in table["methods"]]
    lines += _choice_lines(table)
    lines += _budget_lines(table, val_only=True)
    lines += _warm_lines(table, val_only=True)
    for name, ablation in table["ablations"].items():
        rows = [row for row in ablation["rows"] if not row["teacher_only"]]
        if not rows:
            continue
        lines += [*_ablation_heading(name, ablation, own_teachers=False),
                  "| variant | val mIoU | per seed | vs baseline | gap closed |", "|---|---|---|---|---|"]
        lines += [f"| {row['variant']} | {_val_cells(row, base, teacher)} |" for row in rows]
    if table.get("missing"):
        lines += ["", f"Unfinished runs (left out above): {', '.join(table['missing'])}."]
    return "\n".join(lines) + "\n"


def _val_cells(row: Mapping[str, Any], base: float | None, teacher: float | None) -> str:
    """'val mIoU | per seed | vs baseline | gap closed' of a row, all on the validation drives."""
    mean = row.get("val_mean")
    delta = None if mean is None or base is None else mean - base
    per_seed = ", ".join(_pct(v) for v in row.get("val_miou", [])) or "-"
    return (f"{_mean_std(row, 'val_')} | {per_seed} | {_pct(delta, True)} | "
            f"{_share(gap_share(mean, base, teacher))}")


def _val_method_line(row: Mapping[str, Any], base: float | None, teacher: float | None) -> str:
    """_method_line of a val-only table: every score on the validation drives."""
    return f"| {_row_name(row)} | {_val_cells(row, base, teacher)} |"


# --- tuning.md ---------------------------------------------------------------------------------

def format_tuning(tuning: Mapping[str, Any], tuned_file: str = "lix_train/study/tuned.yaml") -> str:
    """tuning.md: per method, its grid points best first by val mIoU, and the entry to copy into tuned.yaml."""
    from lix_train.study.tuning import yaml_line

    lines = ["# LIX-Seg tuning on the val split", "", f"Command: `{tuning['command']}`  ",
             f"Commit: `{tuning['commit']}`", "",
             "Val mIoU in %, mean ± sample std over seeds. The tuning runs never read the test split "
             "(eval.score_test false): there is no test column." +
             (f" Teacher val mIoU: {_pct(tuning['teacher_val_miou'])}." if tuning.get("teacher_val_miou") else "")]
    base_row = tuning["methods"].get(BASELINE, {}).get("rows", [{}])[0]
    reference = base_row.get("val_mean")
    base_by_seed = dict(zip(base_row.get("seeds", []), base_row.get("val_miou", [])))
    if reference is not None:
        lines += ["", f"Reference: the labels-only baseline at the same seeds, val mIoU {_pct(reference)}; each "
                      "point's 'vs baseline' is against the baseline's mean at that point's own seeds."]
    if any(len(row["seeds"]) < len(base_row.get("seeds", [])) for entry in tuning["methods"].values()
           for row in entry["rows"] if row["val_mean"] is not None):
        lines += ["", "A screen (--tune-top): every point ran at the first seed, the best of each method at every "
                      "seed; points at more seeds rank first, and the best is chosen among them."]
    for method, entry in tuning["methods"].items():
        if method == BASELINE:
            continue
        lines += ["", f"## {method}", "", "| point | val mIoU | vs baseline | per seed |", "|---|---|---|---|"]
        for row in entry["rows"]:
            shown = ", ".join(f"{k}={v}" for k, v in row["overrides"].items())
            per_seed = ", ".join(_pct(v) for v in row["val_miou"]) or "-"
            same = [base_by_seed[seed] for seed in row["seeds"] if seed in base_by_seed]
            delta = ("-" if row["val_mean"] is None or not row["seeds"] or len(same) != len(row["seeds"])
                     else f"{100 * (row['val_mean'] - sum(same) / len(same)):+.1f}")
            lines.append(f"| {shown} | {_mean_std(row, 'val_')} | {delta} | {per_seed} |")
        if entry["best"] is not None:
            lines += ["", f"Best on val: copy into {tuned_file} (with this command as its evidence): "
                          f"`{yaml_line(method, entry['best'])}`"]
        else:
            lines += ["", "Unfinished points: rerun the command before choosing."]
    if tuning.get("missing"):
        lines += ["", f"Unfinished runs: {', '.join(tuning['missing'])}."]
    return "\n".join(lines) + "\n"
