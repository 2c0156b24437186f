"""TensorRT build logic without TensorRT: version gate, flags, parser errors, profiles, timing cache,
engine cache keys and the inspector-JSON precision check, against a fake `tensorrt` module."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from lix_deploy.artifact import ArtifactInfo, read_metadata
from lix_deploy.builders import cache as engine_cache
from lix_deploy.builders import tensorrt_build as trtb
from lix_deploy.builders.inspect import (InspectionError, check_precision, normalise_dtype,
                                        parse_engine_information)
from lix_deploy.builders.onnxruntime_build import BuildError, BuildFailure
from lix_deploy.runtime.backends import tensorrt_common
from lix_deploy.runtime.backends.tensorrt_common import parse_trt_version

SHA = "ab" * 32


# --------------------------------------------------------------------------- inspector JSON samples


def trt10_layer(name, layer_type, dtype_in, dtype_out="FP32"):
    return {"Name": name, "LayerType": layer_type,
            "Inputs": [{"Name": f"{name}_in", "Location": "Device", "Dimensions": [1, 8, 64, 128],
                        "Format/Datatype": f"Row major linear {dtype_in}"}],
            "Outputs": [{"Name": f"{name}_out", "Location": "Device", "Dimensions": [1, 8, 64, 128],
                         "Format/Datatype": f"Row major linear {dtype_out}"}],
            "TacticValue": "0x1"}


def trt11_layer(name, layer_type, dtype_in, dtype_out="Float"):
    return {"Name": name, "LayerType": layer_type,
            "Inputs": [{"Name": f"{name}_in", "Dimensions": [1, 8, 64, 128], "DataType": dtype_in,
                        "Format": "Row major linear (kLINEAR)"}],
            "Outputs": [{"Name": f"{name}_out", "Dimensions": [1, 8, 64, 128], "DataType": dtype_out,
                         "Format": "Row major linear (kLINEAR)"}]}


def engine_json(dtype: str, version: int = 10) -> str:
    """A small engine: reformat, two convs, argmax (int output) in the given float type."""
    if version == 10:
        token = {"fp32": "FP32", "fp16": "FP16", "int8": "Int8"}[dtype]
        layers = [trt10_layer("reformat", "Reformat", "FP32", token), trt10_layer("conv1", "CaskConvolution", token),
                  trt10_layer("conv2", "CaskConvolution", token), trt10_layer("argmax", "TopK", "FP32", "Int32")]
        return json.dumps({"Layers": layers, "Bindings": ["image", "labels"]})
    name = {"fp32": "Float", "fp16": "Half", "int8": "Int8"}[dtype]
    layers = [trt11_layer("conv1", "Convolution", name), trt11_layer("conv2", "Convolution", name),
              trt11_layer("argmax", "TopK", "Float", "Int32")]
    return json.dumps({"Layers": layers, "I/O Tensors": [{"Name": "image", "IOMode": "Input", "DataType": "Float"}]})


@pytest.mark.parametrize("version", [10, 11])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_inspector_histogram_reads_both_json_shapes(version, dtype):
    summary = parse_engine_information(engine_json(dtype, version))
    assert summary.detailed
    assert summary.compute_histogram == {dtype: 2}
    assert check_precision(summary, dtype).passed


@pytest.mark.parametrize("version", [10, 11])
def test_fp16_requested_but_every_layer_fp32_fails(version):
    verdict = check_precision(parse_engine_information(engine_json("fp32", version)), "fp16")
    assert not verdict.passed and verdict.fraction == 0.0
    assert "fp16 was requested" in verdict.message and "fp32: 2" in verdict.message


def test_int8_requested_but_fp16_engine_fails_and_partial_int8_passes():
    assert not check_precision(parse_engine_information(engine_json("fp16")), "int8").passed
    layers = [trt10_layer("conv1", "CaskConvolution", "FP32"), trt10_layer("conv2", "CaskConvolution", "Int8"),
              trt10_layer("conv3", "CaskConvolution", "Int8")]
    summary = parse_engine_information({"Layers": layers})
    assert summary.compute_histogram == {"fp32": 1, "int8": 2}
    assert check_precision(summary, "int8").passed  # first conv kept in float on purpose
    assert not check_precision(summary, "int8", min_fraction=0.9).passed


def test_layer_names_only_is_unverifiable():
    summary = parse_engine_information(json.dumps({"Layers": ["conv1", "conv2"], "Bindings": ["image"]}))
    assert not summary.detailed
    verdict = check_precision(summary, "fp32")
    assert not verdict.passed and "ProfilingVerbosity.DETAILED" in verdict.message


def test_single_layer_object_and_malformed_json():
    assert parse_engine_information(json.dumps(trt11_layer("c", "Convolution", "Half"))).compute_histogram == {"fp16": 1}
    with pytest.raises(InspectionError, match="not JSON"):
        parse_engine_information("{nope")
    with pytest.raises(InspectionError, match="Layers"):
        parse_engine_information(json.dumps({"Bindings": []}))


@pytest.mark.parametrize("text, expected", [
    ("Half", "fp16"), ("Float", "fp32"), ("Int8", "int8"), ("BFloat16", "bf16"), ("kHALF", "fp16"),
    ("Row major linear FP32", "fp32"), ("Channel major FP16 format where channel % 8 == 0", "fp16"),
    ("Thirty-two wide channel vectorized row major Int8 format", "int8"), ("Int32", "int"), ("", None), (3, None),
])
def test_normalise_dtype(text, expected):
    assert normalise_dtype(text) == expected


# --------------------------------------------------------------------------- version gate


@pytest.mark.parametrize("text, expected", [("10.3.0.30", (10, 3, 0)), ("11.0.0", (11, 0, 0)),
                                            ("10.13.3.9+cuda12", (10, 13, 3)), ("10", (10, 0, 0))])
def test_parse_version(text, expected):
    assert parse_trt_version(text) == expected


def test_the_builder_reads_versions_with_the_runtimes_helpers():
    assert trtb.parse_trt_version is parse_trt_version and trtb.import_tensorrt is tensorrt_common.import_tensorrt
    assert trtb.STRONGLY_TYPED_FROM is tensorrt_common.STRONGLY_TYPED_FROM
    with pytest.raises(BuildError, match="TensorRT version"):
        trtb.plan_build("unknown", "fp32")


@pytest.mark.parametrize("version, precision, kwargs, strong, flags, transform", [
    ("10.3.0", "fp32", {}, False, (), "none"),
    ("10.3.0", "fp16", {}, False, ("FP16",), "none"),
    ("10.3.0", "int8", {}, False, ("FP16", "INT8"), "ort_int8"),
    ("10.3.0", "int8", {"have_modelopt": True}, False, ("FP16", "INT8"), "modelopt_int8"),
    ("10.3.0", "int8", {"onnx_has_qdq": True}, False, ("FP16", "INT8"), "none"),
    ("10.11.0", "fp16", {}, False, ("FP16",), "none"),
    ("10.12.0", "int8", {}, True, (), "ort_int8"),
    ("10.13.3", "fp16", {"have_modelopt": True}, True, (), "modelopt_fp16"),
    ("10.13.3", "fp16", {}, False, ("FP16",), "none"),  # 10.x still has the flag: weakly typed fallback
    ("11.0.0", "fp32", {}, True, (), "none"),
    ("11.0.0", "int8", {"have_modelopt": True}, True, (), "modelopt_int8"),
    ("11.1.0", "fp16", {"have_modelopt": True}, True, (), "modelopt_fp16"),
    ("11.1.0", "fp16", {"onnx_is_fp16": True}, True, (), "none"),
])
def test_plan_build_gates_on_version(version, precision, kwargs, strong, flags, transform):
    plan = trtb.plan_build(version, precision, **kwargs)
    assert (plan.strongly_typed, plan.builder_flags, plan.onnx_transform) == (strong, flags, transform)


def test_plan_build_errors():
    with pytest.raises(BuildError, match="ModelOpt"):
        trtb.plan_build("11.0.0", "fp16")  # no FP16 flag left and no AutoCast
    with pytest.raises(BuildError, match="too old"):
        trtb.plan_build("8.6.1", "fp16")
    with pytest.raises(BuildError, match="already quantised"):
        trtb.plan_build("10.3.0", "fp32", onnx_has_qdq=True)
    with pytest.raises(BuildError, match="not one of"):
        trtb.plan_build("10.3.0", "int4")


def test_resolve_profile():
    assert trtb.resolve_profile([1, 3, 64, 128]) == [[1, 3, 64, 128]] * 3
    assert trtb.resolve_profile([None, 3, 64, 128], max_batch=4) == [[1, 3, 64, 128], [1, 3, 64, 128], [4, 3, 64, 128]]
    assert trtb.resolve_profile([None, 3, None, None], max_batch=2, size=(32, 64))[2] == [2, 3, 32, 64]
    with pytest.raises(BuildError, match="dynamic height"):
        trtb.resolve_profile([1, 3, None, None])
    with pytest.raises(BuildError, match="min_batch"):
        trtb.resolve_profile([None, 3, 8, 8], min_batch=2, opt_batch=1, max_batch=4)


# --------------------------------------------------------------------------- engine cache keys


def key(**changes):
    fields = dict(trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", onnx_sha256=SHA,
                  precision="int8", input_shapes={"image": [[1, 3, 64, 128]] * 3})
    fields.update(changes)
    return engine_cache.EngineKey(**fields)


def test_cache_key_is_deterministic_and_sensitive_to_every_field():
    assert key().digest == key().digest and key().file_name("student") == key().file_name("student")
    name = key().file_name("student")
    assert name.startswith("student.int8.trt10.3.0.sm87.") and name.endswith(".engine")
    variants = [key(trt_version="10.13.3"), key(gpu_name="RTX 4090"), key(compute_capability="8.9"),
                key(onnx_sha256="cd" * 32), key(precision="fp16"), key(input_shapes={"image": [[1, 3, 64, 64]] * 3})]
    assert len({v.digest for v in variants} | {key().digest}) == len(variants) + 1
    assert engine_cache.EngineKey.from_dict(key().to_dict()) == key()


def test_cache_key_validation():
    with pytest.raises(ValueError, match="precision"):
        key(precision="int4")
    with pytest.raises(ValueError, match="sha256"):
        key(onnx_sha256="xyz")


def test_cache_decision_explains_mismatches(tmp_path):
    engine = tmp_path / "a.engine"
    assert not engine_cache.decide(engine, key()).reuse
    engine.write_bytes(b"x")
    decision = engine_cache.decide(engine, key())
    assert not decision.reuse and "no build key" in decision.message
    (tmp_path / "a.engine.json").write_text(json.dumps({"lix.engine_key": json.dumps(key().to_dict())}))
    assert engine_cache.decide(engine, key()).reuse
    decision = engine_cache.decide(engine, key(trt_version="10.13.3", compute_capability="8.9"))
    assert not decision.reuse
    assert "TensorRT version 10.3.0 -> 10.13.3" in decision.message and "compute capability 8.7 -> 8.9" in decision.message


# --------------------------------------------------------------------------- the build, against a fake tensorrt


class _Enum:
    def __init__(self, **members):
        self.__dict__.update(members)


class FakeTensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class FakeNetwork:
    def __init__(self, flags, input_shape):
        self.flags = flags
        self.inputs = [FakeTensor("image", input_shape)]
        self.num_inputs = 1

    def get_input(self, i):
        return self.inputs[i]


class FakeParserError:
    def __init__(self, desc, node, name, op):
        self._d, self._n, self._name, self._op = desc, node, name, op

    def desc(self):
        return self._d

    def node(self):
        return self._n

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op

    def code(self):
        return 8


class FakeTimingCache:
    def __init__(self, data):
        self.data = data

    def serialize(self):
        return b"timing-cache:" + (self.data or b"new")


class FakeConfig:
    def __init__(self, trt):
        self.trt = trt
        self.flags, self.profiles, self.pool = set(), [], {}
        self.profiling_verbosity = None
        self.cache = None

    def set_memory_pool_limit(self, pool, size):
        self.pool[pool] = size

    def set_flag(self, flag):
        self.flags.add(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, data):
        self.trt.state["cache_loaded"] = bytes(data)
        return FakeTimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = (low, opt, high)


def make_fake_trt(version="10.3.0", *, parse_errors=(), build_fails=False, input_shape=(1, 3, 64, 128),
                  strongly_typed_precision="fp32"):
    """A `tensorrt` stand-in: the engine's layer precision follows the builder flags (weakly typed) or
    `strongly_typed_precision` (what the ONNX would carry); inspection returns matching JSON."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.state = {}
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    trt.NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=1)
    trt.BuilderFlag = _Enum(FP16="FP16", INT8="INT8") if version.startswith("10.") else _Enum()
    trt.MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
    trt.ProfilingVerbosity = _Enum(DETAILED="DETAILED")
    trt.LayerInformationFormat = _Enum(JSON="JSON")

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.state["network_flags"] = flags
            return FakeNetwork(flags, input_shape)

        def create_builder_config(self):
            trt.state["config"] = FakeConfig(trt)
            return trt.state["config"]

        def create_optimization_profile(self):
            return FakeProfile()

        def build_serialized_network(self, network, config):
            if build_fails:
                return None
            if network.flags or version.startswith("11."):  # TRT 11: always strongly typed
                precision = strongly_typed_precision
            else:
                precision = "int8" if "INT8" in config.flags else "fp16" if "FP16" in config.flags else "fp32"
            trt.state["built_precision"] = precision
            return ("engine:" + precision).encode()

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = len(parse_errors)

        def parse_from_file(self, path):
            trt.state["parsed"] = path
            return not parse_errors

        def get_error(self, i):
            return FakeParserError(*parse_errors[i])

    class Engine:
        def __init__(self, data):
            self.precision = data.decode().split(":")[1]

        def create_engine_inspector(self):
            engine = self
            return types.SimpleNamespace(get_engine_information=lambda fmt: engine_json(
                engine.precision, 11 if version.startswith("11") else 10))

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(data)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def info():
    return ArtifactInfo(class_names=["road", "car"], palette=[[1, 2, 3], [4, 5, 6]], input_size=(64, 128),
                        mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], outputs=["labels"])


