"""Engine cache keys: a TensorRT engine is only valid for what it was built from and on.

An engine is tied to the TensorRT version, the GPU (compute capability; in practice also the
model, so the name is part of the key), the exact ONNX bytes, the precision and the input
shapes / optimisation profile. The key is the sorted JSON of those fields; its sha256 prefix
goes into the file name, so two different keys can never share a file and a lookup is a
`Path.exists`. The key is also written into the engine's sidecar JSON, so a stale engine found
at an explicit --out path can be explained ("TensorRT 10.3.0 -> 10.13.3") and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from lix_deploy.artifact import PRECISIONS, sidecar_path

KEY_FIELDS = ("trt_version", "gpu_name", "compute_capability", "onnx_sha256", "precision", "input_shapes")
_LABELS = {
    "trt_version": "TensorRT version", "gpu_name": "GPU", "compute_capability": "compute capability",
    "onnx_sha256": "ONNX sha256", "precision": "precision", "input_shapes": "input shapes",
}


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on.

    input_shapes: {input name: [min, opt, max] shapes} (static inputs have min = opt = max).
    """

    trt_version: str
    gpu_name: str
    compute_capability: str
    onnx_sha256: str
    precision: str
    input_shapes: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise ValueError(f"onnx_sha256={self.onnx_sha256!r} is not a hex sha256")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["input_shapes"] = {k: [list(map(int, s)) for s in v] for k, v in sorted(self.input_shapes.items())}
        return data

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of the key: equal keys, equal digests, on any machine."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def file_name(self, stem: str) -> str:
        """`<stem>.<precision>.trt<version>.sm<cc>.<digest12>.engine`, safe on every filesystem."""
        safe = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")  # noqa: E731
        cc = self.compute_capability.replace(".", "")
        return f"{safe(stem)}.{self.precision}.trt{safe(self.trt_version)}.sm{safe(cc)}.{self.digest[:12]}.engine"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EngineKey":
        missing = [f for f in KEY_FIELDS if f not in data]
        if missing:
            raise ValueError(f"engine key is missing {', '.join(missing)}")
        return cls(**{f: data[f] for f in KEY_FIELDS})


def key_differences(stored: Mapping[str, Any] | None, current: EngineKey) -> list[str]:
    """Human-readable reasons a stored key does not match, e.g. "TensorRT version 10.3.0 -> 10.13.3"."""
    if stored is None:
        return ["the existing engine has no build key (sidecar JSON missing or unreadable)"]
    now = current.to_dict()
    out = []
    for name in KEY_FIELDS:
        old, new = stored.get(name), now[name]
        if old != new:
            if name == "onnx_sha256":
                old, new = str(old)[:12], str(new)[:12]
            out.append(f"{_LABELS[name]} {old} -> {new}")
    return out


def read_stored_key(engine_path: str | Path) -> dict | None:
    """The build key recorded in an engine's sidecar (`<engine>.json`), or None when absent or unreadable."""
    path = sidecar_path(engine_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    key = data.get("lix.engine_key") if isinstance(data, dict) else None
    if isinstance(key, str):  # artifact.write_sidecar stores every value as a string
        try:
            key = json.loads(key)
        except ValueError:
            return None
    return key if isinstance(key, dict) else None


@dataclass(frozen=True)
class CacheDecision:
    """Whether to reuse an existing engine, and why (or why not)."""

    path: Path
    reuse: bool
    message: str


def decide(engine_path: str | Path, key: EngineKey) -> CacheDecision:
    """Reuse `engine_path` only if it exists and its sidecar key equals `key`; otherwise say what changed."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return CacheDecision(engine_path, False, f"no engine at {engine_path}; building")
    stored = read_stored_key(engine_path)
    diffs = key_differences(stored, key)
    if not diffs:
        return CacheDecision(engine_path, True, f"reusing {engine_path} (same TensorRT, GPU, ONNX, precision, shapes)")
    return CacheDecision(engine_path, False, f"rebuilding {engine_path}: " + "; ".join(diffs))


def cached_engine_path(cache_dir: str | Path, stem: str, key: EngineKey) -> Path:
    """Where the engine for `key` lives in a cache directory."""
    return Path(cache_dir) / key.file_name(stem)
