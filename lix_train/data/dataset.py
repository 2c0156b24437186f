"""The torch Dataset every training and evaluation run reads: source Sample -> X -> transforms -> tensors.

X is encoded from the full-resolution depth and the source's own intrinsics *before* any
geometric transform: normals need the true K of the pixels they are computed on, and after a
crop or a resize that K would have to be re-derived. The transforms then move RGB, X and labels
together (see transforms.py).

Items are dicts {"image" [3,H,W] float32, "x" [C,H,W] float32 (absent for student-only runs),
"label" [H,W] int64, "name" str}; torch's default collate batches them (names become a list).

Augmentation seeding: in training, each sample's random transforms are seeded by (run seed,
rank, epoch, position in the epoch), which the trainer's sampler attaches to the index
(engine.distributed.SeededIndex). The stream is therefore the same at any num_workers and a
resumed run replays it exactly. (Before, the seed came from torch's generator of whichever
process loaded the sample, so it changed with num_workers and was lost on resume; runs made
before this change are not reproduced bit for bit.)
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from lix_train.data.classes import ClassSet
from lix_train.data.errors import DatasetError
from lix_train.data.frame_cache import FrameCache
from lix_train.data.modalities import KITTI_STEREO_BASELINE_M, MODALITIES, encode_x
from lix_train.data.sample import Sample
from lix_train.data.skipping import SKIPPED_KEY, SampleSkipper, encode_skips
from lix_train.data.transforms import Frame, ToTensor
from lix_train.data.x_cache import XCache, x_key

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
NEEDS_INTRINSICS = ("normals", "disparity")


class Source(Protocol):
    """What a dataset source provides (vkitti2, kitti_semantics, nuimages, synthetic)."""

    class_set: ClassSet
    has_depth: bool

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


class SegmentationDataset(Dataset):
    """Training / evaluation items from a source, with the teacher's X when `modality` is set.

    source:       any Source; its `names` (if present) name failed samples in logs.
    modality:     "normals" | "inverse_depth" | "disparity" | "depth", or None for RGB only.
    transforms:   callable (Frame, numpy Generator) -> dict of tensors (e.g. `build_train_transforms`);
                  None converts to tensors without augmentation or normalisation.
    on_error:     "raise" propagates a source's DatasetError; "skip" serves the next readable
                  sample instead (see skipping.py: logged once, counted in `skipped`, never
                  re-read), giving up after `max_attempts` consecutive failures.
    baseline_m:   stereo baseline for X=disparity when a sample has no meta["baseline_m"].
    max_depth:    depth beyond this (e.g. a sky sentinel) is unknown in X.
    x_cache:      an XCache: each frame's X is read from disk after its first encoding (exact).
    frame_cache:  a FrameCache of this dataset's frames before transforms (frame_cache.py; exact):
                  frames are read from it instead of the source; a damaged entry is read uncached.
    dropped:      frames left out of `source` as unreadable before it got here (name -> error),
                  reported with the ones skipped while reading in `skipped_frames`.

    Augmentation draws from a numpy Generator. An index carrying `augment_seed` (the trainer's
    sampler gives engine.distributed.SeededIndex: run seed, rank, epoch, position in the epoch)
    seeds it, so a sample's augmentation depends only on where it sits in the run: the same at
    any num_workers, and replayed exactly by a resumed run. A plain index seeds it from torch's
    generator (`torch.manual_seed` makes that reproducible in one process).
    """

    def __init__(
        self,
        source: Source,
        modality: str | None,
        transforms: Callable[[Frame, np.random.Generator], dict | Frame] | None = None,
        *,
        on_error: str = "raise",
        max_attempts: int = 10,
        baseline_m: float = KITTI_STEREO_BASELINE_M,
        max_depth: float | None = None,
        x_cache: XCache | None = None,
        frame_cache: FrameCache | None = None,
        dropped: dict[str, str] | None = None,
    ):
        if modality is not None and modality not in MODALITIES:
            raise ValueError(f"modality={modality!r} is not one of {', '.join(map(repr, MODALITIES))} or None")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r} is not one of {', '.join(map(repr, ON_ERROR))}")
        if modality is not None and not getattr(source, "has_depth", False):
            raise ValueError(
                f"dataset X has no depth; teacher runs need X: supply a source with depth or disparity "
                f"(vKITTI2 depth, KITTI stereo disparity, or a monocular depth estimate for nuImages), "
                f"or set modality=None for a student-only run (source {type(source).__name__}, modality={modality!r})"
            )
        self.source = source
        self.modality = modality
        self.transforms = transforms
        self.on_error = on_error
        self.baseline_m = baseline_m
        self.max_depth = max_depth
        self.x_cache = x_cache
        self.frame_cache = frame_cache
        self._skipper = SampleSkipper(getattr(source, "names", None), log, max_attempts)
        self.dropped = dict(dropped or {})
        self._from_workers: dict[str, str] = {}  # skipped in loader workers (note_skipped)
        self._sent: set[str] = set()  # in a worker: skipped frames already passed back with an item

    @property
    def skipped(self) -> int:
        """Distinct samples skipped so far (on_error="skip"), in this process."""
        return self._skipper.skipped

    @property
    def skipped_frames(self) -> dict[str, str]:
        """Frame (or file) -> error of every frame dropped or skipped so far (in this process)."""
        return {**self.dropped, **self._from_workers, **getattr(self.source, "skipped_frames", {}),
                **self._skipper.problems}

    def note_skipped(self, frames: dict[str, str]) -> None:
        """Record frames a loader worker skipped (they reach the main process with the items)."""
        self._from_workers.update(frames)

    @property
    def class_set(self) -> ClassSet:
        return self.source.class_set

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        n = len(self.source)
        seed = getattr(index, "augment_seed", None)
        index = int(index)
        if self.on_error == "skip":  # a replacement sample keeps the bad one's seed: still deterministic
            item = self._skipper.load(lambda i: self._load(i, seed), index, n)
            # only what this process skipped while reading (the header-check drops are known to every process)
            seen = {**getattr(self.source, "skipped_frames", {}), **self._skipper.problems}
            new = {k: v for k, v in seen.items() if k not in self._sent}
            self._sent.update(new)
            item[SKIPPED_KEY] = encode_skips(new)  # every item has it, so batches collate
            return item
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return self._load(index % n, seed)

    def frame(self, sample: Sample) -> Frame:
        """Sample -> Frame with X encoded at full resolution (DatasetError if X cannot be made)."""
        x = None
        if self.modality is not None:
            if sample.depth is None:
                raise DatasetError(sample.name, f"no depth for this frame, but X={self.modality!r} needs it")
            if self.modality in NEEDS_INTRINSICS and sample.intrinsics is None:
                raise DatasetError(
                    sample.name, f"X={self.modality!r} needs the camera intrinsics K, and this sample has none: "
                                 "supply K in the source, or use X='inverse_depth' / 'depth'"
                )
            baseline = sample.meta.get("baseline_m", self.baseline_m)

            def encode() -> np.ndarray:
                return encode_x(sample.depth, sample.intrinsics, self.modality, baseline_m=baseline,
                                max_depth=self.max_depth)

            try:
                if self.x_cache is None:
                    x = encode()
                else:
                    key = x_key(sample.depth, sample.intrinsics, self.modality, baseline, self.max_depth)
                    x = self.x_cache.get_or_compute(key, encode)
            except ValueError as err:
                raise DatasetError(sample.name, f"cannot encode X={self.modality!r}: {err}") from None
        return Frame(image=sample.rgb, label=sample.label, x=x, modality=self.modality if x is not None else None,
                     name=sample.name)

    def _load(self, i: int, seed: tuple[int, ...] | None = None) -> dict:
        frame = self.frame_cache.frame(i) if self.frame_cache is not None else None
        if frame is None:
            frame = self.frame(self.source[i])
        random = self.transforms is not None and getattr(self.transforms, "random", True)
        rng = None
        if random:
            rng = np.random.default_rng(list(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item()))
        out = frame if self.transforms is None else self.transforms(frame, rng)
        return ToTensor()(out) if isinstance(out, Frame) else out
