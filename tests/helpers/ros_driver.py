"""The client side of the ROS tests; runs INSIDE a private network namespace (see ros_helpers.run_driver).

    python tests/helpers/ros_driver.py rclpy     --out DIR --artifact tiny.onnx   # images, bad messages, params, SIGINT
    python tests/helpers/ros_driver.py cyclone   --out DIR --artifact tiny.onnx   # a Cyclone DDS client (second vendor)
    python tests/helpers/ros_driver.py lifecycle --out DIR --artifact tiny.onnx   # configure/activate/cleanup
    python tests/helpers/ros_driver.py compressed --out DIR --artifact tiny.onnx  # CompressedImage: JPEG, PNG, corrupt

It starts the node the way `ros2 run lix_seg <exe>` does (ament index on AMENT_PREFIX_PATH), talks
to it, stops it with SIGINT and writes what it sent and received to DIR/results.{json,npz}; the
pytest side makes the assertions (against the runtime's own output).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ros_helpers import resolve_executable  # tests/helpers is the script's folder, so first on sys.path
from runtime_fixtures import gray_scene, scene

CAMERA = "/camera/image_raw"
NODE = "segmenter"
OUTPUTS = ("mask", "colored_mask", "overlay")
WAIT_S = 3.0  # per try, for one mask; a best-effort frame lost on the way is simply sent again
TRIES = 5
STARTUP_S = 60.0  # node start on a loaded 2-core machine: imports, model load, discovery


# ---- test images ---------------------------------------------------------------------------
def padded(image: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Row bytes followed by `pad` junk bytes per row, as some drivers send: (data, step)."""
    rows = image.reshape(image.shape[0], -1)
    junk = np.full((rows.shape[0], pad), 0xAB, np.uint8)
    return np.concatenate([rows, junk], axis=1).tobytes(), rows.shape[1] + pad


def good_cases() -> list[dict]:
    """Every supported encoding, with and without row padding, one size off the model's."""
    rgb = scene(64, 96)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    odd = scene(37, 53)
    return [
        {"name": "rgb8", "image": rgb, "encoding": "rgb8", "pad": 0},
        {"name": "bgr8_padded", "image": rgb[:, :, ::-1].copy(), "encoding": "bgr8", "pad": 8},
        {"name": "rgba8_padded", "image": rgba, "encoding": "rgba8", "pad": 4},
        {"name": "bgra8", "image": rgba[:, :, [2, 1, 0, 3]].copy(), "encoding": "bgra8", "pad": 0},
        {"name": "mono8_padded", "image": gray_scene(64, 96), "encoding": "mono8", "pad": 5},
        {"name": "rgb8_odd_size", "image": odd, "encoding": "rgb8", "pad": 3},
    ]


def bad_cases() -> list[dict]:
    """Messages a broken driver could send: each must be logged and skipped."""
    rgb = scene(16, 24)
    return [
        {"name": "bad_encoding", "height": 16, "width": 24, "encoding": "32FC1", "step": 24 * 4,
         "data": np.zeros(16 * 24 * 4, np.uint8).tobytes()},
        {"name": "bad_step", "height": 16, "width": 24, "encoding": "rgb8", "step": 24 * 3 - 6,
         "data": rgb.tobytes()[: 16 * (24 * 3 - 6)]},
        {"name": "bad_length", "height": 16, "width": 24, "encoding": "rgb8", "step": 24 * 3,
         "data": rgb.tobytes()[:-100]},
        {"name": "empty", "height": 0, "width": 0, "encoding": "rgb8", "step": 0, "data": b""},
    ]


def decode(msg) -> np.ndarray:
    """Image fields -> (H, W[, C]) array, written independently of lix_seg.conversions."""
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3}[msg.encoding]
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, : msg.width * channels]
    image = rows.reshape(msg.height, msg.width, channels)
    return image[:, :, 0] if channels == 1 else image


# ---- the node under test -------------------------------------------------------------------
def start_node(executable: str, artifact: str, out: Path, *params: str) -> subprocess.Popen:
    exe = resolve_executable("lix_seg", executable, os.environ["AMENT_PREFIX_PATH"])
    args = [str(exe), "--ros-args", "-r", f"image:={CAMERA}", "-p", f"artifact_path:={artifact}",
            "-p", "intra_op_threads:=1", "-p", "diagnostics_period:=0.5"]
    for param in params:
        args += ["-p", param]
    return subprocess.Popen(args, stdout=open(out / f"{executable}.stdout", "w"),
                            stderr=open(out / f"{executable}.stderr", "w"))


def stop_node(process: subprocess.Popen, timeout: float = 20.0) -> dict:
    """SIGINT (Ctrl-C) and wait: the node must exit 0 with its thread joined."""
    alive_before = process.poll() is None
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        code = "timeout"
    return {"alive_before_sigint": alive_before, "exit_code": code, "stop_s": time.monotonic() - start}


