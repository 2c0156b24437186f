"""Helpers for the real-rclpy tests: colcon build, `ros2 run` resolution, private network namespaces.

Every DDS test runs its processes inside `unshare -n` with only loopback up, its own
ROS_DOMAIN_ID and ROS_LOG_DIR, and the Fast DDS profile with 4 MB socket buffers (without it
best-effort images are mostly dropped on loopback). A test skips, saying why, only when rclpy
(the [ros2] extra), colcon or the namespace itself is unavailable.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo_paths import ROOT

ROS_NODE = ROOT / "ros_node"
DRIVER = Path(__file__).with_name("ros_driver.py")
FASTDDS_PROFILE = ROS_NODE / "config" / "fastdds_udp_4mb.xml"

# Cyclone DDS as a second vendor next to Fast DDS on loopback without multicast: unicast peer
# 127.0.0.1 with participant indices (so both find each other's ports), SPDP every second (else a
# Cyclone participant that starts first is never discovered), and Fast DDS's type information
# ignored (vendor 1.15), which Fast DDS 3.x needs for delivery.
CYCLONE_CONFIG = """<?xml version="1.0" encoding="UTF-8" ?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces><NetworkInterface name="lo"/></Interfaces>
      <AllowMulticast>false</AllowMulticast>
    </General>
    <Discovery>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>32</MaxAutoParticipantIndex>
      <Peers><Peer address="127.0.0.1"/></Peers>
      <SPDPInterval>1s</SPDPInterval>
    </Discovery>
    <Compatibility>
      <IgnoreTypeInformation>1.15</IgnoreTypeInformation>
    </Compatibility>
  </Domain>
</CycloneDDS>
"""


def require_rclpy() -> None:
    pytest.importorskip("rclpy", reason="real rclpy needs the ROS 2 Jazzy wheels: pip install -e '.[ros2]'")
    pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs needs ros-jazzy-sensor-msgs ([ros2] extra)")


@functools.lru_cache(maxsize=1)
def netns_problem() -> str | None:
    """Why a private network namespace with loopback cannot be made here, or None when it can."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare (util-linux) and ip (iproute2)"
    try:
        done = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare -n failed: {err}"
    if done.returncode != 0:
        return f"unshare -n failed (needs root or CAP_SYS_ADMIN): {done.stderr.strip()[:200]}"
    return None


def require_netns() -> None:
    problem = netns_problem()
    if problem:
        pytest.skip(f"cannot make a private network namespace for DDS: {problem}")


def colcon_executable() -> str:
    local = Path(sys.executable).with_name("colcon")
    found = str(local) if local.exists() else shutil.which("colcon")
    if not found:
        pytest.skip("colcon is not installed (pip install colcon-common-extensions; part of the [dev] extra)")
    return found


def colcon_build(workdir: Path) -> Path:
    """`colcon build` of ros_node/ into workdir/{build,install,log}; returns the install base."""
    install = workdir / "install"
    done = subprocess.run(
        [colcon_executable(), "--log-base", str(workdir / "log"), "build", "--base-paths", str(ROS_NODE),
         "--build-base", str(workdir / "build"), "--install-base", str(install)],
        cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"colcon build failed:\n{done.stdout}\n{done.stderr}"
    return install


def resolve_executable(package: str, executable: str, prefix_path: str) -> Path:
    """What `ros2 run PACKAGE EXECUTABLE` runs: the first AMENT_PREFIX_PATH entry whose ament index
    lists the package, then PREFIX/lib/PACKAGE/EXECUTABLE."""
    for prefix in filter(None, prefix_path.split(os.pathsep)):
        marker = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / package
        if marker.is_file():
            path = Path(prefix) / "lib" / package / executable
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise FileNotFoundError(f"package {package} at {prefix} has no executable {executable}")
            return path
    raise FileNotFoundError(f"package {package} not found on AMENT_PREFIX_PATH={prefix_path!r}")


def workspace_env(install: Path) -> dict[str, str]:
    """What sourcing install/setup.sh adds: the package prefix and its site-packages."""
    prefix = install / "lix_seg"
    site = next((prefix / "lib").glob("python3*/site-packages"))
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(filter(None, [str(prefix), env.get("AMENT_PREFIX_PATH", "")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def ros_env(install: Path, workdir: Path, domain_id: int) -> dict[str, str]:
    """The environment of one DDS test: sourced workspace, own domain and log dir, the buffer profile."""
    env = workspace_env(install)
    log_dir = workdir / "ros_log"
    log_dir.mkdir(parents=True, exist_ok=True)
    cyclone = workdir / "cyclonedds.xml"
    cyclone.write_text(CYCLONE_CONFIG)
    env.update({
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_LOG_DIR": str(log_dir),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),  # the name Fast DDS 2.x (Jazzy) reads
        "CYCLONEDDS_URI": cyclone.as_uri(),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    })
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def run_in_netns(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run `args` in a new network namespace with only loopback up."""
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(["unshare", "-n", "sh", "-c", script, "sh", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def run_driver(scenario: str, install: Path, workdir: Path, domain_id: int, *extra: str,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one tests/helpers/ros_driver.py scenario in its own namespace; its results land in workdir."""
    env = ros_env(install, workdir, domain_id)
    done = run_in_netns([sys.executable, str(DRIVER), scenario, "--out", str(workdir), *extra], env, timeout)
    assert done.returncode == 0, f"driver {scenario} failed ({done.returncode}):\n{done.stdout[-4000:]}\n" \
                                 f"{done.stderr[-4000:]}"
    return done
