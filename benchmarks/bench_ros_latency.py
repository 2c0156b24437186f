"""Image-publish -> mask-receive latency of the lix_seg node against the raw backend time, and RSS over a soak.

Runs the real node (rclpy, Fast DDS with the 4 MB buffer profile) and an rclpy client in a private
network namespace on loopback (re-executing itself under `unshare -n`; root needed). Phases:

  * raw: `Segmenter.segment` called directly on the same image (the floor for the node's latency);
  * 10 Hz and 30 Hz: latency p50 / p95 / max and delivered frames, and the node's overhead: the
    publish -> mask p50 minus the model-only p50 (what a faster backend cannot remove: DDS in and
    out, message <-> numpy, colour conversion and resize, the thread hand-over, mask publish), and
    minus the node's own segment() p50 (from its /diagnostics: DDS, conversions and threading only);
  * burst at 3x the node's capacity (1 / raw p50): latency must stay bounded (stale frames are
    dropped by the one-slot buffer, not queued), so p95 stays near one or two inference times;
  * soak: a fixed rate for --soak-seconds (default 600) with the node's RSS sampled every few
    seconds: start, max, end and growth after warm-up;
  * compressed input (--transport both, the default): a second node with image_transport:=compressed
    fed the same frame as a JPEG CompressedImage at the same rates, against cv2.imdecode's own p50 on
    the same bytes in this process: the compressed node's p50 minus the raw node's p50 is what
    compressed input costs, and should be about one decode.

The camera frame is a procedural driving scene (lix_train.data.synthetic), so its JPEG is as large and
as costly to decode as a real camera's.

Without --artifact it builds a synthetic ONNX model (a few 3x3 convolutions, LIX conventions) whose
cost is set by --model-size / --model-layers / --model-channels, so the numbers mean something
on a CPU. Speed is reported, never asserted.

    python benchmarks/bench_ros_latency.py --soak-seconds 60
    python benchmarks/bench_ros_latency.py --soak-seconds 0 --rates 10 30   # raw and compressed overhead only
    python benchmarks/bench_ros_latency.py --artifact runs/export/student.onnx --soak-seconds 600 --json bench_ros.json
"""

from __future__ import annotations

import argparse
import array
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lix_train.data.classes import VKITTI2_NUM_CLASSES

ROOT = Path(__file__).resolve().parents[1]
ROS_NODE = ROOT / "ros_node"
PROFILE = ROS_NODE / "config" / "fastdds_udp_4mb.xml"
CAMERA = "/camera/image_raw"
IN_NETNS = "LIX_BENCH_IN_NETNS"


