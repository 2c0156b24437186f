"""The one inference thread: it loads the model, runs every frame it takes, and frees the model.

A TensorRT execution context and CUDA stream must stay on one thread, so the engine is created,
used and closed by this thread alone; the ROS callbacks only hand frames over through a
`LatestFrameSlot`. A failing frame is reported through `on_error` and the loop goes on: one bad
message never stops the node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from .latest_frame import LatestFrameSlot

__all__ = ["InferenceWorker"]

M = TypeVar("M")  # the model (a lix_deploy.runtime.Segmenter)
F = TypeVar("F")  # a frame as the subscription stored it


class InferenceWorker(Generic[M, F]):
    """Run `process(model, frame)` for the newest frame, on one thread that owns `model = load()`."""

    def __init__(self, load: Callable[[], M], process: Callable[[M, F], None], slot: LatestFrameSlot[F],
                 on_error: Callable[[BaseException], None], close: Callable[[M], None] | None = None,
                 poll_s: float = 0.1, name: str = "lix_seg_inference"):
        self._load, self._process, self._close = load, process, close
        self._slot, self._on_error, self._poll_s = slot, on_error, poll_s
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._model: M | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, timeout: float | None = None) -> M:
        """Start the thread and wait until the model is loaded; re-raises the load's exception."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the model did not load within {timeout} s")
        if self._load_error is not None:
            self._thread.join()
            raise self._load_error
        return self._model  # type: ignore[return-value]

    def _run(self) -> None:
        try:
            self._model = self._load()
        except BaseException as err:  # noqa: BLE001 - handed to start() in the caller's thread
            self._load_error = err
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._slot.closed:
                frame = self._slot.take(self._poll_s)
                if frame is None:
                    continue
                try:
                    self._process(self._model, frame)
                except Exception as err:  # noqa: BLE001 - reported, never fatal
                    self._on_error(err)
        finally:
            if self._close is not None:
                self._close(self._model)
            self._model = None

    def stop(self, timeout: float = 10.0) -> bool:
        """Close the slot, let the current frame finish, free the model; True once the thread has ended."""
        self._slot.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
