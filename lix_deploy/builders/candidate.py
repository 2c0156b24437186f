"""What build_engine asks every builder for: `build_candidate(request, watch, report) -> Path`.

Each builder module (onnxruntime_build, tensorrt_build; listed in lix_deploy.backend_table) writes one
candidate artefact of `request.precision` from the FP32 ONNX, records its details in `report`
(excluded nodes, quantisation, plan, ...) and its steps' times in `watch`, and returns where the
candidate is: `request.target`, or a cached artefact it reused. build_engine then gates it against the
FP32 model and moves it into place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lix_deploy.artifact import ArtifactInfo


@dataclass(frozen=True)
class CandidateRequest:
    """One artefact to build; the build_engine options each builder may read (others ignore them)."""

    onnx: Path  # the FP32 export
    target: Path  # where to write the candidate (inside `work`)
    precision: str
    info: ArtifactInfo  # the export's metadata (input name and size, classes)
    calibration: np.ndarray  # INT8 calibration frames, float32 [N, 3, H, W] (empty unless int8)
    work: Path  # scratch directory, removed after the build
    exclude_nodes: list[str] | None = None  # kept in float (None: the builder's default)
    calibration_method: str | None = None  # None: the quantiser's default
    int8_activations: str = "uint8"  # ONNX Runtime Q/DQ activations
    workspace_mb: int = 2048  # TensorRT workspace pool
    timing_cache: Path | None = None  # TensorRT timing cache file
    cache_dir: Path | None = None  # TensorRT engine cache
    max_batch: int = 1  # TensorRT profile's largest batch

    def fp32(self, target: Path) -> "CandidateRequest":
        """The same request for the FP32 artefact at `target` (the gate's fallback)."""
        return dataclasses.replace(self, precision="fp32", target=target)
