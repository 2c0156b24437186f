"""X modalities: the geometric channels the RGB+X teacher sees, computed from metric depth.

Everything here is a pure numpy function of a depth map (metres, 0 or non-finite = unknown) and,
where geometry needs it, the pinhole matrix K. Unknown depth always encodes as 0, so "no
measurement" is one fixed value the network can learn to ignore, whatever the modality.

Surface normals follow the SNE idea (Fan et al., SNE-RoadSeg, ECCV 2020): for a plane
n . P + c = 0 seen through a pinhole camera, 1/Z is affine in the pixel coordinates, and

    fx * d(1/Z)/du = -n_x / c,    fy * d(1/Z)/dv = -n_y / c,

so the two image gradients of inverse depth give n_x and n_y up to one common scale. n_z (at the
same scale) follows from any neighbour Q of the pixel P on the same surface, because the
difference vector lies in the plane: n_x dX + n_y dY + n_z dZ = 0.
"""

from __future__ import annotations

import numpy as np

# Channels of each X encoding; the order of this mapping is the order shown in CLIs and errors.
MODALITY_CHANNELS: dict[str, int] = {"normals": 3, "inverse_depth": 1, "disparity": 1, "depth": 1}
MODALITIES: tuple[str, ...] = tuple(MODALITY_CHANNELS)

# KITTI's colour stereo rig (cameras 2 and 3) is 0.54 m wide; vKITTI2 clones it (0.532725 m).
# Used for "disparity" when a source does not say which baseline its depth belongs to.
KITTI_STEREO_BASELINE_M = 0.54

# Neighbours on both sides of a pixel lie on its surface when the two one-sided changes of 1/Z
# agree to this fraction of 1/Z (exactly equal on a plane); otherwise one is across a depth edge.
_SAME_SURFACE_TOL = 0.02
# Chords whose depth changes by less than this (relative to Z) carry no information on n_z.
_FLAT_TOL = 1e-5


def _check_depth(depth: np.ndarray, name: str) -> np.ndarray:
    """An (H, W) floating array, or ValueError naming `name` (catches cm-as-uint16 mistakes)."""
    arr = np.asarray(depth)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point array in metres, got dtype {arr.dtype}")
    return arr


