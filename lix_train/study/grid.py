"""Table rows x seeds x ablation variants (x budgets, x the warm-start track) -> run specs, each a
set of dotted overrides on a preset.

Seeds vary the student only (`student.train.seed`); the teacher's seed stays the preset's, so
every student of one teacher config learns from the same frozen teacher. A row is a method or a
named row (NAMED_ROWS: a method under fixed extra overrides, e.g. lix_xzeros); a method's tuned
settings (tuned.yaml) go under the row's and the variant's own overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from lix_train.distillers.registry import BASELINE
from lix_train.study.ablations import AblationSet

METHODS_GROUP = "methods"
BUDGETS_GROUP = "budgets"
WARM_GROUP = "warm_start"
TUNING_GROUP = "tuning"
SEED_KEY = "student.train.seed"
TEACHER_SEED_KEY = "teacher.train.seed"
METHOD_KEY = "distill.method"
ITERS_KEY = "student.train.iters"
INIT_KEY = "student.train.init_from"
SCORE_TEST_KEY = "eval.score_test"
WARM_PREFIX = "warm-"


@dataclass(frozen=True)
class NamedRow:
    """A main-table row that is a method under fixed extra overrides (not an option of the method)."""

    name: str
    method: str
    overrides: Mapping[str, Any]
    description: str
    label: str = ""  # the table's name for it (default: the row's name)

    @property
    def varies(self) -> tuple[str, ...]:
        """The protocol options it differs in from the main table (everything but its method's own settings)."""
        return tuple(k for k in self.overrides if not k.startswith("distill."))


XZEROS = "_xzeros"  # <method>_xzeros: the method distilled from the X = zeros control teacher
ZERO_X = {"data.zero_x": True}
WIDE_WIDTH = 0.5
STUDENT_MODEL_PREFIX = "student.model."

NAMED_ROWS: dict[str, NamedRow] = {r.name: r for r in (
    NamedRow("lix_xzeros", "lix", ZERO_X,
             "LIX distilled from the X = zeros control teacher (the teacher of the control ablation): what LIX "
             "transfers when the teacher has no geometry", "lix_xzeros (LIX from the X = zeros teacher)"),
    NamedRow("baseline_wide", BASELINE, {"student.model.width": WIDE_WIDTH},
             f"the labels-only RGB student at width {WIDE_WIDTH:g} (about 4x the compute of the preset's 0.25): how "
             "much of the teacher gap a bigger RGB network reaches with no teacher",
             f"baseline_wide (RGB only, L_H, width {WIDE_WIDTH:g})"),
)}
# The named rows a study runs when --methods is not given (the others are asked for by name).
DEFAULT_NAMED_ROWS = ("lix_xzeros",)


def _teacher_methods() -> list[str]:
    from lix_train.distillers.registry import registered

    return [m for m, cls in registered().items() if cls.uses_teacher_logits or cls.uses_teacher_features]


def named_row(row: str) -> NamedRow | None:
    """The named row `row`, or None for a plain method's row.

    Besides NAMED_ROWS, every method that reads a teacher has an X = zeros twin, `<method>_xzeros`: the
    method distilled from the control teacher (data.zero_x), which separates what the geometry gives
    from what distillation as a regulariser gives.
    """
    if row in NAMED_ROWS:
        return NAMED_ROWS[row]
    method = row[: -len(XZEROS)] if row.endswith(XZEROS) else ""
    if method and method in _teacher_methods():
        return NamedRow(row, method, ZERO_X, f"{method} distilled from the X = zeros control teacher",
                        f"{row} ({method} from the X = zeros teacher)")
    return None


def changes_student_network(row: str) -> bool:
    """Whether the row's student is another network than the baseline's (an override of student.model)."""
    named = named_row(row)
    return bool(named) and any(key.startswith(STUDENT_MODEL_PREFIX) for key in named.overrides)


def row_names() -> list[str]:
    """Every row name a study accepts: the methods, the named rows and the X = zeros twins."""
    from lix_train.distillers.registry import METHODS

    twins = [m + XZEROS for m in _teacher_methods()]
    return list(dict.fromkeys([*METHODS, *NAMED_ROWS, *twins]))


def row_method(row: str) -> str:
    """The distillation method of a row (a method's row is the method)."""
    named = named_row(row)
    return named.method if named else row


def row_label(row: str) -> str:
    """The table's name of a row: the baseline says what it is, a named row its label, a method its name."""
    named = named_row(row)
    if named:
        return named.label or named.name
    return "baseline (RGB only, L_H)" if row == BASELINE else row


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: its folder name, where it belongs in the tables, and its overrides."""

    # run folder name: <row>-s<seed>, <ablation>-<variant>-s<seed>, <ablation>-<variant>, <row>-i<iters>-s<seed>,
    # warm-<row>-s<seed>, tune-<method>-<point>-s<seed>
    name: str
    group: str  # "methods", "budgets", "warm_start", "tuning" or the ablation set's name
    variant: str  # the variant label: ablation variant, budget (iterations) or tuning point ("" otherwise)
    method: str  # distillation method ("" for a teacher-only run)
    seed: int | None  # student seed (None for a teacher-only run)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted option -> value
    teacher_only: bool = False
    row: str = ""  # the table row when it is not the method itself (a named row such as lix_xzeros)
    tuned: Mapping[str, Any] = field(default_factory=dict)  # the tuned.yaml settings among the overrides
    varies: tuple[str, ...] = ()  # protocol options it may differ in from the main table (budget, warm start)
    after: tuple[str, ...] = ()  # runs that must be finished before this one starts (its init_from)
    needs_test: bool = True  # False: a val-only run (eval.score_test false), never scored on test

    @property
    def label(self) -> str:
        """The table row: the named row, else the method."""
        return self.row or self.method

    def describe(self) -> str:
        what = "teacher only" if self.teacher_only else f"{self.label} seed {self.seed}"
        return f"{self.group}/{self.variant} {what}" if self.variant else (
            what if self.group == METHODS_GROUP else f"{self.group} {what}")


def nest(dotted: Mapping[str, Any]) -> dict:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}}; a key that is both a leaf and a section raises ValueError."""
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {key!r}: {part!r} is given both as a value and as a section")
            node = child
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"override {key!r} is a section, not an option")
        node[leaf] = value
    return out


