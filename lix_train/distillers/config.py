"""DistillConfig: which method, and the weights, temperature and sub-configs it uses."""

from __future__ import annotations

from dataclasses import dataclass

from lix_train.config import check_choice, check_range, option, section
from lix_train.data.classes import IGNORE_INDEX
from lix_train.losses.arfd import ARFDConfig
from lix_train.losses.aux_x import AuxXConfig
from lix_train.losses.dwld import DWLDConfig
from lix_train.losses.mgd import MGDConfig

DECAYS = ("none", "linear")
BALANCES = ("none", "cap", "match")
# Options of the distillation terms' schedule and balance: read by every method that has a term.
SCHEDULE_OPTIONS = ("warmup", "start", "decay", "balance", "balance_ratio")
from lix_train.distillers.registry import METHODS  # the registered names, read on first use


@dataclass
class DistillConfig:
    """Total loss L = L_H + ramp * (lambda_l L_L + lambda_f L_F), ramp rising linearly over `warmup`."""

    method: str = option("lix", "Distillation method.", choices=METHODS)
    lambda_l: float = option(1.0, "Weight of the logit loss L_L (KD, DKD, CWD, DWLD).")
    lambda_f: float = option(1.0, "Weight of the feature loss L_F (AT, ARFD, MGD; aux_x's X loss).")
    warmup: float = option(0.05, "Fraction of training over which lambda_l and lambda_f ramp up linearly from 0.")
    start: float = option(0.0, "Fraction of training with labels only before the distillation terms start (their "
                          "warm-up then begins); early distillation gradients oppose CE (docs/results.md).")
    decay: str = option("none", "Schedule of the distillation terms after the warm-up: constant, or decaying "
                        "linearly to 0 at the end of training.", choices=DECAYS)
    balance: str = option("none", "Per-batch gradient balancing of each distillation term against L_H at the tensor "
                          "it acts on (logits for L_L, features for L_F): cap its gradient norm at balance_ratio x "
                          "L_H's, match it exactly, or none.", choices=BALANCES)
    balance_ratio: float = option(1.0, "Target ratio of a distillation term's gradient norm to L_H's (balance).")
    logit_stride: int = option(1, "Logit losses (KD, DKD, CWD, DWLD) on logits average-pooled by this factor, with "
                               "labels of pure cells only; 4 = the networks' output stride, 16x less work than 1 "
                               "(full resolution). L_H stays at full resolution.")
    temperature: float = option(1.0, "Softmax temperature T of the logit losses (CWD is usually run at 4).")
    alpha: float = option(1.0, "DKD / DWLD weight (or mean weight) of TCKD.")
    beta: float = option(2.0, "DKD / DWLD weight (or mean weight) of NCKD (prototype: 2 beat 8).")
    at_stages: tuple[int, ...] = option((1, 2, 3), "Feature stages for AT (indices into strides 4, 8, 16, 32).")
    ignore_index: int = option(IGNORE_INDEX, "Label value excluded from every loss.")
    dwld: DWLDConfig = section(DWLDConfig, "Dynamically-weighted logit distillation.")
    arfd: ARFDConfig = section(ARFDConfig, "Adaptively-recalibrated feature distillation.")
    mgd: MGDConfig = section(MGDConfig, "Masked generative distillation (method mgd).")
    aux_x: AuxXConfig = section(AuxXConfig, "Auxiliary X prediction head, no teacher (method aux_x).")

    def __post_init__(self):
        check_choice("distill.method", self.method, METHODS)
        check_range("distill.lambda_l", self.lambda_l, 0.0)
        check_range("distill.lambda_f", self.lambda_f, 0.0)
        check_range("distill.warmup", self.warmup, 0.0, 1.0)
        check_range("distill.start", self.start, 0.0, 0.99)
        check_choice("distill.decay", self.decay, DECAYS)
        check_range("distill.logit_stride", self.logit_stride, 1, 32)
        check_choice("distill.balance", self.balance, BALANCES)
        if not self.balance_ratio > 0:
            raise ValueError(f"distill.balance_ratio={self.balance_ratio!r} must be > 0")
        if not self.temperature > 0:
            raise ValueError(f"distill.temperature={self.temperature!r} must be > 0")
        check_range("distill.alpha", self.alpha, 0.0)
        check_range("distill.beta", self.beta, 0.0)
        self.at_stages = tuple(self.at_stages)
        if not self.at_stages or min(self.at_stages) < 0:
            raise ValueError(f"distill.at_stages={self.at_stages!r} must be non-empty indices >= 0")

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
