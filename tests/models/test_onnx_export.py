"""Every student family exports with the dynamo ONNX exporter and matches PyTorch on ONNX Runtime (CPU)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="ONNX export needs the [deploy] extra")
ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime needs the [deploy] extra")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")

from lix_train.models import ExportWrapper, create_model, export_dynamic_shapes  # noqa: E402

TINY = dict(width=0.25, decoder_channels=32, num_classes=6)


def _export(wrapper, example, path, dynamic_shapes=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (example,), str(path), dynamo=True, opset_version=18,
            dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _image(batch, height, width, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _assert_same_labels(ort_logits, torch_logits):
    """Argmax agrees on every pixel whose top-2 gap exceeds twice the largest logit error.

    Only such a near-tie can flip between runtimes; anywhere else a different label is a bug.
    """
    tolerance = 2.0 * float(np.abs(ort_logits - torch_logits).max())
    top2 = np.sort(torch_logits, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > tolerance
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(ort_logits.argmax(1)[clear], torch_logits.argmax(1)[clear])


@pytest.mark.parametrize("encoder", ["resnet18", "resnet50", "mobilenetv2"])
def test_static_export_matches_pytorch(encoder, tmp_path):
    torch.manual_seed(0)
    student = create_model("student", encoder=encoder, **TINY)
    with torch.no_grad():  # non-trivial BN statistics, so the exported graph's BN folding is exercised
        student.train()(_image(4, 64, 128, seed=3) * 2 + 0.5)
    wrapper = ExportWrapper(student, output="logits")
    image = _image(1, 64, 128)
    session = _export(wrapper, image, tmp_path / f"{encoder}.onnx")
    (got,) = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    with torch.no_grad():
        expected = wrapper(image).numpy()
    assert got.shape == expected.shape == (1, 6, 64, 128)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * max(scale, 1.0))
    _assert_same_labels(got, expected)


def test_dynamic_export_with_labels_output(tmp_path):
    torch.manual_seed(0)
    student = create_model("student", encoder="resnet18", **TINY)
    wrapper = ExportWrapper(student, output="both", label_dtype="int32")
    session = _export(wrapper, _image(1, 64, 128), tmp_path / "dynamic.onnx", export_dynamic_shapes())
    names = [i.name for i in session.get_inputs()]
    assert len(names) == 1 and [o.type for o in session.get_outputs()] == ["tensor(float)", "tensor(int32)"]
    for batch, height, width in [(1, 64, 128), (2, 96, 160)]:
        image = _image(batch, height, width, seed=height)
        logits, labels = session.run(None, {names[0]: image.numpy()})
        with torch.no_grad():
            expected_logits, expected_labels = wrapper(image)
        assert labels.shape == (batch, height, width) and labels.dtype == np.int32
        scale = float(expected_logits.abs().max())
        np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=0, atol=1e-5 * max(scale, 1.0))
        # the graph's own argmax equals the argmax of its logits, and PyTorch's where not a near-tie
        np.testing.assert_array_equal(labels, logits.argmax(1))
        _assert_same_labels(logits, expected_logits.numpy())