def build(tmp_path, trt, monkeypatch, plan, precision=None, **kwargs):
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx = tmp_path / "student.onnx"
    onnx.write_bytes(b"onnx")
    k = key(trt_version=trt.__version__, precision=precision or plan.precision)
    return trtb.build_tensorrt_engine(onnx, tmp_path / "out" / "student.engine", plan, k, info=info(), **kwargs)


def test_weakly_typed_fp16_build_writes_engine_sidecar_and_timing_cache(tmp_path, monkeypatch):
    trt = make_fake_trt("10.3.0")
    plan = trtb.plan_build("10.3.0", "fp16")
    cache_file = tmp_path / "timing.cache"
    result = build(tmp_path, trt, monkeypatch, plan, workspace_mb=512, timing_cache=cache_file)
    config = trt.state["config"]
    assert trt.state["network_flags"] == 0  # weakly typed, no EXPLICIT_BATCH
    assert config.flags == {"FP16"} and config.pool == {"WORKSPACE": 512 << 20}
    assert config.profiling_verbosity == "DETAILED" and config.profiles == []  # static input: no profile
    assert result.verdict.passed and result.summary.compute_histogram == {"fp16": 2}
    assert result.path.read_bytes() == b"engine:fp16"
    meta = read_metadata(result.path)  # the runtime reads the sidecar through artifact.read_metadata
    assert meta.precision == "fp16" and meta.class_names == ["road", "car"]
    assert json.loads(meta.extra["lix.engine_key"])["trt_version"] == "10.3.0"
    assert engine_cache.decide(result.path, key(precision="fp16")).reuse
    assert cache_file.read_bytes() == b"timing-cache:new"
    build(tmp_path, trt, monkeypatch, plan, timing_cache=cache_file)
    assert trt.state["cache_loaded"] == b"timing-cache:new"  # reused on the next build
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_strongly_typed_network_flag_on_new_tensorrt(tmp_path, monkeypatch):
    trt = make_fake_trt("10.13.3", strongly_typed_precision="int8")
    result = build(tmp_path, trt, monkeypatch, trtb.plan_build("10.13.3", "int8", onnx_has_qdq=True))
    assert trt.state["network_flags"] == 1 << 1 and trt.state["config"].flags == set()
    assert result.verdict.passed and trt.state["built_precision"] == "int8"


