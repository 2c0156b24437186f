"""`ros2 run lix_seg segment_bag`: the offline bag tool (`python -m lix_deploy.bag`) under its ROS name."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from lix_deploy.bag import main as bag_main

    return bag_main(argv)


if __name__ == "__main__":
    sys.exit(main())
