"""Per-method settings: the tuning grids (`compare --tune METHOD`) and the chosen settings (tuned.yaml).

A tuning run distils one grid point of one method at one seed and is scored on the val split
only (eval.score_test false: the test split is never built, and its metrics.json holds no test
score), so whatever is chosen from these runs was chosen on val. The points start from the
preset's defaults, never from tuned.yaml. The report lists each method's points best first by
mean val mIoU and names the overrides to copy into tuned.yaml.

tuned.yaml maps method -> {dotted distill option: value}; `compare` applies a method's entry to
its main-table, budget and warm-start runs (and under the variants of its ablations) unless
--untuned. Each entry's comment names its evidence: the tuning command whose val table chose it.

Grids are data: add a method, or a value, to GRIDS below. Each point is one run per seed, about
ten minutes of the 2-core CPU machine at the synthetic preset.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lix_train.study.grid import BASELINE, METHOD_KEY, SCORE_TEST_KEY, SEED_KEY, TUNING_GROUP, RunSpec, _check_seeds

TUNED_FILE = Path(__file__).with_name("tuned.yaml")
TUNE_PREFIX = "tune-"
REFERENCE = "labels-only"  # the variant label of the tuning table's baseline reference

# method -> {dotted option: values}, the grid being every combination; or a list of such blocks, the grid being
# their union in order (a block added when a grid's best point sat on its edge, without re-running the rest).
GRIDS: dict[str, dict[str, tuple[Any, ...]] | list[dict[str, tuple[Any, ...]]]] = {
    "kd": {"distill.kd.temperature": (1.0, 4.0), "distill.lambda_l": (0.5, 1.0, 2.0)},
    # protocol v2 at seed 0: the best point (T 1, weight 1) sat on the weight's lower edge: the second block
    "cwd": [{"distill.cwd.temperature": (1.0, 4.0), "distill.lambda_l": (1.0, 3.0, 10.0)},
            {"distill.cwd.temperature": (1.0,), "distill.lambda_l": (0.3, 0.5)}],
    # protocol v2 at seed 0: val fell monotonically with beta (0.5 best, the lower edge): the second block
    "dkd": [{"distill.dkd.beta": (0.5, 1.0, 2.0, 8.0)}, {"distill.dkd.beta": (0.1, 0.25)}],
    "at": {"distill.lambda_f": (0.5, 1.0, 2.0)},
    "mgd": {"distill.lambda_f": (0.5, 1.0, 2.0)},
    "aux_x": {"distill.lambda_f": (0.3, 1.0, 3.0)},
    # protocol v2 at seed 0: the best point (gate none, weight 0.5: 48.3) sat on the weight's lower edge
    "dwld": [{"distill.dwld.gate": ("correct", "none"), "distill.lambda_l": (0.5, 1.0)},
             {"distill.dwld.gate": ("none",), "distill.lambda_l": (0.25,)}],
    # protocol v2 at seed 0: weight 1 (46.2) beat 3 (45.2), the lower edge: the second block
    "arfd": [{"distill.lambda_f": (1.0, 3.0)}, {"distill.lambda_f": (0.3,)}],
    # protocol v2 at seed 0: the best point (fused, weight 2) sat on the weight's upper edge: the second block
    "halluc": [{"distill.halluc.target": ("x_branch", "fused"), "distill.lambda_f": (0.5, 1.0, 2.0)},
               {"distill.halluc.target": ("fused",), "distill.lambda_f": (4.0,)}],
    # the first study: less logit loss was monotonically better, lambda_F flat
    # protocol v2 at seed 0: feature weight 1 beat 3 at every logit weight, the lower edge: the second block
    # LIX's axes at seed 0 around its best point 0.5 / 0.3 (48.2; `--ablation gate dwc_mode balance stages
    # bandwidth`): each axis's best where it beats the point by more than the point's own seed spread (0.2):
    # gradient-norm capping (48.7), ARFD at every stage (48.8), ARFD's bandwidth at 0.1 x the median distance
    # (48.7). One seed: blocks so that the screen (--tune-top) can carry them to more seeds, one axis at a time.
    # The screen at seeds 0-2 kept all three (48.8-48.9 against the point's 48.5): the last block moves all three
    # axes together, the combination a fair search owes LIX before its row is run
    "lix": [{"distill.lambda_l": (0.25, 0.5, 1.0), "distill.lambda_f": (1.0, 3.0)},
            {"distill.lambda_l": (0.5, 1.0), "distill.lambda_f": (0.3,)},
            {"distill.lambda_l": (0.5,), "distill.lambda_f": (0.3,), "distill.balance": ("cap",)},
            {"distill.lambda_l": (0.5,), "distill.lambda_f": (0.3,), "distill.arfd.stages": ((0, 1, 2, 3),)},
            {"distill.lambda_l": (0.5,), "distill.lambda_f": (0.3,), "distill.arfd.bandwidth": ("median",),
             "distill.arfd.bandwidth_scale": (0.1,)},
            {"distill.lambda_l": (0.5,), "distill.lambda_f": (0.3,), "distill.balance": ("cap",),
             "distill.arfd.stages": ((0, 1, 2, 3),), "distill.arfd.bandwidth": ("median",),
             "distill.arfd.bandwidth_scale": (0.1,)}],
}


def _value_text(value: Any) -> str:
    """4, 0.5, cap; a sequence of stages (0, 1, 2, 3) as 0123: file-name safe."""
    if isinstance(value, (tuple, list)):
        return "".join(_value_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def point_label(point: Mapping[str, Any]) -> str:
    """temperature4-lambda_l3: the options' last names and values (file-name safe)."""
    return "-".join(f"{key.rsplit('.', 1)[-1]}{_value_text(value)}" for key, value in point.items())


