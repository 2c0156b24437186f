"""lix_deploy.backend_table: the runtime and build_engine dispatch through one table, so a new backend is
one file (tests/helpers/fake_backend.py) plus one register() line, and importing the table loads no backend."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lix_deploy import artifact, backend_table, build_engine, runtime
from lix_deploy.artifact import ArtifactError
from lix_deploy.backend_table import BACKENDS, BackendEntry
from lix_deploy.builders import onnxruntime_build
from lix_deploy.runtime.backends import onnxruntime_backend
from lix_deploy.runtime.segmenter import Segmenter, backend_for_artifact
from repo_paths import ROOT

FAKE = BackendEntry("fake", (".fake",), "fake_backend:open_backend", "fake_backend", needs="a .fake file")


@pytest.fixture
def fake_backend():
    backend_table.register(FAKE)  # the one line a new backend adds (at the end of backend_table.py)
    try:
        yield FAKE
    finally:
        backend_table.unregister("fake")
    assert "fake" not in BACKENDS


def test_the_built_in_backends_share_one_interface():
    assert backend_table.names() == ("onnxruntime", "tensorrt")
    assert BACKENDS == ("auto", "onnxruntime", "tensorrt") and list(BACKENDS) == ["auto", "onnxruntime", "tensorrt"]
    assert artifact.BACKENDS is runtime.BACKENDS is BACKENDS
    parameters = lambda function: list(inspect.signature(function).parameters.values())  # noqa: E731
    for name in backend_table.names():
        assert parameters(backend_table.builder(name).build_candidate) == parameters(onnxruntime_build.build_candidate)
        assert parameters(backend_table.runtime_factory(name)) == parameters(onnxruntime_backend.open_backend)
    assert build_engine.default_out(Path("m/s.onnx"), "tensorrt", "int8") == Path("m/s.int8.engine")
    assert build_engine.default_out(Path("m/s.onnx"), "onnxruntime", "fp16") == Path("m/s.fp16.onnx")


def test_registration_keeps_names_and_suffixes_unique():
    for bad, message in [
        (BackendEntry("auto", (".x",), "m:f"), "taken"),
        (BackendEntry("tensorrt", (".x",), "m:f"), "taken"),
        (BackendEntry("other", (".plan",), "m:f"), "already belongs to backend 'tensorrt'"),
        (BackendEntry("other", (".X",), "m:f"), "lower-case"),
        (BackendEntry("other", (), "m:f"), "lower-case"),
    ]:
        with pytest.raises(ValueError, match=message):
            backend_table.register(bad)
    assert backend_table.names() == ("onnxruntime", "tensorrt")
    with pytest.raises(ValueError, match="is not one of auto, onnxruntime, tensorrt"):
        backend_table.unregister("openvino")


def test_importing_the_table_loads_no_backend():
    code = textwrap.dedent("""
        import sys
        import lix_deploy.backend_table
        print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "onnxruntime", "tensorrt", "torch")
                                or m.startswith(("lix_deploy.builders", "lix_deploy.runtime"))))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout


def test_a_new_backend_is_one_file_and_one_line(fake_backend, tmp_path):
    pytest.importorskip("onnx", reason="building the tiny test model needs the [deploy] extra")
    pytest.importorskip("onnxruntime", reason="the fake backend runs on onnxruntime ([deploy] extra)")
    from deploy_fixtures import tiny_dataset_root
    from runtime_fixtures import SIZE, expected_labels, make_tiny_onnx, scene

    from lix_deploy.calib import write_calibration_set

    assert list(BACKENDS) == ["auto", "onnxruntime", "tensorrt", "fake"]
    # the runtime routes .fake files to it, and refuses to cross suffixes either way
    assert backend_for_artifact("m.FAKE") == backend_for_artifact("m.fake", "fake") == "fake"
    with pytest.raises(ArtifactError, match="backend='onnxruntime' needs an ONNX file; .fake files run on "
                                            "backend='fake'"):
        backend_for_artifact("m.fake", "onnxruntime")
    with pytest.raises(ArtifactError, match="backend='fake' needs a .fake file; .onnx files run on "
                                            "backend='onnxruntime'"):
        backend_for_artifact("m.onnx", "fake")
    with pytest.raises(ArtifactError, match=r"expected \.onnx, \.engine, \.plan, \.trt, \.fake"):
        backend_for_artifact("m.bin")
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    image = scene(*SIZE)
    with Segmenter(shutil.copyfile(model, tmp_path / "copy.fake"), intra_op_threads=1) as seg:
        assert seg.backend_name == "fake" and seg.describe()["backend"] == "fake"
        np.testing.assert_array_equal(seg.segment(image), expected_labels(image))
    # build_engine names the output after its suffix and builds through its build_candidate
    assert build_engine.default_out(model, "fake", "fp32") == tmp_path / "tiny.fp32.fake"
    calib = tmp_path / "calib"
    write_calibration_set(calib, dataset="synthetic", root=tiny_dataset_root(), split="train", num=2, size=SIZE,
                          with_labels=False, progress=False)  # the tiny model's classes are not the dataset's
    assert build_engine.main(["--onnx", str(model), "--precision", "fp32", "--calib", str(calib),
                              "--backend", "fake"]) == 0
    out = tmp_path / "tiny.fp32.fake"
    assert out.read_bytes() == model.read_bytes()
    report = json.loads((tmp_path / "tiny.fp32.fake.build.json").read_text())
    assert report["backend"] == "fake" and report["fake"] == {"precision": "fp32"} and "copy" in report["timings"]
    assert report["accuracy"]["passed"] and report["accuracy"]["pixel_agreement"] == 1.0
    assert report["artefact"] == str(out)