def test_trt11_builds_strongly_typed_without_the_deprecated_flag(tmp_path, monkeypatch):
    trt = make_fake_trt("11.0.0", strongly_typed_precision="int8")
    del trt.NetworkDefinitionCreationFlag  # deprecated in 11 (ignored): it must not be needed at all
    result = build(tmp_path, trt, monkeypatch, trtb.plan_build("11.0.0", "int8", onnx_has_qdq=True))
    assert trt.state["network_flags"] == 0 and trt.state["config"].flags == set()
    assert result.verdict.passed and trt.state["built_precision"] == "int8"
    plan = trtb.plan_build("10.12.0", "int8", onnx_has_qdq=True)
    assert trtb.network_flags(make_fake_trt("10.12.0"), plan) == 1 << 1
    no_flag = make_fake_trt("10.12.0")
    del no_flag.NetworkDefinitionCreationFlag
    with pytest.raises(BuildError, match="no NetworkDefinitionCreationFlag.STRONGLY_TYPED"):
        trtb.network_flags(no_flag, plan)
    assert trtb.network_flags(no_flag, trtb.plan_build("10.3.0", "fp16")) == 0  # weakly typed: no flag


def test_fp32_onnx_in_fp16_mode_on_trt11_fails_and_writes_nothing(tmp_path, monkeypatch):
    trt = make_fake_trt("11.0.0", strongly_typed_precision="fp32")
    # what a naive build does on TRT 11: strongly typed FP32 ONNX, "fp16" requested
    plan = trtb.BuildPlan("11.0.0", "fp16", True, (), "none")
    with pytest.raises(BuildFailure, match="fp16 was requested but 0%"):
        build(tmp_path, trt, monkeypatch, plan)
    assert not (tmp_path / "out" / "student.engine").exists()
    assert not (tmp_path / "out" / "student.engine.json").exists()


