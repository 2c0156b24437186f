"""KITTI Semantics (the 200 labelled KITTI stereo 2015 frames), with optional depth for X.

Expected layout (data_semantics.zip extracted into ROOT):

    ROOT/training/image_2/000000_10.png      RGB
    ROOT/training/semantic/000000_10.png     uint8, Cityscapes label ids -> 19 train ids

KITTI Semantics has no depth of its own. X comes from one of (at most one):

* stereo_root: a KITTI stereo 2015 tree (data_scene_flow.zip + data_scene_flow_calib.zip):

      STEREO/training/image_3/000000_10.png                right image, same file name
      STEREO/training/calib_cam_to_cam/000000.txt          P_rect_02 / P_rect_03
      (or STEREO/training/calib/000000.txt with P2 / P3)

  Disparity is computed with OpenCV StereoSGBM (stereo.SGBMConfig) and turned into depth with
  f * B / d from the calibration. With cache_dir, disparities are stored once as KITTI 16-bit
  PNGs (value / 256 = px) under cache_dir/sgbm-<parameter hash>/000000_10.png.
* depth_dir: per-image depth files named like the images (000000_10.png / .npy), in
  depth_format "png_mm" (uint16 mm), "png_256" (uint16 m * 256, KITTI depth benchmark) or "npy".
* disparity_dir: per-image disparity files, disparity_format "png_256" (KITTI disparity, e.g.
  disp_occ_0 or LiDAR disparity) or "npy"; needs calib_root (a stereo 2015 tree as above) for
  f and B.

Without any, has_depth is False and Sample.depth is None. Sample.intrinsics is the rectified K
of image_2 when a calibration is available, else None.

The dataset `kitti_semantics` (SPEC): the last data.kitti.test_frames (sorted by name) are test, the
data.kitti.val_frames before them val; X from data.kitti.* (KittiOptions).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lix_train.config import ConfigError, check_range, option
from lix_train.data.classes import CITYSCAPES, ClassSet, cityscapes_id_lut
from lix_train.data.errors import DatasetError
from lix_train.data.io import (
    DEPTH_FORMATS, DEPTH_MAP, DISPARITY_FORMATS, DISPARITY_MAP, FORMAT_SUFFIX, BadInputPolicy, SkipsWhileIndexing,
    list_dir, read_float_map, read_id_label, read_rgb, write_png_atomic,
)
from lix_train.data.registry import DatasetOptions, DatasetSpec
from lix_train.data.sample import Sample
from lix_train.data.sources import FrameSubset, open_source
from lix_train.data.stereo import (
    SGBMConfig,
    StereoCalibration,
    compute_disparity,
    depth_from_disparity,
    stereo_calibration,
)

if TYPE_CHECKING:
    from lix_train.data.config import DataConfig

logger = logging.getLogger(__name__)

LAYOUT = "training/image_2/*.png and training/semantic/*.png under ROOT (the data_semantics folder)"
STEREO_LAYOUT = "training/image_3/<name>.png and training/calib_cam_to_cam/<frame>.txt under the stereo 2015 root"
CALIB_DIRS = ("calib_cam_to_cam", "calib")


def _split_dir(root: Path, required: tuple[str, ...], layout: str) -> Path:
    """ROOT/training, or ROOT itself if the user pointed at the training folder."""
    if not root.is_dir():
        raise DatasetError(root, f"directory not found; expected {layout}")
    for candidate in (root / "training", root):
        if all((candidate / r).is_dir() for r in required):
            return candidate
    raise DatasetError(root, f"missing {' / '.join(required)} folder(s); expected {layout}")


class KITTISemanticsSource(SkipsWhileIndexing):
    """KITTI Semantics frames as Samples, Cityscapes train ids, optional depth (see module doc).

    Args:
        root: the data_semantics folder (holding training/image_2 and training/semantic).
        stereo_root: KITTI stereo 2015 tree for SGBM disparity (see module doc).
        depth_dir / depth_format: user-supplied depth per image.
        disparity_dir / disparity_format: user-supplied disparity per image (needs calib_root).
        calib_root: stereo 2015 tree whose calibration gives K, f and B; defaults to stereo_root.
        sgbm: matcher parameters (stereo.SGBMConfig, KITTI defaults).
        cache_dir: where SGBM disparities are cached (16-bit PNG, written atomically); None = no cache.
        on_error: "raise" (default) or "skip": frames with a missing partner file (label, right
            image, calibration, depth) are dropped with a warning and counted in `skipped`.
            Corrupt files raise DatasetError from __getitem__; sources.SkippingSource substitutes.
    """

    class_set: ClassSet = CITYSCAPES

    def __init__(
        self,
        root: str | Path,
        *,
        stereo_root: str | Path | None = None,
        depth_dir: str | Path | None = None,
        depth_format: str = "png_mm",
        disparity_dir: str | Path | None = None,
        disparity_format: str = "png_256",
        calib_root: str | Path | None = None,
        sgbm: SGBMConfig | None = None,
        cache_dir: str | Path | None = None,
        on_error: str = "raise",
    ):
        options = (("stereo_root", stereo_root), ("depth_dir", depth_dir), ("disparity_dir", disparity_dir))
        given = [name for name, value in options if value is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one source of depth, got {', '.join(given)}")
        if depth_format not in DEPTH_FORMATS:
            raise ValueError(f"depth_format must be one of {sorted(DEPTH_FORMATS)}, got {depth_format!r}")
        if disparity_format not in DISPARITY_FORMATS:
            raise ValueError(f"disparity_format must be one of {sorted(DISPARITY_FORMATS)}, got {disparity_format!r}")
        if calib_root is None:
            calib_root = stereo_root
        if disparity_dir is not None and calib_root is None:
            raise ValueError("disparity_dir needs calib_root= (a KITTI stereo 2015 tree with its calibration) for f, B")
        self.mode = {"stereo_root": "stereo", "depth_dir": "depth", "disparity_dir": "disparity"}.get(
            given[0] if given else "", "none"
        )
        self.has_depth = self.mode != "none"
        self.depth_format, self.disparity_format = depth_format, disparity_format
        self.sgbm = sgbm or SGBMConfig()
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / f"sgbm-{self.sgbm.cache_key()}"
        self._policy = BadInputPolicy(on_error, logger)

        split = _split_dir(Path(root), ("image_2", "semantic"), LAYOUT)
        images = _png_stems(split / "image_2", LAYOUT)
        labels = _png_stems(split / "semantic", LAYOUT)
        if not images and not labels:
            raise DatasetError(split / "image_2", f"no PNG images found; expected {LAYOUT}")
        right_dir = calib_files = x_files = None
        if stereo_root is not None:
            right_dir = _split_dir(Path(stereo_root), ("image_3",), STEREO_LAYOUT) / "image_3"
            right_files = _png_stems(right_dir, STEREO_LAYOUT)
        if calib_root is not None:
            calib_files = _calib_files(Path(calib_root))
        if depth_dir is not None or disparity_dir is not None:
            x_dir = Path(depth_dir if depth_dir is not None else disparity_dir)
            fmt = depth_format if depth_dir is not None else disparity_format
            x_files = _stems(x_dir, FORMAT_SUFFIX[fmt], f"one {FORMAT_SUFFIX[fmt]} file per image ({fmt})")

        self._items: list[dict] = []
        self._calib: dict[str, StereoCalibration] = {}
        for stem in sorted(images | labels):
            item = {"stem": stem, "rgb": split / "image_2" / f"{stem}.png", "label": split / "semantic" / f"{stem}.png"}
            try:
                for key in ("rgb", "label"):
                    if stem not in (images if key == "rgb" else labels):
                        other = item["label" if key == "rgb" else "rgb"]
                        raise DatasetError(item[key], f"file not found; expected it next to {other}")
                if right_dir is not None:
                    item["right"] = right_dir / f"{stem}.png"
                    if stem not in right_files:
                        raise DatasetError(item["right"], f"file not found; expected the right view of {item['rgb']}")
                if x_files is not None:
                    if stem not in x_files:
                        missing = x_dir / f"{stem}{FORMAT_SUFFIX[fmt]}"
                        raise DatasetError(missing, f"file not found; expected the {fmt} X file of {item['rgb']}")
                    item["x"] = x_files[stem]
                if calib_files is not None:
                    item["calib"] = self._calibration(stem, calib_files, Path(calib_root))
            except DatasetError as error:
                self._policy.handle(error)
                continue
            self._items.append(item)
        self.names = [item["stem"] for item in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def frame_files(self, index: int) -> tuple[Path, ...]:
        """The files frame `index` is read from (the frame cache notices when one changes)."""
        return tuple(v for v in self._items[index].values() if isinstance(v, Path))

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} KITTI Semantics frames")
        item = self._items[index]
        rgb = read_rgb(item["rgb"])
        shape = rgb.shape[:2]
        label = read_id_label(item["label"], cityscapes_id_lut(), shape)
        calib: StereoCalibration | None = item.get("calib")
        depth = None
        if self.mode == "stereo":
            depth = depth_from_disparity(self._stereo_disparity(item, rgb), calib)
        elif self.mode == "disparity":
            disparity = read_float_map(item["x"], self.disparity_format, DISPARITY_MAP, shape)
            depth = depth_from_disparity(disparity, calib)
        elif self.mode == "depth":
            depth = read_float_map(item["x"], self.depth_format, DEPTH_MAP, shape)
        k = None if calib is None else calib.intrinsics.copy()
        meta = {"x_source": self.mode}
        if calib is not None:
            meta.update(focal_px=calib.focal_px, baseline_m=calib.baseline_m)
        return Sample(rgb, label, depth, k, item["stem"], meta)

    def _calibration(self, stem: str, calib_files: dict[str, Path], calib_root: Path) -> StereoCalibration:
        frame = stem.split("_")[0]
        if frame not in calib_files:
            raise DatasetError(
                calib_root / "training" / CALIB_DIRS[0] / f"{frame}.txt",
                f"file not found; expected the calibration of {stem} ({STEREO_LAYOUT})",
            )
        if frame not in self._calib:
            self._calib[frame] = stereo_calibration(calib_files[frame])
        return self._calib[frame]

    def _stereo_disparity(self, item: dict, left: np.ndarray) -> np.ndarray:
        cached = None if self.cache_dir is None else self.cache_dir / f"{item['stem']}.png"
        if cached is not None:
            if cached.is_file():
                return read_float_map(cached, "png_256", DISPARITY_MAP, left.shape[:2])
        right = read_rgb(item["right"])
        if right.shape != left.shape:
            raise DatasetError(
                item["right"], f"right image is {right.shape[1]}x{right.shape[0]} but the left is "
                f"{left.shape[1]}x{left.shape[0]} (WxH); expected a rectified pair of equal size"
            )
        disparity = compute_disparity(left, right, self.sgbm)
        if cached is not None:
            write_png_atomic(cached, np.rint(disparity * 256.0).astype(np.uint16))
        return disparity


def _png_stems(directory: Path, layout: str) -> set[str]:
    return set(_stems(directory, ".png", layout))


def _stems(directory: Path, suffix: str, what: str) -> dict[str, Path]:
    """{stem: path} of the files with a suffix in one directory (one listing)."""
    return {name[: -len(suffix)]: directory / name for name in list_dir(directory, what) if name.endswith(suffix)}


def _calib_files(calib_root: Path) -> dict[str, Path]:
    """{frame ("000000"): calib file} from CALIB_ROOT[/training]/{calib_cam_to_cam,calib}/."""
    for split in (calib_root / "training", calib_root):
        for folder in CALIB_DIRS:
            if (split / folder).is_dir():
                return _stems(split / folder, ".txt", STEREO_LAYOUT)
    raise DatasetError(
        calib_root, f"no training/{' or training/'.join(CALIB_DIRS)} folder; expected {STEREO_LAYOUT} "
        "(data_scene_flow_calib.zip)"
    )


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


def kitti_sources(cfg: DataConfig, root: Path, splits: Sequence[str]) -> dict:
    """{split: frames}: the last data.kitti.test_frames (by name) test, the val_frames before them val, the rest
    train."""
    k = cfg.kitti
    try:
        source = open_source(
            KITTISemanticsSource, root=root, stereo_root=k.stereo_root, depth_dir=k.depth_dir,
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


SPEC = DatasetSpec(
    "kitti_semantics", CITYSCAPES, kitti_sources,
    root_hint="the data_semantics folder (training/image_2, training/semantic)",
    x_hint="set data.kitti.stereo_root (SGBM disparity), data.kitti.disparity_dir (+ calib_root) or "
           "data.kitti.depth_dir",
    options=DatasetOptions("kitti", KittiOptions, "KITTI Semantics options."), reader=KITTISemanticsSource,
)
