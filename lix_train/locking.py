"""Advisory file locks: two processes never build the same cached artefact, or train in one run folder, at once.

`exclusive` waits (the embedded-dataset cache and the shared teacher store: the second caller
then reuses the first one's result); readers are protected by the atomic rename that publishes
each result. `sole_user` does not wait: a second training in the same run folder would
interleave checkpoints with the first, so it is refused at once with the folder named.

Lock files do not outlive their holder: the holder deletes the file while it still holds it
(and, with `prune_parent`, the folder the lock made, when that is left empty). A waiter that
then gets the lock on the deleted file sees that the path no longer names what it locked and
starts again on a fresh file, so mutual exclusion holds throughout.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator


class Busy(RuntimeError):
    """Another process holds the lock."""


def _acquire(lock_path: Path, blocking: bool) -> IO | None:
    """An open handle holding the lock on the file now at `lock_path`, or None (not blocking, held elsewhere)."""
    import fcntl

    flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
    while True:
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # Path.mkdir's own race: the folder existed, then a holder pruned it
            if lock_path.parent.exists() and not lock_path.parent.is_dir():
                raise  # a file where the lock's folder should be: not a race
            continue
        try:
            handle = open(lock_path, "a+")
        except FileNotFoundError:  # its folder was pruned by a holder between mkdir and open
            continue
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            handle.close()
            return None
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        held = os.fstat(handle.fileno())
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            return handle
        handle.close()  # the previous holder removed this file while we waited: lock the new one


def _release(handle: IO, lock_path: Path, prune_parent: bool) -> None:
    """Delete the lock file (and its emptied folder) while still holding it, then let go."""
    with contextlib.suppress(OSError):
        os.unlink(lock_path)
    if prune_parent:
        with contextlib.suppress(OSError):
            lock_path.parent.rmdir()  # only when empty: nothing but the lock was ever written there
    handle.close()  # closing releases the flock


def _fcntl_available() -> bool:
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - non-POSIX: the atomic rename still protects readers
        return False
    return True


@contextlib.contextmanager
def exclusive(lock_path: Path, enabled: bool = True, prune_parent: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (no-op when not enabled or where fcntl does not exist).

    prune_parent: also remove the lock's folder on release when nothing else is in it (a teacher
    store folder whose training failed before writing anything).
    """
    if not enabled or not _fcntl_available():
        yield
        return
    handle = _acquire(Path(lock_path), blocking=True)
    try:
        yield
    finally:
        _release(handle, Path(lock_path), prune_parent)


@contextlib.contextmanager
def sole_user(lock_path: Path, what: str, enabled: bool = True) -> Iterator[None]:
    """Hold `lock_path` for the block, or raise Busy naming `what` at once if another process holds it."""
    if not enabled or not _fcntl_available():
        yield
        return
    handle = _acquire(Path(lock_path), blocking=False)
    if handle is None:
        raise Busy(f"{what} is in use by another process (lock {lock_path}); wait for it to finish, or stop it "
                   "and run again to continue from its last checkpoint")
    try:
        yield
    finally:
        _release(handle, Path(lock_path), prune_parent=False)
