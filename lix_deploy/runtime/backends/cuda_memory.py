"""The few CUDA calls the TensorRT backend needs, behind one small interface.

Keeping device memory, streams and copies here lets the TensorRT backend's logic (buffers
allocated once, one execution context and stream per thread) be tested with a fake in plain
Python. Two implementations:

* `CudaRuntimeMemory` (default): cuda-python's runtime API (`cuda.bindings.runtime`, or
  `cuda.cudart` in cuda-python < 12.6). The runtime API uses the device's primary context in
  every thread after `cudaSetDevice`, which is what a ROS inference thread needs.
* `PyCudaMemory` (optional): pycuda with the device's *primary* context retained and pushed /
  popped around each piece of work. Never `pycuda.autoinit`: it binds a new context to the
  importing thread and breaks in ROS callback threads.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np

from .base import BackendUnavailableError

__all__ = ["CudaError", "Stream", "DeviceMemory", "CudaRuntimeMemory", "PyCudaMemory", "import_cudart",
           "load_device_memory"]

CUDA_PYTHON_HINT = "pip install cuda-python (its major version must match your CUDA driver's, e.g. cuda-python 12.x)"


class CudaError(RuntimeError):
    """A CUDA call failed; the message names the call and CUDA's error string."""


@dataclass(frozen=True)
class Stream:
    """A CUDA stream: `handle` is the integer TensorRT's execute_async_v3 takes, `raw` the library object."""

    handle: int
    raw: Any


class DeviceMemory(Protocol):
    """What the TensorRT backend asks of CUDA."""

    device_id: int

    def activate(self) -> contextlib.AbstractContextManager: ...
    def device_name(self) -> str: ...
    def compute_capability(self) -> str: ...  # "8.7"
    def malloc(self, nbytes: int) -> int: ...
    def free(self, pointer: int) -> None: ...
    def create_stream(self) -> Stream: ...
    def destroy_stream(self, stream: Stream) -> None: ...
    def synchronize(self, stream: Stream) -> None: ...
    def copy_to_device(self, pointer: int, host: np.ndarray, stream: Stream) -> None: ...
    def copy_to_host(self, host: np.ndarray, pointer: int, stream: Stream) -> None: ...


def import_cudart():
    """cuda-python's runtime module, new layout first; BackendUnavailableError naming the package if absent."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as err:
            raise BackendUnavailableError("tensorrt", "cuda-python", f"{CUDA_PYTHON_HINT} ({err})") from None
    return cudart


class CudaRuntimeMemory:
    """DeviceMemory over cuda-python's runtime API."""

    def __init__(self, device_id: int = 0, cudart=None):
        self.cudart = cudart or import_cudart()
        self.device_id = device_id
        count = self._call("cudaGetDeviceCount")
        if count < 1:
            raise CudaError("cudaGetDeviceCount: no CUDA device found")
        if not 0 <= device_id < count:
            raise CudaError(f"device_id={device_id} but only {count} CUDA device(s) exist")
        self._props = self._call("cudaGetDeviceProperties", device_id)

    def _call(self, name: str, *args):
        result = getattr(self.cudart, name)(*args)
        error, values = result[0], result[1:]
        if error != self.cudart.cudaError_t.cudaSuccess:
            _, text = self.cudart.cudaGetErrorString(error)
            text = text.decode() if isinstance(text, bytes) else str(text)
            hint = f" ({CUDA_PYTHON_HINT}; is the NVIDIA driver installed?)" if name == "cudaGetDeviceCount" else ""
            raise CudaError(f"{name} failed: {text}{hint}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        # cudaSetDevice makes the primary context current in *this* thread (cheap when already set).
        self._call("cudaSetDevice", self.device_id)
        yield

    def device_name(self) -> str:
        name = self._props.name
        return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")

    def compute_capability(self) -> str:
        return f"{self._props.major}.{self._props.minor}"

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", max(int(nbytes), 1)))

    def free(self, pointer: int) -> None:
        self._call("cudaFree", pointer)

    def create_stream(self) -> Stream:
        raw = self._call("cudaStreamCreate")
        return Stream(int(raw), raw)

    def destroy_stream(self, stream: Stream) -> None:
        self._call("cudaStreamDestroy", stream.raw)

    def synchronize(self, stream: Stream) -> None:
        self._call("cudaStreamSynchronize", stream.raw)

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: Stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", pointer, host.ctypes.data, host.nbytes, kind, stream.raw)

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: Stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", host.ctypes.data, pointer, host.nbytes, kind, stream.raw)


class PyCudaMemory:
    """DeviceMemory over pycuda, with the primary context retained and pushed/popped around work."""

    def __init__(self, device_id: int = 0, driver=None):
        if driver is None:
            try:
                import pycuda.driver as driver
            except ImportError as err:
                raise BackendUnavailableError("tensorrt", "pycuda", f"pip install pycuda ({err})") from None
        self.driver = driver
        self.device_id = device_id
        driver.init()
        self._device = driver.Device(device_id)
        self._context = self._device.retain_primary_context()
        self._allocations: dict[int, Any] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self.driver.Context.pop()

    def device_name(self) -> str:
        return str(self._device.name())

    def compute_capability(self) -> str:
        major, minor = self._device.compute_capability()
        return f"{major}.{minor}"

    def malloc(self, nbytes: int) -> int:
        allocation = self.driver.mem_alloc(max(int(nbytes), 1))
        with self._lock:
            self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, pointer: int) -> None:
        with self._lock:
            allocation = self._allocations.pop(pointer, None)
        if allocation is not None:
            allocation.free()

    def create_stream(self) -> Stream:
        raw = self.driver.Stream()
        return Stream(int(raw.handle), raw)

    def destroy_stream(self, stream: Stream) -> None:
        pass  # pycuda frees the stream with its Python object

    def synchronize(self, stream: Stream) -> None:
        stream.raw.synchronize()

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: Stream) -> None:
        self.driver.memcpy_htod_async(pointer, host, stream.raw)

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: Stream) -> None:
        self.driver.memcpy_dtoh_async(host, pointer, stream.raw)


def load_device_memory(device_id: int = 0, library: str = "cuda-python") -> DeviceMemory:
    """The DeviceMemory for `library` ("cuda-python" or "pycuda")."""
    if library == "cuda-python":
        return CudaRuntimeMemory(device_id)
    if library == "pycuda":
        return PyCudaMemory(device_id)
    raise ValueError(f"cuda library {library!r} is not one of cuda-python, pycuda")
