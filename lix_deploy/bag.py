"""Segment a recorded drive offline: rosbag2 (sqlite3 or MCAP) in, the same bag plus mask topics out.

    python -m lix_deploy.bag --in drive_bag --out drive_seg --artifact student.onnx
    python -m lix_deploy.bag make-demo --out demo_bag [--artifact student.onnx]
    ros2 run lix_seg segment_bag --in drive_bag --out drive_seg --artifact student.onnx

Reads and writes bags with `rosbags` (no ROS install needed). Every image of the camera topic
(sensor_msgs/Image in rgb8 / bgr8 / rgba8 / bgra8 / mono8, or sensor_msgs/CompressedImage) goes
through the same torch-free `lix_deploy.runtime.Segmenter` as the ROS node; the mask (mono8 class
ids) and colour mask (rgb8) are written with the image's header unchanged and at the image's
receive time in the bag, so a viewer or an evaluation script lines them up by stamp. The output
bag is written next to its final path and renamed into place when complete.

`make-demo` writes a short drive of the embedded procedural generator (lix_train.data.synthetic,
numpy only: no torch) as a camera bag, and segments it too when given an artefact.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lix_deploy.artifact import BACKENDS
from lix_deploy.cli import EXIT_OK, ToolParser, UsageError, count, run_tool
from lix_deploy.recordings import IMAGE_TYPE, RecordingError, decode_message as decode_image, pick_image_topic

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
STORAGE_FORMATS = ("mcap", "sqlite3")
DEMO_TOPIC = "/camera/image_raw"
DEMO_START_NS = 1_700_000_000 * 10**9  # demo stamps start at a fixed, recognisable time

__all__ = ["BagError", "SegmentStats", "segment_bag", "make_demo_bag", "main"]


BagError = RecordingError  # a bag that cannot be read or segmented as asked; the message names the bag


@dataclass
class SegmentStats:
    """What one run did (printed as the summary)."""

    topic: str = ""
    segmented: int = 0
    skipped: int = 0
    copied: int = 0
    seconds: float = 0.0
    skip_reasons: dict[str, int] = field(default_factory=dict)


def rosbags_modules():
    """(Reader, Writer, StoragePlugin, the ROS 2 Jazzy typestore) of `rosbags`, or how to install it."""
    try:
        from rosbags.rosbag2 import Reader, StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        from lix_deploy.runtime.backends.base import BackendUnavailableError

        raise BackendUnavailableError("rosbag2", "rosbags", "pip install 'lix-seg[ros]'") from None
    return Reader, Writer, StoragePlugin, get_typestore(Stores.ROS2_JAZZY)


@contextmanager
def _atomic_bag_dir(out: Path) -> Iterator[Path]:
    """A bag directory path in a temp folder beside `out`, renamed onto `out` once the block succeeds."""
    if out.exists():
        raise BagError(out, "output exists already; rosbag2 never overwrites a bag (choose another --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging / out.name
        os.replace(staging / out.name, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _storage_plugin(fmt: str):
    _, _, StoragePlugin, _ = rosbags_modules()
    if fmt not in STORAGE_FORMATS:
        raise ValueError(f"format={fmt!r} is not one of {', '.join(STORAGE_FORMATS)}")
    return StoragePlugin.MCAP if fmt == "mcap" else StoragePlugin.SQLITE3


def _image_message(typestore, header, array: np.ndarray, encoding: str):
    Image = typestore.types[IMAGE_TYPE]
    array = np.ascontiguousarray(array)
    channels = 1 if array.ndim == 2 else array.shape[2]
    return Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding,
                 is_bigendian=int(array.dtype.itemsize > 1 and sys.byteorder == "big"),
                 step=array.shape[1] * channels * array.dtype.itemsize, data=array.view(np.uint8).reshape(-1))


def _copy_connection(writer, conn, typestore):
    """Re-create an input connection in the output bag (same type definition and hash when the bag has them)."""
    qos = getattr(conn.ext, "offered_qos_profiles", [])
    fmt = getattr(conn.ext, "serialization_format", "cdr")
    if conn.msgdef.data and conn.digest and conn.digest.startswith("RIHS01_"):
        return writer.add_connection(conn.topic, conn.msgtype, msgdef=conn.msgdef.data, rihs01=conn.digest,
                                     serialization_format=fmt, offered_qos_profiles=qos)
    return writer.add_connection(conn.topic, conn.msgtype, typestore=typestore, serialization_format=fmt,
                                 offered_qos_profiles=qos)


def segment_bag(bag_in: str | Path, bag_out: str | Path, artifact: str | Path, topic: str | None = None, *,
                mask_topic: str = "/segmenter/mask", colored_topic: str | None = "/segmenter/colored_mask",
                copy_input: bool = True, storage: str = "mcap", backend: str = "auto",
                intra_op_threads: int | None = None, progress: bool = True, segmenter=None) -> SegmentStats:
    """Segment every image of `topic` in `bag_in` into a new bag `bag_out` (see the module docstring).

    `copy_input` also copies every input message unchanged, so the output is a superset of the input.
    Images that cannot be segmented are skipped and counted (reasons in the stats), never fatal.
    """
    from tqdm import tqdm

    from lix_deploy.runtime import Segmenter

    Reader, Writer, _, typestore = rosbags_modules()
    bag_in, bag_out = Path(bag_in), Path(bag_out)
    if not bag_in.exists():
        raise BagError(bag_in, "input bag not found")
    plugin = _storage_plugin(storage)
    seg = segmenter or Segmenter(artifact, backend, intra_op_threads=intra_op_threads)
    stats = SegmentStats()
    start = time.perf_counter()
    try:
        with Reader(bag_in) as reader, _atomic_bag_dir(bag_out) as staging:
            stats.topic = pick_image_topic(bag_in, reader.connections, topic)
            with Writer(staging, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
                copies = ({c.id: _copy_connection(writer, c, typestore) for c in reader.connections}
                          if copy_input else {})
                mask_conn = writer.add_connection(mask_topic, IMAGE_TYPE, typestore=typestore)
                colored_conn = writer.add_connection(colored_topic, IMAGE_TYPE, typestore=typestore) \
                    if colored_topic else None
                camera = [c for c in reader.connections if c.topic == stats.topic]
                selected = reader.connections if copy_input else camera
                total = sum(c.msgcount for c in selected)
                for conn, timestamp, raw in tqdm(reader.messages(connections=selected), total=total, unit="msg",
                                                 desc=f"segmenting {stats.topic}", disable=not progress):
                    if conn.id in copies:
                        writer.write(copies[conn.id], timestamp, raw)
                        stats.copied += 1
                    if conn.topic != stats.topic:
                        continue
                    msg = typestore.deserialize_cdr(raw, conn.msgtype)
                    try:
                        image, encoding = decode_image(msg, conn.msgtype)
                        mask = seg.segment(image, encoding)
                    except ValueError as err:
                        reason = str(err).split(" (")[0]
                        stats.skip_reasons[reason] = stats.skip_reasons.get(reason, 0) + 1
                        stats.skipped += 1
                        continue
                    mono = "mono8" if mask.dtype == np.uint8 else "mono16"
                    writer.write(mask_conn, timestamp,
                                 typestore.serialize_cdr(_image_message(typestore, msg.header, mask, mono), IMAGE_TYPE))
                    if colored_conn is not None:
                        colored = _image_message(typestore, msg.header, seg.colorize(mask), "rgb8")
                        writer.write(colored_conn, timestamp, typestore.serialize_cdr(colored, IMAGE_TYPE))
                    stats.segmented += 1
    finally:
        if segmenter is None:
            seg.close()
    stats.seconds = time.perf_counter() - start
    return stats


def _camera_info(typestore, header, k: np.ndarray, height: int, width: int):
    CameraInfo = typestore.types[CAMERA_INFO_TYPE]
    RegionOfInterest = typestore.types["sensor_msgs/msg/RegionOfInterest"]
    p = np.zeros((3, 4))
    p[:, :3] = k
    return CameraInfo(header=header, height=height, width=width, distortion_model="plumb_bob",
                      d=np.zeros(5), k=np.asarray(k, np.float64).reshape(-1), r=np.eye(3).reshape(-1),
                      p=p.reshape(-1), binning_x=0, binning_y=0,
                      roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def make_demo_bag(bag_out: str | Path, frames: int = 30, rate_hz: float = 10.0, height: int = 192, width: int = 640,
                  seed: int = 0, encoding: str = "bgr8", topic: str = DEMO_TOPIC, storage: str = "mcap",
                  progress: bool = True) -> int:
    """Write `frames` frames of one procedural drive as `topic` (+ camera_info) at `rate_hz`; returns frames."""
    from tqdm import tqdm

    from lix_train.data.synthetic import SyntheticConfig, render_frame  # numpy-only generator

    if encoding not in ("rgb8", "bgr8", "mono8"):
        raise UsageError(f"encoding={encoding!r}: the demo writes rgb8, bgr8 or mono8")
    if not rate_hz > 0:
        raise UsageError(f"rate_hz (--rate) must be > 0, got {rate_hz}")
    _, Writer, _, typestore = rosbags_modules()
    config = SyntheticConfig(scenes=1, frames=frames, height=height, width=width, seed=seed)
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    info_topic = topic.rsplit("/", 1)[0] + "/camera_info"
    with _atomic_bag_dir(Path(bag_out)) as staging:
        with Writer(staging, version=Writer.VERSION_LATEST, storage_plugin=_storage_plugin(storage)) as writer:
            image_conn = writer.add_connection(topic, IMAGE_TYPE, typestore=typestore)
            info_conn = writer.add_connection(info_topic, CAMERA_INFO_TYPE, typestore=typestore)
            for index in tqdm(range(frames), desc="rendering demo drive", unit="frame", disable=not progress):
                rgb = render_frame(config, 0, index).rgb["clone"]["Camera_0"]
                image = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": rgb.mean(axis=2).round().astype(np.uint8)}
                stamp_ns = DEMO_START_NS + round(index * 1e9 / rate_hz)
                header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="camera")
                writer.write(image_conn, stamp_ns, typestore.serialize_cdr(
                    _image_message(typestore, header, image[encoding], encoding), IMAGE_TYPE))
                writer.write(info_conn, stamp_ns, typestore.serialize_cdr(
                    _camera_info(typestore, header, config.intrinsics(), height, width), CAMERA_INFO_TYPE))
    return frames


# ---- CLI ---------------------------------------------------------------------------------------
def build_parser() -> ToolParser:
    parser = ToolParser("bag",
        "Segment the camera topic of a rosbag2 (sqlite3 or MCAP) with an exported LIX-Seg student, "
        "writing mask (mono8) and colour-mask (rgb8) topics with the original stamps.",
        epilog="Demo bag: python -m lix_deploy.bag make-demo --out BAG [--artifact student.onnx] "
               "(see make-demo --help).")
    parser.add_argument("--in", dest="bag_in", type=Path, required=True, help="input bag directory (or .mcap/.db3)")
    parser.add_argument("--out", type=Path, required=True, help="output bag directory (must not exist)")
    parser.add_argument("--artifact", type=Path, required=True,
                        help="exported model: .onnx, or a TensorRT engine with its <engine>.json")
    parser.add_argument("--topic", default=None,
                        help="camera topic (sensor_msgs/Image or CompressedImage); default: the bag's only image topic")
    parser.add_argument("--mask-topic", default="/segmenter/mask", help="topic of the mono8 class-id masks")
    parser.add_argument("--colored-topic", default="/segmenter/colored_mask",
                        help="topic of the rgb8 colour masks ('' to leave them out)")
    parser.add_argument("--no-copy", action="store_true", help="write only the mask topics, not the input messages")
    parser.add_argument("--format", choices=STORAGE_FORMATS, default="mcap", help="storage of the output bag")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="inference backend (auto: from the artefact's suffix)")
    parser.add_argument("--threads", type=count(1), default=None, help="ONNX Runtime CPU threads (default: its own)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def build_demo_parser() -> ToolParser:
    parser = ToolParser("bag",
        "Write a demo camera bag from the embedded procedural drive (no dataset, no torch); "
        "with --artifact, also segment it (image, camera_info, mask and colour-mask topics).", command="make-demo")
    parser.add_argument("--out", type=Path, required=True, help="output bag directory (must not exist)")
    parser.add_argument("--artifact", type=Path, default=None, help="segment the demo with this model too")
    parser.add_argument("--frames", type=count(1), default=30, help="frames of the drive")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz (sets the stamps)")
    parser.add_argument("--height", type=count(1), default=192, help="image height in pixels")
    parser.add_argument("--width", type=count(1), default=640, help="image width in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the procedural street")
    parser.add_argument("--encoding", choices=("bgr8", "rgb8", "mono8"), default="bgr8", help="image encoding")
    parser.add_argument("--topic", default=DEMO_TOPIC, help="camera topic")
    parser.add_argument("--format", choices=STORAGE_FORMATS, default="mcap", help="storage of the output bag")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _print_stats(stats: SegmentStats, out: Path) -> None:
    rate = stats.segmented / stats.seconds if stats.seconds > 0 else 0.0
    print(f"{out}: segmented {stats.segmented} images of {stats.topic} ({rate:.1f}/s), copied {stats.copied} "
          f"messages, skipped {stats.skipped}" + (f" {stats.skip_reasons}" if stats.skipped else ""))


def _make_demo(args: argparse.Namespace) -> int:
    if args.artifact is None:
        make_demo_bag(args.out, args.frames, args.rate, args.height, args.width, args.seed, args.encoding,
                      args.topic, args.format, progress=not args.quiet)
        print(f"{args.out}: {args.frames} frames on {args.topic} at {args.rate:g} Hz")
        return EXIT_OK
    with tempfile.TemporaryDirectory(prefix=".demo-", dir=Path(args.out).parent) as tmp:
        raw = Path(tmp) / "raw"
        make_demo_bag(raw, args.frames, args.rate, args.height, args.width, args.seed, args.encoding, args.topic,
                      args.format, progress=not args.quiet)
        stats = segment_bag(raw, args.out, args.artifact, args.topic, storage=args.format, progress=not args.quiet)
    _print_stats(stats, args.out)
    return EXIT_OK


def _segment(args: argparse.Namespace) -> int:
    stats = segment_bag(args.bag_in, args.out, args.artifact, args.topic, mask_topic=args.mask_topic,
                        colored_topic=args.colored_topic or None, copy_input=not args.no_copy,
                        storage=args.format, backend=args.backend, intra_op_threads=args.threads,
                        progress=not args.quiet)
    _print_stats(stats, args.out)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["make-demo"]:
        return run_tool(build_demo_parser(), argv[1:], _make_demo, bad_input=(BagError,))
    return run_tool(build_parser(), argv, _segment, bad_input=(BagError,))


if __name__ == "__main__":
    raise SystemExit(main())
