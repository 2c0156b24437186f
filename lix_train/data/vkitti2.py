"""Virtual KITTI 2: RGB, dense depth and colour-coded class masks of synthetic KITTI clones.

Expected layout (the official release, all tarballs extracted into one ROOT):

    ROOT/SceneNN/<variation>/frames/rgb/Camera_{0,1}/rgb_%05d.jpg
    ROOT/SceneNN/<variation>/frames/depth/Camera_{0,1}/depth_%05d.png   uint16, cm, sky = 65535
    ROOT/SceneNN/<variation>/frames/classSegmentation/Camera_{0,1}/classgt_%05d.png   RGB colours
    ROOT/SceneNN/<variation>/colors.txt       "Category r g b" header, one category per line
    ROOT/SceneNN/<variation>/intrinsic.txt    "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]" rows

The tarballs may also be kept apart: rgb_root, depth_root, seg_root and text_root (colors.txt,
intrinsic.txt) each hold the same SceneNN/<variation>/ tree and default to ROOT. Other files of
the release (extrinsic.txt, pose.txt, ...) are ignored.

Label colours are mapped by category *name* (colors.txt) to the canonical VKITTI2 train ids, so
the order of colors.txt does not matter; "Undefined" becomes IGNORE_INDEX. Depth is converted to
metres; sky (65535 cm) stays a real far value, 655.35 m.

The dataset `vkitti2` (SPEC) splits by whole scenes, DEFAULT_VKITTI2_SPLITS unless data.*_scenes
say otherwise; its options are data.vkitti2 (VKITTI2Options), shared with `synthetic`, which is
vKITTI2-format data too (lix_train/data/embedded.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lix_train.config import ConfigError, option
from lix_train.data.classes import IGNORE_INDEX, VKITTI2, VKITTI2_CATEGORIES, VKITTI2_IGNORED, ClassSet
from lix_train.data.errors import DatasetError
from lix_train.data.io import (
    BadInputPolicy, SkipsWhileIndexing, list_dir, read_color_label, read_colors_txt, read_depth_cm_png, read_rgb,
    read_vkitti2_intrinsics, subdirs,
)
from lix_train.data.registry import SPLITS, DatasetOptions, DatasetSpec
from lix_train.data.sample import Sample
from lix_train.data.sources import open_source

if TYPE_CHECKING:
    from lix_train.data.config import DataConfig

logger = logging.getLogger(__name__)

CAMERAS = ("Camera_0", "Camera_1")
LAYOUT = "Scene*/<variation>/frames/rgb/Camera_0/rgb_%05d.jpg"
# modality -> (sub-directory under frames/, file-name pattern)
_MODALITIES = {
    "rgb": ("rgb", "rgb_{:05d}.jpg", re.compile(r"rgb_(\d+)\.jpg$")),
    "depth": ("depth", "depth_{:05d}.png", re.compile(r"depth_(\d+)\.png$")),
    "label": ("classSegmentation", "classgt_{:05d}.png", re.compile(r"classgt_(\d+)\.png$")),
}


@dataclass(frozen=True)
class _Frame:
    scene: str
    variation: str
    camera: str
    frame: int
    rgb: Path
    depth: Path
    label: Path

    @property
    def name(self) -> str:
        return f"{self.scene}/{self.variation}/{self.camera}/{self.frame:05d}"


def category_table(colors_txt: Path) -> dict[tuple[int, int, int], int]:
    """colors.txt -> {(r, g, b): VKITTI2 train id}, matching categories by name."""
    ids = {name: i for i, name in enumerate(VKITTI2.names)}
    table = {}
    for name, rgb in read_colors_txt(colors_txt):
        if name in VKITTI2_IGNORED:
            table[rgb] = IGNORE_INDEX
        elif name in ids:
            table[rgb] = ids[name]
        else:
            known = ", ".join(n for n, _ in VKITTI2_CATEGORIES)
            raise DatasetError(colors_txt, f"unknown category {name!r}; expected names from: {known}")
    return table


class VKITTI2Source(SkipsWhileIndexing):
    """vKITTI2 frames as Samples (RGB, train-id labels, depth in metres, per-frame K).

    Args:
        root: directory holding SceneNN/<variation>/... (see the module docstring).
        scenes: scene names to use (e.g. ["Scene01", "Scene02"]); None = all found.
        variations: variation names (e.g. ["clone", "fog"]); None = all found in each scene.
        cameras: any of "Camera_0" (left), "Camera_1" (right).
        rgb_root, depth_root, seg_root, text_root: roots of the separately extracted tarballs
            (rgb, depth, classSegmentation, textgt); each defaults to root.
        on_error: "raise" (default) or "skip". "skip" drops, with one warning each, frames whose
            depth / label / rgb partner or intrinsics are missing, counting them in `skipped`.
            Files that exist but are corrupt are found only when read; __getitem__ then raises
            DatasetError, and sources.SkippingSource (what build_source(..., on_error="skip")
            returns) substitutes the next good frame.

    The index is built from one directory listing per camera folder, so it is fast even for the
    full release (about 21k frames per camera).
    """

    class_set: ClassSet = VKITTI2
    has_depth: bool = True

    def __init__(
        self,
        root: str | Path,
        *,
        scenes: Sequence[str] | None = None,
        variations: Sequence[str] | None = None,
        cameras: Sequence[str] = ("Camera_0",),
        rgb_root: str | Path | None = None,
        depth_root: str | Path | None = None,
        seg_root: str | Path | None = None,
        text_root: str | Path | None = None,
        on_error: str = "raise",
    ):
        self.root = Path(root)
        self.roots = {
            "rgb": Path(rgb_root) if rgb_root is not None else self.root,
            "depth": Path(depth_root) if depth_root is not None else self.root,
            "label": Path(seg_root) if seg_root is not None else self.root,
        }
        self.text_root = Path(text_root) if text_root is not None else self.root
        if isinstance(cameras, str):
            cameras = (cameras,)
        if not cameras:
            raise ValueError("cameras must name at least one of Camera_0, Camera_1")
        bad = [c for c in cameras if c not in CAMERAS]
        if bad:
            raise ValueError(f"unknown camera(s) {bad}; expected some of {list(CAMERAS)}")
        self.cameras = tuple(cameras)
        self._policy = BadInputPolicy(on_error, logger)
        self._tables: dict[tuple[str, str], dict[tuple[int, int, int], int]] = {}
        self._intrinsics: dict[tuple[str, str], dict[tuple[int, int], np.ndarray]] = {}
        self._frames = self._build_index(scenes, variations)
        self.names = [f.name for f in self._frames]

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} vKITTI2 frames")
        f = self._frames[index]
        rgb = read_rgb(f.rgb)
        shape = rgb.shape[:2]
        key = (f.scene, f.variation)
        colors_txt = self.text_root / f.scene / f.variation / "colors.txt"
        label = read_color_label(f.label, self._tables[key], shape, table_name=str(colors_txt))
        depth = read_depth_cm_png(f.depth, shape)
        k = self._intrinsics[key][(f.frame, CAMERAS.index(f.camera))]
        meta = {"scene": f.scene, "variation": f.variation, "camera": f.camera, "frame": f.frame}
        return Sample(rgb, label, depth, k.copy(), f.name, meta)

    def frame_files(self, index: int) -> tuple[Path, ...]:
        """The files frame `index` is read from (the frame cache notices when one changes)."""
        f = self._frames[index]
        text = self.text_root / f.scene / f.variation
        return f.rgb, f.label, f.depth, text / "colors.txt", text / "intrinsic.txt"

    # ------------------------------------------------------------------ indexing

    def _build_index(self, scenes: Sequence[str] | None, variations: Sequence[str] | None) -> list[_Frame]:
        rgb_root = self.roots["rgb"]
        if not rgb_root.is_dir():
            raise DatasetError(rgb_root, f"directory not found; expected {LAYOUT} under it")
        found = [d for d in subdirs(rgb_root) if d.startswith("Scene")]
        if not found:
            hint = ""
            if (rgb_root / "frames").is_dir() or (rgb_root / "clone").is_dir():
                hint = " (this looks like a scene or variation folder; pass the folder that holds Scene01, ...)"
            raise DatasetError(rgb_root, f"no Scene* directories found; expected {LAYOUT} under ROOT{hint}")
        scenes = _select("scene", scenes, found, rgb_root)
        frames: list[_Frame] = []
        for scene in scenes:
            available = subdirs(rgb_root / scene)
            if not available:
                raise DatasetError(rgb_root / scene, f"no variation directories; expected {LAYOUT} under ROOT")
            for variation in _select("variation", variations, available, rgb_root / scene):
                frames.extend(self._index_variation(scene, variation))
        if not frames:
            raise DatasetError(rgb_root, f"no frames found; expected {LAYOUT} under ROOT")
        return frames

    def _index_variation(self, scene: str, variation: str) -> list[_Frame]:
        key = (scene, variation)
        text_dir = self.text_root / scene / variation
        for name in ("colors.txt", "intrinsic.txt"):
            if not (text_dir / name).is_file():
                raise DatasetError(
                    text_dir / name,
                    f"file not found; expected Scene*/<variation>/{name} under {self.text_root} "
                    "(from the textgt tarball; pass text_root= if it was extracted elsewhere)",
                )
        self._tables[key] = category_table(text_dir / "colors.txt")
        intrinsics = self._intrinsics[key] = read_vkitti2_intrinsics(text_dir / "intrinsic.txt")
        frames = []
        for camera in self.cameras:
            rgb_cameras = self.roots["rgb"] / scene / variation / "frames" / "rgb"
            if camera not in subdirs(rgb_cameras):
                have = ", ".join(subdirs(rgb_cameras)) or "none"
                raise DatasetError(
                    rgb_cameras, f"no camera {camera!r}; available: {have} (expected layout {LAYOUT} under ROOT)"
                )
            listed = {m: self._list(m, scene, variation, camera) for m in _MODALITIES}
            for frame in sorted(set().union(*listed.values())):
                paths = {m: self._path(m, scene, variation, camera, frame) for m in _MODALITIES}
                missing = [m for m in _MODALITIES if frame not in listed[m]]
                if missing:
                    present = next(paths[m] for m in _MODALITIES if m not in missing)
                    self._policy.handle(
                        DatasetError(paths[missing[0]], f"file not found; expected it next to {present}")
                    )
                    continue
                cam_id = CAMERAS.index(camera)
                if (frame, cam_id) not in intrinsics:
                    problem = f"no row for frame {frame} camera {cam_id}; expected one per frame and camera"
                    self._policy.handle(DatasetError(text_dir / "intrinsic.txt", problem))
                    continue
                frames.append(_Frame(scene, variation, camera, frame, paths["rgb"], paths["depth"], paths["label"]))
        return frames

    def _path(self, modality: str, scene: str, variation: str, camera: str, frame: int) -> Path:
        folder, pattern, _ = _MODALITIES[modality]
        return self.roots[modality] / scene / variation / "frames" / folder / camera / pattern.format(frame)

    def _list(self, modality: str, scene: str, variation: str, camera: str) -> set[int]:
        folder, pattern, regex = _MODALITIES[modality]
        directory = self.roots[modality] / scene / variation / "frames" / folder / camera
        option = {"rgb": "rgb_root", "depth": "depth_root", "label": "seg_root"}[modality]
        what = (
            f"Scene*/<variation>/frames/{folder}/{camera}/{pattern.replace('{:05d}', '%05d')} under "
            f"{self.roots[modality]} (pass {option}= if that tarball was extracted elsewhere)"
        )
        return {int(m.group(1)) for name in list_dir(directory, what) if (m := regex.fullmatch(name))}


def _select(kind: str, requested: Sequence[str] | None, available: list[str], where: Path) -> list[str]:
    """The requested names (all available ones for None), checking each exists."""
    if requested is None:
        return available
    if isinstance(requested, str):
        requested = [requested]
    unknown = [r for r in requested if r not in available]
    if unknown:
        raise DatasetError(where, f"unknown {kind}(s) {', '.join(unknown)}; available: {', '.join(available)}")
    return list(requested)


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
        bad = [c for c in self.cameras if c not in CAMERAS]
        if not self.cameras or bad:
            raise ConfigError(f"data.vkitti2.cameras={self.cameras!r}: expected some of Camera_0, Camera_1")


OPTIONS = DatasetOptions("vkitti2", VKITTI2Options, "vKITTI2-format layout (synthetic, vkitti2).")
SceneDefaults = Callable[[Path], Mapping[str, Sequence[str]]]


def configured_scenes(cfg: DataConfig, root: Path, default_scenes: SceneDefaults) -> dict[str, tuple[str, ...]]:
    """Scenes per split for vKITTI2-format data: the config's lists, else default_scenes(root) (read only if needed)."""
    given = {"train": cfg.train_scenes, "val": cfg.val_scenes, "test": cfg.test_scenes}
    defaults = {} if all(given.values()) else default_scenes(root)
    scenes = {split: tuple(given[split]) or tuple(defaults[split]) for split in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            shared = sorted(set(scenes[a]) & set(scenes[b])) if a < b else []
            if shared:
                raise ConfigError(f"data: scene(s) {', '.join(shared)} are in both the {a} and the {b} split; "
                                  "a drive must not leak across splits")
    return scenes


def vkitti2_format_sources(cfg: DataConfig, root: Path, splits: Sequence[str],
                           default_scenes: SceneDefaults = lambda root: DEFAULT_VKITTI2_SPLITS) -> dict:
    """{split: VKITTI2Source} of the split's scenes (data.*_scenes, else default_scenes) with data.vkitti2's layout."""
    scenes = configured_scenes(cfg, root, default_scenes)
    opts = cfg.vkitti2
    return {
        split: open_source(
            VKITTI2Source, root=root, scenes=list(scenes[split]), variations=list(cfg.variations) or None,
            cameras=opts.cameras, rgb_root=opts.rgb_root, depth_root=opts.depth_root, seg_root=opts.seg_root,
            text_root=opts.text_root, on_error=cfg.on_error,
        )
        for split in splits
    }


SPEC = DatasetSpec(
    "vkitti2", VKITTI2, vkitti2_format_sources, root_hint="the folder holding Scene01, Scene02, ...",
    options=OPTIONS, reader=VKITTI2Source, vkitti2_format=True,
)
