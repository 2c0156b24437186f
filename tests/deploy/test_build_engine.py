"""`python -m lix_deploy.build_engine` on the ONNX Runtime backend (CPU), and the graph traversal that
picks the default INT8 exclusions."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="building artefacts needs the [deploy] extra")
pytest.importorskip("onnxruntime", reason="building artefacts needs the [deploy] extra")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lix_deploy import build_engine  # noqa: E402
from lix_deploy.artifact import read_metadata  # noqa: E402
from lix_deploy.builders import onnxruntime_build as ortb  # noqa: E402
from lix_deploy.builders.report import REPORT_KEYS  # noqa: E402

from deploy_fixtures import TINY_SIZE, tiny_dataset_root, tiny_onnx  # noqa: E402


# --------------------------------------------------------------------------- default exclusions


def _conv(name, x, w, y):
    return helper.make_node("Conv", [x, w], [y], name=name, pads=[1, 1, 1, 1])


def toy_graph(unnamed: bool = False):
    """image -> Sub -> conv_stem -> Relu -> {conv_a, conv_b} -> Add -> conv_head -> Resize -> ArgMax.

    conv_b is listed before conv_stem in node order, so only a traversal finds the right first conv.
    """
    weights = [numpy_helper.from_array(np.ones((4, c, 3, 3), np.float32) * 0.1, f"w{i}")
               for i, c in enumerate((3, 4, 4, 4))]
    mean = numpy_helper.from_array(np.full((1, 3, 1, 1), 100.0, np.float32), "mean")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        _conv("conv_b", "r", "w2", "b"),
        helper.make_node("Sub", ["image", "mean"], ["x"], name="norm"),
        _conv("conv_stem", "x", "w0", "s"),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        _conv("conv_a", "r", "w1", "a"),
        helper.make_node("Add", ["a", "b"], ["ab"], name="add"),
        _conv("conv_head", "ab", "w3", "logits_small"),
        helper.make_node("Resize", ["logits_small", "", "scales"], ["logits"], name="up", mode="linear"),
        helper.make_node("ArgMax", ["logits"], ["labels"], name="argmax", axis=1, keepdims=0),
    ]
    if unnamed:
        for node in nodes:
            node.name = ""
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 16, 16])],
                              initializer=weights + [mean, scales])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_default_exclusions_follow_the_graph_not_node_order():
    model = toy_graph()
    assert ortb.default_exclusions(model) == ["conv_stem", "conv_head"]


def test_unnamed_nodes_get_names_so_they_can_be_excluded():
    model = toy_graph(unnamed=True)
    assert ortb.ensure_node_names(model) == 9
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == 9 and all(names)
    assert ortb.default_exclusions(model) == ["Conv_2", "Conv_6"]


def test_unknown_exclusion_is_named():
    with pytest.raises(ortb.BuildError, match="'nope'.*conv_b"):
        ortb.check_node_names(toy_graph(), ["conv_stem", "nope"])


def test_split_frames():
    assert build_engine.split_frames(8, None, True) == (slice(0, 6), slice(6, 8))
    assert build_engine.split_frames(8, 3, True) == (slice(0, 5), slice(5, 8))
    assert build_engine.split_frames(8, None, False) == (slice(0, 0), slice(0, 8))
    with pytest.raises(ortb.BuildError, match="no calibration frame"):
        build_engine.split_frames(4, 4, True)
    with pytest.raises(ortb.BuildError, match="at least 2"):
        build_engine.split_frames(1, None, True)


# --------------------------------------------------------------------------- the CLI on ONNX Runtime


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny trained student's FP32 export and a 4-frame calibration set with labels (the whole train split)."""
    from lix_deploy.calib import write_calibration_set

    root = tmp_path_factory.mktemp("build")
    model = tiny_onnx(root)
    calib = root / "calib" / "tiny"
    write_calibration_set(calib, dataset="synthetic", root=tiny_dataset_root(), split="train", num=4,
                          size=TINY_SIZE, progress=False)
    return model, calib


def run_cli(*args):
    return build_engine.main([str(a) for a in args])


