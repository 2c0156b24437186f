"""nuImages: key-frame camera images with semantic masks from the official devkit.

Expected layout (the nuImages metadata and samples tarballs extracted into ROOT):

    ROOT/v1.0-train/*.json              tables (also v1.0-val, v1.0-mini, ...)
    ROOT/samples/CAM_*/<stem>.jpg       key-frame images

Masks are rendered by nuscenes-devkit (`pip install "lix-seg[nuimages]"`), whose semantic mask
holds category indices (0 = unannotated). nuImages annotates objects plus only two surfaces
(driveable surface, ego vehicle), so NUIMAGES below is a small class set: the annotated classes
that matter for driving, and "background" for every unannotated pixel (sky, buildings,
vegetation, sidewalk, ...). Categories mapped to None are ignored (IGNORE_INDEX).

nuImages has no depth. For X, give depth_dir: one file per image, found anywhere under the
folder by the image's file stem, either <stem>.png (uint16; depth_png_format "png_mm" = mm or
"png_256" = m * 256) or <stem>.npy (float metres), e.g. from a monocular depth network.
Sample.intrinsics is the devkit's camera_intrinsic; nuImages images are not undistorted.

Only load_devkit() and the few table look-ups in _index touch the devkit; the mapping and the
depth matching are plain functions.

The dataset `nuimages` (SPEC): train = data.nuimages.train_version; val / test are the even / odd
frames (sorted by name) of data.nuimages.eval_version, as nuImages test has no labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lix_train.config import ConfigError, option
from lix_train.data.classes import IGNORE_INDEX, ClassSet
from lix_train.data.errors import DatasetError
from lix_train.data.io import DEPTH_MAP, BadInputPolicy, SkipsWhileIndexing, index_by_stem, read_float_map, read_rgb
from lix_train.data.registry import DatasetOptions, DatasetSpec
from lix_train.data.sample import Sample
from lix_train.data.sources import FrameSubset, open_source

if TYPE_CHECKING:
    from lix_train.data.config import DataConfig

logger = logging.getLogger(__name__)

NUIMAGES = ClassSet(
    "nuimages",
    (
        "driveable_surface", "car", "truck", "bus", "pedestrian", "two_wheeler", "barrier", "traffic_cone",
        "background",
    ),
    (
        (128, 64, 128), (0, 0, 142), (0, 0, 70), (0, 60, 100), (220, 20, 60), (119, 11, 32), (190, 153, 153),
        (250, 170, 30), (70, 70, 70),
    ),
)
BACKGROUND = "background"

# nuImages category name -> NUIMAGES class name; None = ignored.
NUIMAGES_CATEGORY_TO_CLASS: dict[str, str | None] = {
    "flat.driveable_surface": "driveable_surface",
    "vehicle.car": "car",
    "vehicle.emergency.police": "car",
    "vehicle.truck": "truck",
    "vehicle.trailer": "truck",
    "vehicle.construction": "truck",
    "vehicle.emergency.ambulance": "truck",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.personal_mobility": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.stroller": "pedestrian",
    "human.pedestrian.wheelchair": "pedestrian",
    "vehicle.bicycle": "two_wheeler",
    "vehicle.motorcycle": "two_wheeler",
    "movable_object.barrier": "barrier",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.ego": None,
    "animal": None,
    "movable_object.debris": None,
    "movable_object.pushable_pullable": None,
    "static_object.bicycle_rack": None,
}

INSTALL_HINT = 'nuImages support needs the nuScenes devkit: pip install "lix-seg[nuimages]"'


class NuImagesDevkitMissing(ImportError):
    """nuscenes-devkit (module `nuimages`) is not installed."""


def load_devkit() -> tuple[type, Callable[[list[dict]], dict[str, int]]]:
    """(NuImages class, name_to_index_mapping) from nuscenes-devkit, or a clear install hint."""
    try:
        from nuimages import NuImages
        from nuimages.utils.utils import name_to_index_mapping
    except ImportError as exc:
        raise NuImagesDevkitMissing(f"{INSTALL_HINT} (import failed: {exc})") from exc
    return NuImages, name_to_index_mapping


def mask_index_lut(name_to_index: Mapping[str, int]) -> np.ndarray:
    """(256,) uint8: devkit mask index -> NUIMAGES train id (0 = background, unknown = ignore)."""
    ids = {name: i for i, name in enumerate(NUIMAGES.names)}
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[0] = ids[BACKGROUND]
    unknown = sorted(set(name_to_index) - set(NUIMAGES_CATEGORY_TO_CLASS))
    if unknown:
        logger.warning("nuImages categories %s are not in NUIMAGES_CATEGORY_TO_CLASS; ignoring them", unknown)
    for name, index in name_to_index.items():
        if not 0 < index < 256:
            raise ValueError(f"devkit mask index {index} of {name!r} is outside 1..255")
        target = NUIMAGES_CATEGORY_TO_CLASS.get(name)
        if target is not None:
            lut[index] = ids[target]
    return lut


def semantic_to_train_ids(semantic: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Devkit semantic mask (H, W) int -> (H, W) uint8 train ids."""
    semantic = np.asarray(semantic)
    if semantic.size and (semantic.min() < 0 or semantic.max() > 255):
        raise ValueError(f"semantic mask values {semantic.min()}..{semantic.max()} are outside 0..255")
    return lut[semantic.astype(np.intp)]


