"""The build report: one JSON next to each artefact, `<artefact>.build.json`.

It records what was asked, what was built, how accurate it is against the FP32 model, and the
decision, so nobody ships an INT8 engine without a measured mIoU drop next to it. Keys are the
contract's: backend, precision, onnx, onnx_sha256, artefact, calibration, excluded_nodes,
accuracy {basis, passed, fp32_miou, candidate_miou, drop, max_drop, pixel_agreement,
class_agreement, min_pixel_agreement, min_class_agreement, ...} (lix_deploy.accuracy.GateResult;
the mIoU fields are null when the basis is agreement with FP32), timings, versions, decision;
plus gate_basis, and fallback {precision, path, at_out, rejected_precision} for a rejected build.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json

REPORT_KEYS = ("backend", "precision", "onnx", "onnx_sha256", "artefact", "calibration", "excluded_nodes",
               "accuracy", "timings", "versions", "decision")
_PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "nvidia-modelopt", "lix-seg")


def report_path(artefact: str | Path) -> Path:
    """`<artefact>.build.json`."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + ".build.json")


def package_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Installed versions of the packages a build depends on (absent ones are left out)."""
    versions = {"python": platform.python_version(), "platform": sys.platform}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions.update(extra or {})
    return versions


class Stopwatch:
    """Named wall-clock timings: `with watch("quantize"): ...` -> {"quantize": 12.3}."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> "_Lap":
        return _Lap(self, name)


class _Lap:
    def __init__(self, watch: Stopwatch, name: str) -> None:
        self.watch, self.name = watch, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        elapsed = time.perf_counter() - self.start
        self.watch.timings[self.name] = round(self.watch.timings.get(self.name, 0.0) + elapsed, 4)


@dataclass
class BuildReport:
    """The report's fields; `extra` holds backend-specific details (inspection, cache, plan)."""

    backend: str
    precision: str
    onnx: str
    onnx_sha256: str
    artefact: str | None = None
    calibration: dict | None = None
    excluded_nodes: list[str] = field(default_factory=list)
    accuracy: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    decision: str = "pending"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = {key: getattr(self, key) for key in REPORT_KEYS}
        data.update({k: v for k, v in self.extra.items() if k not in data})
        data["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return data

    def write(self, path: str | Path) -> Path:
        """Write atomically; returns the path."""
        return atomic_write_json(path, self.to_dict())
