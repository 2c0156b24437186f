"""Torch-free inference runtime: camera image -> class-id mask, on ONNX Runtime or TensorRT.

    from lix_deploy.runtime import Segmenter
    seg = Segmenter("student.onnx")             # or "student.engine" (+ student.engine.json)
    mask = seg.segment(image, encoding="bgr8")  # uint8 (H, W) at the image's resolution
    colour = seg.colorize(mask)                 # rgb8 with the artefact's palette

Nothing here imports torch or lix_train.models; onnxruntime / tensorrt / CUDA are imported
only when a backend is built.
"""

from .backends.base import Backend, BackendUnavailableError, EngineMismatchError, InferenceOutput
from .latency import LatencyStats
from .postprocess import colorize, overlay, palette_from_ints, palette_lut, resize_mask
from .preprocess import ENCODINGS, image_from_buffer, to_model_input, to_rgb
from .segmenter import BACKENDS, Segmenter, backend_for_artifact, load_segmenter

__all__ = [
    "BACKENDS", "ENCODINGS", "Backend", "BackendUnavailableError", "EngineMismatchError", "InferenceOutput",
    "LatencyStats", "Segmenter", "backend_for_artifact", "colorize", "image_from_buffer", "load_segmenter", "overlay",
    "palette_from_ints", "palette_lut", "resize_mask", "to_model_input", "to_rgb",
]
