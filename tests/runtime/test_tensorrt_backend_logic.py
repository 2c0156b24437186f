"""TensorRT backend logic without TensorRT: a fake `tensorrt` module and a fake CUDA memory.

The fake engine computes the tiny test model (runtime_fixtures) on the fake device memory, so
these tests check real data flow: buffers allocated once per thread, one context and stream
per thread, dynamic shapes, sidecar / version gating and the error messages. Tests marked
`gpu` use the real TensorRT and cuda-python and skip (with the reason) where they are absent.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lix_deploy.artifact import ArtifactInfo, write_sidecar
from lix_deploy.runtime import Segmenter
from lix_deploy.runtime.backends import cuda_memory, tensorrt_backend
from lix_deploy.runtime.backends.base import BackendUnavailableError, EngineMismatchError
from lix_deploy.runtime.backends.cuda_memory import Stream, import_cudart
from lix_deploy.runtime.backends.tensorrt_backend import (
    TensorRTBackend, check_engine_compatibility, check_runtime_version, read_engine_key,
)
from lix_deploy.runtime.backends.tensorrt_common import TRTVersion, import_tensorrt, parse_trt_version, typing_mode
from runtime_fixtures import CLASS_NAMES, PALETTE, SIZE, expected_labels, scene

ENGINE_BYTES = b"fake-serialized-engine"


# ---- fakes ----------------------------------------------------------------------------------
class FakeMemory:
    """DeviceMemory over bytearrays; records which thread made each stream and what was allocated."""

    device_id = 0

    def __init__(self, compute_capability: str = "8.7"):
        self.cc = compute_capability
        self.buffers: dict[int, bytearray] = {}
        self.freed: list[int] = []
        self.streams: list[tuple[Stream, str]] = []
        self.destroyed: list[Stream] = []
        self.mallocs = 0
        self.active = threading.local()
        self._lock = threading.Lock()
        self._next = 0x1000

    @contextlib.contextmanager
    def activate(self):
        self.active.depth = getattr(self.active, "depth", 0) + 1
        try:
            yield
        finally:
            self.active.depth -= 1

    def is_active(self) -> bool:
        return getattr(self.active, "depth", 0) > 0

    def device_name(self):
        return "Fake Orin"

    def compute_capability(self):
        return self.cc

    def malloc(self, nbytes):
        assert self.is_active(), "CUDA work outside activate()"
        with self._lock:
            pointer, self._next = self._next, self._next + nbytes + 256
            self.buffers[pointer] = bytearray(nbytes)
            self.mallocs += 1
        return pointer

    def free(self, pointer):
        self.freed.append(pointer)
        del self.buffers[pointer]

    def create_stream(self):
        with self._lock:
            stream = Stream(handle=len(self.streams) + 1, raw=object())
            self.streams.append((stream, threading.current_thread().name))
        return stream

    def destroy_stream(self, stream):
        self.destroyed.append(stream)

    def synchronize(self, stream):
        pass

    def copy_to_device(self, pointer, host, stream):
        assert self.is_active()
        self.buffers[pointer][: host.nbytes] = host.tobytes()

    def copy_to_host(self, host, pointer, stream):
        assert self.is_active()
        np.copyto(host, np.frombuffer(bytes(self.buffers[pointer][: host.nbytes]), host.dtype).reshape(host.shape))


class FakeContext:
    def __init__(self, engine):
        self.engine, self.addresses, self.shapes = engine, {}, {}
        self.thread = threading.current_thread().name
        self.set_shape_calls = 0

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def set_input_shape(self, name, shape):
        self.set_shape_calls += 1
        low, _, high = self.engine.profile
        if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        batch = self.shapes.get("image", self.engine.shapes["image"])[0]
        shape = self.engine.shapes[name]
        return (batch,) + shape[1:] if shape[0] < 0 else shape

    def execute_async_v3(self, stream_handle):
        # an execution context must only ever run in the thread that owns it
        assert threading.current_thread().name == self.thread, "context shared between threads"
        memory = self.engine.memory
        shape = self.get_tensor_shape("image")
        dtype = np.dtype(self.engine.dtypes["image"])  # what the engine was built to read, as TensorRT would
        image = np.frombuffer(bytes(memory.buffers[self.addresses["image"]][: int(np.prod(shape)) * dtype.itemsize]),
                              dtype).reshape(shape).astype(np.float32)
        labels = expected_labels(image.transpose(0, 2, 3, 1))
        memory.buffers[self.addresses["labels"]][: labels.nbytes] = labels.tobytes()
        return True


class FakeEngine:
    def __init__(self, memory, batch, dtypes=None):
        self.memory = memory
        self.shapes = {"image": (batch, 3) + SIZE, "labels": (batch,) + SIZE}
        self.dtypes = {"image": np.float32, "labels": np.uint8, **(dtypes or {})}
        self.profile = ((1, 3) + SIZE, (1, 3) + SIZE, (4, 3) + SIZE)
        self.contexts: list[FakeContext] = []

    num_io_tensors = 2

    def get_tensor_name(self, index):
        return ("image", "labels")[index]

    def get_tensor_mode(self, name):
        return "INPUT" if name == "image" else "OUTPUT"

    def get_tensor_shape(self, name):
        return self.shapes[name]

    def get_tensor_dtype(self, name):
        return self.dtypes[name]

    def get_tensor_profile_shape(self, name, profile):
        return self.profile

    def create_execution_context(self):
        context = FakeContext(self)
        self.contexts.append(context)
        return context


class FakeBF16:
    """A TensorRT dtype with no numpy equivalent (trt.nptype raises TypeError for it)."""

    def __str__(self):
        return "DataType.BF16"


def _fake_nptype(dtype):
    if isinstance(dtype, FakeBF16):
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return dtype


def make_fake_trt(memory, version="10.3.0.26", batch=1, dtypes=None):
    """A stand-in for the `tensorrt` module with just the TensorRT 10 names the backend uses."""
    state = {"deserialized": 0, "engine": None}

    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            self.severity = severity

    class Runtime:
        def __init__(self, logger):
            assert memory.is_active(), "deserialize outside activate()"

        def deserialize_cuda_engine(self, data):
            state["deserialized"] += 1
            if data != ENGINE_BYTES:
                return None  # what TensorRT does for an engine from another version / GPU
            state["engine"] = FakeEngine(memory, batch, dtypes)
            return state["engine"]

    module = types.SimpleNamespace(__version__=version, Logger=Logger, Runtime=Runtime,
                                   TensorIOMode=types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
                                   nptype=_fake_nptype)
    module.state = state
    return module


def write_engine(tmp_path, trt_version="10.3.0.26", cc="8.7", data=ENGINE_BYTES, dynamic=False):
    path = tmp_path / "tiny.engine"
    path.write_bytes(data)
    info = ArtifactInfo(class_names=CLASS_NAMES, palette=PALETTE, input_size=SIZE, mean=[0, 0, 0], std=[1, 1, 1],
                        outputs=["labels"], dynamic_batch=dynamic)
    sidecar = write_sidecar(path, info)
    props = json.loads(sidecar.read_text())
    props["lix.engine_key"] = {"trt_version": trt_version, "gpu_name": "Fake Orin", "compute_capability": cc}
    sidecar.write_text(json.dumps(props))
    return path


def _batch(*images):
    from lix_deploy.runtime import to_model_input

    return np.concatenate([to_model_input(image, "rgb8", SIZE) for image in images])


# ---- versions -------------------------------------------------------------------------------
def test_versions_parse_and_gate_the_typing_mode():
    assert parse_trt_version("10.3.0.26") == TRTVersion(10, 3, 0)
    assert parse_trt_version("11.0") == TRTVersion(11, 0, 0)
    assert str(parse_trt_version(" 10.13.3.9 ")) == "10.13.3"
    assert parse_trt_version("10.11.0") < parse_trt_version("10.12.0") < parse_trt_version("11.0.0")
    assert typing_mode("10.3.0") == "weakly-typed" and typing_mode("10.11.1") == "weakly-typed"
    assert typing_mode("10.12.0") == typing_mode("10.13.3") == typing_mode("11.1.0") == "strongly-typed"
    with pytest.raises(ValueError, match="not a TensorRT version"):
        parse_trt_version("ten")
    with pytest.raises(ValueError, match="needs TensorRT >= 10"):
        typing_mode("8.6.1")
    with pytest.raises(BackendUnavailableError, match="TensorRT 8.6.1 is installed.*upgrade to TensorRT >= 10"):
        check_runtime_version("8.6.1.6")


# ---- sidecar checks -------------------------------------------------------------------------
def test_engine_key_is_read_from_the_sidecar(tmp_path):
    path = write_engine(tmp_path)
    assert read_engine_key(path) == {"trt_version": "10.3.0.26", "gpu_name": "Fake Orin", "compute_capability": "8.7"}
    sidecar = tmp_path / "tiny.engine.json"
    sidecar.write_text(json.dumps({"lix.engine_key": json.dumps({"trt_version": "11.0.0"})}))
    assert read_engine_key(path) == {"trt_version": "11.0.0"}
    sidecar.write_text(json.dumps({"trt_version": "10.13.0", "compute_capability": "9.0"}))
    assert read_engine_key(path) == {"trt_version": "10.13.0", "compute_capability": "9.0"}
    sidecar.unlink()
    assert read_engine_key(path) is None


def test_engine_for_another_tensorrt_or_gpu_is_refused_with_a_rebuild_hint():
    key = {"trt_version": "10.3.0.26", "gpu_name": "Orin", "compute_capability": "8.7"}
    assert check_engine_compatibility(key, "10.3.0.30", "8.7") == []  # build numbers do not matter
    with pytest.raises(EngineMismatchError, match="built with TensorRT 10.3.0.26, this machine has TensorRT 10.13.3"
                                                  ".*lix_deploy.build_engine"):
        check_engine_compatibility(key, "10.13.3", "8.7", "x.engine")
    with pytest.raises(EngineMismatchError, match=r"compute capability 8.7 \(Orin\), this GPU is 8.6"):
        check_engine_compatibility(key, "10.3.0", "8.6")
    assert "not checked" in check_engine_compatibility(None, "10.3.0", "8.7")[0]


def test_mismatched_sidecar_stops_before_tensorrt_deserializes(tmp_path):
    memory = FakeMemory(compute_capability="8.6")
    trt = make_fake_trt(memory)
    with pytest.raises(EngineMismatchError, match="this GPU is 8.6"):
        TensorRTBackend(write_engine(tmp_path, cc="8.7"), trt=trt, memory=memory)
    assert trt.state["deserialized"] == 0


def test_engine_tensorrt_cannot_deserialize_gives_a_clear_error(tmp_path):
    memory = FakeMemory()
    with pytest.raises(EngineMismatchError, match="could not deserialize.*rebuild it on this machine"):
        TensorRTBackend(write_engine(tmp_path, data=b"garbage"), trt=make_fake_trt(memory), memory=memory)


# ---- missing modules ------------------------------------------------------------------------
def test_missing_tensorrt_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(BackendUnavailableError, match="needs the `tensorrt` Python package") as caught:
        import_tensorrt()
    assert caught.value.package == "tensorrt"


def test_missing_cuda_python_names_the_pip_package(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailableError, match="needs the `cuda-python` Python package.*pip install cuda-"):
        import_cudart()


def test_segmenter_on_an_engine_without_tensorrt_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):  # neither is installed
        monkeypatch.setitem(sys.modules, name, None)
    engine = write_engine(tmp_path)
    with pytest.raises(BackendUnavailableError, match="tensorrt") as caught:
        Segmenter(engine)
    # TensorRT is what the engine needs first: the message names it and the file, not cuda-python
    assert caught.value.package == "tensorrt" and f"{engine} is a TensorRT engine" in str(caught.value)
    assert "cuda-python" not in str(caught.value)


# ---- data flow, buffers and threads --------------------------------------------------------
def test_inference_allocates_buffers_once_and_matches_the_model(tmp_path):
    memory = FakeMemory()
    backend = TensorRTBackend(write_engine(tmp_path), trt=make_fake_trt(memory), memory=memory)
    assert backend.input_name == "image" and backend.output_names == ("labels",)
    assert backend.input_hw == SIZE and backend.max_batch == 1 and not backend.dynamic_batch
    for seed in range(3):
        image = np.random.default_rng(seed).integers(0, 256, SIZE + (3,), dtype=np.uint8)
        out = backend.infer(_batch(image))
        np.testing.assert_array_equal(out.labels[0], expected_labels(image))
    assert memory.mallocs == 2 and len(memory.streams) == 1 and backend.thread_count == 1
    assert backend.describe()["typing"] == "weakly-typed"
    backend.close()
    assert sorted(memory.freed) == sorted(set(memory.freed)) and len(memory.freed) == 2 and memory.buffers == {}
    assert len(memory.destroyed) == 1
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer(_batch(scene(*SIZE)))


def test_fp16_input_engine_is_fed_float16_not_float32_bytes(tmp_path):
    """Issue 15: the engine's input dtype is read (get_tensor_dtype) and the batch converted to it."""
    memory = FakeMemory()
    backend = TensorRTBackend(write_engine(tmp_path), trt=make_fake_trt(memory, dtypes={"image": np.float16}),
                              memory=memory)
    assert backend.describe()["input_dtype"] == "float16"
    for seed in range(2):
        image = np.random.default_rng(seed).integers(0, 256, SIZE + (3,), dtype=np.uint8)
        np.testing.assert_array_equal(backend.infer(_batch(image)).labels[0], expected_labels(image))
    sizes = sorted(len(buffer) for buffer in memory.buffers.values())
    assert sizes == sorted([int(np.prod(SIZE)), 3 * int(np.prod(SIZE)) * 2])  # uint8 labels, float16 image
    assert memory.mallocs == 2  # still allocated once
    backend.close()