def _blocks(method: str) -> list[dict[str, tuple[Any, ...]]]:
    """The method's grid as a list of blocks (a plain grid is one block)."""
    grid = GRIDS[method]
    return grid if isinstance(grid, list) else [grid]


def grid_points(method: str) -> list[dict[str, Any]]:
    """Every combination of the method's grid, in GRIDS order; ValueError for a method without a grid."""
    if method not in GRIDS:
        raise ValueError(f"no tuning grid for method {method!r}; grids: {', '.join(GRIDS)} (add one to GRIDS in "
                         "lix_train/study/tuning.py)")
    points: list[dict[str, Any]] = []
    for block in _blocks(method):
        keys, values = zip(*block.items())
        points += [p for p in (dict(zip(keys, combo)) for combo in itertools.product(*values)) if p not in points]
    return points


def describe_grid(method: str) -> str:
    """'cwd.temperature {1.0,4.0} x lambda_l {1.0,3.0,10.0} + ...': the grid as --help shows it."""
    return " + ".join(" x ".join(f"{k.split('.', 1)[1]} {{{','.join(map(str, v))}}}" for k, v in block.items())
                      for block in _blocks(method))


def tuning_run_name(method: str, point: Mapping[str, Any], seed: int) -> str:
    """tune-<method>-<point>-s<seed>: the run folder of one grid point at one seed."""
    return f"{TUNE_PREFIX}{method}-{point_label(point)}-s{seed}"


def top_points(method: str, finished_val: Mapping[str, float | None], seed: int, top: int) -> list[dict[str, Any]]:
    """The `top` best grid points of `method` by val mIoU at `seed` (run name -> val mIoU, None if unfinished).

    ValueError names the first unfinished point: the screen must be complete before it can choose."""
    points = grid_points(method)
    scores = [finished_val.get(tuning_run_name(method, p, seed)) for p in points]
    missing = [tuning_run_name(method, p, seed) for p, score in zip(points, scores) if score is None]
    if missing:
        raise ValueError(f"{method}: {len(missing)} of {len(points)} points unfinished at seed {seed} (first: "
                         f"{missing[0]}); finish the screen at that seed first")
    order = sorted(range(len(points)), key=lambda i: -scores[i])  # stable: GRIDS order on ties
    return [points[i] for i in order[:top]]


