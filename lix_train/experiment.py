"""The experiment config every entry point reads (train_teacher, distill, evaluate), and what derives from it.

    data      DataConfig: dataset, splits, X modality, transforms
    teacher   model (ModelConfig) + train (TrainConfig) of the RGB+X teacher
    student   model + train of the RGB-only student (train = the distillation run)
    distill   DistillConfig: method (default cwd, the benchmark's choice on val) and its loss settings
    eval      EvalConfig of the final scoring on the held-out test split
    output    where runs and the shared teachers go
    runtime   CPU threads

One tree for all three tools, so a teacher trained by `train_teacher` is found again by
`distill` under the same key, and `--teacher.train.iters 500` means the same everywhere.
Cross-section consistency (class counts, X channels) is checked here, before any work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lix_train.config import ConfigError, check_range, option, read_yaml, section, to_dict
from lix_train.data.build import root_identity
from lix_train.data.config import DataConfig
from lix_train.distillers.config import DistillConfig, upgrade_distill_section
from lix_train.engine.checkpoint import model_signature
from lix_train.engine.config import EvalConfig, TrainConfig
from lix_train.engine.rng import seed_everything
from lix_train.models import create_model
from lix_train.models.base import SIZE_DIVISOR
from lix_train.models.config import ModelConfig

PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "quick"
# Model options that do not change the trained weights' shapes or the network's inference:
# left out of checkpoint signatures, so a checkpoint loads wherever the architecture matches.
NON_ARCHITECTURE = ("pretrained", "dropout")
# Train options that are bookkeeping, not part of what determines a teacher's weights.
BOOKKEEPING = ("progress", "num_workers", "tensorboard", "log_every", "ckpt_every", "keep_last", "eval_every",
               "eval", "device")
# Dotted option prefixes that change how a run is carried out or reported, never what it computes:
# a run may be continued, and a study may compare runs, across differences in these alone.
# eval.score_test is one of them: it says which splits the final scoring reads, never what is trained,
# so a run continues across it (a finished val-only run scores test when continued with it on). A
# finished run without test scores must not stand in for one that needs them: the study checks
# that itself (records.is_finished with needs_test).
NOT_RESULT_AFFECTING = ("output.", "runtime.", "data.x_cache", "data.frame_cache", "eval.score_test") + tuple(
    f"{role}.train.{key}" for role in ("teacher", "student") for key in BOOKKEEPING)
# Data options that do not change the teacher's training frames (where caches live, eval subsets).
EVAL_ONLY_DATA = ("cache_dir", "x_cache", "frame_cache", "val_scenes", "test_scenes", "max_val_frames",
                  "max_test_frames")


@dataclass
class TeacherConfig:
    """The RGB+X teacher: its network and how it is trained."""

    model: ModelConfig = section(ModelConfig, "Teacher network (both encoder branches, fusion, decoder).")
    train: TrainConfig = section(TrainConfig, "Teacher training.")


@dataclass
class StudentConfig:
    """The RGB-only student: its network and the distillation run's training settings."""

    model: ModelConfig = section(ModelConfig, "Student network (x_channels, fusion and late_fusion_mode unused).")
    train: TrainConfig = section(TrainConfig, "Student training (the distillation run).")


@dataclass
class OutputConfig:
    """Where runs are written."""

    runs_dir: Path = option(Path("runs/distill"), "Parent folder of distillation runs without --run-dir.")
    teachers_dir: Path = option(Path("runs/teachers"), "Shared teacher store: runs/teachers/<hash of data, "
                                "teacher model and teacher train config>/, reused when complete, resumed when not.")
    name: str = option("", "Run folder name under runs_dir; empty = <preset>-<date>-<time>.")
    qualitative_frames: int = option(4, "Test frames in the qualitative figure (RGB | truth | teacher | student).")
    plots: bool = option(True, "Draw the loss curves, per-class IoU bars and qualitative grid.")

    def __post_init__(self):
        check_range("output.qualitative_frames", self.qualitative_frames, low=0)
        if "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"output.name={self.name!r} must be a plain folder name")


@dataclass
class RuntimeConfig:
    """Process-level settings that do not change results."""

    threads: int = option(0, "torch CPU threads per process; 0 = torch's default (one per core). On a small or "
                          "shared CPU, 1 avoids the stalls of oversubscribed threads (measured 7x on 2 busy cores).")

    def __post_init__(self):
        check_range("runtime.threads", self.threads, low=0)


