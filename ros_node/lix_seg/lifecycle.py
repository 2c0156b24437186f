"""`ros2 run lix_seg segmenter_lifecycle`: the segmenter as a managed (lifecycle) node.

configure loads the model (and declares its parameters), activate starts taking frames and
enables the publishers, deactivate stops taking frames, cleanup joins the inference thread and
frees the model (GPU memory back to the system). Same topics and parameters as `segmenter`.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .parameters import declare_startup_parameters
from .pipeline import SegmentationPipeline
from .segmenter import STARTUP_ERRORS

__all__ = ["LifecycleSegmenterNode", "main"]


class LifecycleSegmenterNode(LifecycleNode):
    """The segmenter with the model's lifetime tied to the configure / cleanup transitions."""

    def __init__(self, node_name: str = "segmenter", **kwargs):
        super().__init__(node_name, **kwargs)
        self._startup = declare_startup_parameters(self)
        self.pipeline: SegmentationPipeline | None = None

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.pipeline = SegmentationPipeline(self, self._startup, create_publisher=self.create_lifecycle_publisher)
        except STARTUP_ERRORS as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self.pipeline.active = False
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS if self._release() else TransitionCallbackReturn.ERROR

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> bool:
        if self.pipeline is None:
            return True
        pipeline, self.pipeline = self.pipeline, None
        return pipeline.close()

    def close(self) -> bool:
        return self._release()


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = LifecycleSegmenterNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except STARTUP_ERRORS as err:
        rclpy.logging.get_logger("segmenter").fatal(f"cannot start: {err}")
        return 1
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
