"""Calibration sets from the vehicle's own recordings (calib --bag / --images / --video): frame choice that covers
the drive, the manifest's provenance, and a clear one-line error with nothing written for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags", reason="bag reading / writing needs the [ros] extra")

from lix_deploy.bag import make_demo_bag  # noqa: E402
from lix_deploy.calib import load_calibration_set, main  # noqa: E402
from lix_deploy.recordings import (  # noqa: E402
    SECOND_NS, Recording, near_duplicate, open_bag, open_images, open_video, spread_frames, spread_targets, thumbnail,
)

SIZE = (48, 64)  # demo frames (H, W)


@pytest.fixture(scope="module")
def demo_bag(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_bag(out, frames=12, rate_hz=10.0, height=SIZE[0], width=SIZE[1], progress=False)
    return out


def _frames(n: int, stamps=None, still=()) -> Recording:
    """A made-up recording: frame i is a distinct random image, or frame i - 1 again for i in `still`."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        images.append(images[-1] if i in still else rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    stamps = list(stamps) if stamps is not None else [i * SECOND_NS // 10 for i in range(n)]
    return Recording("test", Path("made-up"), stamps, [f"f{i}" for i in range(n)], images.__getitem__)


# --- the choice of frames (pure) ------------------------------------------------------------------

def test_targets_spread_evenly_over_the_span():
    targets, spacing, lo, hi = spread_targets([0, 10 * SECOND_NS], 5, (0.0, 1.0))
    assert targets == [0, 2.5e9, 5e9, 7.5e9, 10e9] and spacing == 2.5e9 and (lo, hi) == (0, 1e10)
    targets, _, lo, hi = spread_targets([0, 10 * SECOND_NS], 3, (0.5, 1.0))
    assert targets == [5e9, 7.5e9, 10e9] and lo == 5e9
    for bad in ((0.5, 0.5), (-0.1, 1.0), (0.0, 1.1)):
        with pytest.raises(ValueError, match="span"):
            spread_targets([0, 1], 2, bad)


def test_frames_cover_the_drive_not_its_first_seconds():
    rec = _frames(100)  # 10 s at 10 Hz
    chosen = spread_frames(rec, 5, dedup=0)
    targets = [0, 24.75, 49.5, 74.25, 99]  # in frames: the drive's time, evenly
    assert len(chosen.indices) == 5 and all(abs(i - t) <= 0.5 for i, t in zip(chosen.indices, targets))
    assert chosen.decoded == 5  # only candidates are decoded


def test_a_stop_is_skipped_as_near_duplicates_and_min_gap_thins_the_rest():
    still = set(range(31, 70))  # the car waits at a light from frame 30 to 69: the same picture
    rec = _frames(100, still=still)
    chosen = spread_frames(rec, 10, dedup=3.0)
    assert sum(30 <= i < 70 for i in chosen.indices) == 1  # the stop's scene once, not four times
    assert chosen.near_duplicates > 0
    assert len(spread_frames(rec, 10, dedup=0.0).indices) == 10  # dedup off: the stop fills targets
    gapped = spread_frames(_frames(100), 50, min_gap_s=1.0, dedup=0)
    stamps = [rec.stamps_ns[i] for i in gapped.indices]
    assert all(b - a >= SECOND_NS for a, b in zip(stamps, stamps[1:])) and len(gapped.indices) <= 10


def test_two_spans_never_share_a_frame():
    rec = _frames(30)
    a = spread_frames(rec, 30, span=(0.0, 0.7), dedup=0).indices
    b = spread_frames(rec, 30, span=(0.7, 1.0), dedup=0).indices
    assert a and b and not set(a) & set(b) and max(a) < min(b) and b[-1] == 29


def test_thumbnails_see_a_moving_scene_but_not_sensor_noise():
    rng = np.random.default_rng(1)
    frame = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (320, 240), interpolation=cv2.INTER_NEAREST)
    noisy = np.clip(frame.astype(int) + rng.integers(-4, 5, frame.shape), 0, 255).astype(np.uint8)
    moved = np.roll(frame, 40, axis=1)
    assert near_duplicate(thumbnail(frame), thumbnail(noisy), 3.0)
    assert not near_duplicate(thumbnail(frame), thumbnail(moved), 3.0)
    assert not near_duplicate(thumbnail(frame), thumbnail(frame), 0.0)  # 0 turns the test off


