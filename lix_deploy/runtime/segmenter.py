"""Segmenter: an exported artefact in, a class-id mask at camera resolution out. Torch-free.

The artefact describes itself (ONNX `lix.*` metadata, or an engine's `<engine>.json` sidecar),
so input size, classes and palette never come from a config that can drift from the model.
One Segmenter may be called from several threads at once (the ROS node drives it from a
worker thread): preprocessing is pure, ONNX Runtime sessions are thread-safe, and the
TensorRT backend keeps one execution context and stream per thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lix_deploy import backend_table
from lix_deploy.artifact import ArtifactError, ArtifactInfo, ArtifactNotFoundError
from lix_deploy.backend_table import AUTO, BACKENDS

from .backends.base import Backend, BackendOptions, InferenceOutput
from .latency import LatencyStats
from .postprocess import colorize, overlay, palette_lut, resize_mask
from .preprocess import to_model_input, to_rgb

__all__ = ["BACKENDS", "Segmenter", "backend_for_artifact", "load_segmenter"]


def backend_for_artifact(path: str | Path, backend: str = AUTO) -> str:
    """The runtime backend that runs the artefact at `path` (lix_deploy.backend_table): "auto" -> the backend
    whose suffix it has (.onnx: onnxruntime, .engine / .plan / .trt: tensorrt); an explicit one is checked
    against the suffix."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    suffix = Path(path).suffix.lower()
    owner = backend_table.entry_for_suffix(suffix)
    if backend != AUTO:
        if owner is not None and owner.name != backend:
            raise ArtifactError(path, f"backend={backend!r} needs {backend_table.entry(backend).needs}; "
                                      f"{suffix} files run on backend={owner.name!r}")
        return backend
    if owner is None:
        raise ArtifactError(path, f"cannot tell the backend from the suffix {suffix!r} (expected "
                                  f"{', '.join(backend_table.suffixes())}); pass "
                                  + " or ".join(f"backend={name!r}" for name in backend_table.names()))
    return owner.name


