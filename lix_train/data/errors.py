"""One exception type for bad dataset input, so callers can catch it and tools can print it."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """Bad or missing dataset input. The message names the file and what was expected."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")
