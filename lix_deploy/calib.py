"""Calibration sets: frames exactly as the runtime feeds the model, with their provenance and hashes.

    python -m lix_deploy.calib --dataset synthetic --split train --num 500 --height 96 --width 320 --out calib/NAME

INT8 quantisation picks its ranges from these tensors, and the accuracy gate scores candidate
engines on them, so they must be what the deployed model sees: each frame goes through
`lix_deploy.runtime.preprocess.to_model_input` (the runtime's only preprocessing), and the
ground truth is resized nearest to the model size. Frames are chosen deterministically from a
seed, round-robin over scenes, so a set spans the split's drives instead of one street.

On disk (calib/NAME/, created atomically: written to a temp folder, then renamed):
    inputs.npy     uint8 [N, 3, H, W], RGB 0..255: the runtime's float32 input, stored losslessly
                   (to_model_input resizes 8-bit camera images, so every value is a whole number);
                   load_calibration_set returns it as float32
    labels.npy     uint8 [N, H, W] train ids (255 = ignore), unless --no-labels
    manifest.json  dataset, split, size, preprocessing, seed, every source file with its sha256,
                   and the sha256 of inputs.npy / labels.npy, checked by `load_calibration_set`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from lix_deploy.artifact import sha256_bytes, sha256_file
from lix_deploy.cli import EXIT_OK, ToolParser, UsageError, count, run_tool
from lix_deploy.recordings import RecordingError
from lix_train.config import ConfigError
from lix_train.data.errors import DatasetError
from lix_train.data.registry import DATASETS, dataset_spec

MANIFEST = "manifest.json"
INPUTS = "inputs.npy"
LABELS = "labels.npy"
PREPROCESSING = "lix_deploy.runtime.preprocess.to_model_input"
ENCODING = "rgb8"
FORMAT_VERSION = 1


class CalibrationError(ValueError):
    """A calibration set that is missing, inconsistent or modified; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def scene_of(name: str) -> str:
    """The drive a sample name belongs to: 'Scene01' of 'Scene01/clone/Camera_0/00003', '' if unnamed."""
    return name.split("/", 1)[0] if "/" in name else ""


def select_frames(names: Sequence[str], num: int, seed: int = 0) -> list[int]:
    """`num` indices chosen round-robin over scenes, each scene's frames in a seeded random order.

    Deterministic for (names, num, seed); scenes get equal shares (+-1) while they last.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if num > len(names):
        raise UsageError(f"asked for {num} frames but the split has only {len(names)}; use --num <= {len(names)}")
    groups: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(names):
        groups[scene_of(name)].append(index)
    rng = np.random.default_rng(seed)
    queues = [list(np.asarray(groups[s])[rng.permutation(len(groups[s]))]) for s in sorted(groups)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < num:
        for queue in queues:
            if depth < len(queue) and len(chosen) < num:
                chosen.append(int(queue[depth]))
        depth += 1
    return sorted(chosen)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Train-id map to (H, W), nearest with centre-aligned sampling (the training pipeline's choice)."""
    height, width = size
    if label.shape == (height, width):
        return np.ascontiguousarray(label, np.uint8)
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST_EXACT).astype(np.uint8)


def _source_record(dataset: str, root: Path | None, sample, index: int) -> dict[str, Any]:
    """Where a frame came from and its hash: the RGB file for vKITTI2-format data, else the decoded pixels."""
    meta = sample.meta or {}
    vkitti2_format = dataset_spec(dataset).vkitti2_format
    if vkitti2_format and root is not None and {"scene", "variation", "camera", "frame"} <= set(meta):
        relative = Path(meta["scene"]) / meta["variation"] / "frames" / "rgb" / meta["camera"] / \
            f"rgb_{int(meta['frame']):05d}.jpg"
        if (root / relative).is_file():
            return {"source": relative.as_posix(), "sha256": sha256_file(root / relative), "hashed": "file",
                    "index": index}
    return {"source": sample.name, "sha256": sha256_bytes(np.ascontiguousarray(sample.rgb).tobytes()),
            "hashed": "rgb_pixels", "index": index}


