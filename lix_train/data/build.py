"""The `data` section of every entry point, and the datasets it builds: train / val / test.

`build_datasets(cfg, modality)` turns a DataConfig into SegmentationDatasets, one per split:
training frames get the augmentation pipeline, val / test frames the deterministic resize.
Splits never share a drive (vKITTI2-format data is split by scene), so the held-out test
score measures generalisation to unseen streets, not to the next frame of a seen one.

Resolution: frames are loaded at their stored size, X is encoded there (normals need the true
intrinsics of the pixels they are computed on), and only then do the transforms resize to
`transforms.size` / `transforms.crop_size`. So the quick preset trains at 96x320 on the
192x640 embedded set with exact full-resolution normals.

Datasets (`dataset`):
  synthetic        the embedded procedural set (root empty: generated into the cache on first
                   use) or any generated set with a splits.json; scenes from splits.json.
  vkitti2          Virtual KITTI 2 at `root`; scenes per split default to DEFAULT_VKITTI2_SPLITS.
  kitti_semantics  the 200 KITTI Semantics frames; the last `kitti.test_frames` (sorted by name)
                   are test, the `kitti.val_frames` before them val. X from `kitti.*`.
  nuimages         nuImages via its devkit: train = `nuimages.train_version`; val / test are the
                   even / odd frames of `nuimages.eval_version` (nuImages test has no labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lix_train.config import ConfigError, check_choice, check_range, option, section, to_dict
from lix_train.data.classes import VKITTI2, ClassSet
from lix_train.data.transforms import TransformConfig, build_eval_transforms, build_train_transforms
from lix_train.data.x_cache import XCache

DATASETS = ("synthetic", "vkitti2", "kitti_semantics", "nuimages")
MODALITIES = ("normals", "inverse_depth", "disparity", "depth")
X_CHANNELS = {"normals": 3, "inverse_depth": 1, "disparity": 1, "depth": 1}
SPLITS = ("train", "val", "test")
ON_ERROR = ("raise", "skip")
VKITTI2_SKY_M = 655.0  # vKITTI2 stores sky as 65535 cm = 655.35 m: beyond this is "no surface"

# [choice] The paper's vKITTI2 split is not public. Whole scenes per split (no drive in two
# splits); the two largest drives train, the smallest two score.
DEFAULT_VKITTI2_SPLITS = {
    "train": ("Scene01", "Scene06", "Scene20"),
    "val": ("Scene02",),
    "test": ("Scene18",),
}


@dataclass
class VKITTI2Options:
    """vKITTI2-format layout options (datasets synthetic and vkitti2)."""

    cameras: tuple[str, ...] = option(("Camera_0",), "Cameras to read: Camera_0 (left), Camera_1 (right).")
    rgb_root: Path | None = option(None, "Root of the extracted rgb tarball if kept apart from data.root.")
    depth_root: Path | None = option(None, "Root of the extracted depth tarball if kept apart from data.root.")
    seg_root: Path | None = option(None, "Root of the extracted classSegmentation tarball if kept apart.")
    text_root: Path | None = option(None, "Root of the extracted textgt tarball (colors.txt, intrinsic.txt).")

    def __post_init__(self):
        self.cameras = tuple(self.cameras)
        bad = [c for c in self.cameras if c not in ("Camera_0", "Camera_1")]
        if not self.cameras or bad:
            raise ConfigError(f"data.vkitti2.cameras={self.cameras!r}: expected some of Camera_0, Camera_1")


@dataclass
class KittiOptions:
    """KITTI Semantics: where X comes from (at most one of stereo_root, depth_dir, disparity_dir) and the split."""

    stereo_root: Path | None = option(None, "KITTI stereo 2015 folder (image_3 + calibration): X from SGBM disparity.")
    depth_dir: Path | None = option(None, "Folder of per-image depth files named like the images.")
    depth_format: str = option("png_mm", "Depth file format.", choices=("png_mm", "png_256", "npy"))
    disparity_dir: Path | None = option(None, "Folder of per-image disparity files (needs calib_root).")
    disparity_format: str = option("png_256", "Disparity file format.", choices=("png_256", "npy"))
    calib_root: Path | None = option(None, "KITTI stereo 2015 folder whose calibration gives K, f and B; "
                                     "none = stereo_root.")
    sgbm_cache: Path | None = option(None, "Where SGBM disparities are cached; none = no cache.")
    val_frames: int = option(20, "Frames (sorted by name, just before the test frames) held out for validation.")
    test_frames: int = option(40, "Last frames (sorted by name) held out for the test score.")

    def __post_init__(self):
        check_range("data.kitti.val_frames", self.val_frames, low=1)
        check_range("data.kitti.test_frames", self.test_frames, low=1)
        given = [n for n in ("stereo_root", "depth_dir", "disparity_dir") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ConfigError(f"data.kitti: give at most one source of X, got {', '.join(given)}")


@dataclass
class NuImagesOptions:
    """nuImages versions, cameras and the user-supplied depth for X."""

    train_version: str = option("v1.0-train", "Table version the training frames come from.")
    eval_version: str = option("v1.0-val", "Table version split into val (even frames) and test (odd frames).")
    cameras: tuple[str, ...] = option((), "Camera channels to keep (e.g. CAM_FRONT); empty = all.")
    depth_dir: Path | None = option(None, "Folder of per-image depth (<stem>.png or .npy), e.g. from a "
                                    "monocular depth network; needed for teacher training.")
    depth_png_format: str = option("png_mm", "How .png depth is stored.", choices=("png_mm", "png_256"))

    def __post_init__(self):
        self.cameras = tuple(self.cameras)


@dataclass
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
    vkitti2: VKITTI2Options = section(VKITTI2Options, "vKITTI2-format layout (synthetic, vkitti2).")
    kitti: KittiOptions = section(KittiOptions, "KITTI Semantics options.")
    nuimages: NuImagesOptions = section(NuImagesOptions, "nuImages options.")

    def __post_init__(self):
        check_choice("data.dataset", self.dataset, DATASETS)
        check_choice("data.modality", self.modality, MODALITIES)
        check_choice("data.on_error", self.on_error, ON_ERROR)
        for name in ("train_scenes", "val_scenes", "test_scenes", "variations"):
            setattr(self, name, tuple(getattr(self, name)))
        for name in ("max_train_frames", "max_val_frames", "max_test_frames"):
            check_range(f"data.{name}", getattr(self, name), low=0)
        if self.max_depth is not None and not self.max_depth > 0:
            raise ConfigError(f"data.max_depth={self.max_depth!r} must be positive (or none)")
        if self.dataset in ("kitti_semantics", "nuimages"):
            scenes = [n for n in ("train_scenes", "val_scenes", "test_scenes", "variations") if getattr(self, n)]
            if scenes:
                raise ConfigError(f"data.{scenes[0]} applies to vKITTI2-format data, not data.dataset="
                                  f"{self.dataset!r} (see data.kitti.* / data.nuimages.* for its split)")

    @property
    def class_set(self) -> ClassSet:
        """The dataset's classes, known without reading any file."""
        if self.dataset == "kitti_semantics":
            from lix_train.data.classes import CITYSCAPES

            return CITYSCAPES
        if self.dataset == "nuimages":
            from lix_train.data.nuimages import NUIMAGES

            return NUIMAGES
        return VKITTI2

    @property
    def x_channels(self) -> int:
        return X_CHANNELS[self.modality]

    def max_frames(self, split: str) -> int:
        return {"train": self.max_train_frames, "val": self.max_val_frames, "test": self.max_test_frames}[split]


