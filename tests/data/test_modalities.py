"""X modalities against analytic scenes: exact depth maps of planes and a sphere seen through K.

Tolerances. On a plane 1/Z is affine in the pixel coordinates, so the finite differences the
estimator takes are exact and the only error is float32 rounding (depth is stored as float32;
differences of 1/Z between neighbouring pixels lose about 3 significant digits at 200 m): the
measured worst case is 0.03 deg, so planes must be within PLANE_TOL_DEG = 0.1 deg. A wrong
focal length by 10 % or a sign slip gives degrees, so this tolerance still tells right from wrong.
A sphere is curved: the central-difference estimator is second-order accurate, worst right next
to the silhouette where the surface is seen at grazing angle; see test_sphere_in_front_of_wall.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lix_train.data.modalities import (
    KITTI_STEREO_BASELINE_M, MODALITY_CHANNELS, depth_to_disparity, disparity_to_depth, encode_x,
    inverse_depth, surface_normals,
)
from lix_train.data.sample import intrinsics_matrix

PLANE_TOL_DEG = 0.1
H, W = 96, 160
K = intrinsics_matrix(120.0, 110.0, 79.5, 47.5)


def _rays() -> np.ndarray:
    """(H, W, 3) viewing rays (x, y, 1) = K^-1 (u, v, 1) in float64."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)


