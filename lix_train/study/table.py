"""Aggregate the study's runs: mean +- std over seeds, share of the teacher gap closed, per-class gains.

    gap share = (student - baseline) / (teacher - baseline)

the headline distillation figure of benchmark-notes.md: 0 = no better than the RGB-only
baseline, 1 = as good as the RGB+X teacher. Means are over seeds; std is the sample standard
deviation (n - 1), absent for a single seed. Fractions in table.json (as in metrics.json),
percentage points in table.md. Every table names the command, the commit and the protocol.

Besides the main table (one row per method or named row, e.g. lix_xzeros) and the ablations:
the student budgets (test and val per budget), the warm-start track (measured against the
baseline's own warm-start row), the tuning table (val only: tuning runs have no test score),
and results.json, the per-seed numbers in percent for other tools.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lix_train.report import write_json, write_text
from lix_train.study.ablations import AblationSet
from lix_train.study.grid import BASELINE, BUDGETS_GROUP, METHODS_GROUP, TUNING_GROUP, WARM_GROUP, RunSpec, row_label

TABLE_MD = "table.md"
TABLE_JSON = "table.json"
TUNING_MD = "tuning.md"
TUNING_JSON = "tuning.json"
RESULTS_JSON = "results.json"
GEOMETRY_CLASSES = 4


@dataclass
class RunResult:
    """A spec and its metrics.json (None while the run is unfinished)."""

    spec: RunSpec
    metrics: dict | None


# --- pure math ---------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample std with n - 1); std None for one value; (None, None) for none."""
    values = [float(v) for v in values]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def gap_share(student: float | None, baseline: float | None, teacher: float | None) -> float | None:
    """(student - baseline) / (teacher - baseline); None when a score is missing or the gap is zero."""
    if student is None or baseline is None or teacher is None or teacher == baseline:
        return None
    return (student - baseline) / (teacher - baseline)