# ---- rclpy client --------------------------------------------------------------------------
class RclpyClient:
    def __init__(self, name: str = "lix_seg_test_client", compressed: bool = False):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        self.rclpy, self.Image, self.CompressedImage = rclpy, Image, CompressedImage
        self.compressed = compressed
        rclpy.init()
        self.node = Node(name)
        kind, topic = (CompressedImage, CAMERA + "/compressed") if compressed else (Image, CAMERA)
        self.pub = self.node.create_publisher(kind, topic, qos_profile_sensor_data)
        self.received: dict[str, dict[str, object]] = {k: {} for k in OUTPUTS}
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        for key in OUTPUTS:
            self.node.create_subscription(Image, f"/{NODE}/{key}", self._keeper(key), reliable)
        self.diagnostics: list = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def _keeper(self, key):
        def keep(msg):
            self.received[key][msg.header.frame_id] = msg
        return keep

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=min(0.05, max(end - time.monotonic(), 0.0)))

    def image(self, frame_id: str, stamp: tuple[int, int], height: int, width: int, encoding: str, step: int,
              data: bytes):
        import array

        msg = self.Image()
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
        msg.data = array.array("B", data)
        return msg

    def compressed_image(self, frame_id: str, stamp: tuple[int, int], fmt: str, data: bytes):
        msg = self.CompressedImage()
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
        msg.format = fmt
        msg.data = data
        return msg

    def frame(self, frame_id: str, stamp: tuple[int, int], rgb: np.ndarray):
        """`rgb` as this client sends it: a raw rgb8 Image, or a PNG CompressedImage (lossless)."""
        if not self.compressed:
            return self.image(frame_id, stamp, rgb.shape[0], rgb.shape[1], "rgb8", rgb.shape[1] * 3, rgb.tobytes())
        import cv2

        return self.compressed_image(frame_id, stamp, "png", cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes())

    def send_until(self, msg, keys=("mask",), tries: int = TRIES, wait_s: float = WAIT_S) -> bool:
        """Publish `msg` (again, if lost) until every output in `keys` came back for its frame_id."""
        for _ in range(tries):
            self.pub.publish(msg)
            end = time.monotonic() + wait_s
            while time.monotonic() < end:
                self.rclpy.spin_once(self.node, timeout_sec=0.05)
                if all(msg.header.frame_id in self.received[k] for k in keys):
                    return True
        return False

    def wait_for_node(self, process: subprocess.Popen, keys=OUTPUTS) -> float:
        """Send probe frames until the node answers on every output; seconds it took."""
        start = time.monotonic()
        probe = scene(16, 24)
        count = 0
        while time.monotonic() - start < STARTUP_S:
            if process.poll() is not None:
                raise RuntimeError(f"node exited with {process.returncode} during startup")
            msg = self.frame(f"probe{count}", (1, count), probe)
            count += 1
            if self.send_until(msg, keys, tries=1, wait_s=1.0):
                return time.monotonic() - start
        raise RuntimeError("node did not answer within the startup time")

    def set_parameters(self, **values) -> list:
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(self.node, NODE)
        if not client.wait_for_services(timeout_sec=20.0):
            raise RuntimeError("parameter services of the node not found")
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        self.rclpy.spin_until_future_complete(self.node, future, timeout_sec=20.0)
        return [(r.successful, r.reason) for r in future.result().results]

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def latest_status(diagnostics: list) -> dict:
    for array in reversed(diagnostics):
        for status in array.status:
            if status.name.startswith(NODE):
                return {"level": int(status.level[0]), "message": status.message, "name": status.name,
                        "hardware_id": status.hardware_id, **{kv.key: kv.value for kv in status.values}}
    return {}


