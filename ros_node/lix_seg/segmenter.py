"""`ros2 run lix_seg segmenter`: camera image in, class-id mask and colour mask out.

    ros2 run lix_seg segmenter --ros-args -p artifact_path:=student.onnx -r image:=/camera/image_raw

Subscribes to `image` (sensor-data QoS: best effort, newest frames), publishes `~/mask` (mono8
class ids), `~/colored_mask` (rgb8) and optionally `~/overlay` (rgb8), all at the input
resolution with the input header unchanged, plus /diagnostics at about 1 Hz. QoS overrides are
enabled (`qos_overrides./camera/image_raw.subscription.reliability:=reliable`, ...). The model
runs on one inference thread that owns it; frames arriving while it is busy replace the waiting
one and are counted as dropped. Parameters: see config/segmenter.yaml.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from lix_deploy.runtime import BackendUnavailableError, EngineMismatchError

from .parameters import declare_startup_parameters
from .pipeline import SegmentationPipeline

__all__ = ["SegmenterNode", "main", "STARTUP_ERRORS"]

# What a wrong parameter, a missing file or a missing runtime raises: reported in one line.
STARTUP_ERRORS = (ValueError, FileNotFoundError, TimeoutError, BackendUnavailableError, EngineMismatchError)


class SegmenterNode(Node):
    """The segmentation node: parameters, then a SegmentationPipeline over the loaded model."""

    def __init__(self, node_name: str = "segmenter", **kwargs):
        super().__init__(node_name, **kwargs)
        self.pipeline = SegmentationPipeline(self, declare_startup_parameters(self))

    def close(self) -> bool:
        """Join the inference thread (it frees the model); True when it ended in time."""
        return self.pipeline.close()


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = SegmenterNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C / SIGTERM: a normal stop, no traceback
    except STARTUP_ERRORS as err:
        # Bad parameters or artefact: say what is wrong, without a traceback.
        rclpy.logging.get_logger("segmenter").fatal(f"cannot start: {err}")
        code = 1
    except Exception:  # noqa: BLE001 - re-raised unless it is the shutdown race below
        # SIGINT / SIGTERM shut the context down from rclpy's signal handler; if that lands while
        # spin() builds its wait set, rclpy raises RCLError ("the given context is not valid")
        # instead of ExternalShutdownException. After a shutdown that is a normal stop.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            if not node.close():
                node.get_logger().error("the inference thread did not stop in time")
                code = code or 1
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