def expand_tuning(methods: Sequence[str], seeds: Sequence[int], top: int | None = None,
                  finished_val: Mapping[str, float | None] | None = None) -> list[RunSpec]:
    """tune-<method>-<point>-s<seed>: every grid point of every method at every seed, val-only, after
    the val reference tune-baseline-s<seed>.

    With `top`, a screen: the first seed runs every point, the later seeds only each method's `top`
    best points at the first seed (`finished_val`: run name -> val mIoU of the finished runs, None or
    absent while unfinished). A point screened out keeps the later seeds it has already finished (an
    earlier screen's), so its row shows all its evidence; nothing new is trained for it."""
    _check_seeds(seeds)
    if not methods:
        raise ValueError("nothing to tune: name at least one method")
    if top is not None and top < 1:
        raise ValueError(f"top {top}: need at least one point")
    finished = finished_val or {}
    # The val reference every point is read against: the labels-only baseline at the same seeds.
    specs = [RunSpec(f"{TUNE_PREFIX}{BASELINE}-s{s}", TUNING_GROUP, REFERENCE, BASELINE, s,
                     {SCORE_TEST_KEY: False, METHOD_KEY: BASELINE, SEED_KEY: s}, needs_test=False) for s in seeds]
    for method in dict.fromkeys(methods):
        kept = (grid_points(method) if top is None or len(seeds) == 1
                else top_points(method, finished, seeds[0], top))
        for point in grid_points(method):
            label = point_label(point)
            for s in seeds:
                name = tuning_run_name(method, point, s)
                if point in kept or s == seeds[0] or finished.get(name) is not None:
                    overrides = {**point, SCORE_TEST_KEY: False, METHOD_KEY: method, SEED_KEY: s}
                    specs.append(RunSpec(name, TUNING_GROUP, label, method, s, overrides, needs_test=False))
    return specs


def load_tuned(methods: Sequence[str], path: Path | None = None) -> dict[str, dict[str, Any]]:
    """tuned.yaml as {method: {dotted option: value}} for the known `methods`.

    An empty entry for a method not (yet) in `methods` is skipped, so the file can list methods
    being added; a non-empty one, or anything but distill options, is a ValueError naming the file.
    """
    path = TUNED_FILE if path is None else path
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the tuned settings ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of method -> {{dotted option: value}}")
    tuned: dict[str, dict[str, Any]] = {}
    for method, overrides in data.items():
        overrides = overrides or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"{path}: {method}: expected a mapping of dotted options, got {overrides!r}")
        if method not in methods:
            if overrides:
                raise ValueError(f"{path}: unknown method {method!r}; valid: {', '.join(methods)}")
            continue
        for key, value in overrides.items():
            if not str(key).startswith("distill.") or key == METHOD_KEY or isinstance(value, dict):
                raise ValueError(f"{path}: {method}: {key!r} is not a dotted distill option with a value (tuned "
                                 "settings may only change the method's own options, never the protocol)")
        tuned[method] = dict(overrides)
    return tuned


def describe_tuned(tuned: Mapping[str, Mapping[str, Any]]) -> str:
    """'cwd: distill.cwd.temperature=4.0, distill.lambda_l=3.0; kd: ...' (the methods with settings), or 'none'."""
    parts = [f"{m}: " + ", ".join(f"{k}={v}" for k, v in o.items()) for m, o in tuned.items() if o]
    return "; ".join(parts) or "none"


def yaml_line(method: str, point: Mapping[str, Any]) -> str:
    """The tuned.yaml entry for `point`: `cwd: {distill.cwd.temperature: 4.0, distill.lambda_l: 3.0}`."""
    def text(value: Any) -> str:  # a tuple as a YAML list: safe_dump cannot write tuples
        value = list(value) if isinstance(value, tuple) else value
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()

    inner = ", ".join(f"{k}: {text(v)}" for k, v in point.items())
    return f"{method}: {{{inner}}}"