# --- the three sources and the set written from them -----------------------------------------------

def test_a_bag_set_records_the_bag_topic_and_every_stamp_and_loads_without_labels(demo_bag, tmp_path, capsys):
    out = tmp_path / "calib"
    assert main(["--bag", str(demo_bag), "--num", "6", "--height", "32", "--width", "48", "--out", str(out),
                 "--span", "0:0.5", "--no-progress"]) == 0
    assert "frames of bag" in capsys.readouterr().out
    inputs, labels, manifest = load_calibration_set(out)
    assert labels is None and inputs.shape[1:] == (3, 32, 48)
    assert manifest["source"]["kind"] == "bag" and manifest["source"]["topic"] == "/camera/image_raw"
    assert manifest["source"]["msgtype"] == "sensor_msgs/msg/Image"
    recording = open_bag(demo_bag)
    stamps = [f["stamp_ns"] for f in manifest["files"]]
    assert stamps == sorted(stamps) and set(stamps) <= set(recording.stamps_ns)
    assert max(stamps) < recording.stamps_ns[0] + 0.5 * (recording.stamps_ns[-1] - recording.stamps_ns[0])
    assert manifest["selection"]["span"] == [0.0, 0.5] and manifest["dataset"] is None


def test_compressed_images_in_a_bag_decode_like_raw_ones(demo_bag, tmp_path):
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    compressed = tmp_path / "compressed"
    Compressed = store.types["sensor_msgs/msg/CompressedImage"]
    raw = open_bag(demo_bag)
    with Reader(demo_bag) as reader, Writer(compressed, version=Writer.VERSION_LATEST) as writer:
        conn = writer.add_connection("/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
                                     typestore=store)
        for c, stamp, data in reader.messages():
            if c.topic != "/camera/image_raw":
                continue
            msg = store.deserialize_cdr(data, c.msgtype)
            rgb = raw.load(raw.stamps_ns.index(stamp))
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            out = Compressed(header=msg.header, format="png", data=np.frombuffer(png.tobytes(), np.uint8))
            writer.write(conn, stamp, store.serialize_cdr(out, "sensor_msgs/msg/CompressedImage"))
    rec = open_bag(compressed)
    assert rec.msgtype == "sensor_msgs/msg/CompressedImage" and rec.topic == "/camera/image_raw/compressed"
    assert np.array_equal(rec.load(3), raw.load(3))  # lossless PNG: the same pixels


