"""Training and evaluation settings of the engine, as validated config dataclasses.

Every entry point (train_teacher, distill, evaluate) embeds these sections in its own config
tree, so `--train.lr 0.01` or `--train.eval.mode slide` work the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lix_train.config import ConfigError, check_choice, check_range, option, section

OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")
AMP_DTYPES = ("float16", "bfloat16")
EVAL_MODES = ("whole", "slide")


@dataclass
class EvalConfig:
    """How images are run through the network when scoring (validation and the evaluate tool)."""

    mode: str = option("whole", "Whole-image or sliding-window inference.", choices=EVAL_MODES)
    crop_size: tuple[int, ...] = option((384, 384), "Sliding-window size H,W in pixels (mode=slide).")
    stride: tuple[int, ...] = option((256, 256), "Sliding-window step H,W in pixels (mode=slide); "
                                     "smaller than crop_size means overlapping windows, whose logits are averaged.")
    size_divisor: int = option(32, "Pad inputs at the bottom/right to a multiple of this before the network "
                               "(the encoders downsample by 32); logits are cropped back.")
    batch_size: int = option(1, "Images per evaluation batch (1 lets images differ in size).")
    score_test: bool = option(True, "Final scoring of a distillation run: score teacher and student on the test "
                              "split (and the student on val). False scores both on the val split only and never "
                              "reads test: for runs that choose settings (compare --tune). Not used by validation "
                              "during training.")

    def __post_init__(self):
        check_choice("eval.mode", self.mode, EVAL_MODES)
        for name in ("crop_size", "stride"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or min(value) < 1:
                raise ConfigError(f"eval.{name}={value!r}: expected two positive integers H,W")
            setattr(self, name, value)
        if any(s > c for s, c in zip(self.stride, self.crop_size)):
            raise ConfigError(f"eval.stride={self.stride} must not exceed eval.crop_size={self.crop_size} "
                              "(windows would leave gaps)")
        check_range("eval.size_divisor", self.size_divisor, low=1)
        if any(c % self.size_divisor for c in self.crop_size):
            raise ConfigError(f"eval.crop_size={self.crop_size} must be multiples of "
                              f"eval.size_divisor={self.size_divisor}")
        check_range("eval.batch_size", self.batch_size, low=1)


@dataclass
class TrainConfig:
    """One training run's optimisation, schedule, runtime and bookkeeping settings.

    The budget is counted in iterations, not epochs: distillation steps cost more than plain
    training steps, and comparisons must train every method for the same number of updates.
    """

    iters: int = option(20000, "Training iterations (optimizer steps).")
    batch_size: int = option(8, "Images per step on each process (global batch = batch_size x world size).")
    optimizer: str = option("adamw", "Optimizer.", choices=OPTIMIZERS)
    lr: float = option(3e-3, "Peak learning rate (reached at the end of warm-up).")
    weight_decay: float = option(1e-2, "Weight decay; never applied to norm layers or biases.")
    momentum: float = option(0.9, "SGD momentum (sgd only).")
    betas: tuple[float, ...] = option((0.9, 0.999), "AdamW betas (adamw only).")
    poly_power: float = option(0.9, "Poly decay exponent: lr = peak * (1 - it / iters) ** power.")
    warmup_iters: int = option(500, "Iterations of linear learning-rate warm-up from ~0 to the peak.")
    grad_clip: float = option(0.0, "Clip the global gradient norm to this value; 0 turns clipping off.")
    amp: bool = option(False, "Mixed precision (CUDA only; ignored with a log line on CPU).")
    amp_dtype: str = option("float16", "Autocast dtype with amp: float16 (with a GradScaler) or bfloat16.",
                            choices=AMP_DTYPES)
    channels_last: bool = option(True, "Use channels-last memory layout (applied on CUDA only, where it helps).")
    seed: int = option(0, "Seed for python, numpy and torch (model init, sampling, augmentation).")
    deterministic: bool = option(False, "Deterministic algorithms (slower; warns on ops without one).")
    ckpt_every: int = option(1000, "Write checkpoints/latest.pt every N iterations (and always at the end); "
                             "0 means only at the end.")
    keep_last: int = option(0, "Also keep the last K iteration checkpoints (iter_XXXXXXX.pt); 0 keeps only latest.pt.")
    log_every: int = option(20, "Write averaged losses to train.csv / TensorBoard every N iterations.")
    eval_every: int = option(2000, "Evaluate every N iterations (and at the end) when there is an eval set; "
                             "0 means only at the end.")
    num_workers: int = option(4, "DataLoader worker processes per training process.")
    device: str = option("auto", "auto picks CUDA when present, else CPU.", choices=DEVICES)
    tensorboard: bool = option(True, "Also write TensorBoard event files (run_dir/tensorboard).")
    progress: bool = option(True, "Show a tqdm progress bar on rank 0.")
    init_from: Path | None = option(None, "Start from these network weights - a student.pt or a checkpoint - with "
                                    "a fresh optimiser and schedule (checked against the network's signature; "
                                    "ignored when the run continues from its own checkpoints/latest.pt).")
    eval: EvalConfig = section(EvalConfig, "Evaluation during training.")

    def __post_init__(self):
        check_range("train.iters", self.iters, low=1)
        check_range("train.batch_size", self.batch_size, low=1)
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_range("train.lr", self.lr, low=0.0)
        if self.lr == 0:
            raise ConfigError("train.lr=0.0 must be positive")
        check_range("train.weight_decay", self.weight_decay, low=0.0)
        check_range("train.momentum", self.momentum, low=0.0, high=1.0)
        self.betas = tuple(self.betas)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas={self.betas!r}: expected two values in [0, 1)")
        check_range("train.poly_power", self.poly_power, low=0.0)
        check_range("train.warmup_iters", self.warmup_iters, low=0, high=self.iters)
        check_range("train.grad_clip", self.grad_clip, low=0.0)
        check_choice("train.amp_dtype", self.amp_dtype, AMP_DTYPES)
        check_range("train.seed", self.seed, low=0)
        for name in ("ckpt_every", "keep_last", "eval_every", "num_workers"):
            check_range(f"train.{name}", getattr(self, name), low=0)
        check_range("train.log_every", self.log_every, low=1)
        check_choice("train.device", self.device, DEVICES)