def class_means(per_class: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per-class mean IoU over runs; a class absent (None) in a run is left out of its mean."""
    if not per_class:
        return {}
    out = {}
    for name in per_class[0]:
        values = [r[name] for r in per_class if r.get(name) is not None]
        out[name] = sum(values) / len(values) if values else None
    return out


def class_gains(model: Mapping[str, float | None], baseline: Mapping[str, float | None]) -> dict[str, float | None]:
    """Per-class IoU of a model minus the baseline's (None where either is missing)."""
    return {name: None if model.get(name) is None or baseline.get(name) is None else model[name] - baseline[name]
            for name in baseline}


def geometry_classes(teacher: Mapping[str, float | None], baseline: Mapping[str, float | None],
                     k: int = GEOMETRY_CLASSES) -> list[str]:
    """The (at most) k classes with the largest positive teacher-minus-baseline IoU gap: where geometry matters most."""
    gaps = {n: g for n, g in class_gains(teacher, baseline).items() if g is not None and g > 0}
    return sorted(gaps, key=lambda n: -gaps[n])[:k]


# --- aggregation -------------------------------------------------------------------------------

def _student_row(results: Sequence[RunResult], baseline_mean: float | None, teacher: float | None) -> dict:
    """Test (over the runs scored on test) and val scores of one row's runs; an unfinished run is 'missing'."""
    finished = [r for r in results if r.metrics is not None]
    tested = [r for r in finished if r.metrics.get("student")]
    scores = [r.metrics["student"]["miou"] for r in tested]
    mean, std = mean_std(scores)
    validated = [r for r in finished if r.metrics.get("student_val")]
    val = [r.metrics["student_val"]["miou"] for r in validated]
    val_mean, val_std = mean_std(val)
    return {
        "runs": [r.spec.name for r in results],
        "missing": [r.spec.name for r in results if r.metrics is None],
        "seeds": [r.spec.seed for r in tested],
        "miou": scores,
        "mean": mean,
        "std": std,
        "delta_vs_baseline": None if mean is None or baseline_mean is None else mean - baseline_mean,
        "gap_share": gap_share(mean, baseline_mean, teacher),
        "per_class_iou": class_means([r.metrics["student"]["per_class_iou"] for r in tested]),
        # validation drives: what settings are chosen on (over the finished runs that have it)
        "val_seeds": [r.spec.seed for r in validated],
        "val_miou": val, "val_mean": val_mean, "val_std": val_std,
    }


def _count_runs(results: Sequence[RunResult], key: Callable[[Mapping[str, Any]], str]) -> dict[str, int]:
    """{key of a finished run's metrics: how many finished runs have it}."""
    return dict(Counter(key(r.metrics) for r in results if r.metrics is not None))


def _by_row(results: Sequence[RunResult], group: str) -> dict[str, list[RunResult]]:
    rows: dict[str, list[RunResult]] = {}
    for r in results:
        if r.spec.group == group:
            rows.setdefault(r.spec.label, []).append(r)
    return rows


def _teacher_val(results: Sequence[RunResult]) -> float | None:
    """The teacher's val mIoU where a val-only run scored it (runs scored on test do not score it on val)."""
    for r in results:
        if r.metrics is not None and r.metrics.get("teacher_val"):
            return r.metrics["teacher_val"]["miou"]
    return None


def _teacher_score(results: Sequence[RunResult]) -> dict | None:
    for r in results:
        if r.metrics is not None and r.metrics.get("teacher"):
            return r.metrics["teacher"]
    return None


def aggregate(results: Sequence[RunResult], ablations: Sequence[AblationSet], protocol: dict, command: str,
              commit: str, *, tuned: Mapping[str, Mapping[str, Any]] | None = None, untuned: bool = False,
              budgets: Sequence[int] = (), warm_iters: int | None = None) -> dict:
    """The study's table as plain data (what table.json holds and table.md shows).

    `tuned`: the tuned.yaml settings the runs used (method -> overrides); `budgets`: the student
    budgets of the budget section (the preset's, protocol["student"]["iters"], is the main table);
    `warm_iters`: the warm-start track's iterations.
    """
    main = [r for r in results if r.spec.group == METHODS_GROUP]
    by_method = _by_row(results, METHODS_GROUP)
    teacher = _teacher_score(by_method.get(BASELINE, []) or [r for r in main if not r.spec.row])
    teacher_miou = teacher["miou"] if teacher else None
    baseline = _student_row(by_method.get(BASELINE, []), None, None)
    base_mean, base_classes = baseline["mean"], baseline["per_class_iou"]
    methods = []
    for method, runs in by_method.items():
        row = {"method": method, "tuned": dict(runs[0].spec.tuned), **_student_row(runs, base_mean, teacher_miou)}
        row["per_class_gain"] = class_gains(row["per_class_iou"], base_classes) if base_classes else {}
        methods.append(row)
    teacher_row = None
    if teacher is not None:
        teacher_row = {"miou": teacher_miou, "per_class_iou": teacher["per_class_iou"],
                       "delta_vs_baseline": None if base_mean is None else teacher_miou - base_mean,
                       "per_class_gain": class_gains(teacher["per_class_iou"], base_classes) if base_classes else {}}
    table = {
        "command": command,
        "commit": commit,
        "run_commits": _count_runs(results, lambda m: m.get("commit", "unrecorded")),  # a study may span commits
        # the libraries and CPU kernels of each finished run: numbers match bit for bit only within one
        "run_environments": _count_runs(results, lambda m: (m.get("environment") or {}).get("label", "unrecorded")),
        "protocol": protocol,
        "teacher": teacher_row,
        "methods": methods,
        "geometry_classes": geometry_classes(teacher["per_class_iou"], base_classes)
        if teacher is not None and base_classes else [],
        "ablations": {},
        "tuned": {m: dict(o) for m, o in (tuned or {}).items() if o and m in {r.spec.method for r in results}},
        "untuned": untuned,
        "teacher_val_miou": _teacher_val(results),
    }
    for ablation in ablations:
        table["ablations"][ablation.name] = _ablation_table(ablation, results, base_mean, teacher_miou)
    rows = [*methods, *(row for a in table["ablations"].values() for row in a["rows"])]
    if budgets:
        table["budgets"] = _budget_table(results, budgets, protocol["student"]["iters"], teacher_miou)
        rows += [cell for row in table["budgets"]["rows"] for cell in row["by_budget"].values()]
    if warm_iters is not None:
        table["warm_start"] = _warm_table(results, warm_iters, teacher_miou, base_mean, baseline["val_mean"])
        rows += table["warm_start"]["rows"]
    table["missing"] = sorted({name for row in rows for name in row["missing"]})
    # eval.score_test false: no run read test, so table.md shows the val scores in the main columns
    table["val_only"] = not any(row.get("miou") for row in rows) and any(row.get("val_miou") for row in rows)
    return table


def _budget_table(results: Sequence[RunResult], budgets: Sequence[int], preset_iters: int,
                  teacher: float | None) -> dict:
    """Per row, test and val at every budget; the preset's budget is the main table's runs."""
    iters = sorted({*budgets, preset_iters})
    main, other = _by_row(results, METHODS_GROUP), _by_row(results, BUDGETS_GROUP)
    rows = []
    for label, runs in main.items():
        by_budget = {}
        for b in iters:
            chosen = runs if b == preset_iters else [r for r in other.get(label, []) if r.spec.variant == str(b)]
            cell = _student_row(chosen, None, None)
            by_budget[str(b)] = {k: cell[k] for k in ("runs", "missing", "seeds", "miou", "mean", "std", "val_seeds",
                                                        "val_miou", "val_mean", "val_std")}
        rows.append({"method": label, "by_budget": by_budget})
    teacher_val = _teacher_val(results)
    return {"iters": iters, "preset_iters": preset_iters, "teacher_miou": teacher, "teacher_val_miou": teacher_val,
            "rows": rows}


def _warm_table(results: Sequence[RunResult], iters: int, teacher: float | None, start_mean: float | None,
                start_val_mean: float | None = None) -> dict:
    """The warm-start rows, each measured against the baseline's own warm-start row (the fair control);
    `start_mean` / `start_val_mean`: the baseline students' test / val mIoU where the track starts."""
    by_row = _by_row(results, WARM_GROUP)
    base = _student_row(by_row.get(BASELINE, []), None, None)
    rows = []
    for label, runs in by_row.items():
        row = {"method": label, "tuned": dict(runs[0].spec.tuned), **_student_row(runs, base["mean"], teacher)}
        row.pop("per_class_iou")
        rows.append(row)
    return {"iters": iters, "start_mean": start_mean, "start_val_mean": start_val_mean, "teacher_miou": teacher,
            "rows": rows}


def aggregate_tuning(results: Sequence[RunResult], protocol: dict, command: str, commit: str) -> dict:
    """The tuning table: per method, its grid points best first by mean val mIoU (val only, never test)."""
    tuning = [r for r in results if r.spec.group == TUNING_GROUP]
    methods: dict[str, dict[str, list[RunResult]]] = {}
    for r in tuning:
        methods.setdefault(r.spec.method, {}).setdefault(r.spec.variant, []).append(r)
    out = {}
    for method, points in methods.items():
        rows = []
        for label, runs in points.items():
            finished = [r for r in runs if r.metrics is not None and r.metrics.get("student_val")]
            val = [r.metrics["student_val"]["miou"] for r in finished]
            mean, std = mean_std(val)
            overrides = {k: v for k, v in runs[0].spec.overrides.items()
                         if k.startswith("distill.") and k != "distill.method"}
            rows.append({"point": label, "overrides": overrides, "runs": [r.spec.name for r in runs],
                         "missing": [r.spec.name for r in runs if r.metrics is None],
                         "seeds": [r.spec.seed for r in finished], "val_miou": val, "val_mean": mean, "val_std": std})
        rows.sort(key=lambda row: (row["val_mean"] is None, -(row["val_mean"] or 0.0)))
        complete = [row for row in rows if row["val_mean"] is not None and not row["missing"]]
        out[method] = {"rows": rows, "best": complete[0]["overrides"] if complete and len(complete) == len(rows)
                       else None}
    rows = [row for m in out.values() for row in m["rows"]]
    return {"command": command, "commit": commit, "protocol": protocol, "split": "val",
            "teacher_val_miou": _teacher_val(tuning), "methods": out,
            "missing": sorted({n for row in rows for n in row["missing"]})}


def results_json(table: Mapping[str, Any], default_method: str) -> dict:
    """results.json: the main table's per-seed test and val mIoU in percent, per row; budgets and warm start apart."""
    def pct(values):
        return [round(100 * v, 4) for v in values]

    def rows(items) -> dict:
        return {row["method"]: {"test": pct(row["miou"]), "val": pct(row["val_miou"]), "seeds": row["seeds"],
                                "val_seeds": row["val_seeds"]} for row in items}

    teacher = table.get("teacher")
    control = next(iter((table["ablations"].get("control") or {}).get("rows", [])), None)
    out: dict[str, Any] = {
        "teacher": None if not teacher else round(100 * teacher["miou"], 4),
        "teacher_xzeros": None if not control or control["teacher_miou"] is None
        else round(100 * control["teacher_miou"], 4),  # the mean over its teacher seeds
        "teacher_xzeros_seeds": pct(control.get("teacher_mious") or []) if control else [],
        "default_method": default_method,
        "protocol": {**table["protocol"], "commit": table["commit"], "command": table["command"],
                     "run_commits": table.get("run_commits", {}),
                     "run_environments": table.get("run_environments", {})},
        "tuned": table.get("tuned", {}),
        "methods": rows(table["methods"]),
    }
    if table.get("budgets"):
        budgets = table["budgets"]
        # {"1000": {row: {"test": [...], "val": [...], ...}}, ...}: every row at every budget (issue 21's shape)
        out["budgets"] = {b: {row["method"]: {"test": pct(row["by_budget"][b]["miou"]),
                                              "val": pct(row["by_budget"][b]["val_miou"]),
                                              "seeds": row["by_budget"][b]["seeds"],
                                              "val_seeds": row["by_budget"][b]["val_seeds"]}
                              for row in budgets["rows"]}
                          for b in map(str, budgets["iters"])}
    if table.get("warm_start"):
        warm = table["warm_start"]
        out["warm_start"] = {"iters": warm["iters"], "init": "the baseline-s<seed> student of the same seed",
                             "methods": rows(warm["rows"])}
    return out


def _ablation_table(ablation: AblationSet, results: Sequence[RunResult], base_mean: float | None,
                    main_teacher: float | None) -> dict:
    rows = []
    for variant in ablation.variants:
        runs = [r for r in results if r.spec.group == ablation.name and r.spec.variant == variant.label]
        if variant.teacher_only:  # one run per teacher seed: mean and std over them
            scores = [r.metrics["teacher"]["miou"] for r in runs if r.metrics is not None and r.metrics.get("teacher")]
            miou, std = mean_std(scores)
            rows.append({"variant": variant.label, "overrides": dict(variant.overrides), "teacher_only": True,
                         "runs": [r.spec.name for r in runs],
                         "missing": [r.spec.name for r in runs if r.metrics is None],
                         "teacher_miou": miou, "teacher_mious": scores, "teacher_std": std,
                         "delta_vs_baseline": None if miou is None or base_mean is None else miou - base_mean,
                         "share_of_teacher_gap": gap_share(miou, base_mean, main_teacher)})
            continue
        score = _teacher_score(runs)
        teacher = score["miou"] if score else None
        row = _student_row(runs, base_mean, teacher)
        row.pop("per_class_iou")
        rows.append({"variant": variant.label, "overrides": dict(variant.overrides), "teacher_only": False,
                     "teacher_miou": teacher, **row})
    return {"description": ablation.description, "method": ablation.method, "keys": ablation.keys,
            "changes_teacher": ablation.changes_teacher, "rows": rows}


# --- output ------------------------------------------------------------------------------------

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


def _header_lines(table: Mapping[str, Any], title: str, val_only: bool) -> list[str]:
    """The title, command, commits and protocol every table.md starts with."""
    return [f"# {title} ({table['protocol']['preset']} preset)", "",
            f"Command: `{table['command']}`  ", f"Commit: `{table['commit']}`  ",
            "Runs trained at: " + (", ".join(f"`{c}` ({n})" for c, n in table.get("run_commits", {}).items()) or "-")
            + "  ",
            "Software: " + ("; ".join(f"{e} ({n})" for e, n in table.get("run_environments", {}).items()) or "-"),
            "", "Protocol:", "", *_protocol_lines(table["protocol"], val_only), ""]


def _ablation_heading(name: str, ablation: Mapping[str, Any], own_teachers: bool) -> list[str]:
    """`## Ablation NAME: description` and what it varies; `own_teachers`: say that a changed teacher is each
    variant's own reference."""
    varies = f"Method {ablation['method']}; varies {', '.join(f'`{k}`' for k in ablation['keys'])}"
    tail = ("; each variant has its own teacher, and its gap closed is measured against that teacher."
            if own_teachers and ablation["changes_teacher"] else ".")
    return ["", f"## Ablation `{name}`: {ablation['description']}", "", varies + tail, ""]


def _val_cells(row: Mapping[str, Any], base: float | None, teacher: float | None) -> str:
    """'val mIoU | per seed | vs baseline | gap closed' of a row, all on the validation drives."""
    mean = row.get("val_mean")
    delta = None if mean is None or base is None else mean - base
    per_seed = ", ".join(_pct(v) for v in row.get("val_miou", [])) or "-"
    return (f"{_mean_std(row, 'val_')} | {per_seed} | {_pct(delta, True)} | "
            f"{_share(gap_share(mean, base, teacher))}")


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


def _val_method_line(row: Mapping[str, Any], base: float | None, teacher: float | None) -> str:
    """_method_line of a val-only table: every score on the validation drives."""
    return f"| {_row_name(row)} | {_val_cells(row, base, teacher)} |"


def _row_name(row: Mapping[str, Any]) -> str:
    name = row_label(row["method"])
    return name + (" (tuned)" if row.get("tuned") and name == row["method"] else "")


def _tuned_line(table: Mapping[str, Any]) -> str:
    if table.get("untuned"):
        return "Settings: every method at the preset's defaults (--untuned)."
    tuned = table.get("tuned") or {}
    if not tuned:
        return "Settings: every method at the preset's defaults (lix_train/study/tuned.yaml sets none)."
    listed = "; ".join(f"{m}: " + ", ".join(f"`{k}={v}`" for k, v in o.items()) for m, o in tuned.items())
    return (f"Settings: the preset's defaults, except the tuned ones (lix_train/study/tuned.yaml, each with its "
            f"evidence there): {listed}. Rows marked (tuned) use them.")


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
             f"measured against it. The baseline students started at {start}.", ""]
    if not val_only:
        return lines + ["| model | mIoU | per seed | vs baseline | gap closed | val mIoU |", "|---|---|---|---|---|---|",
                        *(_method_line(row) for row in warm["rows"])]
    base = next((row["val_mean"] for row in warm["rows"] if row["method"] == BASELINE), None)
    teacher = table.get("teacher_val_miou")
    return lines + ["| model | val mIoU | per seed | vs baseline | gap closed |", "|---|---|---|---|---|",
                    *(_val_method_line(row, base, teacher) for row in warm["rows"])]


