"""One exception type for bad dataset input, so callers can catch it and tools can print it.

A DatasetError raised in a DataLoader worker process reaches the main process re-wrapped by
torch (a RuntimeError whose message is the worker's whole traceback); `worker_error_message`
recovers the original one-line message so the CLIs can report it like any other input error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

_WORKER_HEAD = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.\s*\nOriginal Traceback")


class DatasetError(ValueError):
    """Bad or missing dataset input. The message names the file and what was expected."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


def worker_error_message(err: BaseException, type_names: Iterable[str]) -> str | None:
    """The original message of an exception of one of `type_names` wrapped by a DataLoader worker, else None."""
    text = str(err)
    head = _WORKER_HEAD.match(text)
    if head is None or head.group(1) not in set(type_names):
        return None
    lines = text.rstrip().splitlines()
    pattern = re.compile(rf"^(?:[\w.]+\.)?{head.group(1)}: ?(.*)$")
    for i in range(len(lines) - 1, 0, -1):
        found = pattern.match(lines[i])
        if found:
            return " ".join(" ".join([found.group(1), *lines[i + 1:]]).split())
    return None
