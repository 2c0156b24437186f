"""A one-slot buffer holding only the newest frame: a slow model drops stale frames, never queues them.

The subscription callback `put`s every frame; the inference thread `take`s the newest. A frame
replaced before it was taken counts as dropped, so latency stays bounded by one inference
however fast the camera runs.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["LatestFrameSlot"]

T = TypeVar("T")


class LatestFrameSlot(Generic[T]):
    """Thread-safe single slot: `put` overwrites, `take` empties, `close` wakes every waiter."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._closed = False
        self._dropped = 0
        self._cond = threading.Condition()

    def put(self, item: T) -> bool:
        """Store `item`; True when it replaced a frame nobody took (that frame is dropped)."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self._dropped += 1
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest frame (emptying the slot), or None after `timeout` seconds or once closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        """Frames overwritten before the inference thread took them."""
        return self._dropped
