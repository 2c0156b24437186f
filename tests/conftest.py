"""Shared by every room of the suite: the helpers folder on sys.path, and the fixtures several rooms use.

Plain helper modules (tiny datasets, fakes, tiny models) live in tests/helpers/ and are imported by name
(`from engine_fakes import TinyNet`); fixtures live in the conftest.py of the narrowest folder whose tests
use them. These serve more than one room: the tiny generated set and experiment (data, tools, study) and
the tiny ONNX model with its Segmenter (deploy, runtime, ros).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory) -> Path:
    """helpers/cli_fixtures.py's tiny generated set (three 3-frame drives), written once per test module."""
    from cli_fixtures import write_tiny_synthetic

    return write_tiny_synthetic(tmp_path_factory.mktemp("data") / "synth")


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """make(name, iters=3, quiet=False) -> (base, config path): a new folder `base` holding the tiny set
    (base/synth) and a tiny config over it (base/tiny.yaml) whose teachers and runs go under base.
    quiet=True turns off TensorBoard and the per-run plots (the study's own figures are still drawn)."""
    from cli_fixtures import tiny_config, write_config, write_tiny_synthetic

    def make(name: str, iters: int = 3, quiet: bool = False) -> tuple[Path, Path]:
        base = tmp_path_factory.mktemp(name)
        config = tiny_config(write_tiny_synthetic(base / "synth"), base, iters)
        if quiet:
            for role in ("teacher", "student"):
                config[role]["train"]["tensorboard"] = False
            config["output"]["plots"] = False
        return base, write_config(base / "tiny.yaml", config)

    return make


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """helpers/runtime_fixtures.py's tiny ONNX model on disk, once per test module."""
    from runtime_fixtures import make_tiny_onnx

    return make_tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def segmenter(artifact):
    """A single-threaded Segmenter over `artifact`, closed after the module."""
    from lix_deploy.runtime import Segmenter

    with Segmenter(artifact, intra_op_threads=1) as seg:
        yield seg
