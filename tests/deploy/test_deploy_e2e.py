"""End to end on a CPU: a briefly trained tiny student -> export -> calibration set -> INT8 (ONNX Runtime
Q/DQ) -> runtime -> accuracy gate, with the gate's decision checked both ways."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="deployment needs the [deploy] extra")
pytest.importorskip("onnxruntime", reason="deployment needs the [deploy] extra")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")

from lix_deploy import accuracy, build_engine, calib, export  # noqa: E402
from lix_deploy.artifact import read_metadata  # noqa: E402
from lix_deploy.runtime.segmenter import Segmenter  # noqa: E402

from deploy_fixtures import TINY_SIZE, tiny_dataset_root, tiny_student_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """checkpoint (40 training steps) -> `python -m lix_deploy.export` -> two `python -m lix_deploy.calib` sets."""
    work = tmp_path_factory.mktemp("e2e")
    checkpoint = tiny_student_checkpoint(work)
    onnx = work / "student.onnx"
    root = tiny_dataset_root()
    h, w = TINY_SIZE
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(onnx), "--height", str(h), "--width", str(w),
                        "--verify-frames", "2", "--verify-root", str(root)]) == 0
    common = ["--dataset", "synthetic", "--root", str(root), "--onnx", str(onnx), "--no-progress"]
    assert calib.main([*common, "--split", "train", "--num", "4", "--out", str(work / "calib" / "train")]) == 0
    assert calib.main([*common, "--split", "test", "--num", "4", "--out", str(work / "calib" / "test")]) == 0
    return work, onnx


def build(work: Path, onnx: Path, max_drop: float) -> int:
    return build_engine.main(["--onnx", str(onnx), "--precision", "int8", "--calib", str(work / "calib" / "train"),
                              "--eval-set", str(work / "calib" / "test"), "--backend", "onnxruntime",
                              "--max-miou-drop", str(max_drop)])


def test_int8_passes_a_generous_gate_and_runs_in_the_runtime(pipeline):
    work, onnx = pipeline
    # mIoU lies in [0, 100], so a drop can never exceed 100 points: this gate must pass
    assert build(work, onnx, 100.0) == 0
    int8 = work / "student.int8.onnx"
    report = json.loads((work / "student.int8.onnx.build.json").read_text())
    assert report["decision"].startswith("accepted") and report["artefact"] == str(int8)

    # the runtime loads the artefact from its own metadata and segments camera images
    segmenter = Segmenter(int8, backend="onnxruntime")
    assert segmenter.info.precision == "int8" and segmenter.backend_name == "onnxruntime"
    inputs, labels, _ = calib.load_calibration_set(work / "calib" / "test")
    camera = np.ascontiguousarray(inputs[0].transpose(1, 2, 0).astype(np.uint8))
    mask = segmenter.segment(camera, "rgb8")
    assert mask.shape == TINY_SIZE and mask.max() < segmenter.info.num_classes

    # the report's figures are what the runtime measures against the test labels
    fp32 = Segmenter(onnx, backend="onnxruntime")
    fp32_labels = np.concatenate([fp32.infer(inputs[i:i + 1]).labels for i in range(len(inputs))])
    int8_labels = np.concatenate([segmenter.infer(inputs[i:i + 1]).labels for i in range(len(inputs))])
    classes = segmenter.info.num_classes
    gate = report["accuracy"]
    assert gate["reference"] == "labels" and gate["frames"] == 4
    assert gate["fp32_miou"] == pytest.approx(accuracy.mean_iou(accuracy.confusion_matrix(fp32_labels, labels, classes)))
    assert gate["candidate_miou"] == pytest.approx(
        accuracy.mean_iou(accuracy.confusion_matrix(int8_labels, labels, classes)))
    assert gate["pixel_agreement"] == pytest.approx(accuracy.pixel_agreement(int8_labels, fp32_labels))
    assert gate["pixel_agreement"] > 0.5  # quantisation keeps most labels of a trained model
    segmenter.close()
    fp32.close()


def test_impossible_gate_rejects_int8_and_keeps_fp32(pipeline, capsys):
    work, onnx = pipeline
    int8 = work / "student.int8.onnx"
    stale_before = int8.exists()
    # a drop is always >= -100 points, so demanding a gain of more than 100 must fail
    assert build(work, onnx, -101.0) == build_engine.EXIT_REFUSED
    assert "rejected" in capsys.readouterr().err
    report = json.loads((work / "student.int8.onnx.build.json").read_text())
    fp32 = work / "student.fp32.onnx"
    assert not report["accuracy"]["passed"] and report["decision"].startswith("rejected")
    assert report["artefact"] == str(fp32)
    assert read_metadata(fp32).precision == "fp32" and Segmenter(fp32).info.precision == "fp32"
    assert not int8.exists()  # a rejected INT8 model is never left where a deployment would pick it up
    if stale_before:
        assert "removed the stale" in report["decision"]
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temp files or folders