def test_every_parser_error_is_printed_with_its_node(tmp_path, monkeypatch):
    errors = [("Unsupported op", 7, "node_GridSample_7", "GridSample"), ("Invalid weights", 9, "node_Conv_9", "Conv")]
    trt = make_fake_trt(parse_errors=errors)
    lines = []
    with pytest.raises(BuildFailure, match="2 error"):
        build(tmp_path, trt, monkeypatch, trtb.plan_build("10.3.0", "fp32"), log=lines.append)
    assert len(lines) == 2
    assert "Unsupported op" in lines[0] and "node_GridSample_7" in lines[0] and "GridSample" in lines[0]
    assert "node_Conv_9" in lines[1]


def test_failed_build_is_reported(tmp_path, monkeypatch):
    with pytest.raises(BuildFailure, match="failed to build"):
        build(tmp_path, make_fake_trt(build_fails=True), monkeypatch, trtb.plan_build("10.3.0", "fp32"))


def test_dynamic_batch_gets_an_optimisation_profile(tmp_path, monkeypatch):
    trt = make_fake_trt(input_shape=(-1, 3, 64, 128))
    plan = trtb.plan_build("10.3.0", "fp32")
    with pytest.raises(BuildError, match="optimisation profile"):
        build(tmp_path, trt, monkeypatch, plan)
    shapes = trtb.resolve_profile([None, 3, 64, 128], max_batch=4)
    build(tmp_path, trt, monkeypatch, plan, profile={"image": shapes})
    (profile,) = trt.state["config"].profiles
    assert profile.shapes["image"] == ((1, 3, 64, 128), (1, 3, 64, 128), (4, 3, 64, 128))


