"""Write procedural driving scenes in the exact vKITTI2 on-disk format.

Each scene is a drive down one generated street (procedural/street.py): the camera, 1.5 m above
the road with vKITTI2's intrinsics scaled to the output size, moves forward every frame. Every
frame is ray-cast once (procedural/raycast.py) and shaded once per lighting / weather variation
(procedural/appearance.py), so all variations of a scene share depth and labels exactly, as in
vKITTI2. Layout per scene and variation:

    SceneNN/<variation>/frames/rgb/Camera_0/rgb_%05d.jpg
    SceneNN/<variation>/frames/depth/Camera_0/depth_%05d.png               uint16 cm, sky 65535
    SceneNN/<variation>/frames/classSegmentation/Camera_0/classgt_%05d.png  RGB class colours
    SceneNN/<variation>/colors.txt, intrinsic.txt, extrinsic.txt

Only vKITTI2's 15 categories are used. vKITTI2 has no sidewalk category, so sidewalks are
labelled **Road** (their curb is geometry only). `synthetic.json` in the output root records the
generator version, the config, the class pixel counts and that note. `--stereo` adds Camera_1,
0.532 m to the right as in vKITTI2. The same config and seed give byte-identical files. The CLI
also writes `splits.json` (whole drives per train / val / test split, by a seeded shuffle, about
15% of the drives each to val and test, at least one), so its output works as `--data.root`.

    python -m lix_train.data.synthetic --out data/synth --scenes 4 --frames 20 --height 192 --width 640 --seed 0
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lix_common.cli import OneLineParser
from lix_train.config import option
from lix_train.data.classes import VKITTI2_CATEGORIES
from lix_train.data.procedural.appearance import LIGHTINGS, VARIATIONS, shade, surface_albedo
from lix_train.data.procedural.camera import STEREO_BASELINE_M, kitti_like_intrinsics, world_to_camera
from lix_train.data.procedural.raycast import cast
from lix_train.data.procedural.scene import Scene
from lix_train.data.procedural.street import build_scene

# Bump when the generator's output changes for the same config (the embedded cache keys on it).
GENERATOR_VERSION = 1
SIDEWALK_NOTE = "vKITTI2 has no sidewalk category: sidewalks are labelled Road."
SPLITS_FILE = "splits.json"  # {"train": [scene, ...], "val": [...], "test": [...]}: whole drives per split
CATEGORY_COLOURS = np.array([c for _, c in VKITTI2_CATEGORIES], np.uint8)
DEPTH_SKY = 65535
DEPTH_MAX_CM = 65534
MIN_SIZE = 16


@dataclass(frozen=True)
class DriveConfig:
    """The drives to render, shared by SyntheticConfig (the CLI) and EmbeddedConfig (the default set).

    Each field carries its default, its check (in __post_init__) and its help text (the CLI's);
    a subclass that wants another default re-declares the field with `DriveConfig.redefault`.
    """

    scenes: int = option(4, "number of drives (Scene01..SceneNN, at most 99)")
    frames: int = option(20, "frames per drive")
    height: int = option(192, "image height in pixels")
    width: int = option(640, "image width in pixels")
    seed: int = option(0, "dataset seed; the same seed gives identical files")
    variations: tuple[str, ...] = option(
        ("clone",), f"lighting / weather variations, same geometry and labels; from {list(VARIATIONS)}")
    ambiguity: float = option(0.9, "0 = every class its own colour, 1 = shared palettes and weak shading "
                              "(RGB ambiguous)")

    def __post_init__(self):
        object.__setattr__(self, "variations", tuple(self.variations))
        if not 1 <= self.scenes <= 99:
            raise ValueError(f"scenes must be in 1..99 (two-digit SceneNN names), got {self.scenes}")
        if not 1 <= self.frames <= 99999:
            raise ValueError(f"frames must be in 1..99999 (five-digit file numbers), got {self.frames}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if not MIN_SIZE <= value <= 4096:
                raise ValueError(f"{name} must be in {MIN_SIZE}..4096 pixels, got {value}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not self.variations:
            raise ValueError("variations must name at least one variation")
        unknown = [v for v in self.variations if v not in LIGHTINGS]
        if unknown:
            raise ValueError(f"variations: unknown {unknown}; choose from {list(VARIATIONS)}")
        if len(set(self.variations)) != len(self.variations):
            raise ValueError(f"variations must not repeat, got {list(self.variations)}")
        if not 0.0 <= self.ambiguity <= 1.0:
            raise ValueError(f"ambiguity must be in [0, 1], got {self.ambiguity}")

    @staticmethod
    def redefault(name: str, default):
        """DriveConfig's field `name` with another default (same help text), for a subclass's body."""
        return option(default, DriveConfig.__dataclass_fields__[name].metadata["help"])


@dataclass(frozen=True)
class SyntheticConfig(DriveConfig):
    """What to generate. Frames are per scene; every variation repeats every frame."""

    stereo: bool = option(False, "also write Camera_1, 0.532 m to the right")
    jpeg_quality: int = option(90, "JPEG quality of the RGB frames")

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    @property
    def cameras(self) -> tuple[str, ...]:
        return ("Camera_0", "Camera_1") if self.stereo else ("Camera_0",)

    @property
    def scene_names(self) -> list[str]:
        return [scene_name(i) for i in range(self.scenes)]

    def intrinsics(self) -> np.ndarray:
        return kitti_like_intrinsics(self.height, self.width)


def scene_name(index: int) -> str:
    """vKITTI2-style name of the scene with 0-based `index`: Scene01, Scene02, ..."""
    return f"Scene{index + 1:02d}"


@dataclass
class RenderedFrame:
    """One frame of one scene, every camera and variation, as arrays ready to encode."""

    category: dict[str, np.ndarray]  # camera -> (H, W) uint8 index into VKITTI2_CATEGORIES
    depth_cm: dict[str, np.ndarray]  # camera -> (H, W) uint16 as written
    rgb: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # variation -> camera -> (H, W, 3)


@functools.lru_cache(maxsize=4)
def _scene(seed: int, index: int, frames: int) -> Scene:
    return build_scene(seed, index, frames)


def depth_to_png(depth_m: np.ndarray) -> np.ndarray:
    """Metres (inf = sky) -> vKITTI2 depth PNG values: uint16 centimetres, sky 65535, clipped 65534."""
    cm = np.where(np.isfinite(depth_m), np.round(np.minimum(depth_m, DEPTH_MAX_CM / 100.0) * 100.0), DEPTH_SKY)
    return np.clip(cm, 0, DEPTH_SKY).astype(np.uint16)


def render_frame(config: SyntheticConfig, scene_index: int, frame: int) -> RenderedFrame:
    """Ray-cast one frame once per camera and shade it for every variation."""
    scene = _scene(config.seed, scene_index, config.frames)
    k = config.intrinsics()
    out = RenderedFrame({}, {}, {v: {} for v in config.variations})
    for cam_id, camera in enumerate(config.cameras):
        hits = cast(scene, frame, k, config.height, config.width, baseline=cam_id * STEREO_BASELINE_M)
        out.category[camera] = hits.category
        out.depth_cm[camera] = depth_to_png(hits.depth)
        albedo = surface_albedo(scene, hits, frame, config.ambiguity)
        for variation in config.variations:
            var_id = VARIATIONS.index(variation)
            rng = np.random.default_rng([config.seed, scene_index, frame, cam_id, var_id])
            out.rgb[variation][camera] = shade(hits, albedo, LIGHTINGS[variation], config.ambiguity, rng)
    return out


def colors_txt() -> str:
    """vKITTI2's colors.txt: header and the 15 categories in file order."""
    return "Category r g b\n" + "".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in VKITTI2_CATEGORIES)