def render_plane(normal, point, max_depth: float = 200.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact float32 depth of the plane through `point` with `normal`; 0 where not in view."""
    n = np.asarray(normal, np.float64) / np.linalg.norm(normal)
    offset = -n @ np.asarray(point, np.float64)  # plane: n . P + offset = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = -offset / (_rays() @ n)
    z = np.where((z > 0) & (z < max_depth), z, 0.0).astype(np.float32)
    facing = n if offset > 0 else -n  # the side the camera (at the origin) is on
    return z, facing


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.clip(np.sum(np.asarray(a, np.float64) * b, axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def test_ground_plane_seen_from_1_5_m_points_up():
    z, _ = render_plane((0, -1, 0), (0, 1.5, 0))  # y down: the road is 1.5 m below the camera
    known = z > 0
    assert 0.3 < known.mean() < 0.7  # the horizon is in view; the sky is unknown
    normals = surface_normals(z, K)
    assert angle_deg(normals[known], [0, -1, 0]).max() < PLANE_TOL_DEG
    assert np.all(normals[~known] == 0)


def test_fronto_parallel_wall_faces_the_camera():
    z = np.full((H, W), 10.0, np.float32)
    normals = surface_normals(z, K)
    assert angle_deg(normals, [0, 0, -1]).max() < PLANE_TOL_DEG


@pytest.mark.parametrize(
    "normal",
    [
        (-np.sin(np.radians(30)), 0.0, -np.cos(np.radians(30))),  # wall rotated 30 deg about y
        (np.sin(np.radians(30)), 0.0, -np.cos(np.radians(30))),
        (0.3, -0.4, -0.8),  # oblique: tilted about both image axes
    ],
)
def test_slanted_plane_normal_is_exact(normal):
    z, expected = render_plane(normal, (0, 0, 8.0))
    known = z > 0
    assert known.all()
    np.testing.assert_allclose(expected, np.asarray(normal) / np.linalg.norm(normal))
    assert angle_deg(surface_normals(z, K)[known], expected).max() < PLANE_TOL_DEG


def test_wrong_focal_length_is_caught_by_the_plane_tolerance():
    """The tolerance is tight enough to see a 10 % calibration error."""
    z, expected = render_plane((0.3, -0.4, -0.8), (0, 0, 8.0))
    wrong = K.copy()
    wrong[0, 0] *= 1.1
    assert angle_deg(surface_normals(z, wrong), expected).max() > 10 * PLANE_TOL_DEG


def test_sphere_in_front_of_wall():
    """Curved surface and depth edges: exact wall next to the silhouette, sphere to curvature error.

    Wall pixels next to the silhouette see a jump of 7 m on one side; the edge-aware chord keeps
    them exact. On the sphere the measured error is a median of 0.04 deg and at most 0.55 deg two
    pixels in from the silhouette (grazing view), so 0.2 deg median / 1 deg max leave a factor 2;
    a one-sided SNE estimate of n_z fails this badly (zero normals at the nearest point).
    """
    wall_z, wall_n = render_plane((-0.5, 0.0, -np.sqrt(3) / 2), (0, 0, 15.0))
    rays = _rays()
    centre, radius = np.array([0.5, 0.2, 8.0]), 2.0
    b = rays @ centre
    rr = np.sum(rays * rays, axis=-1)
    disc = b * b - rr * (centre @ centre - radius**2)
    hit = disc > 0
    t = (b - np.sqrt(np.maximum(disc, 0))) / rr
    z = np.where(hit, t, wall_z).astype(np.float32)
    sphere_n = (rays * z[..., None].astype(np.float64) - centre) / radius
    err = angle_deg(surface_normals(z, K), np.where(hit[..., None], sphere_n, wall_n))

    kernel = np.ones((3, 3), np.uint8)
    interior = cv2.erode(hit.astype(np.uint8), kernel, iterations=2).astype(bool)
    assert 500 < interior.sum() and hit.sum() < H * W / 2
    assert err[~hit].max() < PLANE_TOL_DEG
    assert np.median(err[interior]) < 0.2
    assert err[interior].max() < 1.0


def test_normals_do_not_depend_on_depth_scale():
    """Normals are scale-free: a metric and a half-scale depth give the same directions."""
    z = np.random.default_rng(0).uniform(3.0, 30.0, (H, W)).astype(np.float32)
    z = cv2.GaussianBlur(z, (0, 0), 3.0)  # a smooth, non-planar surface
    a = surface_normals(z, K)
    b = surface_normals(z * np.float32(0.5), K)
    assert np.all(np.linalg.norm(a, axis=-1) > 0)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_normals_are_unit_and_face_the_camera():
    z = np.random.default_rng(1).uniform(3.0, 30.0, (H, W)).astype(np.float32)
    z[10:20, 10:40] = 0.0
    normals = surface_normals(z, K)
    length = np.linalg.norm(normals, axis=-1)
    valid = length > 0
    np.testing.assert_allclose(length[valid], 1.0, atol=1e-5)
    assert np.all(np.sum(normals * _rays(), axis=-1)[valid] < 0)


def test_unknown_depth_gives_zero_normals():
    z = np.full((H, W), 5.0, np.float32)
    z[0:10, :] = 0.0
    z[20, 30] = np.nan
    z[40, 50] = np.inf
    z[50, 60] = -1.0
    normals = surface_normals(z, K)
    for r, c in [(5, 5), (20, 30), (40, 50), (50, 60)]:
        assert np.all(normals[r, c] == 0)
    assert np.all(np.isfinite(normals))
    rest = np.isfinite(z) & (z > 0)
    assert angle_deg(normals[rest], [0, 0, -1]).max() < PLANE_TOL_DEG  # holes do not spoil neighbours


def test_pixels_without_known_neighbours_give_zero_normals():
    z = np.zeros((H, W), np.float32)
    z[30, 30] = 5.0  # isolated pixel
    z[50:60, 80] = 5.0  # a column: vertical neighbours, but none horizontally
    normals = surface_normals(z, K)
    assert np.all(normals == 0)


def test_all_unknown_gives_zeros():
    assert np.all(surface_normals(np.zeros((H, W), np.float32), K) == 0)


def test_inverse_depth_identities():
    z = np.array([[2.0, 0.5, 0.0], [np.nan, np.inf, 700.0]], np.float32)
    inv = inverse_depth(z)
    assert inv.dtype == np.float32
    np.testing.assert_allclose(inv, [[0.5, 2.0, 0.0], [0.0, 0.0, 1 / 700.0]], rtol=1e-6)
    capped = inverse_depth(z, max_depth=655.0)
    assert capped[1, 2] == 0.0 and capped[0, 0] == 0.5


def test_disparity_round_trips():
    rng = np.random.default_rng(0)
    z = rng.uniform(1.0, 80.0, (8, 9)).astype(np.float32)
    z[0, 0] = 0.0
    disp = depth_to_disparity(z, 725.0087, 0.532725)
    assert disp.dtype == np.float32 and disp[0, 0] == 0.0
    known = z > 0
    np.testing.assert_allclose(disp[known] * z[known], 725.0087 * 0.532725, rtol=1e-6)
    np.testing.assert_allclose(disparity_to_depth(disp, 725.0087, 0.532725), z, rtol=1e-6)
    d = rng.uniform(0.5, 200.0, (8, 9)).astype(np.float32)
    np.testing.assert_allclose(depth_to_disparity(disparity_to_depth(d, 700.0, 0.54), 700.0, 0.54), d, rtol=1e-6)


def test_no_disparity_means_unknown_depth():
    d = np.array([[0.0, -3.0, np.nan, 10.0]], np.float32)
    np.testing.assert_allclose(disparity_to_depth(d, 100.0, 0.5), [[0.0, 0.0, 0.0, 5.0]])


@pytest.mark.parametrize("modality", sorted(MODALITY_CHANNELS))
def test_encode_x_channels(modality):
    z, _ = render_plane((0, -1, 0), (0, 1.5, 0))
    x = encode_x(z, K, modality)
    assert x.dtype == np.float32 and x.shape == (MODALITY_CHANNELS[modality], H, W)
    assert np.all(x[:, z == 0] == 0)


def test_encode_x_values():
    z, _ = render_plane((0.3, -0.4, -0.8), (0, 0, 8.0))
    np.testing.assert_array_equal(encode_x(z, K, "normals"), surface_normals(z, K).transpose(2, 0, 1))
    np.testing.assert_array_equal(encode_x(z, K, "inverse_depth")[0], inverse_depth(z))
    np.testing.assert_array_equal(encode_x(z, None, "depth")[0], z)
    disp = encode_x(z, K, "disparity", baseline_m=0.5)[0]
    np.testing.assert_allclose(disp, K[0, 0] * 0.5 * inverse_depth(z), rtol=1e-6)
    default = encode_x(z, K, "disparity")[0]
    np.testing.assert_allclose(default, K[0, 0] * KITTI_STEREO_BASELINE_M * inverse_depth(z), rtol=1e-6)


def test_encode_x_max_depth_masks_far_values_in_every_modality():
    z = np.full((H, W), 10.0, np.float32)
    z[:20] = 655.35  # a sky sentinel
    for modality in MODALITY_CHANNELS:
        x = encode_x(z, K, modality, max_depth=300.0)
        assert np.all(x[:, :20] == 0), modality
        assert np.all(np.any(x[:, 21:] != 0, axis=0)), modality


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: inverse_depth(np.ones((2, 3, 4), np.float32)), "depth"),
        (lambda: inverse_depth(np.ones((4, 4), np.uint16)), "depth"),
        (lambda: inverse_depth(np.ones((4, 4), np.float32), max_depth=-1.0), "max_depth"),
        (lambda: surface_normals(np.ones((4,), np.float32), K), "depth"),
        (lambda: surface_normals(np.ones((4, 4), np.float32), np.eye(3)[:2]), "intrinsics"),
        (lambda: surface_normals(np.ones((4, 4), np.float32), np.diag([-1.0, 1.0, 1.0])), "intrinsics"),
        (lambda: surface_normals(np.ones((4, 4), np.float32), np.array([[1, 0.1, 0], [0, 1, 0], [0, 0, 1.0]])), "intrinsics"),
        (lambda: depth_to_disparity(np.ones((4, 4), np.float32), 700.0, -0.54), "baseline_m"),
        (lambda: depth_to_disparity(np.ones((4, 4), np.float32), 0.0, 0.54), "focal_px"),
        (lambda: disparity_to_depth(np.ones((1, 4, 4), np.float32), 700.0, 0.54), "disparity"),
        (lambda: disparity_to_depth(np.ones((4, 4), np.float32), 700.0, float("nan")), "baseline_m"),
        (lambda: encode_x(np.ones((4, 4, 1), np.float32), K, "depth"), "sample_depth"),
        (lambda: encode_x(np.ones((4, 4), np.float32), K, "rgb"), "modality"),
        (lambda: encode_x(np.ones((4, 4), np.float32), None, "normals"), "intrinsics"),
        (lambda: encode_x(np.ones((4, 4), np.float32), None, "disparity"), "intrinsics"),
        (lambda: encode_x(np.ones((4, 4), np.float32), K, "disparity", baseline_m=-1), "baseline_m"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
