"""The named ablation sets of the study (issue 5): each one axis, each variant a set of dotted overrides.

Every variant distils the set's `method` (LIX unless said otherwise) with the same schedule,
data and seeds as the main comparison; only the overrides differ. A variant whose overrides
equal the defaults reproduces the main run of that method, and the plan (planning.py) reuses
that run instead of training it twice.

Grids are sized for the CPU protocol, where each point costs about ten minutes of a 2-core machine:
DWC depth is sampled at 1, 3 and 5 layers, the loss weights at half, once and twice the default.

Sets that change the teacher (fusion, X) get a teacher of their own in the shared store, since
the store is keyed by the teacher's config. The `control` set trains the teacher architecture on
X = zeros and only scores it: at the baseline's level it shows the teacher's gap comes from the
geometry, not from the second encoder's capacity (benchmark-notes.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Variant:
    """One setting of an ablation axis."""

    label: str  # short, file-name safe: it names the run folder
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted option -> value
    teacher_only: bool = False  # train and score the teacher only (no student)

    def __post_init__(self):
        if not self.label or not all(c.isalnum() or c in "._-" for c in self.label):
            raise ValueError(f"variant label {self.label!r} must be a non-empty file-name-safe word")


@dataclass(frozen=True)
class AblationSet:
    """An axis of the study: what varies, under which method, in which variants."""

    name: str
    description: str
    variants: tuple[Variant, ...]
    method: str = "lix"
    changes_teacher: bool = False

    def __post_init__(self):
        labels = [v.label for v in self.variants]
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"ablation {self.name!r}: variant labels must be distinct and at least one, got {labels}")

    @property
    def keys(self) -> list[str]:
        """The dotted options this set varies (for table headings)."""
        seen: dict[str, None] = {}
        for variant in self.variants:
            seen.update(dict.fromkeys(variant.overrides))
        return list(seen)


def _axis(key: str, values: Sequence[Any], label=lambda v: str(v)) -> tuple[Variant, ...]:
    return tuple(Variant(label(v), {key: v}) for v in values)


def _stages_label(stages: Sequence[int]) -> str:
    return "s" + "".join(str(s) for s in stages)


ABLATIONS: dict[str, AblationSet] = {s.name: s for s in (
    AblationSet("dwc_depth", "DWC depth: number of 1x1 conv layers of the dynamic weight controller (the learned, "
                "adversarial DWC: the confidence rule has no layers)",
                tuple(Variant(str(n), {"distill.dwld.mode": "adversarial", "distill.dwld.layers": n})
                      for n in (1, 3, 5))),
    AblationSet("dwc_mode", "How DWLD makes its per-pixel weights: fixed (= DKD), the DWC trained adversarially "
                "(gradient reversal) or cooperatively (plain descent of L_L), the confidence rule",
                (*_axis("distill.dwld.mode", ("fixed", "adversarial", "confidence")),
                 Variant("cooperative", {"distill.dwld.mode": "adversarial", "distill.dwld.reverse_scale": -1.0}))),
    AblationSet("beta", "Mean weight beta of NCKD (the teacher's distribution over the non-target classes) in DWLD",
                _axis("distill.dwld.beta", (0.5, 1.0, 2.0, 4.0))),
    AblationSet("recal_kernel", "ARFD recalibration kernel (none = no recalibration)",
                _axis("distill.arfd.kernel", ("laplace", "gaussian", "none"))),
    AblationSet("bandwidth", "ARFD kernel bandwidth: sigma = scale x the median distance (< 1 sharpens the "
                "recalibration), or per row at perplexity 2 (the default)",
                (*(Variant(f"median{v:g}", {"distill.arfd.bandwidth": "median", "distill.arfd.bandwidth_scale": v})
                   for v in (0.1, 0.3, 1.0)),
                 Variant("perplexity2", {"distill.arfd.bandwidth": "perplexity", "distill.arfd.perplexity": 2.0}))),
    AblationSet("perplexity", "ARFD keys averaged per recalibrated value (bandwidth perplexity)",
                _axis("distill.arfd.perplexity", (1.5, 2.0, 4.0, 8.0))),
    AblationSet("projector", "ARFD learned 1x1 projector before the recalibration",
                _axis("distill.arfd.projector", (True, False))),
    AblationSet("cka_scope", "ARFD CKA over every valid token of the batch, or per image",
                _axis("distill.arfd.cka_scope", ("batch", "image"))),
    AblationSet("gate", "DWLD teacher gate: follow the teacher only where it is right, by its confidence, or everywhere",
                _axis("distill.dwld.gate", ("correct", "confidence", "none"))),
    AblationSet("renormalise", "DWLD confidence rule: weights rescaled to mean (alpha, beta) after the gate, or not",
                _axis("distill.dwld.renormalise", (False, True))),
    AblationSet("balance", "Gradient-norm balancing of each distillation term against L_H",
                (Variant("none", {"distill.balance": "none"}), Variant("cap1", {"distill.balance": "cap"}),
                 Variant("match0.5", {"distill.balance": "match", "distill.balance_ratio": 0.5}))),
    AblationSet("start", "Share of training with labels only before distillation starts, and a linear decay",
                (Variant("0", {"distill.start": 0.0}), Variant("0.3", {"distill.start": 0.3}),
                 Variant("decay", {"distill.decay": "linear"}))),
    AblationSet("logit_stride", "Logit losses at full resolution (1) or on logits pooled to the output stride (4), "
                "where a teacher pixel is a region's distribution rather than a boundary's blend",
                _axis("distill.logit_stride", (1, 4))),
    AblationSet("recal_mode", "ARFD recalibration across channels or across tokens",
                _axis("distill.arfd.mode", ("channel", "token"))),
    AblationSet("feature_loss", "ARFD consistency measure: 1 - CKA, or plain MSE",
                _axis("distill.arfd.feature_loss", ("cka", "mse"))),
    AblationSet("stages", "Distilled feature stages (0..3 = strides 4, 8, 16, 32)",
                _axis("distill.arfd.stages", ((3,), (2, 3), (1, 2, 3), (0, 1, 2, 3)), _stages_label)),
    AblationSet("lambda_l", "Weight lambda_L of the logit loss",
                _axis("distill.lambda_l", (0.5, 1.0, 2.0))),
    AblationSet("lambda_f", "Weight lambda_F of the feature loss",
                _axis("distill.lambda_f", (0.5, 1.0, 2.0))),
    AblationSet("warmup", "Share of the iterations over which lambda_L and lambda_F ramp up from 0",
                _axis("distill.warmup", (0.0, 0.05, 0.2))),
    AblationSet("fusion", "Teacher fusion: X added after every encoder stage, or only at the decoder input",
                _axis("teacher.model.fusion", ("intermediate", "late")), changes_teacher=True),
    AblationSet("x_modality", "The teacher's X: surface normals, inverse depth or depth",
                (Variant("normals", {"data.modality": "normals", "teacher.model.x_channels": 3}),
                 Variant("inverse_depth", {"data.modality": "inverse_depth", "teacher.model.x_channels": 1}),
                 Variant("depth", {"data.modality": "depth", "teacher.model.x_channels": 1})),
                changes_teacher=True),
    AblationSet("control", "The teacher architecture fed X = zeros, scored alone: geometry vs capacity",
                (Variant("zero_x", {"data.zero_x": True}, teacher_only=True),), changes_teacher=True),
)}

CONTROL = "control"
ALL = "all"


def select(names: Sequence[str]) -> list[AblationSet]:
    """The sets named (in order, without repeats); "all" = every set. Unknown names raise ValueError."""
    chosen: dict[str, AblationSet] = {}
    for name in names:
        if name == ALL:
            chosen.update(ABLATIONS)
        elif name in ABLATIONS:
            chosen[name] = ABLATIONS[name]
        else:
            raise ValueError(f"unknown ablation {name!r}; valid: {', '.join([*ABLATIONS, ALL])}")
    return list(chosen.values())


def describe() -> str:
    """One line per set, for --help."""
    lines = []
    for s in ABLATIONS.values():
        values = ", ".join(v.label for v in s.variants)
        lines.append(f"{s.name} ({values}): {s.description}")
    return "; ".join(lines)