def test_build_candidate_builds_then_reuses_the_cached_engine(tmp_path, monkeypatch):
    """build_engine's interface: the plan, the profile from the ONNX input, the engine cache, the report."""
    pytest.importorskip("onnx", reason="reading the ONNX input needs the [deploy] extra")
    import numpy as np
    from runtime_fixtures import SIZE, make_tiny_onnx

    from lix_deploy.builders.candidate import CandidateRequest
    from lix_deploy.builders.report import BuildReport, Stopwatch

    trt = make_fake_trt("10.3.0", input_shape=(1, 3) + SIZE)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trtb, "probe_gpu", lambda: ("Fake Orin", "8.7"))
    monkeypatch.setattr(trtb, "modelopt_available", lambda: False)
    onnx = make_tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "work").mkdir()
    request = CandidateRequest(onnx=onnx, target=tmp_path / "work" / "tiny.fp16.engine", precision="fp16",
                               info=read_metadata(onnx), calibration=np.zeros((0, 3) + SIZE, np.float32),
                               work=tmp_path / "work", cache_dir=tmp_path / "cache")
    reports = []
    for _ in range(2):
        watch, report = Stopwatch(), BuildReport(backend="tensorrt", precision="fp16", onnx=str(onnx), onnx_sha256="")
        engine = trtb.build_candidate(request, watch, report)
        reports.append((engine, watch.timings, report.extra))
    (first, built_timings, built), (second, reused_timings, reused) = reports
    assert first == second and first.parent == tmp_path / "cache" and first.read_bytes() == b"engine:fp16"
    assert built["plan"]["builder_flags"] == ("FP16",)
    assert built["engine_key"]["input_shapes"] == {"image": [[1, 3, *SIZE]] * 3}
    assert not built["cache"]["reused"] and built["inspection"]["verdict"]["passed"]
    assert reused["cache"]["reused"] and "inspection" not in reused
    assert set(built_timings) == {"prepare_onnx", "tensorrt_build"} and set(reused_timings) == {"prepare_onnx"}