class FrameSubset:
    """Some frames of a source, by index; keeps the source interface (class_set, has_depth, names)."""

    def __init__(self, source, indices: Sequence[int]):
        self.source = source
        self.indices = [int(i) for i in indices]
        names = getattr(source, "names", None)
        self.names = [names[i] for i in self.indices] if names is not None else [str(i) for i in self.indices]

    @property
    def class_set(self) -> ClassSet:
        return self.source.class_set

    @property
    def has_depth(self) -> bool:
        return self.source.has_depth

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.source[self.indices[index]]

    def __getattr__(self, name: str):
        if name == "frame_files" and "source" in self.__dict__ and hasattr(self.source, name):
            return lambda index: self.source.frame_files(self.indices[index])
        if name == "skipped_frames" and "source" in self.__dict__ and hasattr(self.source, name):
            return self.source.skipped_frames
        raise AttributeError(name)


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


def evenly_spaced(count: int, limit: int) -> list[int]:
    """`limit` indices spread evenly over range(count) (all of them when limit is 0 or >= count)."""
    if limit <= 0 or limit >= count:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, limit)})


def resolve_root(cfg: DataConfig, progress: bool = True) -> Path:
    """The dataset root, generating the embedded set when dataset=synthetic and root is empty."""
    if cfg.root is not None:
        root = Path(cfg.root).expanduser()
        if not root.is_dir():
            from lix_train.data.errors import DatasetError

            raise DatasetError(root, f"data.root: directory not found (data.dataset={cfg.dataset!r})")
        return root
    if cfg.dataset == "synthetic":
        from lix_train.data.embedded import ensure_embedded_dataset

        return ensure_embedded_dataset(cfg.cache_dir, progress=progress)
    examples = {"vkitti2": "the folder holding Scene01, Scene02, ...",
                "kitti_semantics": "the data_semantics folder (training/image_2, training/semantic)",
                "nuimages": "the nuImages dataroot (v1.0-train/, samples/)"}
    raise ConfigError(f"data.root is required for data.dataset={cfg.dataset!r}: set --data.root to "
                      f"{examples[cfg.dataset]}")


