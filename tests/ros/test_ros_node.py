"""The `lix_seg` node with real rclpy (Jazzy wheels), built by colcon and started as `ros2 run` would.

Each scenario runs in its own network namespace (loopback only, own ROS_DOMAIN_ID and log dir);
tests/helpers/ros_driver.py is the client inside it. Masks are compared with what
lix_deploy.runtime.Segmenter returns for the same images in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import colcon_build, require_netns, require_rclpy, resolve_executable, run_driver, workspace_env

pytestmark = [pytest.mark.ros, pytest.mark.slow]

pytest.importorskip("onnxruntime", reason="the node's backend here is ONNX Runtime ([deploy] extra)")
pytest.importorskip("onnx", reason="the tiny test model is built with onnx ([deploy] extra)")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """ros_node/ built by colcon into a temporary install base (once per module)."""
    require_rclpy()
    return colcon_build(tmp_path_factory.mktemp("colcon"))


def _driver_results(scenario: str, workspace: Path, artifact: Path, workdir: Path, domain_id: int):
    require_netns()
    run_driver(scenario, workspace, workdir, domain_id, "--artifact", str(artifact))
    result = json.loads((workdir / "results.json").read_text())
    with np.load(workdir / "results.npz") as arrays:
        return result, {k: arrays[k] for k in arrays.files}


@pytest.fixture(scope="module")
def rclpy_run(workspace, artifact, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rclpy_run")
    result, arrays = _driver_results("rclpy", workspace, artifact, workdir, domain_id=61)
    return result, arrays, workdir


def test_colcon_installs_executables_where_ros2_run_looks(workspace):
    env = workspace_env(workspace)
    for name in ("segmenter", "segmenter_lifecycle", "segment_bag"):
        path = resolve_executable("lix_seg", name, env["AMENT_PREFIX_PATH"])
        assert path == workspace / "lix_seg" / "lib" / "lix_seg" / name
    share = workspace / "lix_seg" / "share" / "lix_seg"
    for rel in ("package.xml", "launch/segmenter.launch.py", "config/segmenter.yaml", "config/fastdds_udp_4mb.xml"):
        assert (share / rel).is_file(), rel


def test_installed_segment_bag_runs_from_the_workspace(workspace):
    import subprocess
    import sys

    env = workspace_env(workspace)
    exe = resolve_executable("lix_seg", "segment_bag", env["AMENT_PREFIX_PATH"])
    done = subprocess.run([sys.executable, str(exe), "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--artifact" in done.stdout and "make-demo" in done.stdout


def test_masks_match_the_runtime_for_every_encoding_and_padding(rclpy_run, segmenter):
    result, arrays, _ = rclpy_run
    assert [c["name"] for c in result["cases"] if not c["delivered"]] == []
    for case in result["cases"]:
        name = case["name"]
        sent = arrays[f"{name}/sent"]
        expected = segmenter.segment(sent, case["encoding"])
        mask = arrays[f"{name}/mask"]
        assert mask.shape == sent.shape[:2], name
        np.testing.assert_array_equal(mask, expected, err_msg=name)
        np.testing.assert_array_equal(arrays[f"{name}/colored_mask"], segmenter.colorize(expected), err_msg=name)
        np.testing.assert_array_equal(arrays[f"{name}/overlay"], segmenter.overlay(sent, expected, case["encoding"]),
                                      err_msg=name)
        assert case["mask"]["encoding"] == "mono8" and case["colored_mask"]["encoding"] == "rgb8"


def test_headers_are_copied_unchanged(rclpy_run):
    result, _, _ = rclpy_run
    for case in result["cases"]:
        for key in ("mask", "colored_mask", "overlay"):
            assert case[key]["frame_id"] == case["name"]
            assert case[key]["stamp"] == case["stamp"], (case["name"], key)


def test_bad_messages_are_logged_and_skipped_without_a_crash(rclpy_run):
    result, _, workdir = rclpy_run
    assert result["bad_answered"] == []
    assert result["after_bad_delivered"], "the node stopped answering after the bad messages"
    assert result["stop"]["alive_before_sigint"]
    assert int(result["diagnostics"]["frames_rejected"]) == 4
    log = (workdir / "segmenter.stderr").read_text()
    assert "skipping image: unsupported encoding '32FC1'" in log
    assert "Traceback" not in log


def test_diagnostics_report_rates_latency_drops_and_backend(rclpy_run):
    status = rclpy_run[0]["diagnostics"]
    assert status["backend"] == "onnxruntime"
    assert status["hardware_id"] == "lix_seg/onnxruntime"
    for key in ("input_rate_hz", "output_rate_hz", "latency_p50_ms", "latency_p95_ms", "inference_p50_ms",
                "frames_dropped"):
        assert float(status[key]) >= 0.0, key
    assert int(status["frames_published"]) >= len(rclpy_run[0]["cases"]) + 1
    assert float(status["latency_p95_ms"]) >= float(status["latency_p50_ms"]) > 0.0


def test_palette_changes_live_and_read_only_parameters_are_refused(rclpy_run):
    result, arrays, _ = rclpy_run
    assert result["set_palette"] == [[True, ""]]
    assert result["set_input_size"][0][0] is False
    assert result["recolour_delivered"]
    colored = arrays["recolour/colored_mask"]
    assert (colored.reshape(-1, 3) == [1, 2, 3]).all()


def test_compressed_input_is_decoded_once_and_a_corrupt_jpeg_is_rejected(workspace, artifact, segmenter, tmp_path):
    import cv2

    result, arrays = _driver_results("compressed", workspace, artifact, tmp_path, domain_id=64)
    assert [c["name"] for c in result["cases"] if not c["delivered"]] == []
    for case in result["cases"]:
        decoded = cv2.imdecode(arrays[f"{case['name']}/sent"], cv2.IMREAD_UNCHANGED)  # what the node must decode
        np.testing.assert_array_equal(arrays[f"{case['name']}/mask"], segmenter.segment(decoded, "bgr8"),
                                      err_msg=case["name"])
        assert case["frame_id"] == case["name"] and case["reply_stamp"] == case["stamp"]
    assert not result["corrupt_answered"] and result["after_corrupt_delivered"]
    assert int(result["diagnostics"]["frames_rejected"]) == 1
    assert result["stop"]["exit_code"] == 0
    log = (tmp_path / "segmenter.stderr").read_text()
    assert "skipping image: cannot decode compressed image (format 'jpeg'" in log and "Traceback" not in log


def test_sigint_stops_the_node_cleanly(rclpy_run):
    result, _, workdir = rclpy_run
    assert result["stop"]["exit_code"] == 0
    log = (workdir / "segmenter.stderr").read_text() + (workdir / "segmenter.stdout").read_text()
    assert "Traceback" not in log and "did not stop in time" not in log


def test_a_cyclone_dds_client_talks_to_the_node(workspace, artifact, segmenter, tmp_path):
    pytest.importorskip("cyclonedds", reason="the second DDS vendor is the cyclonedds package ([dev] extra)")
    result, arrays = _driver_results("cyclone", workspace, artifact, tmp_path, domain_id=62)
    assert [c["delivered"] for c in result["cases"]] == [True, True]
    for case in result["cases"]:
        sent = arrays[f"{case['name']}/sent"]
        np.testing.assert_array_equal(arrays[f"{case['name']}/mask"], segmenter.segment(sent, "rgb8"))
        assert case["reply_stamp"] == case["stamp"] and case["frame_id"] == case["name"]
        assert case["encoding"] == "mono8"
    assert result["stop"]["exit_code"] == 0


def test_lifecycle_node_loads_on_configure_and_frees_on_cleanup(workspace, artifact, tmp_path):
    pytest.importorskip("lifecycle_msgs.srv", reason="lifecycle_msgs comes with ros-jazzy-rclpy")
    result, _ = _driver_results("lifecycle", workspace, artifact, tmp_path, domain_id=63)
    assert result["initial_state"] == "unconfigured"
    assert [(t["transition"], t["success"], t["state"]) for t in result["transitions"]] == [
        ("configure", True, "inactive"), ("activate", True, "active"), ("deactivate", True, "inactive"),
        ("cleanup", True, "unconfigured"), ("configure", True, "inactive"), ("activate", True, "active")]
    assert result["answered_while_inactive"] is False
    assert result["answered_after_reconfigure"]
    assert result["stop"]["exit_code"] == 0
    assert "Traceback" not in (tmp_path / "segmenter_lifecycle.stderr").read_text()


def test_node_refuses_to_start_with_a_wrong_input_size(workspace, artifact, tmp_path):
    """A config that contradicts the artefact stops the node with one clear line (no DDS needed)."""
    import subprocess
    import sys

    env = workspace_env(workspace)
    env.update(ROS_LOG_DIR=str(tmp_path), ROS_DOMAIN_ID="64")
    require_netns()
    exe = resolve_executable("lix_seg", "segmenter", env["AMENT_PREFIX_PATH"])
    done = subprocess.run(["unshare", "-n", sys.executable, str(exe), "--ros-args", "-p",
                           f"artifact_path:={artifact}", "-p", "input_size:=[64, 64]"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "parameter input_size=[64, 64] but the artefact takes [32, 48]" in done.stderr
    assert "Traceback" not in done.stderr
