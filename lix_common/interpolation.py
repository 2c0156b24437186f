"""How camera images are resized, shared by training (transforms) and the torch-free runtime.

Training and deployment must feed the network identically resampled pixels, or the deployed
model sees a systematically different input than it learnt from. INTER_AREA when shrinking
avoids aliasing on large downscales (1242 -> 320 px); INTER_LINEAR when enlarging.
This module imports only OpenCV, so lix_deploy.runtime can use it without torch or lix_train.
"""

from __future__ import annotations

import cv2


def image_interpolation(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int | None:
    """INTER_AREA when shrinking (no side grows), INTER_LINEAR otherwise, None when the size already matches."""
    if tuple(src_hw) == tuple(dst_hw):
        return None
    if dst_hw[0] <= src_hw[0] and dst_hw[1] <= src_hw[1]:
        return cv2.INTER_AREA
    return cv2.INTER_LINEAR
