"""Advisory file locks: two processes never build the same cached artefact, or train in one run folder, at once.

`exclusive` waits (the embedded-dataset cache and the shared teacher store: the second caller
then reuses the first one's result); readers are protected by the atomic rename that publishes
each result. `sole_user` does not wait: a second training in the same run folder would
interleave checkpoints with the first, so it is refused at once with the folder named.
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


class Busy(RuntimeError):
    """Another process holds the lock."""


@contextlib.contextmanager
def sole_user(lock_path: Path, what: str, enabled: bool = True) -> Iterator[None]:
    """Hold `lock_path` for the block, or raise Busy naming `what` at once if another process holds it."""
    if not enabled:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{what} is in use by another process (lock {lock_path}); wait for it to finish, or stop it "
                       "and run again to continue from its last checkpoint") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