@dataclass
class ExperimentConfig:
    """Teacher, student, distillation and evaluation of one LIX experiment."""

    data: DataConfig = section(DataConfig, "Dataset, splits, X modality and transforms.")
    teacher: TeacherConfig = section(TeacherConfig, "The RGB+X teacher.")
    student: StudentConfig = section(StudentConfig, "The RGB-only student.")
    distill: DistillConfig = section(DistillConfig, "Distillation method and loss weights.")
    eval: EvalConfig = section(EvalConfig, "Final evaluation of teacher and student on the test split.")
    output: OutputConfig = section(OutputConfig, "Output folders.")
    runtime: RuntimeConfig = section(RuntimeConfig, "CPU threads.")

    def __post_init__(self):
        classes = self.data.class_set
        for role in ("teacher", "student"):
            n = getattr(self, role).model.num_classes
            if n != classes.num_classes:
                raise ConfigError(
                    f"{role}.model.num_classes={n}, but data.dataset={self.data.dataset!r} has "
                    f"{classes.num_classes} classes ({classes.name}); set --{role}.model.num_classes "
                    f"{classes.num_classes}")
        crop = self.data.transforms.crop_size
        if any(c % SIZE_DIVISOR for c in crop):
            raise ConfigError(f"data.transforms.crop_size={tuple(crop)}: training crops must be multiples of "
                              f"{SIZE_DIVISOR} (the encoders' output stride)")
        if self.teacher.model.x_channels != self.data.x_channels:
            raise ConfigError(
                f"teacher.model.x_channels={self.teacher.model.x_channels}, but data.modality="
                f"{self.data.modality!r} has {self.data.x_channels} channel(s); set --teacher.model.x_channels "
                f"{self.data.x_channels}")


def upgrade_stored(config: dict) -> dict:
    """A config an earlier version wrote (a run folder's config.yaml) in today's layout, as a dict."""
    if isinstance(config, dict) and isinstance(config.get("distill"), dict):
        config = {**config, "distill": upgrade_distill_section(config["distill"])}
    return config


def read_stored_config(path: str | Path) -> dict:
    """A run folder's config.yaml in today's layout; errors name the file."""
    return upgrade_stored(read_yaml(path))


def load_stored_config(path: Path) -> dict:
    """`read_stored_config` for callers that report an unreadable file themselves (OSError, yaml.YAMLError)."""
    return upgrade_stored(yaml.safe_load(path.read_text()) or {})


def network_signature(role: str, model: ModelConfig) -> dict:
    """Checkpoint signature of the teacher or student network: name, architecture options, classes."""
    arch = {k: v for k, v in model.kwargs_for(role).items() if k not in NON_ARCHITECTURE}
    return model_signature(role, arch, model.num_classes)


def build_network(role: str, model: ModelConfig, seed: int | None = None):
    """A fresh teacher or student from its config (pretrained encoder weights loaded if set).

    `seed` seeds every generator first, so the initial weights (and whatever is built next from
    the same generators, such as the DWC) follow from the run's seed rather than the process.
    """
    if seed is not None:
        seed_everything(seed)
    kwargs = model.kwargs_for(role)
    if kwargs.get("pretrained") is not None:
        kwargs["pretrained"] = str(kwargs["pretrained"])
    return create_model(role, **kwargs)


def network_from_signature(signature: dict):
    """The network a checkpoint's signature describes (evaluation and export need no config)."""
    return create_model(signature["name"], **signature["config"])


def teacher_key(cfg: ExperimentConfig) -> dict[str, Any]:
    """Everything that determines a teacher's weights: the training data, its network, its training."""
    data = {k: v for k, v in to_dict(cfg.data).items() if k not in EVAL_ONLY_DATA}
    data["root"] = root_identity(cfg.data)
    if not data.get("zero_x"):  # the control's flag: left out when off, so existing teachers keep their hash
        data.pop("zero_x", None)
    train = {k: v for k, v in to_dict(cfg.teacher.train).items() if k not in BOOKKEEPING}
    if train.get("init_from") is None:  # left out when unset, so existing teachers keep their hash
        train.pop("init_from", None)
    return {"data": data, "model": to_dict(cfg.teacher.model), "train": train}


def teacher_hash(cfg: ExperimentConfig) -> str:
    """Short stable hash of teacher_key: the folder name in the shared teachers directory."""
    blob = json.dumps(teacher_key(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
