"""Artefact metadata: lix.* props round trip through an ONNX file and an engine sidecar; bad metadata is named."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX metadata needs the [deploy] extra")

from lix_deploy.artifact import (  # noqa: E402
    ArtifactError, ArtifactInfo, read_metadata, sha256_file, sidecar_path, write_metadata, write_sidecar,
)
from lix_train.data.classes import VKITTI2  # noqa: E402


def _info(**changes) -> ArtifactInfo:
    values = dict(
        class_names=list(VKITTI2.names), palette=[list(c) for c in VKITTI2.colors], input_size=(96, 320),
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], outputs=["labels", "logits"],
        label_dtype="int32", dynamic_batch=True, dataset="synthetic", source_checkpoint="student.pt",
        source_checkpoint_sha256="ab" * 32, opset=18, exporter="test",
        model_signature={"name": "student", "config": {"width": 0.25}, "num_classes": 14},
    )
    values.update(changes)
    return ArtifactInfo(**values)


def _identity_model() -> "onnx.ModelProto":
    """A one-node graph: enough to carry metadata without torch."""
    x = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, 2, 2])
    y = onnx.helper.make_tensor_value_info("labels", onnx.TensorProto.FLOAT, [1, 3, 2, 2])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["image"], ["labels"])], "g", [x], [y])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])


def test_onnx_round_trip_keeps_every_field_and_foreign_props(tmp_path):
    model = _identity_model()
    onnx.helper.set_model_props(model, {"author": "someone", "lix.precision": "int8"})
    info = _info()
    write_metadata(model, info)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))

    back = read_metadata(path)
    assert back == info
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["author"] == "someone"  # props that are not ours survive
    assert props["lix.precision"] == "fp32"  # an older lix.* value is replaced, not duplicated
    assert sum(p.key == "lix.precision" for p in onnx.load(str(path)).metadata_props) == 1
    assert props["lix.normalization"] == "folded" and props["lix.input_layout"] == "NCHW-RGB-0-255"
    assert json.loads(props["lix.class_names"]) == list(VKITTI2.names)
    assert json.loads(props["lix.input_size"]) == [96, 320]
    assert back.num_classes == 14 and back.has_logits
    np.testing.assert_array_equal(back.palette_lut()[:14], np.asarray(VKITTI2.colors, np.uint8))
    assert not back.palette_lut()[14:].any()


def test_sidecar_round_trip_for_engines(tmp_path):
    engine = tmp_path / "student.int8.engine"
    engine.write_bytes(b"not really an engine")
    info = _info(precision="int8", extra={"lix.trt_version": "10.3"})
    written = write_sidecar(engine, info)
    assert written == sidecar_path(engine) == tmp_path / "student.int8.engine.json"
    assert read_metadata(engine) == info
    assert read_metadata(written) == info


def test_missing_and_malformed_metadata_are_named(tmp_path):
    bare = tmp_path / "bare.onnx"
    onnx.save(_identity_model(), str(bare))
    with pytest.raises(ArtifactError, match="lix.format_version"):
        read_metadata(bare)

    model = write_metadata(_identity_model(), _info())
    for entry in model.metadata_props:
        if entry.key == "lix.palette":
            entry.value = "[[1, 2"
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ArtifactError, match="lix.palette is not valid JSON"):
        read_metadata(broken)

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(ArtifactError, match="junk.onnx"):
        read_metadata(junk)
    with pytest.raises(ArtifactError, match="not found"):
        read_metadata(tmp_path / "absent.onnx")
    with pytest.raises(ArtifactError, match="sidecar not found"):
        (tmp_path / "x.engine").write_bytes(b"")
        read_metadata(tmp_path / "x.engine")


def test_info_validation_names_the_field():
    with pytest.raises(ValueError, match="palette"):
        _info(palette=[[0, 0, 0]])
    with pytest.raises(ValueError, match="precision"):
        _info(precision="int4")
    with pytest.raises(ValueError, match="labels"):
        _info(outputs=["logits"])
    with pytest.raises(ValueError, match="std"):
        _info(std=[1.0, 0.0, 1.0])


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = np.random.default_rng(0).bytes(3 << 20)  # spans several read chunks
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
