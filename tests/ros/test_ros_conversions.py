"""The pure parts of the lix_seg node: Image <-> numpy, the one-slot buffer, the worker, diagnostics, parameters.

These need the ROS message classes (sensor_msgs, diagnostic_msgs from the [ros2] wheels) but no
DDS, so they run in-process without a network namespace.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ros_helpers import ROS_NODE, require_rclpy

pytestmark = pytest.mark.ros
require_rclpy()

from sensor_msgs.msg import Image  # noqa: E402

from lix_seg.conversions import ImageRejected, array_to_image, image_to_array, mask_encoding  # noqa: E402
from lix_seg.diagnostics import CounterSnapshot, diagnostic_status, summarize  # noqa: E402
from lix_seg.latest_frame import LatestFrameSlot  # noqa: E402
from lix_seg.parameters import (StartupParameters, check_against_artifact, palette_parameter,  # noqa: E402
                                palette_to_ints)
from lix_seg.worker import InferenceWorker  # noqa: E402

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def padded_message(image: np.ndarray, encoding: str, pad: int) -> Image:
    rows = image.reshape(image.shape[0], -1)
    data = np.concatenate([rows, np.full((rows.shape[0], pad), 0xEE, np.uint8)], axis=1)
    msg = Image(height=image.shape[0], width=image.shape[1], encoding=encoding, step=data.shape[1])
    msg.data = data.tobytes()
    return msg


@pytest.mark.parametrize("encoding", sorted(CHANNELS))
@pytest.mark.parametrize("pad", [0, 1, 13])
def test_image_to_array_honours_step_padding(encoding, pad):
    rng = np.random.default_rng(len(encoding) + pad)
    image = rng.integers(0, 256, (5, 7, CHANNELS[encoding]), dtype=np.uint8)
    array, got_encoding = image_to_array(padded_message(image, encoding, pad))
    assert got_encoding == encoding
    np.testing.assert_array_equal(array, image)


@pytest.mark.parametrize("encoding, data", [("rgb8", np.arange(6 * 4 * 3) % 251), ("mono8", np.arange(6 * 4) % 7)])
def test_array_to_image_round_trips_through_serialization(encoding, data):
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    image = data.astype(np.uint8).reshape((6, 4, 3) if encoding == "rgb8" else (6, 4))
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    msg = deserialize_message(serialize_message(array_to_image(image, encoding, header)), Image)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 4, 4 * image[0, 0].size, encoding)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("cam", 12, 34)
    array, _ = image_to_array(msg)
    np.testing.assert_array_equal(array.reshape(image.shape), image)


def test_mono16_masks_beyond_255_classes():
    assert mask_encoding(256) == "mono8" and mask_encoding(257) == "mono16"
    mask = np.array([[0, 300], [1000, 65535]], np.uint16)
    msg = array_to_image(mask, "mono16")
    assert msg.step == 4 and np.frombuffer(msg.data, "<u2").tolist() == [0, 300, 1000, 65535]


@pytest.mark.parametrize("fields, problem", [
    (dict(encoding="32FC1", height=2, width=2, step=8, data=bytes(16)), "unsupported encoding '32FC1'"),
    (dict(encoding="rgb8", height=0, width=0, step=0, data=b""), "empty image"),
    (dict(encoding="rgb8", height=2, width=4, step=10, data=bytes(20)), "step 10 is shorter than one rgb8 row"),
    (dict(encoding="rgb8", height=2, width=4, step=12, data=bytes(23)), "data has 23 bytes, expected"),
    (dict(encoding="mono8", height=2, width=4, step=6, data=bytes(13)), "data has 13 bytes"),
])
def test_bad_images_are_rejected_with_the_reason(fields, problem):
    msg = Image(**{k: v for k, v in fields.items() if k != "data"})
    msg.data = fields["data"]
    with pytest.raises(ImageRejected, match=problem):
        image_to_array(msg)


def test_compressed_images_decode_once_and_corrupt_ones_are_rejected():
    import cv2
    from types import SimpleNamespace

    from lix_seg.conversions import compressed_to_array

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    image, encoding = compressed_to_array(SimpleNamespace(format="png", data=png.tobytes()))
    assert encoding == "bgr8" and np.array_equal(image[:, :, ::-1], rgb)  # lossless: the same pixels
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1])
    grey, encoding = compressed_to_array(SimpleNamespace(format="mono8; jpeg compressed mono8",
                                                         data=cv2.imencode(".jpg", rgb[:, :, 0])[1].tobytes()))
    assert encoding == "mono8" and grey.shape == (24, 32, 1)
    for data, problem in ((jpeg.tobytes()[: len(jpeg) // 3], "cannot decode compressed image"),
                          (b"", "empty compressed image"), (b"not an image at all", "cannot decode compressed image")):
        with pytest.raises(ImageRejected, match=problem):
            compressed_to_array(SimpleNamespace(format="jpeg", data=data))


def test_latest_frame_slot_keeps_only_the_newest_and_counts_drops():
    slot: LatestFrameSlot[int] = LatestFrameSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.take(0.0) == 3 and slot.dropped == 2
    assert slot.take(0.01) is None
    waiter = threading.Thread(target=lambda: results.append(slot.take(5.0)))
    results: list = []
    waiter.start()
    slot.close()
    waiter.join(2.0)
    assert results == [None] and not waiter.is_alive()


def test_worker_owns_the_model_survives_errors_and_joins():
    threads = {}
    errors: list = []
    processed: list = []
    slot: LatestFrameSlot[int] = LatestFrameSlot()

    def load():
        threads["load"] = threading.current_thread()
        return "model"

    def process(model, frame):
        threads["process"] = threading.current_thread()
        if frame < 0:
            raise ValueError("bad frame")
        processed.append((model, frame))

    def close(model):
        threads["close"] = threading.current_thread()

    worker = InferenceWorker(load, process, slot, errors.append, close=close, poll_s=0.01)
    assert worker.start(5.0) == "model"
    for handled, frame in enumerate((-1, 7), start=1):
        slot.put(frame)
        deadline = time.monotonic() + 5
        while len(errors) + len(processed) < handled:
            assert time.monotonic() < deadline, "the worker did not take the frame"
            time.sleep(0.01)
    assert worker.stop(5.0) and not worker.alive
    assert [str(e) for e in errors] == ["bad frame"] and processed == [("model", 7)]
    assert threads["load"] is threads["process"] is threads["close"] is not threading.current_thread()


def test_worker_start_reraises_the_load_error():
    def load():
        raise FileNotFoundError("model artefact not found: x.onnx")

    worker = InferenceWorker(load, lambda m, f: None, LatestFrameSlot(), lambda e: None)
    with pytest.raises(FileNotFoundError, match="x.onnx"):
        worker.start(5.0)
    assert not worker.alive


def test_summarize_rates_and_levels():
    before = CounterSnapshot(10.0, received=10, published=8)
    healthy = summarize(before, CounterSnapshot(12.0, received=70, published=48, dropped=20))
    assert (healthy.level, healthy.input_hz, healthy.output_hz) == (0, 30.0, 20.0)
    assert summarize(before, CounterSnapshot(11.0, received=15, published=8)).level == 1  # in, nothing out
    assert summarize(before, CounterSnapshot(11.0, received=12, published=10, rejected=1)).level == 1
    assert summarize(before, CounterSnapshot(11.0, received=10, published=8)).message == "waiting for images"
    assert summarize(before, before, worker_alive=False).level == 2


def test_diagnostic_status_carries_every_figure():
    summary = summarize(CounterSnapshot(0.0), CounterSnapshot(1.0, received=30, published=10, dropped=20))
    status = diagnostic_status("segmenter: semantic segmentation", "lix_seg/onnxruntime", summary,
                               {"p50_ms": 12.5, "p95_ms": 20.0}, {"p50_ms": 10.0, "p95_ms": 15.0},
                               {"backend": "onnxruntime"})
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == b"\x00" and status.hardware_id == "lix_seg/onnxruntime"
    assert values["input_rate_hz"] == "30.00" and values["output_rate_hz"] == "10.00"
    assert values["latency_p50_ms"] == "12.50" and values["inference_p95_ms"] == "15.00"
    assert values["frames_dropped"] == "20" and values["backend"] == "onnxruntime"


def test_palette_parameter_round_trip_and_validation():
    palette = [[255, 0, 0], [0, 128, 255], [1, 2, 3]]
    assert palette_to_ints(palette) == [0xFF0000, 0x0080FF, 0x010203]
    assert palette_parameter(palette_to_ints(palette), 3) == ((255, 0, 0), (0, 128, 255), (1, 2, 3))
    with pytest.raises(ValueError, match="color_palette has 2 colours, the model has 3 classes"):
        palette_parameter([0, 1], 3)
    with pytest.raises(ValueError, match="color_palette"):
        palette_parameter([0x1000000, 0, 0], 3)


def test_parameters_are_checked_against_the_artifact():
    from lix_deploy.artifact import ArtifactInfo

    info = ArtifactInfo(class_names=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]], input_size=(32, 48),
                        mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], outputs=["labels"])
    check_against_artifact(info, [32, 48], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], ["road", "car"])
    with pytest.raises(ValueError, match=r"input_size=\[64, 48\] but the artefact takes \[32, 48\]"):
        check_against_artifact(info, [64, 48], info.mean, info.std, ["a", "b"])
    with pytest.raises(ValueError, match="parameter mean="):
        check_against_artifact(info, [32, 48], [0.0, 0.0, 0.0], info.std, ["a", "b"])
    with pytest.raises(ValueError, match="class_names has 1 names, the artefact has 2"):
        check_against_artifact(info, [32, 48], info.mean, info.std, ["a"])
    with pytest.raises(ValueError, match="artifact_path is required"):
        StartupParameters(artifact_path="")
    with pytest.raises(ValueError, match="backend='cuda'"):
        StartupParameters(artifact_path="m.onnx", backend="cuda")


@pytest.mark.parametrize("path", sorted(ROS_NODE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROS_NODE)))
def test_node_sources_never_import_torch_or_training_code(path):
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    assert not {n for n in names if n.split(".")[0] in ("torch", "torchvision", "lix_train")}, names