def _check_positive(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _check_intrinsics(intrinsics: np.ndarray, name: str = "intrinsics") -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a zero-skew pinhole K, or ValueError naming `name`."""
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"{name} must be a 3x3 pinhole matrix K, got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise ValueError(f"{name} has non-finite entries: {k.tolist()}")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"{name}: focal lengths K[0,0], K[1,1] must be positive, got {k[0, 0]}, {k[1, 1]}")
    if k[0, 1] != 0 or k[1, 0] != 0 or not np.array_equal(k[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"{name} must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew), got {k.tolist()}")
    return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])


def _known(depth: np.ndarray, max_depth: float | None) -> np.ndarray:
    """Mask of usable depth: finite, positive and (optionally) not beyond max_depth."""
    with np.errstate(invalid="ignore"):
        known = np.isfinite(depth) & (depth > 0)
        if max_depth is not None:
            known &= depth <= _check_positive("max_depth", max_depth)
    return known


def inverse_depth(depth: np.ndarray, max_depth: float | None = None) -> np.ndarray:
    """1 / depth as float32 (1/m); 0 where depth is unknown.

    Depth beyond `max_depth` (e.g. a sky sentinel like vKITTI2's 655.35 m) also gives 0: at
    that range 1/Z is indistinguishable from "infinitely far", which is what 0 means here.
    """
    z = _check_depth(depth, "depth")
    known = _known(z, max_depth)
    out = np.zeros(z.shape, np.float32)
    np.divide(1.0, z, out=out, where=known, casting="unsafe")
    return out


def _focal_baseline_over(values: np.ndarray, name: str, focal_px: float, baseline_m: float) -> np.ndarray:
    """f * B / v (float32), 0 where v is unknown: depth <-> disparity is the same map both ways."""
    v = _check_depth(values, name)
    fb = _check_positive("focal_px", focal_px) * _check_positive("baseline_m", baseline_m)
    out = np.zeros(v.shape, np.float32)
    np.divide(fb, v, out=out, where=_known(v, None), casting="unsafe")
    return out


def depth_to_disparity(depth: np.ndarray, focal_px: float, baseline_m: float) -> np.ndarray:
    """Stereo disparity f * B / Z in pixels (float32); 0 where depth is unknown."""
    return _focal_baseline_over(depth, "depth", focal_px, baseline_m)


def disparity_to_depth(disparity: np.ndarray, focal_px: float, baseline_m: float) -> np.ndarray:
    """Depth f * B / d in metres (float32); 0 where disparity <= 0 or non-finite (no match)."""
    return _focal_baseline_over(disparity, "disparity", focal_px, baseline_m)


def _axis_chord(z, inv, zp, invp, okp, dy: int, dx: int, tol):
    """The chord of every pixel along one image axis (see surface_normals).

    Returns d(1/Z) per pixel along the axis, whether it is defined, the chord's dZ, and
    `reach` = Z_next [if the chord ends there] + Z_prev [if it starts there], which carries the
    in-plane part of the chord: dX = x dZ + reach / fx along u, dY = y dZ + reach / fy along v.
    """
    h, w = z.shape
    ahead = (slice(1 + dy, 1 + dy + h), slice(1 + dx, 1 + dx + w))
    behind = (slice(1 - dy, 1 - dy + h), slice(1 - dx, 1 - dx + w))
    next_ok, prev_ok = okp[ahead], okp[behind]
    fwd = invp[ahead] - inv
    bwd = inv - invp[behind]
    smooth = np.abs(fwd - bwd) <= tol
    smooth &= next_ok & prev_ok
    use_next = np.abs(fwd) <= np.abs(bwd)
    use_next |= ~prev_ok
    use_next &= next_ok
    use_next |= smooth
    use_prev = prev_ok & ~use_next
    use_prev |= smooth
    span = use_next.astype(np.float32)
    span += use_prev
    defined = span > 0
    fwd *= use_next
    bwd *= use_prev
    fwd += bwd
    derivative = np.divide(fwd, span, out=fwd, where=defined)
    z_next, z_prev = zp[ahead] * use_next, zp[behind] * use_prev
    dz = z_next - z_prev
    dz -= z * (use_next.astype(np.float32) - use_prev)  # Z_end - Z_start
    z_next += z_prev
    return derivative, defined, dz, z_next


def surface_normals(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """SNE-style unit normals (H, W, 3) float32 in the camera frame (x right, y down, z forward).

    Along each image axis the pixel P gets a chord between its two neighbours (central
    difference) when both lie on P's surface, else between P and the neighbour across the
    smaller jump of 1/Z (at a depth edge the larger jump belongs to another surface; planes stay
    exact because 1/Z is affine on them). From the chords:

    * n_x = fx d(1/Z)/du and n_y = fy d(1/Z)/dv (one common scale, see the module docstring);
    * n_z from n_x dX + n_y dY + n_z dZ = 0 for each chord, by least squares (weights dZ^2, so
      a chord at constant depth, which says nothing about n_z, cannot blow the estimate up).
      Central chords cancel the curvature term that makes one-sided neighbour estimates of n_z
      collapse towards 0 at depth extrema of curved surfaces (the nearest point of a pole).
    * Where no chord changes depth (a fronto-parallel patch, or an extremum) n_z comes from the
      tangent plane through P itself: 1/Z - n_x x - n_y y, with (x, y, 1) = K^-1 (u, v, 1).

    Normals face the camera (n . ray < 0). Unknown depth, and pixels without a known neighbour
    both horizontally and vertically, give the zero vector. float32 throughout: the depth is
    float32 already, so float64 would cost time without adding accuracy. In-place arithmetic
    keeps the number of fresh full-size arrays low: page-faulting them in dominates otherwise.
    """
    z = _check_depth(depth, "depth").astype(np.float32)
    fx, fy, cx, cy = _check_intrinsics(intrinsics)
    h, w = z.shape
    known = _known(z, None)
    np.copyto(z, 0.0, where=~known)
    inv = np.divide(np.float32(1.0), z, out=np.zeros_like(z), where=known)
    ray_x = ((np.arange(w, dtype=np.float32) - cx) / fx).astype(np.float32)[None, :]
    ray_y = ((np.arange(h, dtype=np.float32) - cy) / fy).astype(np.float32)[:, None]

    # A one-pixel ring of unknown depth lets every neighbour be a plain slice.
    zp, invp, okp = np.pad(z, 1), np.pad(inv, 1), np.pad(known, 1)
    tol = inv * np.float32(_SAME_SURFACE_TOL)
    du, du_ok, dz_u, reach_u = _axis_chord(z, inv, zp, invp, okp, 0, 1, tol)
    dv, dv_ok, dz_v, reach_v = _axis_chord(z, inv, zp, invp, okp, 1, 0, tol)
    nx, ny = du * np.float32(fx), dv * np.float32(fy)
    along_ray = nx * ray_x
    along_ray += ny * ray_y  # n_x x + n_y y

    # Least squares over the two chords: n_z = -sum (n_x dX + n_y dY) dZ / sum dZ^2, where
    # n_x dX + n_y dY = (n_x x + n_y y) dZ + d(1/Z) reach (the in-plane step of the chord).
    num = (along_ray * dz_u + du * reach_u) * dz_u
    num += (along_ray * dz_v + dv * reach_v) * dz_v
    den = dz_u * dz_u
    den += dz_v * dz_v
    nz = inv - along_ray
    np.divide(-num, den, out=nz, where=den > np.square(z * np.float32(_FLAT_TOL)))

    length = np.sqrt(nx * nx + ny * ny + nz * nz)
    good = known & du_ok & dv_ok & np.isfinite(length) & (length > 0)
    scale = np.divide(np.float32(1.0), length, out=np.zeros_like(length), where=good)
    # Face the camera: n . (x, y, 1) < 0 (the viewing ray is (x, y, 1) up to Z > 0).
    along_ray += nz
    scale = np.copysign(scale, -along_ray, out=scale)
    normals = np.stack([nx * scale, ny * scale, nz * scale], axis=-1)
    # Only degenerate input (e.g. subnormal depth, 1/Z = inf) reaches here non-finite: unknown.
    return np.nan_to_num(normals, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def encode_x(
    sample_depth: np.ndarray,
    intrinsics: np.ndarray | None,
    modality: str,
    *,
    baseline_m: float = KITTI_STEREO_BASELINE_M,
    max_depth: float | None = None,
) -> np.ndarray:
    """The teacher's X input (C, H, W) float32 for one frame, from its full-resolution depth.

    normals (3 ch, needs K), inverse_depth (1 ch, 1/m), disparity (1 ch, pixels, needs K for
    fx and the stereo `baseline_m`), depth (1 ch, metres). Depth beyond `max_depth` counts as
    unknown (0) in every encoding. Scaling to network-friendly ranges is the transforms' job.
    """
    if modality not in MODALITY_CHANNELS:
        raise ValueError(f"modality={modality!r} is not one of {', '.join(map(repr, MODALITIES))}")
    z = _check_depth(sample_depth, "sample_depth")
    z = np.where(_known(z, max_depth), z, 0.0).astype(np.float32)
    if modality in ("normals", "disparity") and intrinsics is None:
        raise ValueError(f"intrinsics: modality {modality!r} needs the camera matrix K, got None")
    if modality == "normals":
        return np.ascontiguousarray(surface_normals(z, intrinsics).transpose(2, 0, 1))
    if modality == "inverse_depth":
        return inverse_depth(z)[None]
    if modality == "disparity":
        fx, _, _, _ = _check_intrinsics(intrinsics)
        return depth_to_disparity(z, fx, baseline_m)[None]
    return z[None]
