"""Dataset sources by name, and the wrappers that keep the source interface: some frames, or skipping.

A source is a class with __len__, __getitem__(i) -> Sample, class_set, has_depth and names;
its constructor takes the root path(s) plus keyword options (see each class). SOURCES names the
reader classes of the registered datasets (DatasetSpec.reader, lix_train/data/registry.py).

Bad input: every source raises DatasetError (naming the file and what was expected). With
on_error="skip", a source drops frames with missing partner files while indexing, and
build_source wraps it in SkippingSource so files found corrupt while reading are replaced by
the next readable sample. Both are logged once per bad file and counted in `skipped`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from lix_train.data.classes import ClassSet
from lix_train.data.registry import registered_datasets
from lix_train.data.sample import Sample
from lix_train.data.skipping import SampleSkipper

logger = logging.getLogger(__name__)


class _Readers(Mapping):
    """{dataset name: reader class} of the registered datasets that have a reader of their own, read when used."""

    def _table(self) -> dict[str, type]:
        return {name: spec.reader for name, spec in registered_datasets().items() if spec.reader is not None}

    def __getitem__(self, name: str) -> type:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


SOURCES: Mapping[str, type] = _Readers()


class _Wrapper:
    """A source around `self.source`, whose classes and depth are the wrapped source's."""

    source: object

    @property
    def class_set(self) -> ClassSet:
        return self.source.class_set

    @property
    def has_depth(self) -> bool:
        return self.source.has_depth


class FrameSubset(_Wrapper):
    """Some frames of a source, by index; keeps the source interface (class_set, has_depth, names)."""

    def __init__(self, source, indices: Sequence[int]):
        self.source = source
        self.indices = [int(i) for i in indices]
        names = getattr(source, "names", None)
        self.names = [names[i] for i in self.indices] if names is not None else [str(i) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.source[self.indices[index]]

    def __getattr__(self, name: str):
        if name == "frame_files" and "source" in self.__dict__ and hasattr(self.source, name):
            return lambda index: self.source.frame_files(self.indices[index])
        if name == "skipped_frames" and "source" in self.__dict__ and hasattr(self.source, name):
            return self.source.skipped_frames
        raise AttributeError(name)


def evenly_spaced(count: int, limit: int) -> list[int]:
    """`limit` indices spread evenly over range(count) (all of them when limit is 0 or >= count)."""
    if limit <= 0 or limit >= count:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, limit)})


class SkippingSource(_Wrapper):
    """A source whose unreadable samples are replaced by the next readable one (wrapping around).

    A sample that raised DatasetError once is remembered and never re-read. `skipped` counts the
    source's index-time skips plus the bad samples found here. With DataLoader workers each worker
    holds its own copy, so the counts are per process.
    """

    def __init__(self, source):
        self.source = source
        self._skipper = SampleSkipper(getattr(source, "names", None), logger)

    @property
    def names(self) -> list[str]:
        return self.source.names

    @property
    def skipped(self) -> int:
        return getattr(self.source, "skipped", 0) + self._skipper.skipped

    @property
    def skipped_frames(self) -> dict[str, str]:
        """Frame (or file) -> error of everything skipped so far, in this process."""
        return {**getattr(self.source, "skipped_frames", {}), **self._skipper.problems}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample:
        return self._skipper.load(self.source.__getitem__, index, len(self.source))

    def __getattr__(self, name: str):
        if name in ("frame_files", "skipped_frames") and "source" in self.__dict__ and hasattr(self.source, name):
            return getattr(self.source, name)
        raise AttributeError(name)


def open_source(reader: type, **kwargs):
    """Construct a source of class `reader`; on_error="skip" also wraps it in SkippingSource."""
    source = reader(**kwargs)
    return SkippingSource(source) if kwargs.get("on_error") == "skip" else source


def build_source(name: str, **kwargs):
    """Construct a registered source by name; on_error="skip" also wraps it in SkippingSource."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset source {name!r}; valid names: {', '.join(sorted(SOURCES))}")
    return open_source(SOURCES[name], **kwargs)
