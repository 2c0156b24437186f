"""Launch the lix_seg segmenter on a camera topic.

    ros2 launch lix_seg segmenter.launch.py artifact_path:=/models/student.onnx image:=/camera/image_raw

Arguments: artifact_path (overrides the YAML), image (the camera topic remapped onto `image`),
params_file (default: this package's config/segmenter.yaml), namespace, lifecycle (true: the
managed node; configure and activate it with `ros2 lifecycle set`).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("lix_seg")
    args = [
        DeclareLaunchArgument("artifact_path", description="Exported model: .onnx or TensorRT engine (+ .json)"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="Camera topic to segment"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "segmenter.yaml"),
                              description="Parameter YAML (segmenter: ros__parameters: ...)"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("lifecycle", default_value="false", description="Run the managed (lifecycle) node"),
    ]
    common = dict(
        package="lix_seg", name="segmenter", namespace=LaunchConfiguration("namespace"), output="screen",
        parameters=[LaunchConfiguration("params_file"), {"artifact_path": LaunchConfiguration("artifact_path")}],
        remappings=[("image", LaunchConfiguration("image"))],
    )
    plain = Node(executable="segmenter", condition=UnlessCondition(LaunchConfiguration("lifecycle")), **common)
    managed = LifecycleNode(executable="segmenter_lifecycle", condition=IfCondition(LaunchConfiguration("lifecycle")),
                            **common)
    return LaunchDescription(args + [plain, managed])