class NuImagesSource(SkipsWhileIndexing):
    """nuImages key frames as Samples with NUIMAGES train ids and optional user depth.

    Args:
        root: the nuImages dataroot (see the module docstring).
        version: table version folder, e.g. "v1.0-train", "v1.0-val", "v1.0-mini".
        cameras: channel names to keep (e.g. ["CAM_FRONT"]); None = all.
        depth_dir: folder of per-image depth files matched by stem (<stem>.png / <stem>.npy).
        depth_png_format: how .png depth is stored: "png_mm" (default) or "png_256".
        on_error: "raise" (default) or "skip": images without a depth file are dropped with a
            warning and counted in `skipped`. Corrupt files raise DatasetError from __getitem__;
            sources.SkippingSource substitutes the next good sample.
        nuim: an already loaded NuImages object to reuse (the devkit is still required).
    """

    class_set: ClassSet = NUIMAGES

    def __init__(
        self,
        root: str | Path,
        *,
        version: str = "v1.0-train",
        cameras: Sequence[str] | None = None,
        depth_dir: str | Path | None = None,
        depth_png_format: str = "png_mm",
        on_error: str = "raise",
        nuim=None,
    ):
        if depth_png_format not in ("png_mm", "png_256"):
            raise ValueError(f"depth_png_format must be 'png_mm' or 'png_256', got {depth_png_format!r}")
        nuimages_class, name_to_index_mapping = load_devkit()
        self.root = Path(root)
        if nuim is None:
            if not (self.root / version).is_dir():
                have = ", ".join(d.name for d in sorted(self.root.glob("v1.0-*"))) or "none"
                raise DatasetError(
                    self.root, f"no {version} folder (found: {have}); expected ROOT/<version>/*.json tables "
                    "and ROOT/samples/CAM_*/*.jpg"
                )
            nuim = nuimages_class(version=version, dataroot=str(self.root), lazy=True, verbose=False)
        self.nuim = nuim
        self.has_depth = depth_dir is not None
        self.depth_png_format = depth_png_format
        self._policy = BadInputPolicy(on_error, logger)
        self._lut = mask_index_lut(name_to_index_mapping(nuim.category))
        depth_files = None
        if depth_dir is not None:
            depth_files = index_by_stem(depth_dir, (".png", ".npy"), "<image stem>.png or .npy depth files")
        self._items = self._index(cameras, depth_files, Path(depth_dir) if depth_dir is not None else None)
        self.names = [item["name"] for item in self._items]

    def _index(self, cameras: Sequence[str] | None, depth_files: dict[str, Path] | None, depth_dir: Path | None):
        items, channels = [], set()
        for sample in self.nuim.sample:
            sd_token = sample["key_camera_token"]
            sd = self.nuim.get("sample_data", sd_token)
            cs = self.nuim.get("calibrated_sensor", sd["calibrated_sensor_token"])
            channel = self.nuim.get("sensor", cs["sensor_token"])["channel"]
            channels.add(channel)
            if cameras is not None and channel not in cameras:
                continue
            stem = Path(sd["filename"]).stem
            item = {
                "token": sd_token,
                "rgb": self.root / sd["filename"],
                "intrinsics": np.asarray(cs["camera_intrinsic"], np.float64).reshape(3, 3),
                "name": f"{channel}/{stem}",
                "channel": channel,
            }
            if depth_files is not None:
                if stem not in depth_files:
                    self._policy.handle(
                        DatasetError(depth_dir / f"{stem}.png", f"no <stem>.png or .npy depth for {item['rgb']}")
                    )
                    continue
                item["depth"] = depth_files[stem]
            items.append(item)
        if cameras is not None:
            unknown = sorted(set(cameras) - channels)
            if unknown:
                raise DatasetError(
                    self.root, f"unknown camera(s) {', '.join(unknown)}; available: {', '.join(sorted(channels))}"
                )
        return items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} nuImages samples")
        item = self._items[index]
        rgb = read_rgb(item["rgb"])
        semantic, _ = self.nuim.get_segmentation(item["token"])
        if semantic.shape != rgb.shape[:2]:
            raise DatasetError(
                item["rgb"], f"devkit mask is {semantic.shape[1]}x{semantic.shape[0]} but the image is "
                f"{rgb.shape[1]}x{rgb.shape[0]} (WxH); expected equal sizes"
            )
        label = semantic_to_train_ids(semantic, self._lut)
        depth = None
        if "depth" in item:
            path = item["depth"]
            fmt = "npy" if path.suffix.lower() == ".npy" else self.depth_png_format
            depth = read_float_map(path, fmt, DEPTH_MAP, rgb.shape[:2])
        meta = {"channel": item["channel"], "sample_data_token": item["token"]}
        return Sample(rgb, label, depth, item["intrinsics"].copy(), item["name"], meta)


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


def nuimages_sources(cfg: DataConfig, root: Path, splits: Sequence[str]) -> dict:
    """{split: frames}: train from data.nuimages.train_version, val / test the even / odd frames of eval_version."""
    o = cfg.nuimages

    def load(version: str):
        try:
            return open_source(NuImagesSource, root=root, version=version, cameras=list(o.cameras) or None,
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


SPEC = DatasetSpec(
    "nuimages", NUIMAGES, nuimages_sources, root_hint="the nuImages dataroot (v1.0-train/, samples/)",
    x_hint="set data.nuimages.depth_dir to per-image depth (e.g. from a monocular depth network)",
    options=DatasetOptions("nuimages", NuImagesOptions, "nuImages options."), reader=NuImagesSource,
)