# ---- model -------------------------------------------------------------------------------------
def synthetic_model(path: Path, size: tuple[int, int], layers: int, channels: int,
                    classes: int = VKITTI2_NUM_CLASSES) -> Path:
    """A conv stack with LIX metadata (labels uint8 output) whose cost grows with size x layers x channels^2."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from lix_deploy.artifact import ArtifactInfo, write_metadata

    rng = np.random.default_rng(0)
    h, w = size
    nodes, inits, prev, prev_c = [], [], "image", 3
    for i in range(layers):
        wname = f"w{i}"
        inits.append(numpy_helper.from_array((rng.standard_normal((channels, prev_c, 3, 3)) * 0.05).astype(np.float32),
                                             wname))
        nodes += [helper.make_node("Conv", [prev, wname], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, prev_c = f"r{i}", channels
    inits.append(numpy_helper.from_array(rng.standard_normal((classes, prev_c, 1, 1)).astype(np.float32), "head"))
    nodes += [helper.make_node("Conv", [prev, "head"], ["scores"]),
              helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=0),
              helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8)]
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
                              [helper.make_tensor_value_info("labels", TensorProto.UINT8, [1, h, w])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    palette = [[int(v) for v in rng.integers(0, 256, 3)] for _ in range(classes)]
    write_metadata(model, ArtifactInfo(class_names=[f"class{i}" for i in range(classes)], palette=palette,
                                       input_size=size, mean=[0.0] * 3, std=[1.0] * 3, outputs=["labels"],
                                       dataset="benchmark"))
    onnx.save(model, str(path))
    return path


def percentiles(values_ms) -> dict:
    from lix_deploy.runtime.latency import summarize_ms

    n = len(values_ms)
    if n == 0:
        return {"n": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan")}
    stats = summarize_ms(values_ms)
    return {"n": n, "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "max_ms": stats["max_ms"]}


def raw_backend(artifact: Path, image: np.ndarray, encoding: str, threads: int, runs: int) -> dict:
    """segment() end to end and the bare model call, in this process, for the same image."""
    from lix_deploy.runtime import Segmenter
    from lix_deploy.runtime.preprocess import to_model_input

    with Segmenter(artifact, intra_op_threads=threads) as seg:
        seg.warmup(2)
        segment, infer = [], []
        batch = to_model_input(image, encoding, seg.input_size)
        for _ in range(runs):
            start = time.perf_counter()
            seg.segment(image, encoding)
            segment.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            seg.infer(batch)
            infer.append((time.perf_counter() - start) * 1000)
        return {"segment": percentiles(segment), "infer": percentiles(infer), "backend": seg.backend_name,
                "input_size": list(seg.input_size)}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# ---- client ------------------------------------------------------------------------------------
class Client:
    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        self.rclpy, self.Image, self.CompressedImage = rclpy, Image, CompressedImage
        rclpy.init()
        self.node = Node("bench_client")
        self.pubs = {"raw": self.node.create_publisher(Image, CAMERA, qos_profile_sensor_data),
                     "compressed": self.node.create_publisher(CompressedImage, CAMERA + "/compressed",
                                                              qos_profile_sensor_data)}
        self.pub = self.pubs["raw"]
        self.sent: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.node.create_subscription(Image, "/segmenter/mask", self._on_mask,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.diagnostics: dict = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.seq = 0

    def _on_mask(self, msg) -> None:
        sent = self.sent.get(msg.header.frame_id)
        if sent is not None:
            self.latency[msg.header.frame_id] = (time.monotonic() - sent) * 1000

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("segmenter"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def make(self, image: np.ndarray, encoding: str):
        msg = self.Image(height=image.shape[0], width=image.shape[1], encoding=encoding,
                         step=image.shape[1] * (image.shape[2] if image.ndim == 3 else 1))
        msg.data = array.array("B", image.tobytes())
        return msg

    def make_compressed(self, jpeg: bytes):
        msg = self.CompressedImage(format="jpeg")
        msg.data = array.array("B", jpeg)
        return msg

    def use(self, transport: str) -> None:
        """Publish the camera topic (raw) or its compressed twin from now on."""
        self.pub = self.pubs[transport]

    def publish(self, msg, tag: str) -> str:
        frame_id = f"{tag}{self.seq}"
        self.seq += 1
        msg.header.frame_id = frame_id
        self.sent[frame_id] = time.monotonic()
        self.pub.publish(msg)
        return frame_id

    def spin_until(self, deadline: float) -> None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.rclpy.spin_once(self.node, timeout_sec=min(left, 0.01))

    def run_rate(self, msg, rate_hz: float, seconds: float, tag: str, on_tick=None) -> dict:
        """Publish at `rate_hz` for `seconds`, then wait 1 s for stragglers; latency of delivered frames."""
        ids, period = [], 1.0 / rate_hz
        start = next_t = time.monotonic()
        while next_t - start < seconds:
            ids.append(self.publish(msg, tag))
            next_t += period
            if on_tick:
                on_tick()
            self.spin_until(next_t)
        self.spin_until(time.monotonic() + 1.0)
        delivered = [self.latency[i] for i in ids if i in self.latency]
        return {"rate_hz": rate_hz, "sent": len(ids), "delivered": len(delivered), **percentiles(delivered)}


def camera_frame(height: int, width: int, encoding: str) -> np.ndarray:
    """A procedural driving scene at the camera's size in `encoding` (what a JPEG of a real camera looks like)."""
    import cv2

    from lix_train.data.synthetic import SyntheticConfig, render_frame

    rgb = render_frame(SyntheticConfig(scenes=1, frames=1, height=height, width=width, seed=0), 0, 0).rgb["clone"][
        "Camera_0"]
    conversions = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
                   "mono8": cv2.COLOR_RGB2GRAY}
    code = conversions[encoding]
    out = rgb if code is None else cv2.cvtColor(rgb, code)
    return np.ascontiguousarray(out if out.ndim == 3 else out[:, :, None])


