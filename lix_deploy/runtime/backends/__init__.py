"""Inference backends behind one interface (`Backend.infer(batch) -> InferenceOutput`).

Importing this package imports neither onnxruntime nor tensorrt nor CUDA: each backend loads
its library when constructed, so a machine without a GPU can still import the runtime.
"""

from .base import Backend, BackendOptions, BackendUnavailableError, EngineMismatchError, InferenceOutput
from .onnxruntime_backend import OnnxRuntimeBackend, ProviderSettings, provider_config, select_providers
from .tensorrt_backend import TensorRTBackend
from .tensorrt_common import parse_trt_version, typing_mode

__all__ = [
    "Backend", "BackendOptions", "BackendUnavailableError", "EngineMismatchError", "InferenceOutput",
    "OnnxRuntimeBackend", "ProviderSettings", "provider_config", "select_providers", "TensorRTBackend",
    "parse_trt_version", "typing_mode",
]