@pytest.mark.parametrize("dtypes, message", [
    ({"image": np.int8}, "input 'image' is int8"),
    ({"image": FakeBF16()}, "tensor 'image' is DataType.BF16, which this runtime cannot feed"),
    ({"labels": np.float32}, "output 'labels' is float32, expected integer class ids"),
])
def test_engine_dtypes_the_runtime_cannot_handle_are_refused(tmp_path, dtypes, message):
    from lix_deploy.artifact import ArtifactError

    memory = FakeMemory()
    path = write_engine(tmp_path)
    with pytest.raises(ArtifactError, match=message) as caught:
        TensorRTBackend(path, trt=make_fake_trt(memory, dtypes=dtypes), memory=memory)
    assert str(path) in str(caught.value) and "lix_deploy.build_engine" in str(caught.value)


def test_each_thread_gets_its_own_context_stream_and_buffers(tmp_path):
    memory = FakeMemory()
    trt = make_fake_trt(memory)
    backend = TensorRTBackend(write_engine(tmp_path), trt=trt, memory=memory)
    images = [np.random.default_rng(s).integers(0, 256, SIZE + (3,), dtype=np.uint8) for s in range(6)]
    start = threading.Barrier(2)

    def work(order):
        start.wait(timeout=30)
        return [(i, backend.infer(_batch(images[i])).labels[0]) for _ in range(3) for i in order]

    with ThreadPoolExecutor(2, thread_name_prefix="infer") as pool:
        results = [f.result(timeout=60) for f in [pool.submit(work, range(6)), pool.submit(work, range(5, -1, -1))]]
    for output in results:
        for index, labels in output:
            np.testing.assert_array_equal(labels, expected_labels(images[index]))
    contexts = trt.state["engine"].contexts
    assert len(contexts) == 2 and len({c.thread for c in contexts}) == 2
    assert sorted(name for _, name in memory.streams) == sorted(c.thread for c in contexts)
    assert memory.mallocs == 4 and backend.thread_count == 2  # 2 tensors x 2 threads, once each
    backend.close()
    assert memory.buffers == {} and len(memory.destroyed) == 2