def decode_time(jpeg: bytes, runs: int) -> dict:
    """cv2.imdecode's own time on these bytes, in this process (what compressed input must add, at best)."""
    import cv2

    buffer = np.frombuffer(jpeg, np.uint8)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)


def start_node(args, artifact: Path, work: Path, transport: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROS_NODE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-m", "lix_seg.segmenter", "--ros-args", "-r", f"image:={CAMERA}",
         "-p", f"artifact_path:={artifact}", "-p", f"intra_op_threads:={args.threads}",
         "-p", f"image_transport:={transport}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / f"node-{transport}.log", "w"))


def wait_for_answer(client: Client, node: subprocess.Popen, msg, log: Path) -> None:
    deadline = time.monotonic() + 60
    client.latency.clear()
    while not client.latency:
        if time.monotonic() > deadline or node.poll() is not None:
            raise RuntimeError(f"node did not answer; log: {log.read_text()[-2000:]}")
        client.publish(msg, "warmup")
        client.spin_until(time.monotonic() + 0.5)
    client.run_rate(msg, 5.0, 2.0, "warm")


def stop(node: subprocess.Popen) -> int:
    node.send_signal(signal.SIGINT)
    return node.wait(30)


def inner(args) -> dict:
    import cv2

    work = Path(tempfile.mkdtemp(prefix="bench-ros-"))
    if args.artifact:
        artifact = Path(args.artifact)
    else:
        h, w = (int(v) for v in args.model_size.split("x"))
        artifact = synthetic_model(work / "bench.onnx", (h, w), args.model_layers, args.model_channels)
    image = camera_frame(args.height, args.width, args.encoding)
    report: dict = {"artifact": str(artifact), "image": f"{args.width}x{args.height} {args.encoding}",
                    "threads": args.threads}
    report["raw"] = raw_backend(artifact, image, args.encoding, args.threads, args.raw_runs)
    capacity_hz = 1000.0 / report["raw"]["segment"]["p50_ms"]
    node = start_node(args, artifact, work, "raw")
    client = Client()
    try:
        msg = client.make(image, args.encoding)
        wait_for_answer(client, node, msg, work / "node-raw.log")
        report["phases"] = []
        for rate in args.rates:
            phase = client.run_rate(msg, rate, args.phase_seconds, f"r{rate:g}_")
            phase.update(overhead(phase, report["raw"], client.diagnostics))
            report["phases"].append(phase)
        burst = client.run_rate(msg, args.burst_factor * capacity_hz, args.phase_seconds, "burst")
        burst["capacity_hz"] = capacity_hz
        report["burst"] = burst
        report["diagnostics_after_burst"] = dict(client.diagnostics)
        samples: list[tuple[float, float]] = []
        last = [0.0]

        def sample():
            now = time.monotonic()
            if now - last[0] >= args.rss_every:
                samples.append((now, rss_mib(node.pid)))
                last[0] = now

        if args.soak_seconds > 0:
            soak = client.run_rate(msg, args.soak_rate, args.soak_seconds, "soak", on_tick=sample)
            rss = [r for _, r in samples]
            warm = rss[min(len(rss) - 1, max(1, len(rss) // 10))]  # after the first tenth (allocator warm-up)
            soak.update(rss_start_mib=rss[0], rss_after_warmup_mib=warm, rss_end_mib=rss[-1], rss_max_mib=max(rss),
                        rss_growth_after_warmup_mib=rss[-1] - warm, seconds=args.soak_seconds, samples=len(rss))
            report["soak"] = soak
        report["diagnostics_end"] = dict(client.diagnostics)
        report["node_exit_code"] = stop(node)
        if args.transport == "both":
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if args.encoding == "rgb8" else image
            jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, args.jpeg_quality])[1].tobytes()
            report["compressed"] = compressed_phases(args, client, artifact, work, jpeg, report["phases"])
    finally:
        if node.poll() is None:
            report["node_exit_code"] = stop(node)
        client.node.destroy_node()
        client.rclpy.try_shutdown()
    return report


def compressed_phases(args, client: Client, artifact: Path, work: Path, jpeg: bytes, raw_phases) -> dict:
    """The same rates into a node with image_transport:=compressed, each p50 against the raw node's and
    against cv2.imdecode's own p50 on the same bytes."""
    out: dict = {"jpeg_bytes": len(jpeg), "jpeg_quality": args.jpeg_quality,
                 "imdecode": decode_time(jpeg, args.raw_runs * 3)}
    node = start_node(args, artifact, work, "compressed")
    client.use("compressed")
    try:
        msg = client.make_compressed(jpeg)
        wait_for_answer(client, node, msg, work / "node-compressed.log")
        out["phases"] = []
        for rate, raw in zip(args.rates, raw_phases):
            phase = client.run_rate(msg, rate, args.phase_seconds, f"c{rate:g}_")
            extra = phase["p50_ms"] - raw["p50_ms"]
            phase.update(raw_p50_ms=raw["p50_ms"], overhead_vs_raw_p50_ms=extra,
                         minus_imdecode_ms=extra - out["imdecode"]["p50_ms"])
            out["phases"].append(phase)
        out["diagnostics"] = dict(client.diagnostics)
    finally:
        client.use("raw")
        out["node_exit_code"] = stop(node)
    return out


def overhead(phase: dict, raw: dict, diagnostics: dict) -> dict:
    """The node's overhead at one rate: p50 latency minus the model-only p50 (raw, this process) and minus the
    node's own segment() p50 (its /diagnostics after the phase)."""
    out = {"overhead_vs_model_p50_ms": phase["p50_ms"] - raw["infer"]["p50_ms"]}
    try:
        node_segment = float(diagnostics["inference_p50_ms"])
    except (KeyError, TypeError, ValueError):
        node_segment = float("nan")
    out.update(node_segment_p50_ms=node_segment, overhead_vs_node_segment_p50_ms=phase["p50_ms"] - node_segment)
    return out


def print_report(report: dict) -> None:
    raw = report["raw"]
    print(f"model {report['artifact']} ({raw['backend']}, input {raw['input_size']}), image {report['image']}, "
          f"{report['threads']} ORT thread(s)")
    print(f"raw   segment() p50 {raw['segment']['p50_ms']:.1f} ms  p95 {raw['segment']['p95_ms']:.1f} ms   "
          f"model only p50 {raw['infer']['p50_ms']:.1f} ms")
    print(f"{'phase':>10} {'rate Hz':>8} {'sent':>6} {'recv':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    rows = [("rate", p) for p in report["phases"]] + [("burst 3x", report["burst"])]
    if "soak" in report:
        rows.append(("soak", report["soak"]))
    for name, p in rows:
        print(f"{name:>10} {p['rate_hz']:8.1f} {p['sent']:6d} {p['delivered']:6d} {p['p50_ms']:8.1f} "
              f"{p['p95_ms']:8.1f} {p['max_ms']:8.1f}")
    for p in report["phases"]:
        print(f"overhead at {p['rate_hz']:g} Hz: p50 - model-only p50 = {p['overhead_vs_model_p50_ms']:.1f} ms; "
              f"p50 - node segment() p50 ({p['node_segment_p50_ms']:.1f} ms) = "
              f"{p['overhead_vs_node_segment_p50_ms']:.1f} ms")
    diag = report.get("diagnostics_after_burst", {})
    print(f"node diagnostics after the burst: dropped {diag.get('frames_dropped')}, "
          f"latency p50 {diag.get('latency_p50_ms')} / p95 {diag.get('latency_p95_ms')} ms, "
          f"inference p50 {diag.get('inference_p50_ms')} ms")
    if "soak" in report:
        s = report["soak"]
        print(f"soak {s['seconds']:.0f} s at {s['rate_hz']:g} Hz: RSS start {s['rss_start_mib']:.1f} MiB, "
              f"after warm-up {s['rss_after_warmup_mib']:.1f}, end {s['rss_end_mib']:.1f}, max {s['rss_max_mib']:.1f} "
              f"(growth after warm-up {s['rss_growth_after_warmup_mib']:+.1f} MiB over {s['samples']} samples)")
    print(f"node exit code after SIGINT: {report['node_exit_code']}")
    if "compressed" in report:
        c = report["compressed"]
        print(f"compressed input: JPEG {c['jpeg_bytes'] / 1024:.0f} KiB (quality {c['jpeg_quality']}), "
              f"cv2.imdecode p50 {c['imdecode']['p50_ms']:.2f} ms in this process")
        for p in c["phases"]:
            print(f"  {p['rate_hz']:g} Hz: p50 {p['p50_ms']:.1f} ms (raw node {p['raw_p50_ms']:.1f} ms), "
                  f"{p['delivered']}/{p['sent']} delivered; compressed - raw = {p['overhead_vs_raw_p50_ms']:+.2f} ms, "
                  f"that minus imdecode = {p['minus_imdecode_ms']:+.2f} ms")
        print(f"  compressed node exit code after SIGINT: {c['node_exit_code']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--artifact", default=None, help="model to run (default: a synthetic conv model)")
    parser.add_argument("--model-size", default="192x640", help="synthetic model input HxW")
    parser.add_argument("--model-layers", type=int, default=3, help="3x3 conv layers of the synthetic model")
    parser.add_argument("--model-channels", type=int, default=16, help="channels of the synthetic model")
    parser.add_argument("--width", type=int, default=640, help="camera image width")
    parser.add_argument("--height", type=int, default=480, help="camera image height")
    parser.add_argument("--encoding", default="bgr8", choices=("rgb8", "bgr8", "rgba8", "bgra8", "mono8"),
                        help="camera image encoding")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (node and raw)")
    parser.add_argument("--raw-runs", type=int, default=30, help="direct segment() calls for the raw figure")
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0], help="steady publish rates (Hz)")
    parser.add_argument("--burst-factor", type=float, default=3.0, help="burst rate as a multiple of capacity")
    parser.add_argument("--phase-seconds", type=float, default=10.0, help="duration of each rate phase")
    parser.add_argument("--soak-seconds", type=float, default=600.0, help="soak duration (0: no soak)")
    parser.add_argument("--soak-rate", type=float, default=30.0, help="publish rate during the soak (Hz)")
    parser.add_argument("--rss-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--transport", default="both", choices=("raw", "both"),
                        help="both: also run a node with image_transport:=compressed on the same frame as a JPEG")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of the compressed frame")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    parser.add_argument("--domain-id", type=int, default=77, help="ROS_DOMAIN_ID inside the namespace")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.environ.get(IN_NETNS):
        log_dir = tempfile.mkdtemp(prefix="bench-ros-log-")
        env = dict(os.environ, **{IN_NETNS: "1", "ROS_DOMAIN_ID": str(args.domain_id), "ROS_LOG_DIR": log_dir,
                                  "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE),
                                  "FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE),
                                  "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"})
        command = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]
        return subprocess.call(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command],
                               env=env)
    report = inner(args)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
