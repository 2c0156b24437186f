"""The ROS room: ros_node/ goes on sys.path once, so the tests import the node's `lix_seg` package in-process
(the DDS tests instead build it with colcon and run it as `ros2 run` would: helpers/ros_helpers.py)."""

from __future__ import annotations

import sys

from ros_helpers import ROS_NODE

if str(ROS_NODE) not in sys.path:
    sys.path.insert(0, str(ROS_NODE))