def test_int8_build_writes_qdq_artefact_and_contract_report(workspace, tmp_path, capsys):
    model, calib = workspace
    out = tmp_path / "student.int8.onnx"
    code = run_cli("--onnx", model, "--precision", "int8", "--calib", calib, "--backend", "onnxruntime",
                   "--out", out, "--max-miou-drop", "100", "--eval-frames", "2")
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "student.int8.onnx.build.json").read_text())
    assert set(REPORT_KEYS) <= set(report)
    assert report["backend"] == "onnxruntime" and report["precision"] == "int8" and report["artefact"] == str(out)
    assert report["calibration"]["calibration_frames"] == 2 and report["calibration"]["eval_frames"] == 2
    accuracy = report["accuracy"]
    assert accuracy["passed"] and accuracy["reference"] == "labels" and accuracy["frames"] == 2
    assert accuracy["basis"] == report["gate_basis"] == "miou_drop_vs_labels"
    assert accuracy["drop"] == pytest.approx(accuracy["fp32_miou"] - accuracy["candidate_miou"])
    assert report["decision"].startswith("accepted")
    assert read_metadata(out).precision == "int8" and read_metadata(out).class_names == read_metadata(model).class_names
    graph = onnx.load(str(out)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 5
    # the default exclusions (first conv, classifier) stay float: their weights are not dequantised
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    excluded = [n for n in graph.node if n.name in report["excluded_nodes"]]
    assert len(excluded) == 2 and all(n.op_type == "Conv" and n.input[1] not in dequantized for n in excluded)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.int8.onnx", "student.int8.onnx.build.json"]


def test_exclusions_can_be_given_or_emptied(workspace, tmp_path, capsys):
    model, calib = workspace
    out = tmp_path / "all.int8.onnx"
    assert run_cli("--onnx", model, "--precision", "int8", "--calib", calib, "--out", out,
                   "--max-miou-drop", "100", "--exclude-nodes") == 0
    assert json.loads((tmp_path / "all.int8.onnx.build.json").read_text())["excluded_nodes"] == []
    assert run_cli("--onnx", model, "--precision", "int8", "--calib", calib, "--out", out,
                   "--exclude-nodes", "node_does_not_exist") == 2
    assert "node_does_not_exist" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fp32_and_fp16_builds(workspace, tmp_path, precision):
    model, calib = workspace
    out = tmp_path / f"s.{precision}.onnx"
    assert run_cli("--onnx", model, "--precision", precision, "--calib", calib, "--out", out,
                   "--max-miou-drop", "100") == 0
    report = json.loads(out.with_name(out.name + ".build.json").read_text())
    assert read_metadata(out).precision == precision and report["accuracy"]["frames"] == 4
    if precision == "fp32":  # the optimised graph computes the same labels
        assert report["accuracy"]["pixel_agreement"] == 1.0 and report["accuracy"]["drop"] == 0.0


def test_auto_backend_is_onnxruntime_without_tensorrt(workspace, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    model, calib = workspace
    out = tmp_path / "a.onnx"
    assert run_cli("--onnx", model, "--precision", "fp32", "--calib", calib, "--out", out) == 0
    assert json.loads((tmp_path / "a.onnx.build.json").read_text())["backend"] == "onnxruntime"


def test_user_errors_exit_2_with_one_line(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    model, calib = workspace
    cases = [
        (["--onnx", tmp_path / "missing.onnx", "--precision", "fp32", "--calib", calib], "file not found"),
        (["--onnx", model, "--precision", "int8", "--calib", tmp_path / "nocalib"], "calibration set"),
        (["--onnx", model, "--precision", "int8", "--calib", calib, "--eval-frames", "4"], "no calibration frame"),
        (["--onnx", model, "--precision", "fp32", "--calib", calib, "--out", model], "overwrite"),
        (["--onnx", model, "--precision", "fp16", "--calib", calib, "--backend", "tensorrt"], "TensorRT is not"),
    ]
    for args, message in cases:
        assert run_cli(*args) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and err[-1].startswith("build_engine: error:")


def test_calibration_set_of_another_size_is_refused(workspace, tmp_path, capsys):
    from lix_deploy.calib import write_calibration_set

    model, _ = workspace
    other = tmp_path / "calib32"
    write_calibration_set(other, dataset="synthetic", root=tiny_dataset_root(), split="train", num=2, size=(32, 64),
                          progress=False)
    assert run_cli("--onnx", model, "--precision", "int8", "--calib", other) == 2
    err = capsys.readouterr().err
    # the hint names options lix_deploy.calib really has (it has no --size)
    assert "python -m lix_deploy.calib --height 64 --width 128" in err and "--size" not in err
    from lix_deploy.calib import build_parser

    parsed = build_parser().parse_args(["--height", "64", "--width", "128", "--out", "x"])
    assert (parsed.height, parsed.width) == (64, 128)


def test_int8_activation_flavours(workspace, tmp_path):
    """uint8 (CPU default) gives asymmetric activation zero points; int8 (TensorRT's) gives zero ones."""
    import onnx
    from onnx import numpy_helper

    model, calib = workspace
    zero_points = {}
    for flavour in ("uint8", "int8"):
        out = tmp_path / f"{flavour}.onnx"
        assert run_cli("--onnx", model, "--precision", "int8", "--calib", calib, "--out", out,
                       "--backend", "onnxruntime", "--int8-activations", flavour, "--max-miou-drop", "100") == 0
        report = json.loads((tmp_path / f"{flavour}.onnx.build.json").read_text())
        assert report["quantization"]["activations"] == flavour
        graph = onnx.load(str(out)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        zero_points[flavour] = [inits[n.input[2]] for n in graph.node
                                if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
    assert zero_points["uint8"] and all(z.dtype == np.uint8 for z in zero_points["uint8"])
    assert zero_points["int8"] and all(z.dtype == np.int8 and not z.any() for z in zero_points["int8"])


# --------------------------------------------------------------------------- issue 15


@pytest.mark.parametrize("exclusions", [None, []], ids=["default-exclusions", "quantise-everything"])
def test_int8_artefact_feeds_float_logits_to_argmax(workspace, tmp_path, exclusions):
    """The final Resize and the ArgMax stay float: no ArgMax reads a DequantizeLinear output."""
    model, calib = workspace
    out = tmp_path / "tail.int8.onnx"
    extra = [] if exclusions is None else ["--exclude-nodes"]
    assert run_cli("--onnx", model, "--precision", "int8", "--calib", calib, "--out", out,
                   "--max-miou-drop", "100", *extra) == 0
    graph = onnx.load(str(out)).graph
    producers = {o: n for n in graph.node for o in n.output}
    argmaxes = [n for n in graph.node if n.op_type == "ArgMax"]
    assert argmaxes and ortb.argmax_reads_dequantized(onnx.load(str(out))) == []
    for argmax in argmaxes:
        resize = producers[argmax.input[0]]
        assert resize.op_type == "Resize"  # the logits come straight from the float Resize
        assert all(n.op_type != "QuantizeLinear" for n in graph.node if resize.output[0] in n.input)
    report = json.loads((tmp_path / "tail.int8.onnx.build.json").read_text())
    tail = report["quantization"]["float_tail"]
    assert {n.name for n in argmaxes} <= set(tail) and len(tail) == 2


def test_float_tail_walks_back_from_argmax_to_the_classifier():
    assert ortb.float_tail(toy_graph()) == ["up", "argmax"]
    assert ortb.argmax_reads_dequantized(toy_graph()) == []


def test_unlabelled_gate_decides_on_agreement_and_says_so(workspace, tmp_path, capsys):
    from lix_deploy.calib import write_calibration_set

    model, _ = workspace
    unlabelled = tmp_path / "nolabels"
    write_calibration_set(unlabelled, dataset="synthetic", root=tiny_dataset_root(), split="train", num=4,
                          size=TINY_SIZE, with_labels=False, progress=False)
    out = tmp_path / "u.int8.onnx"
    code = run_cli("--onnx", model, "--precision", "int8", "--calib", unlabelled, "--out", out,
                   "--min-pixel-agreement", "0", "--min-class-agreement", "0", "--max-miou-drop", "-50")
    err = capsys.readouterr().err
    assert code == 0, err  # -50 would refuse anything if the mIoU drop were (wrongly) gated without labels
    report = json.loads((tmp_path / "u.int8.onnx.build.json").read_text())
    gate = report["accuracy"]
    assert gate["basis"] == report["gate_basis"] == "agreement_with_fp32" and gate["reference"] == "fp32"
    assert gate["drop"] is None and gate["fp32_miou"] is None and gate["min_pixel_agreement"] == 0.0
    assert "basis: agreement with FP32" in err and "mIoU points" not in err
    # a strict pixel threshold refuses the same model, naming the threshold it missed (unless INT8 is exact)
    if gate["pixel_agreement"] < 1.0:
        assert run_cli("--onnx", model, "--precision", "int8", "--calib", unlabelled, "--out", out,
                       "--min-pixel-agreement", "100") == build_engine.EXIT_REFUSED
        report = json.loads((tmp_path / "u.int8.onnx.build.json").read_text())
        assert "of pixels (min 100.00 %)" in report["decision"] and "agreement with FP32" in report["decision"]
    assert run_cli("--onnx", model, "--precision", "int8", "--calib", unlabelled, "--out", out,
                   "--min-class-agreement", "120") == 2
    assert "--min-class-agreement 120 must be a percentage" in capsys.readouterr().err


def test_rejected_build_writes_the_fp32_fallback_at_out(workspace, tmp_path, capsys):
    model, calib = workspace
    out = tmp_path / "deploy" / "camera.int8.onnx"
    out.parent.mkdir()
    out.write_bytes(b"stale artefact from an earlier build")
    code = run_cli("--onnx", model, "--precision", "int8", "--calib", calib, "--out", out, "--max-miou-drop", "-101")
    assert code == build_engine.EXIT_REFUSED
    assert read_metadata(out).precision == "fp32"  # what the caller deploys is a working FP32 model
    from lix_deploy.runtime import Segmenter

    assert Segmenter(out).info.precision == "fp32"
    report = json.loads((out.parent / "camera.int8.onnx.build.json").read_text())
    assert report["artefact"] == str(out) and report["fallback"] == {
        "precision": "fp32", "path": str(out), "at_out": True, "rejected_precision": "int8"}
    assert report["decision"].startswith("rejected") and f"{out} is the FP32 fallback" in report["decision"]
    assert not model.with_name("student.fp32.onnx").exists()  # nothing written beside the source
    assert sorted(p.name for p in out.parent.iterdir()) == ["camera.int8.onnx", "camera.int8.onnx.build.json"]
