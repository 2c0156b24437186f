"""Packaging promises: a CPU setup never pulls CUDA torch, and the extras stay consistent."""

from __future__ import annotations

import re

import pytest
from repo_paths import ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_core_dependencies_have_no_cuda_pullers():
    core = _names(_project()["dependencies"])
    assert "torch" in core
    assert not core & {"torchvision", "timm", "onnxruntime-gpu", "tensorrt", "cuda-python"}


def test_torch_is_a_range_and_cpu_constraint_pins_it():
    torch_req = next(r for r in _project()["dependencies"] if r.startswith("torch"))
    assert ">=" in torch_req and "==" not in torch_req, "users with CUDA torch must keep theirs"
    pins = [line for line in (ROOT / "constraints/cpu.txt").read_text().splitlines() if line.startswith("torch")]
    assert pins == ["torch==2.13.0"]
    assert "constraints/cpu.txt" in (ROOT / "Makefile").read_text()


def test_onnxruntime_packages_never_share_an_extra():
    for name, reqs in _project()["optional-dependencies"].items():
        names = _names(reqs)
        assert not {"onnxruntime", "onnxruntime-gpu"} <= names, f"extra [{name}] installs both onnxruntime packages"
    extras = _project()["optional-dependencies"]
    assert "onnxruntime" in _names(extras["deploy"])
    assert {"onnxruntime-gpu", "cuda-python"} <= _names(extras["gpu"])
    assert "rosbags" in _names(extras["ros"])


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)$", quick_start, flags=re.M)
    assert commands == ["make demo", "make test"]
