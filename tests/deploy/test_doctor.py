"""`python -m lix_deploy.doctor`: reports every part with a fix, never crashes, always exits 0."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lix_deploy import doctor
from lix_deploy.doctor import Check, classify_tensorrt, onnxruntime_conflict
from repo_paths import ROOT


def test_both_onnxruntime_packages_installed_is_detected_with_the_fix():
    fix = onnxruntime_conflict({"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.32.0"})
    assert "onnxruntime and onnxruntime-gpu" in fix
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in fix
    assert onnxruntime_conflict({"onnxruntime": "1.32.0"}) is None
    assert onnxruntime_conflict({"onnxruntime-gpu": "1.32.0"}) is None
    assert onnxruntime_conflict({}) is None


def test_onnxruntime_check_reports_the_clash():
    checks = doctor.check_onnxruntime({"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.32.0"})
    clash = [c for c in checks if c.name == "onnxruntime packages"]
    assert clash and clash[0].status == doctor.ERROR and "pip uninstall" in clash[0].fix


def test_tensorrt_versions_are_classified_by_typing_mode():
    assert classify_tensorrt("10.3.0.26") == (doctor.OK, classify_tensorrt("10.11.0")[1])
    assert "weakly typed" in classify_tensorrt("10.3.0")[1]
    assert "10.x >= 10.12: strongly typed" in classify_tensorrt("10.13.3.9")[1]
    assert "11.x: strongly typed only" in classify_tensorrt("11.0.0")[1]
    assert classify_tensorrt("8.6.1")[0] == doctor.ERROR


def test_a_crashing_probe_becomes_an_error_line():
    def check_boom():
        raise RuntimeError("driver exploded")

    checks = doctor.run_checks([check_boom, lambda: [Check("fine", doctor.OK, "1.0")]])
    assert checks[0].name == "boom" and checks[0].status == doctor.ERROR and "driver exploded" in checks[0].detail
    assert checks[1].name == "fine"


def test_missing_tensorrt_and_gpu_are_reported_with_fixes(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(doctor, "installed_versions", lambda names, lookup=None: {})
    (trt,) = doctor.check_tensorrt()
    assert trt.status == doctor.MISSING and "tensorrt" in trt.fix
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    (gpu,) = doctor.check_gpu()
    assert gpu.status == doctor.INFO and "NVIDIA driver" in gpu.fix


def test_report_text_lists_every_check_and_its_fix():
    text = doctor.format_report([Check("onnxruntime", doctor.OK, "1.32.0", "CPU"),
                                 Check("tensorrt", doctor.MISSING, detail="not installed", fix="pip install x")])
    assert "[ok] onnxruntime  1.32.0  CPU" in text and "fix: pip install x" in text and "0 problem(s)" in text


@pytest.mark.slow
def test_cli_json_covers_every_part_and_exits_zero():
    done = subprocess.run([sys.executable, "-m", "lix_deploy.doctor", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    names = {check["name"] for check in report["checks"]}
    assert {"python", "numpy", "onnx", "onnxruntime", "onnxruntime providers", "torch", "gpu", "tensorrt",
            "cuda-python", "pycuda", "lix_deploy.runtime"} <= names
    runtime = next(c for c in report["checks"] if c["name"] == "lix_deploy.runtime")
    assert runtime["status"] == "ok"
    assert all(set(c) == {"name", "status", "version", "detail", "fix"} for c in report["checks"])


def test_cli_help():
    with pytest.raises(SystemExit) as caught:
        doctor.main(["--help"])
    assert caught.value.code == 0