def test_missing_tensorrt_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    with pytest.raises(BuildError, match="TensorRT is not importable.*--backend onnxruntime.*import of tensorrt"):
        trtb.require_tensorrt()


def test_no_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setattr(trtb.shutil, "which", lambda name: None)
    with pytest.raises(BuildError, match="no CUDA GPU"):
        trtb.probe_gpu()


def test_probe_gpu_reads_cuda_python(monkeypatch):
    props = types.SimpleNamespace(name=b"Orin\x00", major=8, minor=7)
    runtime = types.SimpleNamespace(cudaGetDeviceProperties=lambda i: (0, props))
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    assert trtb.probe_gpu() == ("Orin", "8.7")


@pytest.mark.gpu
def test_real_tensorrt_fp16_build(tmp_path):
    """On a GPU machine with TensorRT: a real FP16 build whose inspection shows FP16 layers."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (CPU CI cannot install it)")
    try:
        gpu, capability = trtb.probe_gpu()
    except BuildError as err:
        pytest.skip(str(err))
    from deploy_fixtures import tiny_onnx

    onnx = tiny_onnx(tmp_path)
    have_modelopt = trtb.modelopt_available()
    try:
        plan = trtb.plan_build(trt.__version__, "fp16", have_modelopt=have_modelopt)
    except BuildError as err:
        pytest.skip(str(err))
    parsed, _ = trtb.prepare_onnx(plan, onnx, tmp_path, None, None)
    k = engine_cache.EngineKey(trt.__version__, gpu, capability, SHA, "fp16", {"image": [[1, 3, 64, 128]] * 3})
    result = trtb.build_tensorrt_engine(parsed, tmp_path / "s.engine", plan, k, info=read_metadata(onnx))
    assert result.verdict.passed and result.summary.histogram.get("fp16", 0) > 0


# --------------------------------------------------------------------------- INT8 preparation (issue 15)


def _regex_named_onnx(path):
    """stem Conv -> head Conv (a name full of regex metacharacters) -> Resize -> ArgMax, plus a decoy node that
    the unescaped name '/head/Conv.1' would match as a pattern."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.1, np.float32), "w")
    w2 = numpy_helper.from_array(np.full((2, 2, 1, 1), 0.1, np.float32), "w2")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["s"], name="/stem/Conv"),
        helper.make_node("Relu", ["s"], ["r"], name="/head/ConvX1"),  # matched by the pattern /head/Conv.1
        helper.make_node("Conv", ["r", "w2"], ["logits_small"], name="/head/Conv.1"),
        helper.make_node("Resize", ["logits_small", "", "scales"], ["logits"], name="/up/Resize", mode="linear"),
        helper.make_node("ArgMax", ["logits"], ["labels"], name="/ArgMax", axis=1, keepdims=0),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 16, 16])],
                              initializer=[w, w2, scales])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _fake_modelopt(monkeypatch, quantize):
    quantization = types.ModuleType("modelopt.onnx.quantization")
    quantization.quantize = quantize
    onnx_pkg = types.ModuleType("modelopt.onnx")
    onnx_pkg.quantization = quantization
    root = types.ModuleType("modelopt")
    root.onnx = onnx_pkg
    for name, module in (("modelopt", root), ("modelopt.onnx", onnx_pkg), ("modelopt.onnx.quantization", quantization)):
        monkeypatch.setitem(sys.modules, name, module)


