"""ament_python build of the `lix_seg` ROS 2 package (built with colcon; see README.md)."""

from glob import glob

from setuptools import setup

PACKAGE = "lix_seg"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        # The ament index marker: `ros2 run` / get_package_prefix find the package through it.
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="LIX-Seg developers",
    maintainer_email="lix-seg@example.com",
    description="Semantic segmentation node over the torch-free lix_deploy.runtime.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "segmenter = lix_seg.segmenter:main",
            "segmenter_lifecycle = lix_seg.lifecycle:main",
            "segment_bag = lix_seg.segment_bag:main",
        ],
    },
)
