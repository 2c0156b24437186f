"""Subscription -> one-slot buffer -> inference thread -> publishers, with /diagnostics.

Shared by the plain node (built at start) and the lifecycle node (built on configure, torn down
on cleanup). All inference is `lix_deploy.runtime.Segmenter`; this class is ROS plumbing only.
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from lix_deploy.runtime import LatencyStats, Segmenter
from lix_deploy.runtime.postprocess import colorize, overlay, palette_lut
from lix_deploy.runtime.preprocess import to_rgb

from .conversions import ImageRejected, array_to_image, compressed_to_array, image_to_array, mask_encoding
from .diagnostics import PipelineCounters, diagnostic_array, diagnostic_status, summarize
from .latest_frame import LatestFrameSlot
from .parameters import LIVE_PARAMETERS, LiveSettings, StartupParameters, declare_artifact_parameters, live_settings
from .worker import InferenceWorker

__all__ = ["SegmentationPipeline", "OUTPUT_QOS", "LOAD_TIMEOUT_S"]

# Outputs are reliable (consumers such as planners and recorders expect it), shallow so a slow
# consumer sees fresh masks rather than a backlog.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)
LOAD_TIMEOUT_S = 600.0  # a TensorRT engine can take minutes to deserialize on a Jetson
LOG_THROTTLE_S = 5.0


class SegmentationPipeline:
    """Everything between the camera topic and the mask topics, for one loaded model."""

    def __init__(self, node, startup: StartupParameters, create_publisher=None):
        self.node, self.startup = node, startup
        self.logger = node.get_logger()
        self.counters = PipelineCounters()
        self.active = True  # a lifecycle node takes frames only while active
        self.latency = LatencyStats(1000)  # receive -> published, per frame
        self.slot: LatestFrameSlot = LatestFrameSlot()
        self.worker = InferenceWorker(self._load, self._process, self.slot, self._on_error, close=Segmenter.close)
        segmenter = self.worker.start(LOAD_TIMEOUT_S)
        # Only metadata and the thread-safe latency record are read outside the inference thread.
        self.info, self.backend_name = segmenter.info, segmenter.backend_name
        self._inference_latency = segmenter.latency_stats
        self._describe = segmenter.describe()
        try:
            # On a lifecycle re-configure the parameters exist already: checked against the new load.
            self._set_live(declare_artifact_parameters(node, self.info))
        except Exception:
            self.worker.stop()
            raise
        self.mask_encoding = mask_encoding(self.info.num_classes)
        create = create_publisher or node.create_publisher
        overrides = QoSOverridingOptions.with_default_policies
        self.mask_pub = create(Image, "~/mask", OUTPUT_QOS, qos_overriding_options=overrides())
        self.colored_pub = create(Image, "~/colored_mask", OUTPUT_QOS, qos_overriding_options=overrides())
        self.overlay_pub = create(Image, "~/overlay", OUTPUT_QOS, qos_overriding_options=overrides())
        self.diagnostics_pub = create(DiagnosticArray, "/diagnostics", 10)
        # image_transport's naming: the compressed twin of the (remapped) base topic `image` is `<base>/compressed`,
        # so `-r image:=/camera/image_raw` reads /camera/image_raw/compressed
        compressed = startup.image_transport == "compressed"
        kind, topic = ((CompressedImage, node.resolve_topic_name("image") + "/compressed") if compressed
                       else (Image, "image"))
        self._to_array = compressed_to_array if kind is CompressedImage else image_to_array
        self.subscription = node.create_subscription(kind, topic, self._on_image, qos_profile_sensor_data,
                                                     qos_overriding_options=overrides())
        node.add_on_set_parameters_callback(self._on_set_parameters)
        self._last_counts = self.counters.snapshot(time.monotonic())
        self.diagnostics_timer = node.create_timer(startup.diagnostics_period, self._publish_diagnostics)
        device = self._describe.get("providers") or self._describe.get("device", "")
        self.logger.info(f"segmenting '{self.subscription.topic_name}' with {startup.artifact_path} on "
                         f"{self.backend_name} ({device}), input "
                         f"{self.info.input_size[0]}x{self.info.input_size[1]}, {self.info.num_classes} classes")

    # ---- inference thread ------------------------------------------------------------------
    def _load(self) -> Segmenter:
        startup = self.startup
        segmenter = Segmenter(startup.artifact_path, startup.backend, list(startup.providers) or None,
                              intra_op_threads=startup.intra_op_threads or None)
        if startup.warmup_runs:
            segmenter.warmup(startup.warmup_runs)
        return segmenter

    def _process(self, segmenter: Segmenter, frame) -> None:
        msg, received = frame
        settings, lut = self._live
        image, encoding = self._to_array(msg)  # a compressed frame is decoded here, once, off the executor
        mask = segmenter.segment(image, encoding)
        header = msg.header  # copied unchanged: consumers match masks to images by stamp
        if settings.publish_mask:
            self.mask_pub.publish(array_to_image(mask, self.mask_encoding, header))
        want_overlay = settings.publish_overlay and self.overlay_pub.get_subscription_count() > 0
        if want_overlay or (settings.publish_colored_mask and self.colored_pub.get_subscription_count() > 0):
            colored = colorize(mask, lut)
            if settings.publish_colored_mask:
                self.colored_pub.publish(array_to_image(colored, "rgb8", header))
            if want_overlay:
                blended = overlay(to_rgb(image, encoding), colored, settings.overlay_alpha)
                self.overlay_pub.publish(array_to_image(blended, "rgb8", header))
        self.counters.add("published")
        self.latency.add((time.monotonic() - received) * 1000.0)

    def _on_error(self, err: BaseException) -> None:
        if isinstance(err, ImageRejected):
            self.counters.add("rejected")
            self.logger.warning(f"skipping image: {err}", throttle_duration_sec=LOG_THROTTLE_S)
        else:
            self.counters.add("failed")
            self.logger.error(f"segmentation failed: {type(err).__name__}: {err}", throttle_duration_sec=LOG_THROTTLE_S)

    # ---- executor callbacks ----------------------------------------------------------------
    def _on_image(self, msg) -> None:
        """Only store the frame: the inference thread takes the newest, older ones count as dropped."""
        if not self.active:
            return
        self.counters.add("received")
        if self.slot.put((msg, time.monotonic())):
            self.counters.add("dropped")

    def _publish_diagnostics(self) -> None:
        if not self.active:  # an inactive lifecycle node publishes nothing (its publishers would warn)
            return
        current = self.counters.snapshot(time.monotonic())
        summary = summarize(self._last_counts, current, self.worker.alive)
        self._last_counts = current
        status = diagnostic_status(
            f"{self.node.get_name()}: semantic segmentation", f"lix_seg/{self.backend_name}", summary,
            self.latency.summary(), self._inference_latency(),
            {"backend": self.backend_name, "providers": ",".join(self._describe.get("providers", []) or []),
             "artifact": self.startup.artifact_path, "precision": self.info.precision,
             "input_size": f"{self.info.input_size[0]}x{self.info.input_size[1]}"})
        self.diagnostics_pub.publish(diagnostic_array(self.node.get_clock().now().to_msg(), [status]))

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Accept live changes (palette, toggles, alpha); read-only ones are refused by rclpy itself."""
        settings, _ = self._live
        changes = {p.name: p.value for p in params if p.name in LIVE_PARAMETERS}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            self._set_live(live_settings(changes, self.info, current=settings))
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _set_live(self, settings: LiveSettings) -> None:
        self._live = (settings, palette_lut(settings.color_palette))  # one assignment: the thread sees old or new

    # ---- teardown --------------------------------------------------------------------------
    def close(self) -> bool:
        """Stop taking frames, join the inference thread (it frees the model), drop ROS entities."""
        stopped = self.worker.stop()
        node = self.node
        node.remove_on_set_parameters_callback(self._on_set_parameters)
        node.destroy_timer(self.diagnostics_timer)
        node.destroy_subscription(self.subscription)
        destroy = getattr(node, "destroy_lifecycle_publisher", node.destroy_publisher)  # also unmanages it
        for pub in (self.mask_pub, self.colored_pub, self.overlay_pub, self.diagnostics_pub):
            destroy(pub)
        return stopped
