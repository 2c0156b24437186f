"""Offline bag segmentation (python -m lix_deploy.bag): masks with the original stamps, read back independently.

Bags are written and segmented with rosbags (no ROS install) and read back with mcap-ros2-support,
a separate MCAP / CDR implementation, so a wrong type definition or serialisation would show.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="bag reading / writing needs the [ros] extra")
pytest.importorskip("onnxruntime", reason="segmenting needs ONNX Runtime ([deploy] extra)")
pytest.importorskip("onnx", reason="the tiny test model is built with onnx ([deploy] extra)")

from lix_deploy.bag import BagError, main, make_demo_bag, segment_bag  # noqa: E402
from repo_paths import ROOT  # noqa: E402

SIZE = (40, 56)  # demo frames (H, W): tiny, and not the model's 32x48


@pytest.fixture(scope="module")
def demo_bag(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_bag(out, frames=4, rate_hz=20.0, height=SIZE[0], width=SIZE[1], progress=False)
    return out


def read_mcap(bag: Path) -> dict[str, list]:
    """topic -> [(log_time_ns, message)] with mcap-ros2-support (independent of rosbags)."""
    reader = pytest.importorskip("mcap_ros2.reader", reason="reading bags back needs mcap-ros2-support ([dev])")
    files = sorted(bag.glob("*.mcap"))
    assert len(files) == 1, list(bag.iterdir())
    topics: dict[str, list] = {}
    for message in reader.read_ros2_messages(str(files[0])):
        topics.setdefault(message.channel.topic, []).append((message.log_time_ns, message.ros_msg))
    return topics


def as_array(msg) -> np.ndarray:
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3}[msg.encoding]
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width * channels]
    image = rows.reshape(msg.height, msg.width, channels)
    return image[:, :, 0] if channels == 1 else image


def stamp(msg) -> tuple[int, int, str]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id


def test_round_trip_keeps_stamps_and_matches_the_runtime(demo_bag, artifact, segmenter, tmp_path):
    out = tmp_path / "segmented"
    assert main(["--in", str(demo_bag), "--out", str(out), "--artifact", str(artifact), "--quiet"]) == 0
    topics = read_mcap(out)
    assert set(topics) == {"/camera/image_raw", "/camera/camera_info", "/segmenter/mask", "/segmenter/colored_mask"}
    images, masks, colored = topics["/camera/image_raw"], topics["/segmenter/mask"], topics["/segmenter/colored_mask"]
    assert len(images) == len(masks) == len(colored) == 4
    for (t_img, img), (t_mask, mask), (t_col, col) in zip(images, masks, colored):
        assert t_img == t_mask == t_col  # written at the image's receive time
        assert stamp(img) == stamp(mask) == stamp(col)  # header copied unchanged
        assert (mask.encoding, col.encoding) == ("mono8", "rgb8")
        expected = segmenter.segment(as_array(img), img.encoding)
        assert expected.shape == SIZE
        np.testing.assert_array_equal(as_array(mask), expected)
        np.testing.assert_array_equal(as_array(col), segmenter.colorize(expected))
    stamps = [img.header.stamp.sec * 10**9 + img.header.stamp.nanosec for _, img in images]
    assert np.diff(stamps).tolist() == [50_000_000] * 3  # 20 Hz


def test_sqlite3_input_and_output(artifact, tmp_path):
    pytest.importorskip("rosbags.rosbag2")
    from rosbags.rosbag2 import Reader

    raw = tmp_path / "raw"
    make_demo_bag(raw, frames=2, height=SIZE[0], width=SIZE[1], storage="sqlite3", encoding="mono8", progress=False)
    assert list(raw.glob("*.db3"))
    out = tmp_path / "out"
    stats = segment_bag(raw, out, artifact, storage="sqlite3", copy_input=False, colored_topic=None, progress=False)
    assert (stats.segmented, stats.skipped, stats.copied) == (2, 0, 0)
    with Reader(out) as reader:
        assert {c.topic: c.msgcount for c in reader.connections} == {"/segmenter/mask": 2}


def _write_bag(path: Path, messages: list[tuple[str, str, object]]) -> None:
    """Write (topic, msgtype, message) tuples with rosbags, 0.1 s apart."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for index, (topic, msgtype, msg) in enumerate(messages):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], 10**9 + index * 10**8, store.serialize_cdr(msg, msgtype))


