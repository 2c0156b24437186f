"""An advisory file lock, so two processes never build the same cached artefact at once.

Used by the embedded-dataset cache and the shared teacher store. The lock only serialises the
builders; readers are protected by the atomic rename that publishes each result.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def exclusive(lock_path: Path, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (no-op when not enabled or where fcntl does not exist)."""
    if not enabled:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: the atomic rename still protects readers
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