def test_modelopt_gets_anchored_escaped_exclusions_and_the_calibration_method(tmp_path, monkeypatch):
    import re
    import shutil

    import numpy as np

    pytest.importorskip("onnx")
    calls = []

    def quantize(**kwargs):
        calls.append(kwargs)
        shutil.copyfile(kwargs["onnx_path"], kwargs["output_path"])

    _fake_modelopt(monkeypatch, quantize)
    source = _regex_named_onnx(tmp_path / "m.onnx")
    plan = trtb.plan_build("10.13.3", "int8", have_modelopt=True)
    frames = np.zeros((2, 3, 8, 8), np.float32)
    details = {}
    _, excluded = trtb.prepare_onnx(plan, source, tmp_path, frames, None, calibration_method="minmax",
                                    details=details)
    assert excluded == ["/stem/Conv", "/head/Conv.1"]
    (call,) = calls
    assert call["calibration_method"] == "max" and details["calibration_method"] == "minmax"
    names = ["/stem/Conv", "/head/ConvX1", "/head/Conv.1", "/up/Resize", "/ArgMax"]
    matched = [n for n in names if any(re.match(p, n) for p in call["nodes_to_exclude"])]
    assert matched == ["/stem/Conv", "/head/Conv.1", "/up/Resize", "/ArgMax"]  # never the decoy
    assert details["float_tail"] == ["/up/Resize", "/ArgMax"]
    # no method given: ModelOpt's entropy; a method ModelOpt lacks is a clear error, not a silent default
    trtb.prepare_onnx(plan, source, tmp_path, frames, None)
    assert calls[-1]["calibration_method"] == "entropy"
    with pytest.raises(BuildError, match="ModelOpt calibrates with minmax or entropy"):
        trtb.prepare_onnx(plan, source, tmp_path, frames, None, calibration_method="percentile")
    with pytest.raises(BuildError, match="no node named 'nope'"):
        trtb.prepare_onnx(plan, source, tmp_path, frames, ["nope"])


def test_modelopt_failure_is_a_build_failure_naming_the_step(tmp_path, monkeypatch):
    import numpy as np

    pytest.importorskip("onnx")

    def quantize(**kwargs):
        raise RuntimeError("calibration exploded")

    _fake_modelopt(monkeypatch, quantize)
    source = _regex_named_onnx(tmp_path / "m.onnx")
    plan = trtb.plan_build("11.0.0", "int8", have_modelopt=True)
    with pytest.raises(BuildFailure, match=r"ModelOpt INT8 quantisation of .*m.onnx failed \(RuntimeError: "
                                           r"calibration exploded\)") as caught:
        trtb.prepare_onnx(plan, source, tmp_path, np.zeros((2, 3, 8, 8), np.float32), None)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_calibration_method_reaches_onnxruntime_without_modelopt(tmp_path, monkeypatch):
    import numpy as np

    seen = {}

    def fake_quantize(onnx_path, out_path, inputs, exclude=None, calibration_method="minmax", per_channel=True,
                      activations="int8"):
        seen.update(method=calibration_method, activations=activations)
        from lix_deploy.builders.onnxruntime_build import QuantizeResult

        return QuantizeResult(Path(out_path), [], float_tail=["up", "argmax"])

    monkeypatch.setattr(trtb, "quantize_int8", fake_quantize)
    plan = trtb.plan_build("10.3.0", "int8")
    assert plan.onnx_transform == "ort_int8"
    details = {}
    trtb.prepare_onnx(plan, tmp_path / "m.onnx", tmp_path, np.zeros((2, 3, 8, 8), np.float32), None,
                      calibration_method="entropy", details=details)
    assert seen == {"method": "entropy", "activations": "int8"} and details["calibration_method"] == "entropy"
    trtb.prepare_onnx(plan, tmp_path / "m.onnx", tmp_path, np.zeros((2, 3, 8, 8), np.float32), None)
    assert seen["method"] == "minmax"


def test_onnxruntime_quantiser_errors_are_build_failures(tmp_path, monkeypatch):
    import numpy as np

    pytest.importorskip("onnxruntime")
    import onnxruntime.quantization as ortq

    from lix_deploy.builders import onnxruntime_build as ortb

    def broken(*args, **kwargs):
        raise ValueError("histogram has no bins")

    monkeypatch.setattr(ortq, "quantize_static", broken)
    source = _regex_named_onnx(tmp_path / "m.onnx")
    with pytest.raises(BuildFailure, match=r"ONNX Runtime INT8 quantisation .*m.onnx failed \(ValueError: "
                                           r"histogram has no bins\)"):
        ortb.quantize_int8(source, tmp_path / "q.onnx", np.zeros((2, 3, 8, 8), np.float32))
