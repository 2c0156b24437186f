"""What every inference backend provides, so the Segmenter never knows which engine runs the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend", "BackendOptions", "InferenceOutput", "BackendUnavailableError", "EngineMismatchError",
           "check_batch"]


class BackendUnavailableError(ImportError):
    """A backend's Python package or native library is missing; the message names what to install."""

    def __init__(self, backend: str, package: str, detail: str = ""):
        self.backend, self.package = backend, package
        message = f"the {backend} backend needs the `{package}` Python package"
        super().__init__(message + (f": {detail}" if detail else ""))


class EngineMismatchError(RuntimeError):
    """A serialized engine was built for another TensorRT version or GPU; it must be rebuilt here."""


@dataclass
class InferenceOutput:
    """Raw model outputs: class ids [N, H, W] (uint8 or int32) and, when exported, logits [N, C, H, W]."""

    labels: np.ndarray
    logits: np.ndarray | None = None


@runtime_checkable
class Backend(Protocol):
    """One loaded model. `infer` must be safe to call from several threads at once."""

    name: str  # its name in lix_deploy.backend_table
    input_name: str
    output_names: tuple[str, ...]
    input_hw: tuple[int, int]  # model input (H, W)
    max_batch: int  # largest N infer accepts (1 for a static batch-1 model)

    def infer(self, batch: np.ndarray) -> InferenceOutput:
        """float32 [N, 3, H, W] RGB 0..255 -> InferenceOutput."""
        ...

    def describe(self) -> dict:
        """Facts for logs and diagnostics (providers, versions, device)."""
        ...

    def close(self) -> None:
        """Free native resources; the backend is unusable afterwards."""
        ...


@dataclass(frozen=True)
class BackendOptions:
    """Segmenter's options, handed to the backend's `open_backend(path, options) -> (Backend, ArtifactInfo)`
    (lix_deploy.backend_table); each backend reads those that apply to it and refuses ones it cannot honour."""

    providers: Sequence[str] | None = None  # ONNX Runtime execution providers
    device_id: int = 0
    trt_cache_dir: str | Path | None = None  # ONNX Runtime's TensorRT provider caches
    fp16: bool = False  # ONNX Runtime's TensorRT provider
    intra_op_threads: int | None = None  # ONNX Runtime CPU threads
    max_batch: int = 8  # for a dynamic-batch model
    cuda_library: str = "cuda-python"  # the TensorRT backend's device memory
    info: Any = None  # an ArtifactInfo to use instead of the artefact's own metadata


def check_batch(batch: np.ndarray, input_hw: tuple[int, int], max_batch: int, dynamic_batch: bool = True) -> np.ndarray:
    """Validate a model input batch; return it C-contiguous float32 (copying only when needed).

    A static-batch model takes exactly `max_batch` images, a dynamic one 1..max_batch.
    """
    if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1] != 3:
        shape = getattr(batch, "shape", type(batch).__name__)
        raise ValueError(f"model input must be a float32 array [N, 3, H, W], got {shape}")
    if tuple(batch.shape[2:]) != tuple(input_hw):
        raise ValueError(f"model input must be {input_hw[0]}x{input_hw[1]} (H x W), "
                         f"got {batch.shape[2]}x{batch.shape[3]}")
    if not dynamic_batch and batch.shape[0] != max_batch:
        raise ValueError(f"this model has a static batch of {max_batch}, got {batch.shape[0]} images")
    if not 1 <= batch.shape[0] <= max_batch:
        raise ValueError(f"batch size {batch.shape[0]} is outside 1..{max_batch} supported by this model")
    return np.ascontiguousarray(batch, dtype=np.float32)
