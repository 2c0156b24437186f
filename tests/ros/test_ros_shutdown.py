"""The node's main(): a signal that shuts rclpy down mid-spin is a normal stop, anything else is not."""

from __future__ import annotations

import pytest

from ros_helpers import require_rclpy

pytestmark = pytest.mark.ros
require_rclpy()

from lix_seg import segmenter  # noqa: E402


class _Node:
    closed = False

    def close(self) -> bool:
        _Node.closed = True
        return True

    def destroy_node(self) -> None:
        pass


@pytest.fixture
def fake_node(monkeypatch):
    _Node.closed = False
    monkeypatch.setattr(segmenter.rclpy, "init", lambda args=None: None)
    monkeypatch.setattr(segmenter.rclpy, "try_shutdown", lambda: None)
    monkeypatch.setattr(segmenter, "SegmenterNode", _Node)
    return monkeypatch


def test_rcl_error_after_a_signal_shutdown_is_a_clean_exit(fake_node):
    # rclpy raises RCLError ("the given context is not valid") when SIGINT shuts the context down
    # while spin() builds its wait set: seen under load in CI.
    def spin(node):
        raise RuntimeError("failed to initialize wait set: the given context is not valid")

    fake_node.setattr(segmenter.rclpy, "spin", spin)
    fake_node.setattr(segmenter.rclpy, "ok", lambda: False)
    assert segmenter.main([]) == 0 and _Node.closed


def test_the_same_error_while_rclpy_runs_is_a_bug_and_propagates(fake_node):
    def spin(node):
        raise RuntimeError("something else broke")

    fake_node.setattr(segmenter.rclpy, "spin", spin)
    fake_node.setattr(segmenter.rclpy, "ok", lambda: True)
    with pytest.raises(RuntimeError, match="something else"):
        segmenter.main([])
    assert _Node.closed  # the inference thread is still joined on the way out
