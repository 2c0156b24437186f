"""The datasets a DataConfig (lix_train/data/config.py) describes: train / val / test.

`build_datasets(cfg, modality)` turns a DataConfig into SegmentationDatasets, one per split:
training frames get the augmentation pipeline, val / test frames the deterministic resize.
Splits never share a drive (vKITTI2-format data is split by scene), so the held-out test
score measures generalisation to unseen streets, not to the next frame of a seen one.

Resolution: frames are loaded at their stored size, X is encoded there (normals need the true
intrinsics of the pixels they are computed on), and only then do the transforms resize to
`transforms.size` / `transforms.crop_size`. So the quick preset trains at 96x320 on the
192x640 embedded set with exact full-resolution normals.

Which frames go into which split is the dataset's own (DatasetSpec.sources, in its file):
  synthetic        the embedded procedural set (root empty: generated into the cache on first
                   use) or any generated set with a splits.json; scenes from splits.json.
  vkitti2          Virtual KITTI 2 at `root`; scenes per split default to DEFAULT_VKITTI2_SPLITS.
  kitti_semantics  the 200 KITTI Semantics frames; the last `kitti.test_frames` (sorted by name)
                   are test, the `kitti.val_frames` before them val. X from `kitti.*`.
  nuimages         nuImages via its devkit: train = `nuimages.train_version`; val / test are the
                   even / odd frames of `nuimages.eval_version` (nuImages test has no labels).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from lix_train.config import ConfigError, check_choice, to_dict
from lix_train.data.config import MODALITIES, SPLITS, DataConfig
from lix_train.data.dataset import SegmentationDataset
from lix_train.data.embedded import default_cache_dir
from lix_train.data.errors import DatasetError
from lix_train.data.frame_cache import cache_dataset_frames
from lix_train.data.precheck import check_sources, drop_unreadable
from lix_train.data.sources import FrameSubset, evenly_spaced
from lix_train.data.transforms import build_eval_transforms, build_train_transforms
from lix_train.data.x_cache import XCache

log = logging.getLogger(__name__)


class ZeroX:
    """A dataset whose items carry X = 0 (data.zero_x): everything else, attributes included, is the wrapped one's."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        if item.get("x") is not None:
            item["x"] = item["x"] * 0
        return item

    def __getattr__(self, name: str):
        if name == "dataset" or name.startswith("__"):  # unpickling in loader workers: no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def resolve_root(cfg: DataConfig, progress: bool = True) -> Path:
    """The dataset root: data.root, else the dataset's default (synthetic: the embedded set, generated on first use)."""
    if cfg.root is not None:
        root = Path(cfg.root).expanduser()
        if not root.is_dir():
            raise DatasetError(root, f"data.root: directory not found (data.dataset={cfg.dataset!r})")
        return root
    spec = cfg.spec
    if spec.default_root is not None:
        return spec.default_root(cfg, progress)
    raise ConfigError(f"data.root is required for data.dataset={cfg.dataset!r}: set --data.root to "
                      f"{spec.root_hint}")


def root_identity(cfg: DataConfig) -> str:
    """What names the data for cache keys: the default root's stable name (the embedded set's versioned one),
    else the absolute root."""
    if cfg.root is None and cfg.spec.default_root_identity is not None:
        return cfg.spec.default_root_identity(cfg)
    return str(Path(cfg.root).expanduser().resolve()) if cfg.root is not None else ""


def build_sources(cfg: DataConfig, splits: Sequence[str] = SPLITS, root: Path | None = None) -> dict:
    """Dataset sources per split (before X and transforms), limited to max_*_frames."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {list(SPLITS)}")
    root = resolve_root(cfg) if root is None else root
    sources = cfg.spec.sources(cfg, root, splits)
    for split, source in sources.items():
        limit = cfg.max_frames(split)
        if 0 < limit < len(source):
            sources[split] = FrameSubset(source, evenly_spaced(len(source), limit))
    return sources


def check_splits(cfg: DataConfig, splits: Sequence[str], root: Path | None = None) -> None:
    """Header-check the frames of `splits` (DatasetError naming the first bad file); on_error="skip" skips it."""
    if cfg.on_error == "skip":
        return
    checked = check_sources(build_sources(cfg, splits, root))
    log.debug("checked the files of %d frames (%s)", checked, ", ".join(splits))


def missing_x_message(cfg: DataConfig) -> str:
    """Why a teacher cannot be trained on this data, and which option supplies X."""
    return (f"teacher training needs X (data.modality={cfg.modality!r}), but data.dataset={cfg.dataset!r} "
            f"has no depth as configured: {cfg.spec.x_hint}")


def cache_root(cfg: DataConfig) -> Path:
    """cache_dir, else $LIX_SEG_CACHE or ~/.cache/lix-seg: the embedded set, X cache and frame cache live here."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


def x_cache_of(cfg: DataConfig) -> XCache | None:
    """The X cache the config asks for: cache_root/x."""
    return XCache(cache_root(cfg) / "x") if cfg.x_cache else None


def source_identity(cfg: DataConfig) -> dict:
    """What names the frames a source reads, for the frame cache: the data and its source's options."""
    options = cfg.options
    source = to_dict(options) if options is not None else {}
    return {"dataset": cfg.dataset, "root": root_identity(cfg), "source": source}


def build_datasets(cfg: DataConfig, modality: str | None, splits: Sequence[str] = SPLITS,
                   root: Path | None = None) -> dict:
    """{split: SegmentationDataset}; `modality` None builds RGB-only items (students, baselines).

    The train split gets the augmentation pipeline, val and test the deterministic resize to
    `transforms.size`. Sky (depth beyond max_depth) is unknown in X, so its normals are zero.
    With data.frame_cache each split's frames are decoded once into cache_root/frames (exact).
    """
    if modality is not None:
        check_choice("modality", modality, MODALITIES)
    sources = build_sources(cfg, splits, root)
    out = {}
    for split, source in sources.items():
        if modality is not None and not source.has_depth:
            raise ConfigError(missing_x_message(cfg))
        if len(source) == 0:
            raise ConfigError(f"data: the {split} split of {cfg.dataset!r} has no frames")
        dropped: dict[str, str] = {}
        if cfg.on_error == "skip":  # drop (not replace) what a header check finds bad, and record it
            source, dropped = drop_unreadable(source, split)
        transforms = build_train_transforms(cfg.transforms) if split == "train" else build_eval_transforms(cfg.transforms)
        dataset = SegmentationDataset(source, modality, transforms, on_error=cfg.on_error, max_depth=cfg.max_depth,
                                      x_cache=x_cache_of(cfg) if modality is not None else None, dropped=dropped)
        if cfg.frame_cache:
            cache_dataset_frames(dataset, cache_root(cfg) / "frames", source_identity(cfg), what=f"{split} frames")
        out[split] = ZeroX(dataset) if cfg.zero_x and modality is not None else dataset
    return out