def test_an_image_folder_and_a_video_are_recordings_too(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "frames"
    (folder / "b").mkdir(parents=True)
    frames = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(6)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / ("b" if i >= 3 else "") / f"f{i:02d}.png"), frame)
    rec = open_images(folder)
    assert rec.names == ["b/f03.png", "b/f04.png", "b/f05.png", "f00.png", "f01.png", "f02.png"]
    assert rec.stamps_ns == [i * SECOND_NS for i in range(6)]
    assert np.array_equal(rec.load(3), cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB))
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (56, 40))
    for frame in frames:
        writer.write(frame)
    writer.release()
    rec = open_video(video)
    assert len(rec.stamps_ns) == 6 and rec.stamps_ns[1] == SECOND_NS // 5 and rec.extra["fps"] == 5.0
    assert rec.load(4).shape == (40, 56, 3) and rec.load(1).shape == (40, 56, 3)  # forward, then back
    out = tmp_path / "set"
    assert main(["--video", str(video), "--num", "3", "--height", "32", "--width", "48", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads((out / "manifest.json").read_text())["source"]["fps"] == 5.0


# --- bad input: one line naming the file or topic, exit 2, nothing at --out --------------------------

def _no_image_bag(path: Path) -> Path:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    String = store.types["std_msgs/msg/String"]
    with Writer(path, version=Writer.VERSION_LATEST) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        writer.write(conn, 1, store.serialize_cdr(String(data="hi"), "std_msgs/msg/String"))
    return path


def _truncated(bag: Path, path: Path) -> Path:
    import shutil

    shutil.copytree(bag, path)
    data = next(path.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    return path


def _mixed_sizes(path: Path) -> Path:
    path.mkdir()
    cv2.imwrite(str(path / "a.png"), np.zeros((40, 56, 3), np.uint8))
    cv2.imwrite(str(path / "b.png"), np.full((30, 56, 3), 90, np.uint8))
    return path


@pytest.mark.parametrize("case, message", [
    ("no image topic", "no image topic (none): choose one with --topic"),
    ("missing topic", "no image topic '/nope'; image topics in the bag: /camera/image_raw"),
    ("truncated bag", "cannot be read as a rosbag2 bag"),
    ("missing bag", "bag not found"),
    ("empty folder", "no images (.jpg, .jpeg, .png) in the folder or below it"),
    ("bad video", "OpenCV cannot open it as a video"),
    ("mixed sizes", "the images must come from one camera"),
    ("two sources", "--bag and --images: name one source of frames"),
    ("span on a dataset", "--span, --min-gap and --dedup apply to recordings"),
])
def test_bad_recordings_end_in_one_line_and_write_nothing(case, message, demo_bag, tmp_path, capsys):
    argv = {
        "no image topic": ["--bag", str(_no_image_bag(tmp_path / "chatter"))],
        "missing topic": ["--bag", str(demo_bag), "--topic", "/nope"],
        "truncated bag": ["--bag", str(_truncated(demo_bag, tmp_path / "cut"))],
        "missing bag": ["--bag", str(tmp_path / "nowhere")],
        "empty folder": ["--images", str((tmp_path / "empty").resolve())],
        "bad video": ["--video", str(tmp_path / "clip.mp4")],
        "mixed sizes": ["--images", str(_mixed_sizes(tmp_path / "mixed")), "--dedup", "0"],
        "two sources": ["--bag", str(demo_bag), "--images", str(tmp_path)],
        "span on a dataset": ["--dataset", "synthetic", "--span", "0:0.5"],
    }[case]
    (tmp_path / "empty").mkdir(exist_ok=True)
    (tmp_path / "clip.mp4").write_text("not a video")
    out = tmp_path / "out"
    assert main([*argv, "--num", "4", "--height", "32", "--width", "48", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("calib: error: ") and message in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


# --- the road: bag -> calibration and gate sets -> INT8 artefact gated on agreement with FP32 ---------------

def test_int8_calibrated_and_gated_on_one_bag(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the INT8 build needs ONNX Runtime ([deploy] extra)")
    from deploy_fixtures import tiny_onnx

    from lix_deploy import build_engine

    bag = tmp_path / "drive"
    make_demo_bag(bag, frames=16, rate_hz=10.0, height=SIZE[0], width=SIZE[1], progress=False)
    model = tiny_onnx(tmp_path)
    for name, span in (("cal", "0:0.7"), ("gate", "0.7:1")):
        assert main(["--bag", str(bag), "--span", span, "--num", "8", "--onnx", str(model), "--out",
                     str(tmp_path / name), "--no-progress"]) == 0
    cal, gate = (json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("cal", "gate"))
    assert not {f["stamp_ns"] for f in cal["files"]} & {f["stamp_ns"] for f in gate["files"]}  # held out
    out = tmp_path / "student.int8.onnx"
    assert build_engine.main(["--onnx", str(model), "--precision", "int8", "--calib", str(tmp_path / "cal"),
                              "--eval-set", str(tmp_path / "gate"), "--out", str(out), "--min-pixel-agreement", "0",
                              "--min-class-agreement", "0"]) == 0
    report = json.loads(out.with_name(out.name + ".build.json").read_text())
    assert report["gate_basis"] == "agreement_with_fp32" and report["accuracy"]["frames"] == len(gate["files"])
    assert "basis: agreement with FP32 (no labels in the evaluation set)" in capsys.readouterr().err
