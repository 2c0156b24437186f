"""Methods x seeds x ablation variants -> run specs, each a set of dotted overrides on a preset.

Seeds vary the student only (`student.train.seed`); the teacher's seed stays the preset's, so
every student of one teacher config learns from the same frozen teacher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from lix_train.study.ablations import AblationSet

METHODS_GROUP = "methods"
BASELINE = "baseline"
SEED_KEY = "student.train.seed"
METHOD_KEY = "distill.method"


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: its folder name, where it belongs in the tables, and its overrides."""

    name: str  # run folder name: <method>-s<seed>, <ablation>-<variant>-s<seed>, <ablation>-<variant>
    group: str  # "methods" or the ablation set's name
    variant: str  # the variant label ("" in the methods group)
    method: str  # distillation method ("" for a teacher-only run)
    seed: int | None  # student seed (None for a teacher-only run)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted option -> value
    teacher_only: bool = False

    def describe(self) -> str:
        what = "teacher only" if self.teacher_only else f"{self.method} seed {self.seed}"
        return f"{self.group}/{self.variant} {what}" if self.variant else what


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


def expand(methods: Sequence[str], seeds: Sequence[int], ablations: Sequence[AblationSet] = ()) -> list[RunSpec]:
    """The study's runs: every method at every seed, then every ablation variant at every seed.

    Teacher-only variants (the X = zeros control) run once: seeds vary students, and they have none.
    """
    if not methods and not ablations:
        raise ValueError("nothing to run: give at least one method or ablation")
    if not seeds:
        raise ValueError("need at least one seed")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds {list(seeds)} must be distinct and >= 0")
    specs = [RunSpec(f"{m}-s{s}", METHODS_GROUP, "", m, s, {METHOD_KEY: m, SEED_KEY: s})
             for m in dict.fromkeys(methods) for s in seeds]
    for ablation in ablations:
        for variant in ablation.variants:
            base = f"{ablation.name}-{variant.label}"
            if variant.teacher_only:
                specs.append(RunSpec(base, ablation.name, variant.label, "", None, dict(variant.overrides), True))
                continue
            for s in seeds:
                overrides = {**variant.overrides, METHOD_KEY: ablation.method, SEED_KEY: s}
                specs.append(RunSpec(f"{base}-s{s}", ablation.name, variant.label, ablation.method, s, overrides))
    return specs