def _image(store, frame_id: str, array: np.ndarray, encoding: str, step: int | None = None):
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Image = store.types["sensor_msgs/msg/Image"]
    rows = array.reshape(array.shape[0], -1)
    step = step or rows.shape[1]
    data = np.zeros((rows.shape[0], step), np.uint8)
    data[:, : rows.shape[1]] = rows[:, :step]
    return Image(header=Header(stamp=Time(sec=5, nanosec=7), frame_id=frame_id), height=array.shape[0],
                 width=array.shape[1], encoding=encoding, is_bigendian=0, step=step, data=data.reshape(-1))


def test_padded_rows_compressed_images_and_bad_frames(artifact, segmenter, tmp_path):
    import cv2
    from rosbags.typesys import Stores, get_typestore
    from runtime_fixtures import scene

    store = get_typestore(Stores.ROS2_JAZZY)
    rgb = scene(30, 44)
    bgr_padded = _image(store, "padded", np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", step=44 * 3 + 7)
    bad_encoding = _image(store, "float", np.zeros((4, 4, 4), np.uint8), "32FC1")
    CompressedImage = store.types["sensor_msgs/msg/CompressedImage"]
    png = CompressedImage(header=bgr_padded.header, format="bgr8; png compressed bgr8",
                          data=np.frombuffer(cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes(), np.uint8))
    bag = tmp_path / "mixed"
    _write_bag(bag, [("/cam", "sensor_msgs/msg/Image", bgr_padded), ("/cam", "sensor_msgs/msg/Image", bad_encoding),
                     ("/cam/compressed", "sensor_msgs/msg/CompressedImage", png)])
    with pytest.raises(BagError, match="several image topics"):
        segment_bag(bag, tmp_path / "x", artifact, progress=False, segmenter=segmenter)

    stats = segment_bag(bag, tmp_path / "raw_out", artifact, "/cam", progress=False, segmenter=segmenter)
    assert (stats.segmented, stats.skipped) == (1, 1)
    assert list(stats.skip_reasons) == ["unsupported encoding '32FC1'"]
    (_, mask), = read_mcap(tmp_path / "raw_out")["/segmenter/mask"]
    np.testing.assert_array_equal(as_array(mask), segmenter.segment(rgb, "rgb8"))

    stats = segment_bag(bag, tmp_path / "png_out", artifact, "/cam/compressed", progress=False, segmenter=segmenter,
                        copy_input=False)
    assert (stats.segmented, stats.skipped) == (1, 0)
    (_, mask), = read_mcap(tmp_path / "png_out")["/segmenter/mask"]
    np.testing.assert_array_equal(as_array(mask), segmenter.segment(rgb, "rgb8"))


def test_cli_errors_name_the_problem(demo_bag, artifact, tmp_path, capsys):
    assert main(["--in", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--artifact", str(artifact)]) == 2
    assert "input bag not found" in capsys.readouterr().err
    assert main(["--in", str(demo_bag), "--out", str(demo_bag), "--artifact", str(artifact)]) == 2
    assert "output exists already" in capsys.readouterr().err
    assert main(["--in", str(demo_bag), "--out", str(tmp_path / "o"), "--artifact", str(artifact),
                 "--topic", "/nope", "--quiet"]) == 2
    assert "image topics in the bag: /camera/image_raw" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing half-written is left behind
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_make_demo_with_artifact_segments_and_never_imports_torch(artifact, tmp_path):
    out = tmp_path / "demo_seg"
    code = textwrap.dedent(f"""
        import sys
        from lix_deploy.bag import main
        rc = main(["make-demo", "--out", {str(out)!r}, "--artifact", {str(artifact)!r}, "--frames", "2",
                   "--height", "32", "--width", "48", "--quiet"])
        leaked = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
        print("RC", rc, "LEAKED", leaked)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "RC 0 LEAKED []" in done.stdout, done.stdout + done.stderr
    topics = read_mcap(out)
    assert {k: len(v) for k, v in topics.items()} == {"/camera/image_raw": 2, "/camera/camera_info": 2,
                                                       "/segmenter/mask": 2, "/segmenter/colored_mask": 2}
    assert topics["/camera/image_raw"][0][1].encoding == "bgr8"


def test_help_lists_both_commands():
    done = subprocess.run([sys.executable, "-m", "lix_deploy.bag", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "make-demo" in done.stdout and "--artifact" in done.stdout
    done = subprocess.run([sys.executable, "-m", "lix_deploy.bag", "make-demo", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--frames" in done.stdout
