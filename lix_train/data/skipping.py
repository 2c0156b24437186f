"""The one mechanism for on_error="skip": serve the next readable sample in place of a bad one.

Sources (files found corrupt while reading) and SegmentationDataset (corrupt files, or X that
cannot be encoded) both skip through SampleSkipper, so the rules are the same everywhere: a
sample that raised DatasetError once is remembered and never re-read, it is logged once, and
`skipped` counts distinct bad samples (`problems` names them). With DataLoader workers each
worker holds its own copy, so the counts are per process: that is why build_datasets drops the
frames a header check finds bad before any worker starts (precheck.drop_unreadable), and the
run records those (`skipped_frames`) in metrics.json. A frame bad only when decoded in a worker
travels back with the next item of that worker (`SKIPPED_KEY`, a string a default collate keeps),
and the loop that reads the batch hands it to the main process's dataset (`note_worker_skips`),
so metrics.json names those too.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence, TypeVar

from lix_train.data.errors import DatasetError

T = TypeVar("T")

SKIPPED_KEY = "skipped"  # item / batch entry: frames a loader worker skipped since its previous item


def encode_skips(frames: dict[str, str]) -> str:
    """{name: error} -> one string per item (lines of name TAB error), "" for none."""
    return "\n".join(f"{name}\t{' '.join(str(error).split())}" for name, error in frames.items())


def decode_skips(value) -> dict[str, str]:
    """A batch's SKIPPED_KEY entry (a string, or the collated list of them) -> {name: error}."""
    texts = [value] if isinstance(value, str) else list(value or ())
    out: dict[str, str] = {}
    for text in texts:
        for line in str(text).splitlines():
            name, _, error = line.partition("\t")
            if name:
                out[name] = error
    return out


def note_worker_skips(dataset, batch: dict) -> None:
    """Move a batch's SKIPPED_KEY entry (if any) into `dataset`'s record of skipped frames."""
    frames = decode_skips(batch.pop(SKIPPED_KEY, None))
    note = getattr(dataset, "note_skipped", None)
    if frames and note is not None:
        note(frames)


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