def format_tuning(tuning: Mapping[str, Any], tuned_file: str = "lix_train/study/tuned.yaml") -> str:
    """tuning.md: per method, its grid points best first by val mIoU, and the entry to copy into tuned.yaml."""
    from lix_train.study.tuning import yaml_line

    lines = ["# LIX-Seg tuning on the val split", "", f"Command: `{tuning['command']}`  ",
             f"Commit: `{tuning['commit']}`", "",
             "Val mIoU in %, mean ± sample std over seeds. The tuning runs never read the test split "
             "(eval.score_test false): there is no test column." +
             (f" Teacher val mIoU: {_pct(tuning['teacher_val_miou'])}." if tuning.get("teacher_val_miou") else "")]
    reference = tuning["methods"].get(BASELINE, {}).get("rows", [{}])[0].get("val_mean")
    if reference is not None:
        lines += ["", f"Reference: the labels-only baseline at the same seeds, val mIoU {_pct(reference)}."]
    for method, entry in tuning["methods"].items():
        if method == BASELINE:
            continue
        lines += ["", f"## {method}", "", "| point | val mIoU | vs baseline | per seed |", "|---|---|---|---|"]
        for row in entry["rows"]:
            shown = ", ".join(f"{k}={v}" for k, v in row["overrides"].items())
            per_seed = ", ".join(_pct(v) for v in row["val_miou"]) or "-"
            delta = ("-" if reference is None or row["val_mean"] is None
                     else f"{100 * (row['val_mean'] - reference):+.1f}")
            lines.append(f"| {shown} | {_mean_std(row, 'val_')} | {delta} | {per_seed} |")
        if entry["best"] is not None:
            lines += ["", f"Best on val: copy into {tuned_file} (with this command as its evidence): "
                          f"`{yaml_line(method, entry['best'])}`"]
        else:
            lines += ["", "Unfinished points: rerun the command before choosing."]
    if tuning.get("missing"):
        lines += ["", f"Unfinished runs: {', '.join(tuning['missing'])}."]
    return "\n".join(lines) + "\n"


