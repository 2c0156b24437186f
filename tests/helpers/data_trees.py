"""Tiny dataset trees written in the real on-disk formats, plus a stand-in nuImages devkit.

Each writer returns the ground truth it encoded, so tests can read the tree back through the
loaders and compare exactly (labels, depth) or approximately (JPEG RGB).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np

from lix_train.data.classes import IGNORE_INDEX, VKITTI2_CATEGORIES, cityscapes_id_lut
from lix_train.data.sample import intrinsics_matrix

SIZE = (24, 40)  # (H, W)
KITTI_P2 = (
    "7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 "
    "1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03"
)
KITTI_P3 = (
    "7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02"
    " 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03"
)
KITTI_FOCAL = 721.5377
KITTI_BASELINE = (44.85728 + 339.5242) / 721.5377


def write_image(path: Path, image: np.ndarray) -> Path:
    """Write an RGB (H, W, 3) or single-channel array; the suffix picks PNG or JPEG (quality 95)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
    ok, buf = cv2.imencode(path.suffix, data, params)
    assert ok, path
    path.write_bytes(buf.tobytes())
    return path


def smooth_rgb(rng: np.random.Generator, size=SIZE) -> np.ndarray:
    """A low-frequency colour image (survives JPEG closely)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(40, 200, 3)
    img = base + np.stack([xx * 2, yy * 3, (xx + yy)], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def textured_rgb(rng: np.random.Generator, size) -> np.ndarray:
    """Random texture (blurred noise) that stereo matching can lock onto."""
    noise = rng.integers(0, 256, (*size, 3)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.0)


# --------------------------------------------------------------------------- vKITTI2


def write_vkitti2_tree(
    root: Path,
    *,
    scenes=("Scene01",),
    variations=("clone",),
    cameras=("Camera_0", "Camera_1"),
    frames=2,
    size=SIZE,
    seed=0,
    shuffle_colors=False,
    roots: dict[str, Path] | None = None,
) -> dict[str, dict]:
    """The official vKITTI2 layout; returns {sample name: {"rgb", "label", "depth", "K"}}.

    roots may map "rgb" / "depth" / "seg" / "text" to separate roots (tarballs kept apart).
    Labels use every category including "Undefined"; depth includes 0 (unknown) and 65535 (sky).
    """
    rng = np.random.default_rng(seed)
    roots = {k: Path(roots.get(k, root)) if roots else root for k in ("rgb", "depth", "seg", "text")}
    colors = list(VKITTI2_CATEGORIES)
    if shuffle_colors:
        colors = [colors[i] for i in rng.permutation(len(colors))]
    palette = np.array([c for _, c in VKITTI2_CATEGORIES], np.uint8)
    truth = {}
    for scene in scenes:
        for variation in variations:
            text = roots["text"] / scene / variation
            text.mkdir(parents=True, exist_ok=True)
            (text / "colors.txt").write_text(
                "Category r g b\n" + "".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in colors)
            )
            intr = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
            extr = ["frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1"]
            for frame in range(frames):
                for cam_id in (0, 1):
                    intr.append(f"{frame} {cam_id} 725.0087 725.0087 {620.5 + frame} 187.0")
                    extr.append(f"{frame} {cam_id} 1 0 0 {-0.532725 * cam_id} 0 1 0 0 0 0 1 {frame * 0.8} 0 0 0 1")
            (text / "intrinsic.txt").write_text("\n".join(intr) + "\n")
            (text / "extrinsic.txt").write_text("\n".join(extr) + "\n")
            for camera in cameras:
                cam_id = int(camera[-1])
                for frame in range(frames):
                    rgb = smooth_rgb(rng, size)
                    category = rng.integers(0, len(VKITTI2_CATEGORIES), size)
                    depth_cm = rng.integers(1, 8000, size).astype(np.uint16)
                    depth_cm[0, :3] = 0
                    depth_cm[-1, -3:] = 65535
                    base = Path(scene) / variation / "frames"
                    write_image(roots["rgb"] / base / "rgb" / camera / f"rgb_{frame:05d}.jpg", rgb)
                    write_image(roots["depth"] / base / "depth" / camera / f"depth_{frame:05d}.png", depth_cm)
                    write_image(
                        roots["seg"] / base / "classSegmentation" / camera / f"classgt_{frame:05d}.png",
                        palette[category],
                    )
                    label = np.where(category == len(VKITTI2_CATEGORIES) - 1, IGNORE_INDEX, category)
                    truth[f"{scene}/{variation}/{camera}/{frame:05d}"] = {
                        "rgb": rgb,
                        "label": label.astype(np.uint8),
                        "depth": depth_cm.astype(np.float32) / np.float32(100.0),
                        "K": intrinsics_matrix(725.0087, 725.0087, 620.5 + frame, 187.0),
                        "cam_id": cam_id,
                    }
    return truth


def vkitti2_path(root: Path, modality: str, frame: int = 0, scene="Scene01", variation="clone", camera="Camera_0"):
    """Path of one file of a fixture tree ("rgb", "depth" or "label")."""
    folder, name = {
        "rgb": ("rgb", f"rgb_{frame:05d}.jpg"),
        "depth": ("depth", f"depth_{frame:05d}.png"),
        "label": ("classSegmentation", f"classgt_{frame:05d}.png"),
    }[modality]
    return root / scene / variation / "frames" / folder / camera / name


# --------------------------------------------------------------------------- KITTI


def write_kitti_semantics_tree(
    root: Path, *, stems=("000000_10", "000001_10"), size=SIZE, seed=0, images: dict | None = None
) -> dict[str, dict]:
    """data_semantics/training/{image_2, semantic}; returns {stem: {"rgb", "label" (train ids)}}."""
    rng = np.random.default_rng(seed)
    lut = cityscapes_id_lut()
    truth = {}
    for stem in stems:
        rgb = images[stem] if images else smooth_rgb(rng, size)
        ids = rng.integers(0, 34, rgb.shape[:2]).astype(np.uint8)
        write_image(root / "training" / "image_2" / f"{stem}.png", rgb)
        write_image(root / "training" / "semantic" / f"{stem}.png", ids)
        truth[stem] = {"rgb": rgb, "label": lut[ids]}
    return truth


def write_kitti_calib(path: Path, style: str = "cam_to_cam") -> Path:
    """A calib file in the calib_cam_to_cam style (P_rect_02/03) or the object style (P2/P3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if style == "cam_to_cam":
        text = (
            "calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\n"
            "K_02: 9.597910e+02 0.000000e+00 6.960217e+02 0.000000e+00 9.569251e+02 2.241806e+02 0 0 1\n"
            f"P_rect_02: {KITTI_P2}\nP_rect_03: {KITTI_P3}\n"
        )
    else:
        text = f"P0: {KITTI_P2}\nP1: {KITTI_P2}\nP2: {KITTI_P2}\nP3: {KITTI_P3}\n"
    path.write_text(text)
    return path


def write_kitti_stereo_tree(root: Path, rights: dict[str, np.ndarray], style: str = "cam_to_cam") -> None:
    """stereo 2015 training/image_3/<stem>.png and training/calib_cam_to_cam/<frame>.txt."""
    for stem, right in rights.items():
        write_image(root / "training" / "image_3" / f"{stem}.png", right)
        folder = "calib_cam_to_cam" if style == "cam_to_cam" else "calib"
        write_kitti_calib(root / "training" / folder / f"{stem.split('_')[0]}.txt", style)


def shifted_stereo_pair(rng: np.random.Generator, size, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) with right(x) = left(x + shift): a constant disparity of `shift` px."""
    h, w = size
    wide = textured_rgb(rng, (h, w + shift))
    return wide[:, :w].copy(), wide[:, shift : w + shift].copy()


# --------------------------------------------------------------------------- nuImages


def nuimages_name_to_index(category: list[dict]) -> dict[str, int]:
    """The devkit's documented mask indexing: sorted names from 1, driveable surface 24, ego 31."""
    special = {"flat.driveable_surface": 24, "vehicle.ego": 31}
    names = sorted(c["name"] for c in category if c["name"] not in special)
    out = {name: i for i, name in enumerate(names, 1)}
    out.update({k: v for k, v in special.items() if any(c["name"] == k for c in category)})
    return out


NUIMAGES_TEST_CATEGORIES = (
    "animal", "flat.driveable_surface", "human.pedestrian.adult", "movable_object.trafficcone",
    "vehicle.bicycle", "vehicle.car", "vehicle.ego", "vehicle.truck",
)


def write_nuimages_tree(root: Path, *, version="v1.0-mini", channels=("CAM_FRONT", "CAM_BACK"), size=SIZE, seed=0):
    """Tables (JSON) and JPEGs in the nuImages layout, plus the masks the fake devkit returns.

    Returns {sample name: {"rgb", "semantic" (devkit indices), "stem", "K"}}.
    """
    rng = np.random.default_rng(seed)
    names = ("category", "sample", "sample_data", "calibrated_sensor", "sensor")
    tables: dict[str, list[dict]] = {k: [] for k in names}
    tables["category"] = [{"token": f"cat{i}", "name": n} for i, n in enumerate(NUIMAGES_TEST_CATEGORIES)]
    indices = sorted(nuimages_name_to_index(tables["category"]).values())
    truth = {}
    for c, channel in enumerate(channels):
        k = [[1266.4 + c, 0.0, 816.2], [0.0, 1266.4 + c, 491.5], [0.0, 0.0, 1.0]]
        tables["sensor"].append({"token": f"sensor{c}", "channel": channel, "modality": "camera"})
        tables["calibrated_sensor"].append({"token": f"cs{c}", "sensor_token": f"sensor{c}", "camera_intrinsic": k})
        stem = f"n008-2018-08-01-15-16-36-0400__{channel}__15331516035{c:05d}"
        filename = f"samples/{channel}/{stem}.jpg"
        rgb = smooth_rgb(rng, size)
        write_image(root / filename, rgb)
        semantic = rng.choice([0, *indices], size).astype(np.int32)
        (root / "fake_masks").mkdir(parents=True, exist_ok=True)
        np.save(root / "fake_masks" / f"sd{c}.npy", semantic)
        tables["sample_data"].append(
            {"token": f"sd{c}", "filename": filename, "calibrated_sensor_token": f"cs{c}", "is_key_frame": True}
        )
        tables["sample"].append({"token": f"s{c}", "key_camera_token": f"sd{c}"})
        truth[f"{channel}/{stem}"] = {"rgb": rgb, "semantic": semantic, "stem": stem, "K": np.array(k)}
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    return truth


class FakeNuImages:
    """Stand-in for nuimages.NuImages: the same constructor, tables, get() and get_segmentation()."""

    def __init__(self, version: str = "v1.0-mini", dataroot: str = "", lazy: bool = True, verbose: bool = False):
        self.dataroot = Path(dataroot)
        for name in ("category", "sample", "sample_data", "calibrated_sensor", "sensor"):
            setattr(self, name, json.loads((self.dataroot / version / f"{name}.json").read_text()))

    def get(self, table: str, token: str) -> dict:
        return next(row for row in getattr(self, table) if row["token"] == token)

    def get_segmentation(self, sd_token: str) -> tuple[np.ndarray, np.ndarray]:
        semantic = np.load(self.dataroot / "fake_masks" / f"{sd_token}.npy")
        return semantic, np.zeros_like(semantic)


def install_fake_nuimages_devkit(monkeypatch) -> None:
    """Make `from nuimages import NuImages` and nuimages.utils.utils.name_to_index_mapping resolve to fakes."""
    package = types.ModuleType("nuimages")
    package.NuImages = FakeNuImages
    utils = types.ModuleType("nuimages.utils")
    utils_utils = types.ModuleType("nuimages.utils.utils")
    utils_utils.name_to_index_mapping = nuimages_name_to_index
    package.utils = utils
    utils.utils = utils_utils
    for name, module in (("nuimages", package), ("nuimages.utils", utils), ("nuimages.utils.utils", utils_utils)):
        monkeypatch.setitem(sys.modules, name, module)