def scenario_rclpy(args) -> tuple[dict, dict]:
    out = Path(args.out)
    node = start_node("segmenter", args.artifact, out, "publish_overlay:=true")
    client = RclpyClient()
    result: dict = {"cases": [], "bad": []}
    arrays: dict[str, np.ndarray] = {}
    try:
        result["startup_s"] = client.wait_for_node(node)
        for index, case in enumerate(good_cases()):
            image = case["image"]
            data, step = padded(image, case["pad"])
            stamp = (1_700_000_000 + index, 123_456_789)
            msg = client.image(case["name"], stamp, image.shape[0], image.shape[1], case["encoding"], step, data)
            ok = client.send_until(msg, OUTPUTS)
            entry = {"name": case["name"], "encoding": case["encoding"], "step": step, "stamp": list(stamp),
                     "delivered": ok}
            arrays[f"{case['name']}/sent"] = image
            for key in OUTPUTS:
                reply = client.received[key].get(case["name"])
                if reply is not None:
                    arrays[f"{case['name']}/{key}"] = decode(reply)
                    entry[key] = {"encoding": reply.encoding, "stamp": [reply.header.stamp.sec,
                                                                         reply.header.stamp.nanosec],
                                  "frame_id": reply.header.frame_id, "height": reply.height, "width": reply.width}
            result["cases"].append(entry)
        # Bad messages, then a good frame: the node must skip the former and still answer the latter.
        for index, case in enumerate(bad_cases()):
            client.pub.publish(client.image(case["name"], (42, index), case["height"], case["width"],
                                            case["encoding"], case["step"], case["data"]))
            client.spin_for(0.2)
        after = scene(64, 96)
        result["after_bad_delivered"] = client.send_until(
            client.image("after_bad", (43, 0), 64, 96, "rgb8", 96 * 3, after.tobytes()))
        client.spin_for(1.2)  # one more diagnostics period after the bad frames
        result["bad_answered"] = [c["name"] for c in bad_cases() if c["name"] in client.received["mask"]]
        result["diagnostics"] = latest_status(client.diagnostics)
        # Live parameters: a new palette applies to the next frame; read-only ones are refused.
        result["set_palette"] = client.set_parameters(color_palette=[0x010203] * 5)
        result["set_input_size"] = client.set_parameters(input_size=[64, 64])
        recolour = client.image("recolour", (44, 0), 64, 96, "rgb8", 96 * 3, after.tobytes())
        result["recolour_delivered"] = client.send_until(recolour, ("mask", "colored_mask"))
        if result["recolour_delivered"]:
            arrays["recolour/colored_mask"] = decode(client.received["colored_mask"]["recolour"])
    finally:
        client.close()
        result["stop"] = stop_node(node)
    return result, arrays