def root_identity(cfg: DataConfig) -> str:
    """What names the data for cache keys: the embedded set's versioned name, else the absolute root."""
    if cfg.root is None and cfg.dataset == "synthetic":
        from lix_train.data.embedded import EmbeddedConfig

        return f"embedded/{EmbeddedConfig().dirname()}"
    return str(Path(cfg.root).expanduser().resolve()) if cfg.root is not None else ""


def split_scenes(cfg: DataConfig, root: Path) -> dict[str, tuple[str, ...]]:
    """Scenes per split for vKITTI2-format data: the config's lists, else the dataset's defaults."""
    given = {"train": cfg.train_scenes, "val": cfg.val_scenes, "test": cfg.test_scenes}
    if cfg.dataset == "synthetic":
        if all(given.values()):
            defaults = {}
        else:
            from lix_train.data.embedded import SPLITS_FILE, embedded_splits
            from lix_train.data.errors import DatasetError

            if not (root / SPLITS_FILE).is_file():
                raise DatasetError(root / SPLITS_FILE, "missing; a synthetic set needs its splits.json, or give "
                                   "data.train_scenes, data.val_scenes and data.test_scenes")
            defaults = {k: tuple(v) for k, v in embedded_splits(root).items()}
    else:
        defaults = DEFAULT_VKITTI2_SPLITS
    scenes = {split: tuple(given[split]) or defaults[split] for split in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            shared = sorted(set(scenes[a]) & set(scenes[b])) if a < b else []
            if shared:
                raise ConfigError(f"data: scene(s) {', '.join(shared)} are in both the {a} and the {b} split; "
                                  "a drive must not leak across splits")
    return scenes


def _vkitti2_sources(cfg: DataConfig, root: Path, splits: Sequence[str]) -> dict:
    from lix_train.data.sources import build_source

    scenes = split_scenes(cfg, root)
    opts = cfg.vkitti2
    return {
        split: build_source(
            "vkitti2", root=root, scenes=list(scenes[split]), variations=list(cfg.variations) or None,
            cameras=opts.cameras, rgb_root=opts.rgb_root, depth_root=opts.depth_root, seg_root=opts.seg_root,
            text_root=opts.text_root, on_error=cfg.on_error,
        )
        for split in splits
    }


def _kitti_sources(cfg: DataConfig, root: Path, splits: Sequence[str]) -> dict:
    from lix_train.data.sources import build_source

    k = cfg.kitti
    try:
        source = build_source(
            "kitti_semantics", root=root, stereo_root=k.stereo_root, depth_dir=k.depth_dir,
            depth_format=k.depth_format, disparity_dir=k.disparity_dir, disparity_format=k.disparity_format,
            calib_root=k.calib_root, cache_dir=k.sgbm_cache, on_error=cfg.on_error,
        )
    except ValueError as err:
        raise ConfigError(f"data.kitti: {err}") from None
    n = len(source)
    if k.val_frames + k.test_frames >= n:
        raise ConfigError(f"data.kitti.val_frames + test_frames = {k.val_frames + k.test_frames} leaves no "
                          f"training frame of the {n} found under {root}")
    order = sorted(range(n), key=lambda i: source.names[i])
    cut_val, cut_test = n - k.test_frames - k.val_frames, n - k.test_frames
    parts = {"train": order[:cut_val], "val": order[cut_val:cut_test], "test": order[cut_test:]}
    return {split: FrameSubset(source, parts[split]) for split in splits}


def _nuimages_sources(cfg: DataConfig, root: Path, splits: Sequence[str]) -> dict:
    from lix_train.data.nuimages import NuImagesDevkitMissing
    from lix_train.data.sources import build_source

    o = cfg.nuimages

    def load(version: str):
        try:
            return build_source("nuimages", root=root, version=version, cameras=list(o.cameras) or None,
                                depth_dir=o.depth_dir, depth_png_format=o.depth_png_format, on_error=cfg.on_error)
        except NuImagesDevkitMissing as err:
            raise ConfigError(f"data.dataset='nuimages': {err}") from None

    out = {}
    if "train" in splits:
        out["train"] = load(o.train_version)
    if {"val", "test"} & set(splits):
        evaluation = load(o.eval_version)
        order = sorted(range(len(evaluation)), key=lambda i: evaluation.names[i])
        for split, start in (("val", 0), ("test", 1)):
            if split in splits:
                out[split] = FrameSubset(evaluation, order[start::2])
    return out


def build_sources(cfg: DataConfig, splits: Sequence[str] = SPLITS, root: Path | None = None) -> dict:
    """Dataset sources per split (before X and transforms), limited to max_*_frames."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {list(SPLITS)}")
    root = resolve_root(cfg) if root is None else root
    if cfg.dataset in ("synthetic", "vkitti2"):
        sources = _vkitti2_sources(cfg, root, splits)
    elif cfg.dataset == "kitti_semantics":
        sources = _kitti_sources(cfg, root, splits)
    else:
        sources = _nuimages_sources(cfg, root, splits)
    for split, source in sources.items():
        limit = cfg.max_frames(split)
        if 0 < limit < len(source):
            sources[split] = FrameSubset(source, evenly_spaced(len(source), limit))
    return sources


def missing_x_message(cfg: DataConfig) -> str:
    """Why a teacher cannot be trained on this data, and which option supplies X."""
    how = {
        "kitti_semantics": "set data.kitti.stereo_root (SGBM disparity), data.kitti.disparity_dir (+ calib_root) "
                           "or data.kitti.depth_dir",
        "nuimages": "set data.nuimages.depth_dir to per-image depth (e.g. from a monocular depth network)",
    }.get(cfg.dataset, "use a source with depth")
    return (f"teacher training needs X (data.modality={cfg.modality!r}), but data.dataset={cfg.dataset!r} "
            f"has no depth as configured: {how}")


def cache_root(cfg: DataConfig) -> Path:
    """cache_dir, else $LIX_SEG_CACHE or ~/.cache/lix-seg: the embedded set, X cache and frame cache live here."""
    from lix_train.data.embedded import default_cache_dir

    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


def x_cache_of(cfg: DataConfig) -> XCache | None:
    """The X cache the config asks for: cache_root/x."""
    return XCache(cache_root(cfg) / "x") if cfg.x_cache else None


def source_identity(cfg: DataConfig) -> dict:
    """What names the frames a source reads, for the frame cache: the data and its source's options."""
    options = {"kitti_semantics": cfg.kitti, "nuimages": cfg.nuimages}.get(cfg.dataset, cfg.vkitti2)
    return {"dataset": cfg.dataset, "root": root_identity(cfg), "source": to_dict(options)}


def build_datasets(cfg: DataConfig, modality: str | None, splits: Sequence[str] = SPLITS,
                   root: Path | None = None) -> dict:
    """{split: SegmentationDataset}; `modality` None builds RGB-only items (students, baselines).

    The train split gets the augmentation pipeline, val and test the deterministic resize to
    `transforms.size`. Sky (depth beyond max_depth) is unknown in X, so its normals are zero.
    With data.frame_cache each split's frames are decoded once into cache_root/frames (exact).
    """
    from lix_train.data.dataset import SegmentationDataset

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
            from lix_train.data.precheck import drop_unreadable

            source, dropped = drop_unreadable(source, split)
        transforms = build_train_transforms(cfg.transforms) if split == "train" else build_eval_transforms(cfg.transforms)
        dataset = SegmentationDataset(source, modality, transforms, on_error=cfg.on_error, max_depth=cfg.max_depth,
                                      x_cache=x_cache_of(cfg) if modality is not None else None, dropped=dropped)
        if cfg.frame_cache:
            from lix_train.data.frame_cache import cache_dataset_frames

            cache_dataset_frames(dataset, cache_root(cfg) / "frames", source_identity(cfg), what=f"{split} frames")
        out[split] = ZeroX(dataset) if cfg.zero_x and modality is not None else dataset
    return out