def _check_seeds(seeds: Sequence[int]) -> None:
    if not seeds:
        raise ValueError("need at least one seed")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds {list(seeds)} must be distinct and >= 0")


def _row_spec(row: str, seed: int, tuned: Mapping[str, Mapping[str, Any]], name: str, group: str = METHODS_GROUP,
              variant: str = "", extra: Mapping[str, Any] | None = None, **fields) -> RunSpec:
    """One run of a table row: the method's tuned settings, then the row's overrides, then `extra`."""
    method = row_method(row)
    named = named_row(row)
    fixed = {**(named.overrides if named else {}), **(extra or {})}
    chosen = {k: v for k, v in (tuned.get(method) or {}).items() if k not in fixed}
    overrides = {**chosen, **fixed, METHOD_KEY: method, SEED_KEY: seed}
    varies = tuple(dict.fromkeys([*fields.pop("varies", ()), *(named.varies if named else ())]))
    return RunSpec(name, group, variant, method, seed, overrides, row=row if row != method else "", tuned=chosen,
                   varies=varies, **fields)


def expand(methods: Sequence[str], seeds: Sequence[int], ablations: Sequence[AblationSet] = (),
           tuned: Mapping[str, Mapping[str, Any]] | None = None, one_seed: Sequence[str] = (),
           teacher_seeds: int = 1) -> list[RunSpec]:
    """The study's runs: every row (method or named row) at every seed, then every ablation variant at every seed.

    Rows in `one_seed` run at the first seed only (a screen of the methods that are not among the leaders,
    where a run costs several times the others). Teacher-only variants (the X = zeros control) have no student
    to seed: they run at `teacher_seeds` teacher seeds, the preset's (folder <set>-<variant>) and then
    teacher.train.seed 1, 2, ... (folders <set>-<variant>-t<seed>). `tuned` (method -> dotted overrides)
    applies under a row's and a variant's own overrides.
    """
    if not methods and not ablations:
        raise ValueError("nothing to run: give at least one method or ablation")
    _check_seeds(seeds)
    stray = [r for r in one_seed if r not in methods]
    if stray:
        raise ValueError(f"one-seed row {stray[0]!r} is not a row of the study")
    tuned = tuned or {}
    specs = [_row_spec(m, s, tuned, f"{m}-s{s}") for m in dict.fromkeys(methods)
             for s in (seeds[:1] if m in one_seed else seeds)]
    for ablation in ablations:
        for variant in ablation.variants:
            base = f"{ablation.name}-{variant.label}"
            if variant.teacher_only:
                specs += [RunSpec(base, ablation.name, variant.label, "", None, dict(variant.overrides), True)]
                specs += [RunSpec(f"{base}-t{t}", ablation.name, variant.label, "", None,
                                  {**variant.overrides, TEACHER_SEED_KEY: t}, True) for t in range(1, teacher_seeds)]
                continue
            chosen = {k: v for k, v in (tuned.get(ablation.method) or {}).items() if k not in variant.overrides}
            for s in seeds:
                overrides = {**chosen, **variant.overrides, METHOD_KEY: ablation.method, SEED_KEY: s}
                specs.append(RunSpec(f"{base}-s{s}", ablation.name, variant.label, ablation.method, s, overrides,
                                     tuned=chosen))
    return specs


