"""A backend that exists only in the tests, to show that a new backend is this one file plus one
`backend_table.register(...)` line (tests/deploy/test_backend_table.py): it runs ONNX files saved as `.fake`,
through ONNX Runtime, and 'builds' them by copying the FP32 export."""

from __future__ import annotations

import shutil
from pathlib import Path

from lix_deploy.runtime.backends import onnxruntime_backend


def open_backend(path: Path, options):
    """The runtime factory: (Backend, ArtifactInfo)."""
    backend, info = onnxruntime_backend.open_backend(path, options)
    backend.name = "fake"
    return backend, info


def build_candidate(request, watch, report) -> Path:
    """The builder: the candidate at request.target."""
    with watch("copy"):
        shutil.copyfile(request.onnx, request.target)
    report.extra["fake"] = {"precision": request.precision}
    return request.target
