"""Class sets of the supported datasets: names, colours, and label-id mappings.

Every dataset maps its labels to contiguous train ids 0..C-1 with IGNORE_INDEX for pixels that
must not be scored, so models, losses and metrics never see dataset-specific ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassSet:
    """Names and display colours (RGB) of a dataset's train ids, in id order."""

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self):
        if len(self.names) != len(self.colors):
            raise ValueError(f"class set {self.name!r}: {len(self.names)} names but {len(self.colors)} colours")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 lookup table: train id -> colour; ignore and unknown ids are black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = np.asarray(self.colors, np.uint8)
        return lut

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """Class-id map (H, W) -> RGB image (H, W, 3) uint8."""
        return self.palette()[np.asarray(label, np.uint8)]


# vKITTI2's colors.txt, in the file's order. "Undefined" is the 15th category; it is written to
# colors.txt but maps to IGNORE_INDEX, so the trainable set has 14 classes.
VKITTI2_CATEGORIES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Terrain", (210, 0, 200)),
    ("Sky", (90, 200, 255)),
    ("Tree", (0, 199, 0)),
    ("Vegetation", (90, 240, 0)),
    ("Building", (140, 140, 140)),
    ("Road", (100, 60, 100)),
    ("GuardRail", (250, 100, 255)),
    ("TrafficSign", (255, 255, 0)),
    ("TrafficLight", (200, 200, 0)),
    ("Pole", (255, 130, 0)),
    ("Misc", (80, 80, 80)),
    ("Truck", (160, 60, 60)),
    ("Car", (255, 127, 80)),
    ("Van", (0, 139, 139)),
    ("Undefined", (0, 0, 0)),
)
VKITTI2_IGNORED = ("Undefined",)

VKITTI2 = ClassSet(
    "vkitti2",
    tuple(n for n, _ in VKITTI2_CATEGORIES if n not in VKITTI2_IGNORED),
    tuple(c for n, c in VKITTI2_CATEGORIES if n not in VKITTI2_IGNORED),
)
# The trainable vKITTI2 classes (14): the class count that models and tools default to.
VKITTI2_NUM_CLASSES = VKITTI2.num_classes

# Cityscapes' 19 evaluated classes (train ids 0..18), used by KITTI Semantics.
CITYSCAPES = ClassSet(
    "cityscapes",
    (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
        "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
        "motorcycle", "bicycle",
    ),
    (
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ),
)

# Cityscapes label id -> train id (cityscapesScripts' labels.py); every other id is ignored.
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def cityscapes_id_lut() -> np.ndarray:
    """(256,) uint8 lookup table: Cityscapes label id -> train id, IGNORE_INDEX elsewhere."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


CLASS_SETS = {c.name: c for c in (VKITTI2, CITYSCAPES)}
