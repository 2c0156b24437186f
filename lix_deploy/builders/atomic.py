"""Write-then-rename helpers for bytes and JSON, on top of `lix_deploy.artifact.atomic_output`.

An artefact, report or timing cache on disk is always complete or absent: the data goes to a
temp file in the destination directory, is fsynced, then renamed over the target; on error
the temp file is removed and the previous target, if any, is left untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lix_deploy.artifact import atomic_output


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented, key-sorted JSON atomically; NaN becomes null (strict JSON readers)."""
    text = json.dumps(_nan_to_none(obj), indent=2, sort_keys=True, default=str)
    return atomic_write_bytes(path, (text + "\n").encode())


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
