"""Dataset sources by name, and the wrapper that skips unreadable samples.

A source is a class with __len__, __getitem__(i) -> Sample, class_set, has_depth and names;
its constructor takes the root path(s) plus keyword options (see each class).

Bad input: every source raises DatasetError (naming the file and what was expected). With
on_error="skip", a source drops frames with missing partner files while indexing, and
build_source wraps it in SkippingSource so files found corrupt while reading are replaced by
the next readable sample. Both are logged once per bad file and counted in `skipped`.
"""

from __future__ import annotations

import logging

from lix_train.data.classes import ClassSet
from lix_train.data.kitti_semantics import KITTISemanticsSource
from lix_train.data.nuimages import NuImagesSource
from lix_train.data.sample import Sample
from lix_train.data.skipping import SampleSkipper
from lix_train.data.vkitti2 import VKITTI2Source

logger = logging.getLogger(__name__)

SOURCES: dict[str, type] = {
    "vkitti2": VKITTI2Source,
    "kitti_semantics": KITTISemanticsSource,
    "nuimages": NuImagesSource,
}


class SkippingSource:
    """A source whose unreadable samples are replaced by the next readable one (wrapping around).

    A sample that raised DatasetError once is remembered and never re-read. `skipped` counts the
    source's index-time skips plus the bad samples found here. With DataLoader workers each worker
    holds its own copy, so the counts are per process.
    """

    def __init__(self, source):
        self.source = source
        self._skipper = SampleSkipper(getattr(source, "names", None), logger)

    @property
    def class_set(self) -> ClassSet:
        return self.source.class_set

    @property
    def has_depth(self) -> bool:
        return self.source.has_depth

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


def build_source(name: str, **kwargs):
    """Construct a registered source by name; on_error="skip" also wraps it in SkippingSource."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset source {name!r}; valid names: {', '.join(sorted(SOURCES))}")
    source = SOURCES[name](**kwargs)
    return SkippingSource(source) if kwargs.get("on_error") == "skip" else source