def _save_npy(path: Path, array: np.ndarray) -> str:
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return sha256_file(path)


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished temp folder onto `out`; with force, an existing set is replaced."""
    if not out.exists():
        os.rename(tmp, out)
        return
    if not force:
        raise CalibrationError(out, "already exists; pass --force to replace it")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.rename(out, old / out.name)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def write_calibration_set(
    out: str | Path,
    *,
    dataset: str = "synthetic",
    root: str | Path | None = None,
    split: str = "train",
    num: int = 500,
    size: tuple[int, int] = (96, 320),
    seed: int = 0,
    with_labels: bool = True,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write a calibration set folder (see the module docstring); returns its manifest."""
    from lix_train.data.build import build_sources, resolve_root, root_identity  # torch: only when a set is written
    from lix_train.data.config import DataConfig

    out = Path(out)
    height, width = _checked_size(size)
    if out.exists() and not force:
        raise CalibrationError(out, "already exists; pass --force to replace it")
    cfg = DataConfig(dataset=dataset, root=Path(root) if root is not None else None)
    data_root = resolve_root(cfg, progress=progress)
    source = build_sources(cfg, splits=[split], root=data_root)[split]
    indices = select_frames(list(source.names), num, seed)

    rows = ((sample.rgb, sample.label, _source_record(dataset, data_root, sample, index), sample.name)
            for index in indices for sample in (source[index],))
    manifest = {
        "dataset": dataset, "root": root_identity(cfg) if root is None else str(Path(root).resolve()),
        "split": split, "seed": seed, "class_set": source.class_set.name,
    }
    return _write_set(out, rows, len(indices), (height, width), manifest, with_labels, force, progress)


def _write_set(out: Path, rows, count: int, size: tuple[int, int], fields: dict, with_labels: bool, force: bool,
               progress: bool) -> dict:
    """Write the set folder atomically from `rows` of (rgb, label or None, file record, name); returns the manifest."""
    from tqdm import tqdm

    from lix_deploy.runtime.preprocess import to_model_input

    height, width = size
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise CalibrationError(out, f"cannot be written ({err.strerror or err})") from None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a published set is readable like any folder
        inputs = np.empty((count, 3, height, width), np.uint8)
        labels = np.empty((count, height, width), np.uint8)
        files = []
        for row, (rgb, label, record, name) in enumerate(tqdm(rows, total=count, desc="calibration frames",
                                                              disable=not progress)):
            inputs[row] = _as_uint8(to_model_input(rgb, ENCODING, (height, width))[0], name)
            if with_labels:
                labels[row] = resize_label(label, (height, width))
            files.append(record)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "name": out.name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **{k: v for k, v in fields.items() if k not in ("class_set",)},
            "num": count, "input_size": [height, width], "preprocessing": PREPROCESSING, "encoding": ENCODING,
            **({"class_set": fields["class_set"]} if "class_set" in fields else {}),
            "files": files, "tensor_file": INPUTS, "tensor_dtype": "uint8",
            "tensor_sha256": _save_npy(tmp / INPUTS, inputs),
        }
        if with_labels:
            manifest.update(labels_file=LABELS, labels_sha256=_save_npy(tmp / LABELS, labels))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def write_recording_set(out: str | Path, recording, *, num: int = 500, size: tuple[int, int] = (96, 320),
                        min_gap_s: float = 0.0, dedup: float = 3.0, span: tuple[float, float] = (0.0, 1.0),
                        force: bool = False, progress: bool = True) -> dict:
    """A calibration set (no labels) from one of the vehicle's own recordings (lix_deploy.recordings).

    The frames are spread over the drive's time with `min_gap_s` and the near-duplicate skip (`dedup`, mean
    grey-level difference of thumbnails); the manifest records the source, the selection and every frame's stamp.
    """
    from lix_deploy.recordings import spread_frames

    out = Path(out)
    height, width = _checked_size(size)
    if out.exists() and not force:
        raise CalibrationError(out, "already exists; pass --force to replace it")
    chosen = spread_frames(recording, num, min_gap_s=min_gap_s, dedup=dedup, span=span)
    if not chosen.indices:
        raise CalibrationError(recording.path, f"no frame in span {span[0]:g}:{span[1]:g} of the recording")
    rows = ((rgb, None, {"source": recording.names[i], "stamp_ns": recording.stamps_ns[i],
                         "sha256": sha256_bytes(np.ascontiguousarray(rgb).tobytes()), "hashed": "rgb_pixels",
                         "index": i}, recording.names[i])
            for i, rgb in zip(chosen.indices, chosen.frames))
    fields = {
        "dataset": None, "source": recording.describe(),
        "selection": {"asked": num, "kept": len(chosen.indices), "span": list(span), "min_gap_s": min_gap_s,
                      "dedup": dedup, "near_duplicates_skipped": chosen.near_duplicates,
                      "rule": "targets evenly spread over the span's time; a candidate at least min_gap_s after the "
                              "last frame kept, skipped when its 32x24 grey thumbnail differs from the last kept one "
                              "by less than dedup grey levels on average"},
    }
    return _write_set(out, rows, len(chosen.indices), (height, width), fields, False, force, progress)


