"""Export: a verified, self-describing ONNX file, or a clear error and nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="ONNX export needs the [deploy] extra")
ort = pytest.importorskip("onnxruntime", reason="verification needs the [deploy] extra")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")

from deploy_fixtures import (  # noqa: E402
    TINY_SIZE, tiny_dataset_root, tiny_frames, tiny_onnx, tiny_student_checkpoint, tiny_teacher_checkpoint,
)
from lix_deploy import export as export_module  # noqa: E402
from lix_deploy.artifact import read_metadata, sha256_file  # noqa: E402
from lix_deploy.export import DeployGraph, ExportOptions, export_student, load_student, main  # noqa: E402
from lix_deploy.verify import Tolerance, VerificationError, verify_onnx  # noqa: E402
from lix_train.data.classes import VKITTI2  # noqa: E402
from lix_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from lix_train.engine.checkpoint import load_checkpoint  # noqa: E402


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _student_logits(checkpoint, frames: np.ndarray) -> np.ndarray:
    """The student's logits with normalisation done by hand, as in training (the reference for folding)."""
    student = load_student(checkpoint).model
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1) * 255
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1) * 255
    with torch.no_grad():
        return student(torch.from_numpy((frames - mean) / std))[0].numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default export: static 64x128, labels only, uint8."""
    directory = tmp_path_factory.mktemp("export")
    return tiny_onnx(directory), directory / "student.pt"


def test_round_trip_metadata_and_labels(exported):
    path, checkpoint = exported
    info = read_metadata(path)
    assert info.class_names == list(VKITTI2.names)
    assert info.palette == [list(c) for c in VKITTI2.colors]
    assert info.input_size == TINY_SIZE and info.outputs == ["labels"] and info.label_dtype == "uint8"
    np.testing.assert_allclose(info.mean, np.asarray(IMAGENET_MEAN) * 255)
    np.testing.assert_allclose(info.std, np.asarray(IMAGENET_STD) * 255)
    assert info.normalization == "folded" and info.input_layout == "NCHW-RGB-0-255" and info.precision == "fp32"
    assert info.source_checkpoint == "student.pt"
    assert info.source_checkpoint_sha256 == sha256_file(checkpoint)
    assert info.model_signature == load_checkpoint(checkpoint)["signature"]
    assert info.opset is not None and info.opset >= 18 and info.dataset == "synthetic"

    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape == [1, 3, *TINY_SIZE]
    frames = tiny_frames(3)
    expected = _student_logits(checkpoint, frames).argmax(1)
    labels = np.concatenate([session.run(["labels"], {"image": f[None]})[0] for f in frames])
    assert labels.dtype == np.uint8 and labels.shape == (3, *TINY_SIZE)
    assert (labels == expected).mean() > 0.999  # normalisation folded in: raw 0..255 in, the trained labels out
    assert len(np.unique(labels)) > 2  # a trained student, not a constant map


def test_verification_catches_a_corrupted_graph(exported, tmp_path):
    path, checkpoint = exported
    model = onnx.load(str(path))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = onnx.numpy_helper.to_array(biggest)
    tampered = np.random.default_rng(0).normal(0, 3 * float(np.abs(weights).std()) + 1e-3, weights.shape)
    biggest.CopyFrom(onnx.numpy_helper.from_array(tampered.astype(weights.dtype), biggest.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))

    student = load_student(checkpoint)
    graph = DeployGraph(student.model, student.mean, student.std)
    frames = tiny_frames(2)
    report = verify_onnx(bad, export_module.torch_reference(graph), frames, Tolerance())
    assert not report.passed
    assert report.relative_logit_error > Tolerance().max_logit_error
    assert report.label_agreement < Tolerance().min_agreement
    with pytest.raises(VerificationError, match="max logit error") as err:
        report.raise_if_failed()
    assert "label agreement" in str(err.value)
    # the untouched file passes the same check
    assert verify_onnx(path, export_module.torch_reference(graph), frames).passed


def test_failed_verification_writes_nothing(tmp_path, monkeypatch, capsys):
    checkpoint = tiny_student_checkpoint(tmp_path)
    real_build = export_module.build_onnx

    def corrupted(graph, options):
        model = real_build(graph, options)
        for tensor in model.graph.initializer:  # flip the sign of every weight: same graph, wrong network
            array = onnx.numpy_helper.to_array(tensor)
            if array.dtype == np.float32 and array.size > 16:
                tensor.CopyFrom(onnx.numpy_helper.from_array(-array, tensor.name))
        return model

    monkeypatch.setattr(export_module, "build_onnx", corrupted)
    out = tmp_path / "out" / "student.onnx"
    code = main(["--checkpoint", str(checkpoint), "--out", str(out), "--verify-root", str(tiny_dataset_root()),
                 "--verify-frames", "2"])
    assert code == 3
    assert "verification failed" in capsys.readouterr().err
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temp file left behind either


def test_dynamic_batch_with_logits_and_int32_labels(exported, tmp_path):
    path_u8, _ = exported
    path = tiny_onnx(tmp_path, dynamic_batch=True, with_logits=True, label_dtype="int32")
    info = read_metadata(path)
    assert info.outputs == ["labels", "logits"] and info.dynamic_batch and info.label_dtype == "int32"
    session = _session(path)
    assert isinstance(session.get_inputs()[0].shape[0], str)  # symbolic batch
    frames = tiny_frames(3)
    labels, logits = session.run(["labels", "logits"], {"image": frames})
    assert labels.dtype == np.int32 and labels.shape == (3, *TINY_SIZE)
    assert logits.dtype == np.float32 and logits.shape == (3, VKITTI2.num_classes, *TINY_SIZE)
    np.testing.assert_array_equal(labels, logits.argmax(1))
    expected = _student_logits(tmp_path / "student.pt", frames)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    # the uint8 graph of the same weights gives the same labels, one byte each
    session_u8 = _session(path_u8)
    labels_u8 = np.concatenate([session_u8.run(["labels"], {"image": f[None]})[0] for f in frames])
    assert labels_u8.dtype == np.uint8 and (labels_u8 == labels).mean() > 0.999


def test_cli_exports_with_training_size_by_default(tmp_path, capsys):
    checkpoint = tiny_student_checkpoint(tmp_path)
    out = tmp_path / "deploy" / "model.onnx"
    code = main(["--checkpoint", str(checkpoint), "--out", str(out), "--verify-root", str(tiny_dataset_root()),
                 "--verify-frames", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "verification PASSED" in printed and "max logit error" in printed
    assert read_metadata(out).input_size == TINY_SIZE  # data.transforms.size recorded in the checkpoint


@pytest.mark.parametrize("case, expected", [
    ("missing", "checkpoint file not found"),
    ("teacher", "teacher checkpoint"),
    ("foreign", "not a LIX-Seg checkpoint"),
    ("pickled", "not a LIX-Seg checkpoint (UnpicklingError)"),  # a whole pickled nn.Module
    ("garbage", "not a LIX-Seg checkpoint"),
    ("height", "--height 100 must be a positive multiple of 32 (the encoder's output stride); try 96 or 128"),
    ("unwritable", "cannot write into"),
])
def test_bad_inputs_are_clear_errors(case, expected, tmp_path, capsys):
    checkpoint = tiny_student_checkpoint(tmp_path, train_steps=0)
    out = tmp_path / "student.onnx"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--verify-root", str(tiny_dataset_root())]
    if case == "missing":
        args[1] = str(tmp_path / "nope.pt")
    elif case == "teacher":
        args[1] = str(tiny_teacher_checkpoint(tmp_path))
    elif case == "foreign":
        torch.save({"state_dict": {}}, tmp_path / "other.pt")
        args[1] = str(tmp_path / "other.pt")
    elif case in ("pickled", "garbage"):
        path = tmp_path / f"{case}.pt"
        if case == "pickled":
            torch.save(torch.nn.Linear(2, 2), path)
        else:
            path.write_text("not a torch file at all")
        args[1] = str(path)
    elif case == "height":
        args += ["--height", "100", "--width", "128"]
    elif case == "unwritable":
        (tmp_path / "a_file").write_text("")
        out = tmp_path / "a_file" / "student.onnx"  # parent is a file: nothing can be created there
        args[3] = str(out)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith("export: error: ") and "Traceback" not in err
    # never echo torch's advice to unpickle the file fully (it runs code from the file)
    assert "weights_only" not in err and "two options" not in err and "can still be loaded" not in err
    if case in ("pickled", "garbage"):
        assert "student.pt" in err  # what to export instead
    assert not out.exists()


def test_export_student_api_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="label-dtype"):
        ExportOptions(64, 128, label_dtype="float16")
    with pytest.raises(ValueError, match="opset"):
        ExportOptions(64, 128, opset=17)
    with pytest.raises(ValueError, match="--width 50 .* try 32 or 64"):
        ExportOptions(64, 50)
    checkpoint = tiny_student_checkpoint(tmp_path, train_steps=0)
    with pytest.raises(ValueError, match="verify-frames"):
        export_student(checkpoint, tmp_path / "x.onnx", ExportOptions(64, 128), verify_frames=0)


def test_an_opset_the_exporter_cannot_reach_is_refused(tmp_path):
    checkpoint = tiny_student_checkpoint(tmp_path, train_steps=0)
    out = tmp_path / "x.onnx"
    with pytest.raises(ValueError, match="--opset 99: the exporter produced opset"):
        export_student(checkpoint, out, ExportOptions(64, 128, opset=99), frames=tiny_frames(1))
    assert not out.exists()