class Segmenter:
    """Semantic segmentation with an exported LIX-Seg student.

    Args:
        artifact_path: an .onnx file (ONNX Runtime) or a TensorRT engine with its `<engine>.json`.
        backend: "auto" (from the file suffix) or a backend of lix_deploy.backend_table ("onnxruntime",
            "tensorrt"), whose `open_backend` gets the options below.
        providers: ONNX Runtime execution providers (None: TensorRT > CUDA > CPU, as available;
            or names / aliases such as ["cuda", "cpu"]).
        device_id: CUDA device for the GPU providers / TensorRT.
        trt_cache_dir: engine and timing cache of ONNX Runtime's TensorRT provider.
        fp16: ask ONNX Runtime's TensorRT provider for FP16 kernels (FP16 artefacts enable it anyway).
        intra_op_threads: CPU threads per ONNX Runtime inference (None: its default).
        max_batch: largest batch for a dynamic-batch ONNX model (segment_batch chunks by it).
        cuda_library: "cuda-python" or "pycuda" for the TensorRT backend's device memory.
        info: ArtifactInfo to use instead of the artefact's own metadata (foreign models).
        latency_window: how many recent latencies `latency_stats()` summarises.
    """

    def __init__(self, artifact_path: str | Path, backend: str = AUTO, providers: Sequence[str] | None = None, *,
                 device_id: int = 0, trt_cache_dir: str | Path | None = None, fp16: bool = False,
                 intra_op_threads: int | None = None, max_batch: int = 8, cuda_library: str = "cuda-python",
                 info: ArtifactInfo | None = None, latency_window: int = 1000):
        self.path = Path(artifact_path)
        if not self.path.is_file():
            raise ArtifactNotFoundError(self.path, "model artefact not found; export one with "
                                                   "python -m lix_deploy.export or build one with "
                                                   "python -m lix_deploy.build_engine")
        self.backend_name = backend_for_artifact(self.path, backend)
        options = BackendOptions(providers=providers, device_id=device_id, trt_cache_dir=trt_cache_dir, fp16=fp16,
                                 intra_op_threads=intra_op_threads, max_batch=max_batch, cuda_library=cuda_library,
                                 info=info)
        self.backend: Backend
        self.backend, info = backend_table.runtime_factory(self.backend_name)(self.path, options)
        self.info: ArtifactInfo = info
        if tuple(self.info.input_size) != tuple(self.backend.input_hw):
            raise ArtifactError(self.path, f"metadata says input size {list(self.info.input_size)} but the model "
                                           f"takes {list(self.backend.input_hw)}")
        self.input_size: tuple[int, int] = tuple(self.backend.input_hw)
        self._lut = palette_lut(self.info.palette)
        self._mask_dtype = np.uint8 if self.info.num_classes <= 256 else np.uint16
        self._latency = LatencyStats(latency_window)
        self.last_latency_ms: float | None = None

    # ---- inference -------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> InferenceOutput:
        """Raw model call on a prepared float32 [N, 3, H, W] batch (as to_model_input makes)."""
        return self.backend.infer(batch)

    def segment(self, image: np.ndarray, encoding: str = "rgb8") -> np.ndarray:
        """Camera image (rgb8 / bgr8 / rgba8 / bgra8 / mono8) -> (H, W) class ids at the image's resolution."""
        start = time.perf_counter()
        batch = to_model_input(image, encoding, self.input_size)
        labels = self._run(batch)[0]
        mask = self._to_mask(labels, image.shape[:2])
        self._record(start)
        return mask

    def segment_batch(self, images: Sequence[np.ndarray], encoding: str = "rgb8") -> list[np.ndarray]:
        """Several images (any sizes) -> their masks; batched when the model takes a dynamic batch."""
        start = time.perf_counter()
        inputs = [to_model_input(image, encoding, self.input_size) for image in images]
        masks = []
        step = self.backend.max_batch if getattr(self.backend, "dynamic_batch", False) else 1
        for first in range(0, len(inputs), step):
            labels = self._run(np.concatenate(inputs[first:first + step]))
            masks += [self._to_mask(labels[i], images[first + i].shape[:2]) for i in range(len(labels))]
        if images:
            self._record(start)
        return masks

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """labels [N, H, W] for a batch, padding it when the model has a static batch larger than N."""
        count = batch.shape[0]
        static = not getattr(self.backend, "dynamic_batch", False)
        if static and count < self.backend.max_batch:
            padding = np.zeros((self.backend.max_batch - count,) + batch.shape[1:], batch.dtype)
            batch = np.concatenate([batch, padding])
        return self.backend.infer(batch).labels[:count]

    def _to_mask(self, labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return np.ascontiguousarray(resize_mask(labels, size), dtype=self._mask_dtype)

    def _record(self, start: float) -> None:
        elapsed = (time.perf_counter() - start) * 1000.0
        self.last_latency_ms = elapsed
        self._latency.add(elapsed)

    def warmup(self, runs: int = 1) -> None:
        """Run the model on a blank frame (first calls build kernels / TensorRT EP engines); not timed."""
        blank = np.zeros((1, 3) + self.input_size, np.float32)
        for _ in range(runs):
            self._run(blank)

    # ---- presentation ----------------------------------------------------------------------
    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) class ids -> (H, W, 3) rgb8 with the artefact's palette (unknown ids black)."""
        return colorize(mask, self._lut)

    def overlay(self, image: np.ndarray, mask: np.ndarray, encoding: str = "rgb8", alpha: float = 0.5) -> np.ndarray:
        """The mask's colours blended over the image, rgb8."""
        return overlay(to_rgb(image, encoding), self.colorize(mask), alpha)

    # ---- diagnostics -----------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    def latency_stats(self) -> dict[str, float | int]:
        """End-to-end latency of segment() (preprocess + inference + resize) over the recent window."""
        return self._latency.summary()

    def reset_latency_stats(self) -> None:
        self._latency.reset()

    def describe(self) -> dict:
        return {"artifact": str(self.path), "input_size": list(self.input_size),
                "num_classes": self.info.num_classes, "precision": self.info.precision, **self.backend.describe()}

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Segmenter({str(self.path)!r}, backend={self.backend_name!r}, input_size={self.input_size}, "
                f"classes={self.info.num_classes})")


def load_segmenter(artifact_path: str | Path, backend: str = AUTO, **options) -> Segmenter:
    """Segmenter(artifact_path, backend, **options): the name the bag tool and the ROS node import."""
    return Segmenter(artifact_path, backend, **options)