def write_tuning(out: Path, tuning: Mapping[str, Any]) -> tuple[Path, Path]:
    return write_text(out / TUNING_MD, format_tuning(tuning)), write_json(out / TUNING_JSON, tuning)


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


def write_tables(out: Path, table: Mapping[str, Any]) -> tuple[Path, Path]:
    """out/table.md and out/table.json, each written atomically."""
    return write_text(out / TABLE_MD, format_markdown(table)), write_json(out / TABLE_JSON, table)


def protocol_of(cfg, preset: str, seeds: Sequence[int], metrics: Mapping[str, Any] | None) -> dict:
    """What every number of the study depends on: data, resolution, networks, schedules, seeds, test split."""
    from lix_train.data.build import root_identity

    def network(role: str) -> dict:
        model, train = getattr(cfg, role).model, getattr(cfg, role).train
        out = {"encoder": model.encoder, "width": model.width, "decoder_channels": model.decoder_channels,
               "iters": train.iters, "batch_size": train.batch_size, "optimizer": train.optimizer, "lr": train.lr,
               "warmup_iters": train.warmup_iters}
        if role == "teacher":
            out.update({"fusion": model.fusion, "x_channels": model.x_channels})
        return out

    metrics = metrics or {}
    return {
        "preset": preset, "dataset": cfg.data.dataset, "data_root": root_identity(cfg.data),
        "modality": cfg.data.modality, "resolution": list(cfg.data.transforms.size), "eval_mode": cfg.eval.mode,
        "test_frames": metrics.get("test_frames"), "test_scenes": metrics.get("test_scenes"),
        "seeds": list(seeds), "teacher_seed": cfg.teacher.train.seed,
        "teacher": network("teacher"), "student": network("student"),
    }