def test_dynamic_batch_sets_the_input_shape_only_when_it_changes(tmp_path):
    memory = FakeMemory()
    trt = make_fake_trt(memory, version="10.13.3", batch=-1)
    backend = TensorRTBackend(write_engine(tmp_path, trt_version="10.13.3", dynamic=True), trt=trt, memory=memory)
    assert backend.dynamic_batch and backend.max_batch == 4
    images = [np.random.default_rng(s).integers(0, 256, SIZE + (3,), dtype=np.uint8) for s in range(3)]
    for count in (2, 2, 3, 1):
        out = backend.infer(_batch(*images[:count]))
        assert out.labels.shape == (count,) + SIZE
        np.testing.assert_array_equal(out.labels, expected_labels(np.stack(images[:count])))
    assert trt.state["engine"].contexts[0].set_shape_calls == 3
    assert memory.mallocs == 2  # sized for the profile's max batch once
    with pytest.raises(ValueError, match="batch size 5 is outside 1..4"):
        backend.infer(_batch(*(images + images[:2])))


def test_segmenter_runs_an_engine_through_the_tensorrt_backend(tmp_path, monkeypatch):
    memory = FakeMemory()
    monkeypatch.setattr(tensorrt_backend, "import_tensorrt", lambda engine_path=None: make_fake_trt(memory))
    monkeypatch.setattr(cuda_memory, "load_device_memory", lambda device_id, library: memory)
    seg = Segmenter(write_engine(tmp_path))
    assert seg.backend_name == "tensorrt" and seg.info.class_names == CLASS_NAMES
    image = scene()
    np.testing.assert_array_equal(seg.segment(image, "rgb8"), expected_labels(image))
    np.testing.assert_array_equal(seg.segment(np.ascontiguousarray(image[:, :, ::-1]), "bgr8"), expected_labels(image))
    assert seg.describe()["device"] == "Fake Orin"
    seg.close()