def expand_budgets(rows: Sequence[str], seeds: Sequence[int], budgets: Sequence[int], preset_iters: int,
                   tuned: Mapping[str, Mapping[str, Any]] | None = None) -> list[RunSpec]:
    """Every row x seed at each student budget (student.train.iters) other than the preset's own.

    The preset's budget is the main table (<row>-s<seed>, reused as it is); the others are
    <row>-i<iters>-s<seed>, and may differ from the main table in student.train.iters alone.
    """
    _check_seeds(seeds)
    if not budgets or min(budgets) < 1:
        raise ValueError(f"budgets {list(budgets)} must be positive iteration counts")
    return [_row_spec(r, s, tuned or {}, f"{r}-i{b}-s{s}", BUDGETS_GROUP, str(b), {ITERS_KEY: b},
                      varies=(ITERS_KEY,))
            for b in dict.fromkeys(budgets) if b != preset_iters for r in dict.fromkeys(rows) for s in seeds]


def expand_warm_start(rows: Sequence[str], seeds: Sequence[int], iters: int, init_from: Callable[[int], str],
                      tuned: Mapping[str, Mapping[str, Any]] | None = None) -> list[RunSpec]:
    """warm-<row>-s<seed>: `iters` more iterations of the row's method from the finished baseline student of
    that seed (`init_from(seed)`, its student.pt), with a fresh optimiser and schedule.

    The baseline's own row continues with labels only for the same iterations: the fair control.
    Each run waits for baseline-s<seed> (`after`). A row whose student is another network (baseline_wide)
    has no warm start: the baseline's weights do not fit it.
    """
    _check_seeds(seeds)
    if iters < 1:
        raise ValueError(f"warm start of {iters} iterations: need at least one")
    rows = [r for r in dict.fromkeys([BASELINE, *rows]) if not changes_student_network(r)]
    return [_row_spec(r, s, tuned or {}, f"{WARM_PREFIX}{r}-s{s}", WARM_GROUP, "",
                      {ITERS_KEY: iters, INIT_KEY: init_from(s)}, varies=(ITERS_KEY, INIT_KEY),
                      after=(f"{BASELINE}-s{s}",))
            for r in rows for s in seeds]
