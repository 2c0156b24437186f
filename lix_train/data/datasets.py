"""The dataset table: every `data.dataset`, in this order (its --help and calib's --dataset list it so).

Each dataset's file declares its DatasetSpec (lix_train/data/registry.py); its line here registers
it. A new dataset is its file plus one line below.
"""

from __future__ import annotations

from lix_train.data import embedded, kitti_semantics, nuimages, vkitti2
from lix_train.data.registry import register_dataset

register_dataset(embedded.SPEC)  # synthetic: the embedded procedural set in vKITTI2 format, the default
register_dataset(vkitti2.SPEC)
register_dataset(kitti_semantics.SPEC)
register_dataset(nuimages.SPEC)
