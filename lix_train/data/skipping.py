"""The one mechanism for on_error="skip": serve the next readable sample in place of a bad one.

Sources (files found corrupt while reading) and SegmentationDataset (corrupt files, or X that
cannot be encoded) both skip through SampleSkipper, so the rules are the same everywhere: a
sample that raised DatasetError once is remembered and never re-read, it is logged once, and
`skipped` counts distinct bad samples (`problems` names them). With DataLoader workers each
worker holds its own copy, so the counts are per process: that is why build_datasets drops the
frames a header check finds bad before any worker starts (precheck.drop_unreadable), and the
run records those (`skipped_frames`) in metrics.json; a frame bad only when decoded in a worker
is named in that worker's log warning.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence, TypeVar

from lix_train.data.errors import DatasetError

T = TypeVar("T")


class SampleSkipper:
    """Tries indices index, index+1, ... (wrapping) until one loads, at most `max_attempts` of them."""

    def __init__(self, names: Sequence[str] | None, logger: logging.Logger, max_attempts: int | None = None):
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
        self.names = names
        self.logger = logger
        self.max_attempts = max_attempts
        self.bad: set[int] = set()
        self.problems: dict[str, str] = {}  # sample name -> its error

    @property
    def skipped(self) -> int:
        return len(self.bad)

    def load(self, load: Callable[[int], T], index: int, n: int) -> T:
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        attempts = n if self.max_attempts is None else min(self.max_attempts, n)
        last_error: DatasetError | None = None
        for step in range(attempts):
            i = (index + step) % n
            if i in self.bad:
                continue
            try:
                return load(i)
            except DatasetError as error:
                self.bad.add(i)
                self.problems[self._name(i)] = str(error)
                last_error = error
                self.logger.warning("skipping unreadable sample %s: %s", self._name(i), error)
        raise DatasetError(
            None, f"{attempts} consecutive samples from index {index} failed to load (on_error='skip'); "
                  f"last error: {last_error}; see the warnings above for each file"
        )

    def _name(self, i: int) -> str:
        if self.names is not None and i < len(self.names):
            return str(self.names[i])
        return f"#{i}"


def skip_record(datasets: dict, extra: dict[str, dict[str, str]] | None = None) -> dict:
    """{split: {"count", "frames": {name: error}}} of the frames each split dropped or skipped, logged once.

    `datasets` maps split -> a dataset with `skipped_frames`; `extra` gives splits' records directly
    (a split in both is merged).
    """
    record: dict[str, dict[str, str]] = {}
    for split, dataset in datasets.items():
        record.setdefault(split, {}).update(getattr(dataset, "skipped_frames", {}))
    for split, frames in (extra or {}).items():
        record.setdefault(split, {}).update(frames)
    total = sum(len(frames) for frames in record.values())
    if total:
        logging.getLogger(__name__).warning(
            "skipped %d unreadable frame(s) (data.on_error skip): %s; named in metrics.json (skipped_frames)", total,
            "; ".join(f"{split}: {', '.join(frames)}" for split, frames in record.items() if frames))
    return {split: {"count": len(frames), "frames": frames} for split, frames in record.items()}
