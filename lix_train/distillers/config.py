"""DistillConfig: which method, the weights and schedule of its terms, and one option group per method.

Each method reads its own group (distill.kd, distill.dkd, distill.cwd, distill.at, distill.dwld,
distill.arfd, distill.mgd, distill.aux_x, distill.halluc; lix reads dwld and arfd), with its own defaults, so a
setting for one method never changes another. Before that, temperature, alpha, beta and
at_stages were flat options shared by several methods: `upgrade_distill_section` reads a run folder's
config.yaml written then, and a user's config or option that uses an old name is told the new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from lix_train.config import check_choice, check_positive, check_range, option, with_sections
from lix_train.data.classes import IGNORE_INDEX

DECAYS = ("none", "linear")
BALANCES = ("none", "cap", "match")
# The flat options of configs written before the per-method groups, and the groups that took them
# over (with the option's name there).
LEGACY_OPTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "temperature": (("kd", "dkd", "cwd", "dwld"), "temperature"),
    "alpha": (("dkd", "dwld"), "alpha"),
    "beta": (("dkd", "dwld"), "beta"),
    "at_stages": (("at",), "stages"),
}
from lix_train.distillers.registry import METHODS, SCHEDULE_OPTIONS, option_groups  # noqa: F401 (re-exported)


@dataclass
@with_sections(option_groups, "distill")
class DistillConfig:
    """Total loss L = L_H + ramp * (lambda_l L_L + lambda_f L_F), ramp rising linearly over `warmup`."""

    # The default is the distiller the v2 main table chose on val: the best val mean among those run at 3 seeds
    # at the converged budget (docs/results.json `val_best_method`; tests/study/test_published_default.py).
    method: str = option("cwd", "Distillation method; the default is the one the benchmark chose on val "
                         "(docs/results.md).", choices=METHODS)
    lambda_l: float = option(1.0, "Weight of the logit loss L_L (KD, DKD, CWD, DWLD).")
    lambda_f: float = option(1.0, "Weight of the feature loss L_F (AT, ARFD, MGD, halluc; aux_x's X loss).")
    warmup: float = option(0.05, "Fraction of training over which lambda_l and lambda_f ramp up linearly from 0.")
    start: float = option(0.0, "Fraction of training with labels only before the distillation terms start (their "
                          "warm-up then begins); early distillation gradients oppose CE (docs/studies/v1/results.md).")
    decay: str = option("none", "Schedule of the distillation terms after the warm-up: constant, or decaying "
                        "linearly to 0 at the end of training.", choices=DECAYS)
    balance: str = option("none", "Per-batch gradient balancing of each distillation term against L_H at the tensor "
                          "it acts on (logits for L_L, features for L_F): cap its gradient norm at balance_ratio x "
                          "L_H's, match it exactly, or none.", choices=BALANCES)
    balance_ratio: float = option(1.0, "Target ratio of a distillation term's gradient norm to L_H's (balance).")
    logit_stride: int = option(1, "Logit losses (KD, DKD, CWD, DWLD) on logits average-pooled by this factor, with "
                               "labels of pure cells only; 4 = the networks' output stride, 16x less work than 1 "
                               "(full resolution). L_H stays at full resolution.")
    ignore_index: int = option(IGNORE_INDEX, "Label value excluded from every loss.")
    # Then one section per method option group, in registration order: kd, dkd, cwd, at, dwld, arfd, ...

    def __post_init__(self):
        check_choice("distill.method", self.method, METHODS)
        check_range("distill.lambda_l", self.lambda_l, 0.0)
        check_range("distill.lambda_f", self.lambda_f, 0.0)
        check_range("distill.warmup", self.warmup, 0.0, 1.0)
        check_range("distill.start", self.start, 0.0, 0.99)
        check_choice("distill.decay", self.decay, DECAYS)
        check_range("distill.logit_stride", self.logit_stride, 1, 32)
        check_choice("distill.balance", self.balance, BALANCES)
        check_positive("distill.balance_ratio", self.balance_ratio)

    def ramp(self, progress: float) -> float:
        """Factor in [0, 1] of the distillation terms at training progress in [0, 1].

        0 before `start`; then a linear rise over `warmup` (a share of the whole run); then 1, or with
        decay 'linear' falling to 0 at the end of training.
        """
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress={progress!r} must lie in [0, 1]")
        if progress < self.start:
            return 0.0
        rise = 1.0 if self.warmup == 0 else min(1.0, (progress - self.start) / self.warmup)
        if self.decay == "linear":
            return rise * (1.0 - progress) / (1.0 - self.start)
        return rise


# A user's config that still names a flat option is told where it went (config.from_dict reads this).
DistillConfig.__moved_options__ = {
    old: " or ".join(f"distill.{group}.{name}" for group in groups) for old, (groups, name) in LEGACY_OPTIONS.items()
}


def upgrade_distill_section(distill: dict) -> dict:
    """A stored distill section in today's layout: each old flat option copied into the groups that took it over.

    For config.yaml files of finished runs, so a study or a resumed run compares them with today's
    config instead of calling them stale. A group's own value, where the file has one, wins.
    """
    if not isinstance(distill, dict):
        return distill
    out = dict(distill)
    for old, (groups, name) in LEGACY_OPTIONS.items():
        if old not in out:
            continue
        value = out.pop(old)
        for group in groups:
            node = dict(out.get(group) or {})
            node.setdefault(name, value)
            out[group] = node
    return out
