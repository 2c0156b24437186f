"""What the TensorRT runtime backend and the engine builder share: versions, typing mode, the lazy import.

Torch-free and TensorRT-free at import: the runtime (tensorrt_backend) and the builder
(lix_deploy.builders.tensorrt_build) both import this module, which is the one place these facts live.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from .base import BackendUnavailableError

__all__ = [
    "MIN_SUPPORTED", "STRONGLY_TYPED_FROM", "ALWAYS_STRONGLY_TYPED_FROM", "TENSORRT_HINT", "TRTVersion",
    "parse_trt_version", "typing_mode", "import_tensorrt",
]

MIN_SUPPORTED = (10, 0)  # the name-based I/O API (execute_async_v3, set_tensor_address)
STRONGLY_TYPED_FROM = (10, 12)  # TRT >= 10.12 builds strongly typed networks; 11.x only those
ALWAYS_STRONGLY_TYPED_FROM = (11, 0)  # the STRONGLY_TYPED creation flag is deprecated and ignored
TENSORRT_HINT = ("install NVIDIA TensorRT for Python (pip install tensorrt-cu12 from NVIDIA's index, or "
                 "JetPack's python3-libnvinfer on Jetson); build engines with python -m lix_deploy.build_engine")


class TRTVersion(NamedTuple):
    """major.minor.patch; compares with other versions and with tuples such as STRONGLY_TYPED_FROM."""

    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_trt_version(text: str) -> TRTVersion:
    """'10.3.0.26' / '11.0.0' / '10.13.3.9+cuda12' / '10' -> TRTVersion (the build number is ignored)."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
    if not match:
        raise ValueError(f"not a TensorRT version: {text!r}")
    return TRTVersion(*(int(part or 0) for part in match.groups()))


def typing_mode(version: TRTVersion | str) -> str:
    """How this TensorRT builds networks: "weakly-typed" (10.0 - 10.11) or "strongly-typed" (>= 10.12, 11.x)."""
    version = parse_trt_version(version) if isinstance(version, str) else version
    if version[:2] < MIN_SUPPORTED:
        raise ValueError(f"TensorRT {version} is not supported (needs TensorRT >= 10)")
    return "strongly-typed" if version[:2] >= STRONGLY_TYPED_FROM else "weakly-typed"


def import_tensorrt(engine_path: str | Path | None = None):
    """The tensorrt module, or BackendUnavailableError naming what to install (and the engine that needs it)."""
    needs = f"{engine_path} is a TensorRT engine: " if engine_path is not None else ""
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailableError("tensorrt", "tensorrt", f"{needs}{TENSORRT_HINT}; or run the ONNX export "
                                      f"on ONNX Runtime instead ({err})") from None
    except OSError as err:  # the wheel imported but libnvinfer did not load
        raise BackendUnavailableError(
            "tensorrt", "tensorrt",
            f"the TensorRT libraries (libnvinfer) did not load: {err}; put TensorRT's lib directory on "
            "LD_LIBRARY_PATH or reinstall tensorrt-cuXX-libs") from None
    return tensorrt
