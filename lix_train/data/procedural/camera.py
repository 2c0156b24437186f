"""The pinhole camera of the synthetic drives: KITTI-like intrinsics, rays and poses.

World frame (metres): x right, y up, z forward along the street, ground at y = 0. The camera
looks straight down the street (no yaw, pitch or roll), so its frame is the world frame with y
flipped: camera x right, y down, z forward, as in vKITTI2. Rays are kept with a unit z
component, so a ray parameter t *is* the z-depth that vKITTI2 stores.
"""

from __future__ import annotations

import numpy as np

from lix_train.data.sample import intrinsics_matrix, scale_intrinsics

VKITTI2_HEIGHT, VKITTI2_WIDTH = 375, 1242
VKITTI2_K = intrinsics_matrix(725.0087, 725.0087, 620.5, 187.0)
STEREO_BASELINE_M = 0.532  # vKITTI2's Camera_1 sits this far to the right of Camera_0
WORLD_TO_CAMERA_ROTATION = np.diag([1.0, -1.0, 1.0])


def kitti_like_intrinsics(height: int, width: int) -> np.ndarray:
    """vKITTI2's K scaled to an image of (height, width) pixels."""
    return scale_intrinsics(VKITTI2_K, width / VKITTI2_WIDTH, height / VKITTI2_HEIGHT)


def pixel_rays(k: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 world-frame ray directions through pixel centres, z component 1."""
    u = (np.arange(width, dtype=np.float64) - k[0, 2]) / k[0, 0]
    v = (np.arange(height, dtype=np.float64) - k[1, 2]) / k[1, 1]
    rays = np.empty((height, width, 3), np.float32)
    rays[..., 0] = u[None, :]
    rays[..., 1] = -v[:, None]  # image rows go down, world y goes up
    rays[..., 2] = 1.0
    # a ray exactly parallel to a slab would divide by zero in the box test; nudge it
    rays[..., :2][rays[..., :2] == 0.0] = 1e-9
    return rays


def world_to_camera(origin: np.ndarray) -> np.ndarray:
    """4x4 transform taking world points into the camera frame of a camera at `origin`."""
    out = np.eye(4)
    out[:3, :3] = WORLD_TO_CAMERA_ROTATION
    out[:3, 3] = -WORLD_TO_CAMERA_ROTATION @ np.asarray(origin, np.float64)
    return out


def project(points: np.ndarray, origin: np.ndarray, k: np.ndarray) -> np.ndarray:
    """World points (N, 3) -> (N, 3) array of pixel u, v and z-depth for a camera at `origin`."""
    rel = np.asarray(points, np.float64) - np.asarray(origin, np.float64)
    z = rel[:, 2]
    u = k[0, 0] * rel[:, 0] / z + k[0, 2]
    v = k[1, 1] * -rel[:, 1] / z + k[1, 2]
    return np.stack([u, v, z], axis=1)