def _number(value: float) -> str:
    return repr(round(float(value), 6) + 0.0)  # + 0.0 turns -0.0 into 0.0


def intrinsic_txt(k: np.ndarray, frames: int, cameras: int) -> str:
    """vKITTI2's intrinsic.txt: one row per frame and camera, fx fy cx cy."""
    rows = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
    values = " ".join(_number(v) for v in (k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
    rows += [f"{f} {c} {values}" for f in range(frames) for c in range(cameras)]
    return "\n".join(rows) + "\n"


def extrinsic_txt(scene: Scene, frames: int, cameras: int) -> str:
    """vKITTI2's extrinsic.txt: the 4x4 world-to-camera transform per frame and camera, row-major.

    World frame: x right, y up, z along the street (procedural/camera.py).
    """
    head = "frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1"
    rows = [head]
    for f in range(frames):
        for c in range(cameras):
            m = world_to_camera(scene.camera_origin(f, c * STEREO_BASELINE_M))
            rows.append(f"{f} {c} " + " ".join(_number(v) for v in m.reshape(-1)))
    return "\n".join(rows) + "\n"


def frame_paths(root: Path, scene: str, variation: str, camera: str, frame: int) -> dict[str, Path]:
    """Where vKITTI2 keeps the rgb / depth / classgt files of one frame."""
    base = root / scene / variation / "frames"
    return {
        "rgb": base / "rgb" / camera / f"rgb_{frame:05d}.jpg",
        "depth": base / "depth" / camera / f"depth_{frame:05d}.png",
        "classgt": base / "classSegmentation" / camera / f"classgt_{frame:05d}.png",
    }


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes via a temp file in the same directory and os.replace (readers never see half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def link_atomic(source: Path, path: Path, data: bytes) -> None:
    """Make `path` a hard link to `source` (same bytes), or write `data` where links fail."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
    except OSError:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def _encode(ext: str, image: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ext} image of shape {image.shape}")
    return buf.tobytes()


def write_frame(root: Path, config: SyntheticConfig, scene_index: int, frame: int) -> np.ndarray:
    """Render and write one frame (all cameras and variations); return its Camera_0 class counts."""
    rendered = render_frame(config, scene_index, frame)
    name = scene_name(scene_index)
    for camera in config.cameras:
        label_png = _encode(".png", CATEGORY_COLOURS[rendered.category[camera]][..., ::-1])
        depth_png = _encode(".png", rendered.depth_cm[camera])
        first = None
        for variation in config.variations:
            paths = frame_paths(root, name, variation, camera, frame)
            rgb = rendered.rgb[variation][camera][..., ::-1]
            write_atomic(paths["rgb"], _encode(".jpg", rgb, (cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality)))
            if first is None:
                write_atomic(paths["depth"], depth_png)
                write_atomic(paths["classgt"], label_png)
                first = paths
            else:  # identical in every variation: hard-link where the file system allows
                link_atomic(first["depth"], paths["depth"], depth_png)
                link_atomic(first["classgt"], paths["classgt"], label_png)
    return np.bincount(rendered.category["Camera_0"].reshape(-1), minlength=len(VKITTI2_CATEGORIES))


def _write_frame_task(args) -> np.ndarray:
    root, config, scene_index, frame = args
    return write_frame(Path(root), config, scene_index, frame)


def prepare_layout(root: Path, config: SyntheticConfig) -> None:
    """Create the directories and write colors.txt / intrinsic.txt / extrinsic.txt of every scene."""
    k = config.intrinsics()
    n_cam = len(config.cameras)
    for index, name in enumerate(config.scene_names):
        scene = _scene(config.seed, index, config.frames)
        for variation in config.variations:
            vdir = root / name / variation
            for camera in config.cameras:
                for path in frame_paths(root, name, variation, camera, 0).values():
                    path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(vdir / "colors.txt", colors_txt().encode())
            write_atomic(vdir / "intrinsic.txt", intrinsic_txt(k, config.frames, n_cam).encode())
            write_atomic(vdir / "extrinsic.txt", extrinsic_txt(scene, config.frames, n_cam).encode())


def write_dataset(out: str | Path, config: SyntheticConfig, workers: int | None = None,
                  progress: bool = True) -> dict:
    """Generate the whole dataset into `out`; return a summary (also written to synthetic.json).

    workers: processes to render with (default os.cpu_count(); 1 renders in this process).
    """
    from tqdm import tqdm

    root = Path(out)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    prepare_layout(root, config)
    tasks = [(str(root), config, s, f) for s in range(config.scenes) for f in range(config.frames)]
    counts = np.zeros(len(VKITTI2_CATEGORIES), np.int64)
    bar = tqdm(total=len(tasks), desc="synthetic frames", unit="frame", disable=not progress)
    if workers == 1 or len(tasks) == 1:
        results = map(_write_frame_task, tasks)
        for c in results:
            counts += c
            bar.update()
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
            chunk = max(1, min(8, len(tasks) // (4 * workers)))
            for c in pool.imap_unordered(_write_frame_task, tasks, chunksize=chunk):
                counts += c
                bar.update()
    bar.close()
    seconds = time.perf_counter() - start
    summary = {
        "generator": "lix_train.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "intrinsics": config.intrinsics().tolist(),
        "note": SIDEWALK_NOTE,
        "frames_rendered": len(tasks),
        "images_written": len(tasks) * len(config.variations) * len(config.cameras),
        "seconds": round(seconds, 2),
        "workers": workers,
        "class_pixel_counts": {n: int(c) for (n, _), c in zip(VKITTI2_CATEGORIES, counts)},
    }
    write_atomic(root / "synthetic.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def class_frequencies(summary: dict) -> dict[str, float]:
    """Share of labelled pixels per category, from a write_dataset summary."""
    counts = summary["class_pixel_counts"]
    total = max(1, sum(counts.values()))
    return {name: c / total for name, c in counts.items()}


def split_scenes(names: list[str], val: int, test: int, seed: int) -> dict[str, list[str]]:
    """Disjoint train / val / test lists of scene names covering all of them, by a seeded shuffle."""
    if val < 0 or test < 0 or val + test >= len(names):
        raise ValueError(f"cannot take {val} val + {test} test scenes from {len(names)} and keep one for train")
    order = [names[i] for i in np.random.default_rng([seed, 0x5B117]).permutation(len(names))]
    return {
        "train": sorted(order[val + test:]),
        "val": sorted(order[:val]),
        "test": sorted(order[val:val + test]),
    }


def drive_splits(config: SyntheticConfig, val: int | None = None, test: int | None = None) -> dict[str, list[str]]:
    """Whole drives per split for splits.json: by default about 15% each to val and test, at least one."""
    share = max(1, round(0.15 * config.scenes))
    val, test = share if val is None else val, share if test is None else test
    if val < 1 or test < 1 or config.scenes - val - test < 1:
        raise ValueError(f"--scenes {config.scenes} cannot give train, val ({val}) and test ({test}) at least one "
                         f"drive each; use --scenes {max(3, val + test + 1)} or more")
    return split_scenes(config.scene_names, val, test, config.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m lix_train.data.synthetic",
        description="Generate procedural driving drives (RGB, depth, class labels) in the exact vKITTI2 "
        "on-disk format. Several classes share colour palettes (--ambiguity), so RGB alone is ambiguous "
        "while depth / surface normals separate them. " + SIDEWALK_NOTE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = SyntheticConfig()
    parser.add_argument("--out", required=True, type=Path, help="output root (SceneNN/... are created in it)")
    for f in dataclasses.fields(SyntheticConfig):  # --scenes ... --jpeg-quality, help from the fields
        flag, default, text = f"--{f.name.replace('_', '-')}", getattr(d, f.name), f.metadata["help"]
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=text)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", default=list(default), metavar="NAME", help=text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=text)
    parser.add_argument("--val-scenes", type=int, default=None, metavar="N",
                        help="drives in the val split of splits.json (default: 15%% of --scenes, at least 1)")
    parser.add_argument("--test-scenes", type=int, default=None, metavar="N",
                        help="drives in the test split of splits.json (default: 15%% of --scenes, at least 1)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SyntheticConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)})
        if args.workers < 1:
            raise ValueError(f"workers must be >= 1, got {args.workers}")
        splits = drive_splits(config, args.val_scenes, args.test_scenes)
    except ValueError as err:
        parser.error(str(err))
    summary = write_dataset(args.out, config, workers=args.workers, progress=not args.no_progress)
    write_atomic(Path(args.out) / SPLITS_FILE, (json.dumps(splits, indent=2) + "\n").encode())
    print(
        f"wrote {summary['images_written']} images ({config.scenes} scenes x {config.frames} frames x "
        f"{len(config.variations)} variations x {len(config.cameras)} cameras) to {args.out} "
        f"in {summary['seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
