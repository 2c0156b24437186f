"""Aggregate the study's runs into its tables as plain data: mean +- std over seeds, share of the
teacher gap closed, per-class gains.

    gap share = (student - baseline) / (teacher - baseline)

the headline distillation figure of benchmark-notes.md: 0 = no better than the RGB-only
baseline, 1 = as good as the RGB+X teacher. Means are over seeds; std is the sample standard
deviation (n - 1), absent for a single seed. Fractions here and in table.json (as in
metrics.json); table_md.py shows them in percentage points as table.md. Every table names the
command, the commit and the protocol.

Besides the main table (one row per method or named row, e.g. lix_xzeros) and the ablations:
the student budgets (test and val per budget), the warm-start track (measured against the
baseline's own warm-start row), the tuning table (val only: tuning runs have no test score),
and results.json, the per-seed numbers in percent for other tools.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from lix_train.study.ablations import AblationSet
from lix_train.study.grid import BASELINE, BUDGETS_GROUP, METHODS_GROUP, TUNING_GROUP, WARM_GROUP, RunSpec

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

def val_choice(rows: Sequence[Mapping[str, Any]], exclude: set[str] | frozenset[str] = frozenset()) -> dict | None:
    """The distiller the evidence makes the default: the best mean val mIoU among the rows scored on val at
    the most seeds any row has (a one-seed row cannot win on luck), `exclude`d rows (the baseline, named
    rows such as X = zeros twins or the wide student) left out. Test is never read here. None without a
    candidate; `runner_up` / `margin` say how close the next one came."""
    candidates = [r for r in rows if r["method"] not in exclude and r.get("val_mean") is not None]
    if not candidates:
        return None
    most = max(len(r["val_seeds"]) for r in candidates)
    full = sorted((r for r in candidates if len(r["val_seeds"]) == most), key=lambda r: -r["val_mean"])
    best, runner = full[0], (full[1] if len(full) > 1 else None)
    return {"method": best["method"], "val_mean": best["val_mean"], "seeds": most,
            "runner_up": runner["method"] if runner else None,
            "margin": best["val_mean"] - runner["val_mean"] if runner else None}


def distiller_checks(table: Mapping[str, Any], method: str | None) -> dict | None:
    """What a default distiller must show on test against the labels-only baseline: the share of the
    teacher gap it closes (at the main budget and at every budget of the budget table), whether every
    one of its seeds is above every baseline seed, and how much of its gain its X = zeros twin
    (`<method>_xzeros`, the same loss from a teacher without geometry) keeps: near 1 means the gain is
    regularisation, not geometry. None without test scores for the method and the baseline."""
    rows = {r["method"]: r for r in table["methods"]}
    row, base = rows.get(method or ""), rows.get(BASELINE)
    if row is None or base is None or row["mean"] is None or base["mean"] is None:
        return None
    teacher = (table.get("teacher") or {}).get("miou")
    by_budget = {}
    budget_rows = {r["method"]: r["by_budget"] for r in (table.get("budgets") or {}).get("rows", [])}
    if method in budget_rows and BASELINE in budget_rows:
        by_budget = {b: gap_share(cell["mean"], budget_rows[BASELINE][b]["mean"], teacher)
                     for b, cell in budget_rows[method].items()}
    twin, gain = rows.get(f"{method}_xzeros"), row["mean"] - base["mean"]
    return {"method": method, "gap_share": row["gap_share"], "gap_share_by_budget": by_budget,
            "seeds": len(row["miou"]), "baseline_seeds": len(base["miou"]),
            "every_seed_above": min(row["miou"]) > max(base["miou"]),
            "xzeros_kept": None if twin is None or twin["mean"] is None or gain <= 0
            else (twin["mean"] - base["mean"]) / gain}


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
              budgets: Sequence[int] = (), warm_iters: int | None = None, default_method: str | None = None) -> dict:
    """The study's table as plain data (what table.json holds and table.md shows).

    `tuned`: the tuned.yaml settings the runs used (method -> overrides); `budgets`: the student
    budgets of the budget section (the preset's, protocol["student"]["iters"], is the main table);
    `warm_iters`: the warm-start track's iterations; `default_method`: the package's default
    distiller, shown beside the one the main table's val scores choose (val_choice).
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
        "default_method": default_method,
        "val_choice": val_choice(methods, {BASELINE} | {r.spec.label for r in main if r.spec.row}),
    }
    for ablation in ablations:
        table["ablations"][ablation.name] = _ablation_table(ablation, results, base_mean, teacher_miou)
    rows = [*methods, *(row for a in table["ablations"].values() for row in a["rows"])]
    if budgets:
        table["budgets"] = _budget_table(results, budgets, protocol["student"]["iters"], teacher_miou)
        rows += [cell for row in table["budgets"]["rows"] for cell in row["by_budget"].values()]
    if warm_iters is not None:
        table["warm_start"] = _warm_table(results, warm_iters, teacher_miou, by_method.get(BASELINE, []))
        rows += table["warm_start"]["rows"]
    table["checks"] = distiller_checks(table, (table["val_choice"] or {}).get("method"))
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