# ---- compressed input ----------------------------------------------------------------------
def scenario_compressed(args) -> tuple[dict, dict]:
    """image_transport:=compressed: a JPEG and a PNG frame are segmented, a corrupt JPEG is rejected."""
    import cv2

    out = Path(args.out)
    node = start_node("segmenter", args.artifact, out, "image_transport:=compressed")
    client = RclpyClient(compressed=True)
    result: dict = {"cases": []}
    arrays: dict[str, np.ndarray] = {}
    try:
        result["startup_s"] = client.wait_for_node(node, ("mask", "colored_mask"))
        rgb = scene(64, 96)
        encoded = {"jpeg": cv2.imencode(".jpg", rgb[:, :, ::-1])[1].tobytes(),
                   "png": cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()}
        for index, (fmt, data) in enumerate(encoded.items()):
            stamp = (1_700_000_100 + index, 5)
            ok = client.send_until(client.compressed_image(fmt, stamp, fmt, data), ("mask",))
            arrays[f"{fmt}/sent"] = np.frombuffer(data, np.uint8)
            entry = {"name": fmt, "delivered": ok, "stamp": list(stamp)}
            reply = client.received["mask"].get(fmt)
            if reply is not None:
                arrays[f"{fmt}/mask"] = decode(reply)
                entry.update(frame_id=reply.header.frame_id, reply_stamp=[reply.header.stamp.sec,
                                                                          reply.header.stamp.nanosec])
            result["cases"].append(entry)
        truncated = encoded["jpeg"][: len(encoded["jpeg"]) // 3]
        client.pub.publish(client.compressed_image("corrupt", (45, 0), "jpeg", truncated))
        client.spin_for(0.3)
        result["after_corrupt_delivered"] = client.send_until(client.frame("after_corrupt", (46, 0), rgb))
        client.spin_for(1.2)
        result["corrupt_answered"] = "corrupt" in client.received["mask"]
        result["diagnostics"] = latest_status(client.diagnostics)
    finally:
        client.close()
        result["stop"] = stop_node(node)
    return result, arrays


# ---- lifecycle -----------------------------------------------------------------------------
def scenario_lifecycle(args) -> tuple[dict, dict]:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    out = Path(args.out)
    node = start_node("segmenter_lifecycle", args.artifact, out)
    client = RclpyClient()
    result: dict = {"transitions": []}
    change = client.node.create_client(ChangeState, f"/{NODE}/change_state")
    get = client.node.create_client(GetState, f"/{NODE}/get_state")

    def call(cli, request):
        if not cli.wait_for_service(timeout_sec=STARTUP_S):
            raise RuntimeError(f"{cli.srv_name} not available")
        future = cli.call_async(request)
        client.rclpy.spin_until_future_complete(client.node, future, timeout_sec=STARTUP_S)
        return future.result()

    def transition(tid: int, label: str) -> None:
        ok = call(change, ChangeState.Request(transition=Transition(id=tid))).success
        state = call(get, GetState.Request()).current_state.label
        result["transitions"].append({"transition": label, "success": ok, "state": state})

    try:
        result["initial_state"] = call(get, GetState.Request()).current_state.label
        probe = scene(16, 24)
        transition(Transition.TRANSITION_CONFIGURE, "configure")
        result["answered_while_inactive"] = client.send_until(
            client.image("inactive", (1, 0), 16, 24, "rgb8", 72, probe.tobytes()), tries=1, wait_s=1.5)
        transition(Transition.TRANSITION_ACTIVATE, "activate")
        result["startup_s"] = client.wait_for_node(node, keys=("mask",))
        transition(Transition.TRANSITION_DEACTIVATE, "deactivate")
        transition(Transition.TRANSITION_CLEANUP, "cleanup")
        transition(Transition.TRANSITION_CONFIGURE, "configure")  # loads the model again
        transition(Transition.TRANSITION_ACTIVATE, "activate")
        result["answered_after_reconfigure"] = client.send_until(
            client.image("again", (2, 0), 16, 24, "rgb8", 72, probe.tobytes()))
    finally:
        client.close()
        result["stop"] = stop_node(node)
    return result, {}


# ---- Cyclone DDS client --------------------------------------------------------------------
def cyclone_types():
    """sensor_msgs/Image as DDS sees it: ROS 2's dds_ type names, XCDR1 (the ROS wire convention).

    (This file has no `from __future__ import annotations`: cyclonedds needs the real types.)
    """
    from dataclasses import dataclass

    from cyclonedds.idl import IdlStruct
    from cyclonedds.idl.types import int32, sequence, uint8, uint32

    @dataclass
    class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
        sec: int32
        nanosec: uint32

    @dataclass
    class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
        stamp: Time
        frame_id: str

    @dataclass
    class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
        header: Header
        height: uint32
        width: uint32
        encoding: str
        is_bigendian: uint8
        step: uint32
        data: sequence[uint8]

    return Time, Header, Image


def scenario_cyclone(args) -> tuple[dict, dict]:
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    out = Path(args.out)
    Time, Header, Image = cyclone_types()
    participant = DomainParticipant(int(os.environ["ROS_DOMAIN_ID"]))
    writer = DataWriter(participant, Topic(participant, "rt" + CAMERA, Image),
                        qos=Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1)))
    reader = DataReader(participant, Topic(participant, f"rt/{NODE}/mask", Image),
                        qos=Qos(Policy.Reliability.Reliable(max_blocking_time=10**9), Policy.History.KeepLast(20)))
    node = start_node("segmenter", args.artifact, out, "publish_colored_mask:=false")
    received: dict[str, object] = {}
    result: dict = {"cases": []}
    arrays: dict[str, np.ndarray] = {}

    def send_until(frame_id: str, image: np.ndarray, stamp, tries: int, wait_s: float) -> bool:
        h, w = image.shape[:2]
        msg = Image(Header(Time(*stamp), frame_id), h, w, "rgb8", 0, w * 3, list(image.tobytes()))
        for _ in range(tries):
            writer.write(msg)
            end = time.monotonic() + wait_s
            while time.monotonic() < end:
                for sample in reader.take(N=20):
                    received[sample.header.frame_id] = sample
                if frame_id in received:
                    return True
                time.sleep(0.02)
        return False

    try:
        start = time.monotonic()
        probe, count = scene(16, 24), 0
        while not send_until(f"probe{count}", probe, (1, count), 1, 1.0):
            count += 1
            if time.monotonic() - start > STARTUP_S or node.poll() is not None:
                raise RuntimeError("no mask from the node over Cyclone DDS")
        result["startup_s"] = time.monotonic() - start
        for index, image in enumerate([scene(64, 96), scene(48, 80)[::-1].copy()]):
            name, stamp = f"cyclone{index}", (1_800_000_000 + index, 999)
            ok = send_until(name, image, stamp, TRIES, WAIT_S)
            entry = {"name": name, "delivered": ok, "stamp": list(stamp)}
            arrays[f"{name}/sent"] = image
            if ok:
                reply = received[name]
                arrays[f"{name}/mask"] = decode(reply)
                entry.update(encoding=reply.encoding, frame_id=reply.header.frame_id,
                             reply_stamp=[reply.header.stamp.sec, reply.header.stamp.nanosec])
            result["cases"].append(entry)
    finally:
        result["stop"] = stop_node(node)
    return result, arrays


SCENARIOS = {"rclpy": scenario_rclpy, "cyclone": scenario_cyclone, "lifecycle": scenario_lifecycle,
             "compressed": scenario_compressed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--out", required=True, help="directory for results.json / results.npz and node logs")
    parser.add_argument("--artifact", required=True, help="the ONNX model the node loads")
    args = parser.parse_args(argv)
    result, arrays = SCENARIOS[args.scenario](args)
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    np.savez(out / "results.npz", **arrays)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
