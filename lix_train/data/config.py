"""The `data` section of every entry point: which dataset, which frames, the teacher's X, the transforms.

`data.dataset` is one of the registered datasets (lix_train/data/datasets.py, in that order), and
each dataset's own options (data.vkitti2, data.kitti, data.nuimages, ...) are the sections its
DatasetSpec declares, added after DataConfig's own fields. lix_train/data/build.py turns a
DataConfig into datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lix_train.config import ConfigError, check_choice, check_range, option, section, with_sections
from lix_train.data.classes import ClassSet
from lix_train.data.registry import DATASETS, SPLITS, dataset_spec, option_sections
from lix_train.data.transforms import TransformConfig

MODALITIES = ("normals", "inverse_depth", "disparity", "depth")
X_CHANNELS = {"normals": 3, "inverse_depth": 1, "disparity": 1, "depth": 1}
ON_ERROR = ("raise", "skip")
VKITTI2_SKY_M = 655.0  # vKITTI2 stores sky as 65535 cm = 655.35 m: beyond this is "no surface"
SCENE_OPTIONS = ("train_scenes", "val_scenes", "test_scenes", "variations")  # vKITTI2-format data only

__all__ = ["DATASETS", "MODALITIES", "ON_ERROR", "SPLITS", "VKITTI2_SKY_M", "X_CHANNELS", "DataConfig"]


@dataclass
@with_sections(option_sections, "data")
class DataConfig:
    """Which dataset, which frames go into which split, the teacher's X, and the transforms."""

    dataset: str = option("synthetic", "Dataset to read.", choices=DATASETS)
    root: Path | None = option(None, "Dataset root. synthetic: a generated set with splits.json, none = the "
                               "embedded default (generated into the cache on first use); required otherwise.")
    cache_dir: Path | None = option(None, "Cache of the embedded set; none = $LIX_SEG_CACHE or ~/.cache/lix-seg.")
    x_cache: bool = option(False, "Keep each frame's encoded X on disk (cache_dir/x, content-addressed, exact) so it "
                                  "is computed once, not every epoch; about 1.5 MB per 192x640 frame.")
    frame_cache: bool = option(False, "Keep each split's decoded frames (RGB, labels, X; before any random "
                               "transform) in memory-mapped files under cache_dir/frames, built once, exact, so a "
                               "sample is a slice instead of 3 PNG decodes: about 2 MB of disk per 192x640 frame "
                               "with normals (0.5 MB without X), per split and frame list.")
    modality: str = option("normals", "The teacher's X, computed from depth at full resolution.", choices=MODALITIES)
    train_scenes: tuple[str, ...] = option((), "Training scenes (vKITTI2-format data); empty = the dataset's "
                                           "default (synthetic: splits.json, vkitti2: Scene01,Scene06,Scene20).")
    val_scenes: tuple[str, ...] = option((), "Validation scenes; empty = default (vkitti2: Scene02).")
    test_scenes: tuple[str, ...] = option((), "Test scenes; empty = default (vkitti2: Scene18).")
    variations: tuple[str, ...] = option((), "vKITTI2 variations to use (clone, fog, ...); empty = all found.")
    max_depth: float | None = option(VKITTI2_SKY_M, "Depth beyond this many metres is unknown in X (vKITTI2 "
                                     "sky is 655.35 m, so sky gets zero normals); none = keep all depth.")
    max_train_frames: int = option(0, "Use at most this many training frames, evenly spaced; 0 = all.")
    max_val_frames: int = option(0, "Use at most this many validation frames, evenly spaced; 0 = all.")
    max_test_frames: int = option(0, "Use at most this many test frames, evenly spaced; 0 = all.")
    on_error: str = option("raise", "Unreadable or incomplete frames: stop with an error naming the file, or "
                           "skip them with a warning.", choices=ON_ERROR)
    zero_x: bool = option(False, "Feed the teacher zeros instead of X (same channels): the capacity control that "
                          "separates the geometric prior from the second encoder's extra parameters.")
    transforms: TransformConfig = section(TransformConfig, "Augmentation, resizing and normalisation.")
    # Then one section per dataset option class, in registration order: vkitti2, kitti, nuimages, ...

    def __post_init__(self):
        check_choice("data.dataset", self.dataset, DATASETS)
        check_choice("data.modality", self.modality, MODALITIES)
        check_choice("data.on_error", self.on_error, ON_ERROR)
        for name in SCENE_OPTIONS:
            setattr(self, name, tuple(getattr(self, name)))
        for name in ("max_train_frames", "max_val_frames", "max_test_frames"):
            check_range(f"data.{name}", getattr(self, name), low=0)
        if self.max_depth is not None and not self.max_depth > 0:
            raise ConfigError(f"data.max_depth={self.max_depth!r} must be positive (or none)")
        spec = self.spec
        if not spec.vkitti2_format:
            scenes = [n for n in SCENE_OPTIONS if getattr(self, n)]
            if scenes:
                see = f" (see data.{spec.options.section}.* for its split)" if spec.options else ""
                raise ConfigError(f"data.{scenes[0]} applies to vKITTI2-format data, not data.dataset="
                                  f"{self.dataset!r}{see}")

    @property
    def spec(self):
        """The dataset's DatasetSpec (lix_train/data/registry.py)."""
        return dataset_spec(self.dataset)

    @property
    def class_set(self) -> ClassSet:
        """The dataset's classes, known without reading any file."""
        return self.spec.class_set

    @property
    def options(self):
        """The dataset's own option section (data.vkitti2, data.kitti, ...), None if it has none."""
        spec = self.spec
        return getattr(self, spec.options.section) if spec.options is not None else None

    @property
    def x_channels(self) -> int:
        return X_CHANNELS[self.modality]

    def max_frames(self, split: str) -> int:
        return {"train": self.max_train_frames, "val": self.max_val_frames, "test": self.max_test_frames}[split]