def _warm_table(results: Sequence[RunResult], iters: int, teacher: float | None,
                baselines: Sequence[RunResult]) -> dict:
    """The warm-start rows, each measured against the baseline's own warm-start row (the fair control);
    `baselines`: the main table's baseline runs. The track starts from those of its own seeds (often seed 0
    alone), so where it starts is their mean, not the mean over every baseline seed."""
    by_row = _by_row(results, WARM_GROUP)
    seeds = {r.spec.seed for runs in by_row.values() for r in runs}
    start = _student_row([r for r in baselines if r.spec.seed in seeds], None, None)
    base = _student_row(by_row.get(BASELINE, []), None, None)
    rows = []
    for label, runs in by_row.items():
        row = {"method": label, "tuned": dict(runs[0].spec.tuned), **_student_row(runs, base["mean"], teacher)}
        row.pop("per_class_iou")
        rows.append(row)
    return {"iters": iters, "start_mean": start["mean"], "start_val_mean": start["val_mean"],
            "start_seeds": sorted(seeds), "teacher_miou": teacher, "rows": rows}


def aggregate_tuning(results: Sequence[RunResult], protocol: dict, command: str, commit: str) -> dict:
    """The tuning table: per method, its grid points best first by mean val mIoU (val only, never test); the
    points run at more seeds rank first, so a screen's best is chosen among the points carried to every seed."""
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
        # more seeds first (a point screened out at the first seed by --tune-top has one), then by mean val mIoU
        rows.sort(key=lambda row: (row["val_mean"] is None, -len(row["seeds"]), -(row["val_mean"] or 0.0)))
        complete = [row for row in rows if row["val_mean"] is not None and not row["missing"]]
        out[method] = {"rows": rows, "best": complete[0]["overrides"] if complete and len(complete) == len(rows)
                       else None}
    rows = [row for m in out.values() for row in m["rows"]]
    return {"command": command, "commit": commit, "protocol": protocol, "split": "val",
            "teacher_val_miou": _teacher_val(tuning), "methods": out,
            "missing": sorted({n for row in rows for n in row["missing"]})}


def results_json(table: Mapping[str, Any]) -> dict:
    """results.json: the main table's per-seed test and val mIoU in percent, per row; budgets and warm start apart.

    The package default it names is the one `aggregate` recorded in the table, so the two files never disagree.
    """
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
        "default_method": table.get("default_method"),
        # the distiller this table's val scores choose (val_choice): what the default should be
        "val_best_method": (table.get("val_choice") or {}).get("method"),
        "protocol": {**table["protocol"], "commit": table["commit"], "command": table["command"],
                     "run_commits": table.get("run_commits", {}),
                     "run_environments": table.get("run_environments", {})},
        "tuned": table.get("tuned", {}),
        "methods": rows(table["methods"]),
        # runs not finished when this was written (a long study reports in steps): their scores are not above
        "missing": list(table.get("missing", [])),
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