def test_cuda_runtime_wrapper_checks_every_call():
    class FakeCudart:
        class cudaError_t:
            cudaSuccess = 0

        @staticmethod
        def cudaGetDeviceCount():
            return (35, 0)  # cudaErrorInsufficientDriver

        @staticmethod
        def cudaGetErrorString(error):
            return (0, b"CUDA driver version is insufficient for CUDA runtime version")

    with pytest.raises(cuda_memory.CudaError, match="cudaGetDeviceCount failed: CUDA driver version is insufficient"):
        cuda_memory.CudaRuntimeMemory(0, cudart=FakeCudart)


# ---- real TensorRT / GPU ------------------------------------------------------------------------
def _real_cuda():
    try:
        cudart = import_cudart()
    except BackendUnavailableError as err:
        pytest.skip(f"cuda-python is not installed ({err})")
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess or count < 1:
        pytest.skip("no CUDA GPU on this machine")
    return cuda_memory.CudaRuntimeMemory(0)


@pytest.mark.gpu
def test_cuda_python_memory_round_trip_on_a_real_gpu():
    memory = _real_cuda()
    host = np.arange(1000, dtype=np.float32)
    back = np.zeros_like(host)
    with memory.activate():
        pointer, stream = memory.malloc(host.nbytes), memory.create_stream()
        assert isinstance(stream.handle, int)
        memory.copy_to_device(pointer, host, stream)
        memory.copy_to_host(back, pointer, stream)
        memory.synchronize(stream)
        memory.free(pointer)
        memory.destroy_stream(stream)
    np.testing.assert_array_equal(back, host)
    assert memory.compute_capability().count(".") == 1 and memory.device_name()