def _checked_size(size) -> tuple[int, int]:
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (H, W), got {size!r}")
    return height, width


def _as_uint8(tensor: np.ndarray, name: str) -> np.ndarray:
    """The runtime's float32 input as uint8, refusing anything that would not round-trip exactly."""
    stored = tensor.astype(np.uint8)
    if not np.array_equal(stored, tensor):
        raise ValueError(f"{name}: preprocessed input is not whole numbers in 0..255; cannot store it losslessly")
    return stored


def _load_checked(directory: Path, name: str, expected_sha: str) -> np.ndarray:
    path = directory / name
    if not path.is_file():
        raise CalibrationError(path, "missing (listed in manifest.json)")
    actual = sha256_file(path)
    if actual != expected_sha:
        raise CalibrationError(path, f"sha256 {actual[:16]}... does not match manifest.json's {expected_sha[:16]}...: "
                                     "the file was modified or is corrupt; regenerate the set (calib/README.md)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise CalibrationError(path, f"not a readable .npy array ({err})") from None


def load_calibration_set(directory: str | Path) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(inputs float32 [N, 3, H, W], labels uint8 [N, H, W] or None, manifest), hashes and shapes verified."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CalibrationError(manifest_path, "not found; is this a calibration set written by lix_deploy.calib?")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CalibrationError(manifest_path, f"unreadable manifest ({err})") from None
    missing = [k for k in ("tensor_file", "tensor_sha256", "input_size", "num", "preprocessing") if k not in manifest]
    if missing:
        raise CalibrationError(manifest_path, f"manifest has no {missing[0]!r} entry")
    if manifest["preprocessing"] != PREPROCESSING:
        raise CalibrationError(manifest_path, f"made with preprocessing {manifest['preprocessing']!r}, the runtime "
                                              f"uses {PREPROCESSING!r}")
    inputs = _load_checked(directory, manifest["tensor_file"], manifest["tensor_sha256"])
    height, width = manifest["input_size"]
    expected = (int(manifest["num"]), 3, int(height), int(width))
    dtype = np.dtype(manifest.get("tensor_dtype", "float32"))
    if inputs.dtype != dtype or inputs.shape != expected:
        raise CalibrationError(directory / manifest["tensor_file"], f"holds {inputs.dtype} {inputs.shape}, manifest "
                                                                    f"says {dtype} {expected}")
    inputs = inputs.astype(np.float32)
    labels = None
    if manifest.get("labels_file"):
        labels = _load_checked(directory, manifest["labels_file"], manifest.get("labels_sha256", ""))
        if labels.dtype != np.uint8 or labels.shape != (expected[0], expected[2], expected[3]):
            raise CalibrationError(directory / manifest["labels_file"], f"holds {labels.dtype} {labels.shape}, "
                                   f"expected uint8 {(expected[0], expected[2], expected[3])}")
    return inputs, labels, manifest


def build_parser() -> ToolParser:
    parser = ToolParser("calib",
        "Write a calibration set for INT8 quantisation and the accuracy gate, preprocessed with the runtime's "
        "to_model_input (RGB 0..255 at the model size, stored as uint8), with a manifest of the source frames, "
        "their sha256 and the tensor hashes; the folder appears atomically. Frames come from a dataset split "
        "(round-robin over its scenes, with ground truth resized nearest) or, without labels, from the vehicle's "
        "own recording: a rosbag2 camera topic (--bag), a folder of images (--images) or a video (--video), spread "
        "evenly over the drive's time with a minimum gap and a near-duplicate skip (a car waiting at a light does "
        "not fill the set); --span picks part of the drive, e.g. 0:0.7 to calibrate and 0.7:1 to gate.")
    source = parser.add_argument_group("where the frames come from (one of)")
    source.add_argument("--dataset", choices=DATASETS, default=None,
                        help="a dataset split (default: synthetic; without --root = the embedded set)")
    source.add_argument("--bag", type=Path, default=None, metavar="PATH",
                        help="a rosbag2 bag (sqlite3 or MCAP) with sensor_msgs/Image or CompressedImage")
    source.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="a folder of .jpg / .png frames of one camera (recursively, name order = time order)")
    source.add_argument("--video", type=Path, default=None, metavar="FILE", help="a video file OpenCV can read")
    parser.add_argument("--topic", default=None, help="--bag: the camera topic (default: the bag's only image topic)")
    parser.add_argument("--root", type=Path, default=None, help="--dataset: root (required except for synthetic)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="train",
                        help="--dataset: split to sample (calibrate on train; gate accuracy on held-out frames)")
    parser.add_argument("--seed", type=int, default=0, help="--dataset: seed of the per-scene frame order")
    parser.add_argument("--no-labels", action="store_true", help="--dataset: do not write labels.npy")
    parser.add_argument("--span", type=span_arg, default=(0.0, 1.0), metavar="A:B",
                        help="recordings: the part of the drive to take frames from, as fractions of its duration")
    parser.add_argument("--min-gap", type=float, default=0.0, metavar="SECONDS",
                        help="recordings: at least this much time between two frames kept (an image folder counts "
                             "its files one second apart)")
    parser.add_argument("--dedup", type=float, default=3.0, metavar="GREY_LEVELS",
                        help="recordings: skip a frame whose 32x24 grey thumbnail differs from the last frame kept by "
                             "less than this mean absolute difference (0..255); 0 keeps near-duplicates")
    parser.add_argument("--num", type=count(1), default=500,
                        help="number of frames (a recording may give fewer: too short for --min-gap, or one stop)")
    parser.add_argument("--height", type=count(1), default=None, help="model input height (default: from --onnx)")
    parser.add_argument("--width", type=count(1), default=None, help="model input width (default: from --onnx)")
    parser.add_argument("--onnx", type=Path, default=None, help="exported model whose metadata gives the input size")
    parser.add_argument("--out", type=Path, required=True, help="calibration set folder to create (calib/NAME)")
    parser.add_argument("--force", action="store_true", help="replace an existing set at --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def span_arg(text: str) -> tuple[float, float]:
    """argparse type: 'A:B' fractions of a recording's duration with 0 <= A < B <= 1."""
    try:
        start, end = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not A:B, e.g. 0:0.7") from None
    if not 0.0 <= start < end <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= A < B <= 1")
    return start, end


def _size(args: argparse.Namespace) -> tuple[int, int]:
    if args.height is not None and args.width is not None:
        return args.height, args.width
    if args.onnx is None:
        raise UsageError("give --height and --width, or --onnx to read the model's input size")
    from lix_deploy.artifact import read_metadata

    model_h, model_w = read_metadata(args.onnx).input_size
    return (args.height or model_h, args.width or model_w)


def _recording_args(args: argparse.Namespace):
    """The recording named on the command line (None for a dataset), with the options that do not fit refused."""
    from lix_deploy.recordings import open_recording

    named = [flag for flag, value in (("--dataset", args.dataset), ("--bag", args.bag), ("--images", args.images),
                                      ("--video", args.video)) if value is not None]
    if len(named) > 1:
        raise UsageError(f"{' and '.join(named)}: name one source of frames")
    if args.topic is not None and args.bag is None:
        raise UsageError("--topic applies to --bag only")
    if not named or named[0] == "--dataset":
        if args.span != (0.0, 1.0) or args.min_gap or args.dedup != 3.0:
            raise UsageError("--span, --min-gap and --dedup apply to recordings (--bag, --images, --video); a dataset "
                             "split is sampled round-robin over its scenes (--seed)")
        return None
    if args.min_gap < 0 or args.dedup < 0:
        raise UsageError("--min-gap and --dedup must be >= 0")
    return open_recording(bag=args.bag, topic=args.topic, images=args.images, video=args.video)


def run(args: argparse.Namespace) -> int:
    recording = _recording_args(args)
    height, width = _size(args)
    if recording is None:
        dataset = args.dataset or "synthetic"
        manifest = write_calibration_set(
            args.out, dataset=dataset, root=args.root, split=args.split, num=args.num, size=(height, width),
            seed=args.seed, with_labels=not args.no_labels, force=args.force, progress=not args.no_progress,
        )
        what = f"{dataset}/{args.split}"
    else:
        manifest = write_recording_set(args.out, recording, num=args.num, size=(height, width), min_gap_s=args.min_gap,
                                       dedup=args.dedup, span=args.span, force=args.force,
                                       progress=not args.no_progress)
        picked = manifest["selection"]
        what = (f"{recording.kind} {recording.path}" + (f" {recording.topic}" if recording.topic else "") +
                f" (no labels; {picked['near_duplicates_skipped']} near-duplicates skipped"
                + (f"; {picked['kept']} of the {picked['asked']} asked" if picked["kept"] < picked["asked"] else "")
                + ")")
    size_mib = sum(p.stat().st_size for p in args.out.iterdir()) / 2**20
    print(f"wrote {args.out}: {manifest['num']} frames of {what} at {height}x{width}, "
          f"{size_mib:.1f} MiB, inputs sha256 {manifest['tensor_sha256'][:16]}...")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run_tool(build_parser(), argv, run, bad_input=(CalibrationError, ConfigError, DatasetError, RecordingError))


if __name__ == "__main__":
    raise SystemExit(main())