@pytest.mark.gpu
def test_real_tensorrt_engine_matches_onnxruntime(tmp_path):
    try:
        trt = import_tensorrt()
    except BackendUnavailableError as err:
        pytest.skip(f"TensorRT is not installed ({err})")
    memory = _real_cuda()
    pytest.importorskip("onnx", reason="building the tiny test model needs the [deploy] extra")
    from runtime_fixtures import make_tiny_onnx

    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, builder.logger)
    assert parser.parse(onnx_path.read_bytes()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    serialized = builder.build_serialized_network(network, builder.create_builder_config())
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(bytes(serialized))
    info = ArtifactInfo(class_names=CLASS_NAMES, palette=PALETTE, input_size=SIZE, mean=[0, 0, 0], std=[1, 1, 1],
                        outputs=["labels"])
    sidecar = write_sidecar(engine, info)
    props = json.loads(sidecar.read_text())
    props["lix.engine_key"] = {"trt_version": trt.__version__, "compute_capability": memory.compute_capability()}
    sidecar.write_text(json.dumps(props))
    on_gpu, on_cpu = Segmenter(engine), Segmenter(onnx_path, providers=["cpu"])
    image = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    np.testing.assert_array_equal(on_gpu.segment(image), on_cpu.segment(image))
    on_gpu.close()


