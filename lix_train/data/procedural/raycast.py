"""Vectorised ray casting of a procedural scene: per-pixel depth, surface, object and label.

Cost is bounded by screen-space culling: every primitive's world bounding box is clipped to the
near plane and projected to a pixel rectangle (all primitives at once); primitives off-screen
or beyond `far` are dropped. The image is cut into tiles, and each tile intersects its pixels
with all the primitives whose rectangle overlaps it in one batched (pixels x primitives) array
operation per primitive kind, then keeps the nearest hit. The ground plane y = 0 is solved in
closed form for the whole image first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lix_train.data.procedural.camera import pixel_rays
from lix_train.data.procedural.scene import CATEGORY, KINDS, Scene, Shapes

NEAR = 0.05
FAR = 400.0
SKY, GROUND = -1, -2  # primitive ids of pixels that hit no primitive


@dataclass(frozen=True)
class Hits:
    """What one camera sees at one frame. Sky pixels: depth inf, obj -1, normal 0.

    depth:    (H, W) float32 z-depth in metres (inf for sky)
    point:    (H, W, 3) float32 world hit points
    normal:   (H, W, 3) float32 world unit normals
    obj:      (H, W) int32 object ids (-1 sky)
    category: (H, W) uint8 index into VKITTI2_CATEGORIES
    mul:      (H, W) float32 albedo multiplier of the hit part
    pattern:  (H, W) int8 surface pattern of the hit part
    face_uv:  (H, W, 3) float32 hit point in box-normalised coordinates (0..1), 0 off boxes
    rays:     (H, W, 3) float32 ray directions (z = 1)
    """

    depth: np.ndarray
    point: np.ndarray
    normal: np.ndarray
    obj: np.ndarray
    category: np.ndarray
    mul: np.ndarray
    pattern: np.ndarray
    face_uv: np.ndarray
    rays: np.ndarray


def bounds(kind: str, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World axis-aligned bounding boxes (lo, hi), each (N, 3), of primitives of one kind."""
    p = params
    if kind == "box":
        return p[:, :3], p[:, 3:6]
    if kind == "cylinder":
        x, z, r, y0, y1 = p.T
        return np.stack([x - r, y0, z - r], 1), np.stack([x + r, y1, z + r], 1)
    if kind == "ellipsoid":
        return p[:, :3] - p[:, 3:6], p[:, :3] + p[:, 3:6]
    raise ValueError(f"unknown primitive kind {kind!r}")


def screen_rects(lo, hi, origin, k, height, width, near=NEAR, far=FAR) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rectangles [u0, u1) x [v0, v1) covering each box's projection, and a visibility mask.

    Exact for the axis-aligned camera of camera.py: the part of a box in front of the near plane
    is again a box, and the extreme projections lie at its corners.
    """
    rel_lo = lo.astype(np.float64) - origin
    rel_hi = hi.astype(np.float64) - origin
    z0 = np.maximum(rel_lo[:, 2], near)
    z1 = rel_hi[:, 2]
    visible = (z1 > near) & (z0 < far)
    z0 = np.where(visible, z0, 1.0)
    z1 = np.where(visible, np.maximum(z1, z0), 1.0)
    xs = np.stack([rel_lo[:, 0] / z0, rel_lo[:, 0] / z1, rel_hi[:, 0] / z0, rel_hi[:, 0] / z1], 1)
    ys = -np.stack([rel_lo[:, 1] / z0, rel_lo[:, 1] / z1, rel_hi[:, 1] / z0, rel_hi[:, 1] / z1], 1)
    u0 = np.floor(k[0, 0] * xs.min(1) + k[0, 2]) - 1
    u1 = np.ceil(k[0, 0] * xs.max(1) + k[0, 2]) + 2
    v0 = np.floor(k[1, 1] * ys.min(1) + k[1, 2]) - 1
    v1 = np.ceil(k[1, 1] * ys.max(1) + k[1, 2]) + 2
    rects = np.stack([np.clip(u0, 0, width), np.clip(u1, 0, width), np.clip(v0, 0, height), np.clip(v1, 0, height)], 1)
    rects = rects.astype(np.int64)
    visible &= (rects[:, 1] > rects[:, 0]) & (rects[:, 3] > rects[:, 2])
    return rects, visible


def intersect_boxes(o: np.ndarray, dx: np.ndarray, dy: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Entry hits of a grid of rays (dx[col], dy[row], 1) from o with boxes p (K, 6).

    Returns (rows, cols, K) ray parameters, inf on a miss. The slabs are separable: the x slab
    depends only on the column, the y slab only on the row and the z slab on neither.
    """
    ix, iy = (1.0 / dx)[:, None], (1.0 / dy)[:, None]
    ax, bx = (p[:, 0] - o[0]) * ix, (p[:, 3] - o[0]) * ix  # (cols, K)
    ay, by = (p[:, 1] - o[1]) * iy, (p[:, 4] - o[1]) * iy  # (rows, K)
    t_in = np.maximum(np.minimum(ax, bx)[None], np.minimum(ay, by)[:, None])
    np.maximum(t_in, p[:, 2] - o[2], out=t_in)
    t_out = np.minimum(np.maximum(ax, bx)[None], np.maximum(ay, by)[:, None])
    np.minimum(t_out, p[:, 5] - o[2], out=t_out)
    miss = (t_out < t_in) | (t_in <= NEAR)
    t_in[miss] = np.inf
    return t_in


def intersect_cylinders(o: np.ndarray, dx: np.ndarray, dy: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Entry hits of a ray grid with vertical cylinders p (K, 5) = (x, z, r, y0, y1): side and top.

    In the xz-plane a ray depends only on its column, so the side quadratic is solved per
    column; only the height test needs the row.
    """
    ox = o[0] - p[:, 0]
    oz = o[2] - p[:, 1]
    r2 = p[:, 2] ** 2
    dxc = dx[:, None]
    a = dxc * dxc + 1.0  # (cols, 1)
    half_b = dxc * ox + oz  # (cols, K)
    c = ox * ox + oz * oz - r2
    disc = half_b * half_b - a * c
    t = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / a
    t[(disc < 0) | (t <= NEAR)] = np.inf
    y = o[1] + t[None] * dy[:, None, None]  # (rows, cols, K)
    side = np.where((y >= p[:, 3]) & (y <= p[:, 4]), t[None], np.float32(np.inf))
    # top cap, seen from above: the cap plane is hit at a row-only parameter
    tc = (p[:, 4] - o[1]) / dy[:, None]  # (rows, K)
    tc[tc <= NEAR] = np.inf
    cx = ox + tc[:, None, :] * dxc[None]
    cz = oz + tc[:, None, :]
    cap = np.where(cx * cx + cz * cz <= r2, tc[:, None, :], np.float32(np.inf))
    return np.minimum(side, cap, out=side)


def intersect_ellipsoids(o: np.ndarray, dx: np.ndarray, dy: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Entry hits of a ray grid with axis-aligned ellipsoids p (K, 6) = (centre, radii).

    In the unit-sphere frame of each ellipsoid the quadratic's terms are sums of a column
    part, a row part and a constant, built by broadcasting.
    """
    inv_r = 1.0 / p[:, 3:]
    oc = (o - p[:, :3]) * inv_r  # (K, 3)
    qx = dx[:, None] * inv_r[:, 0]  # (cols, K)
    qy = dy[:, None] * inv_r[:, 1]  # (rows, K)
    qz = inv_r[:, 2]
    a = (qx * qx)[None] + (qy * qy)[:, None] + qz * qz
    half_b = (qx * oc[:, 0])[None] + (qy * oc[:, 1])[:, None] + qz * oc[:, 2]
    c = (oc * oc).sum(axis=1) - 1.0
    disc = half_b * half_b - a * c
    t = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / a
    t[(disc < 0) | (t <= NEAR)] = np.inf
    return t


INTERSECT = {"box": intersect_boxes, "cylinder": intersect_cylinders, "ellipsoid": intersect_ellipsoids}


def normals_at(kind: str, p: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World unit normals at hit points (N, 3) on primitives p (N, width), and box-face coords."""
    uv = np.zeros_like(points)
    if kind == "box":
        lo, hi = p[:, :3], p[:, 3:]
        size = np.maximum(hi - lo, 1e-6)
        uv = np.clip((points - lo) / size, 0.0, 1.0)
        rel = (uv - 0.5) * 2.0 * size  # signed distance from the centre, in metres x 2
        gap = size - np.abs(rel)  # how far from each face pair (0 on the face)
        axis = np.argmin(gap, axis=1)
        n = np.zeros_like(points)
        n[np.arange(len(points)), axis] = np.sign(rel[np.arange(len(points)), axis])
        return n, uv.astype(np.float32)
    if kind == "cylinder":
        x, z, r, y1 = p[:, 0], p[:, 1], p[:, 2], p[:, 4]
        n = np.stack([(points[:, 0] - x) / r, np.zeros_like(x), (points[:, 2] - z) / r], 1)
        cap = points[:, 1] >= y1 - 1e-3
        n[cap] = (0.0, 1.0, 0.0)
    else:
        n = (points - p[:, :3]) / p[:, 3:] ** 2
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return n.astype(np.float32), uv.astype(np.float32)


def _visible(shapes: dict[str, Shapes], origin, k, height, width):
    """Per kind: (params, obj, mul, pattern, rects) of primitives that can show up in the image."""
    out = {}
    for kind in KINDS:
        s = shapes[kind]
        if len(s.params) == 0:
            continue
        lo, hi = bounds(kind, s.params)
        rects, vis = screen_rects(lo, hi, origin, k, height, width)
        if vis.any():
            out[kind] = (s.params[vis], s.obj[vis], s.mul[vis], s.pattern[vis], rects[vis])
    return out


def cast(scene: Scene, frame: int, k: np.ndarray, height: int, width: int, baseline: float = 0.0,
         tile: tuple[int, int] = (32, 64)) -> Hits:
    """Ray-cast the scene for the camera at `frame` (shifted right by `baseline` metres)."""
    origin = scene.camera_origin(frame, baseline)
    o = origin.astype(np.float32)
    rays = pixel_rays(k, height, width)
    col_dx, row_dy = rays[0, :, 0].copy(), rays[:, 0, 1].copy()

    # ground plane y = 0 for every downward ray
    dy = rays[..., 1]
    down = dy < 0
    depth = np.full((height, width), np.inf, np.float32)
    depth[down] = -o[1] / dy[down]
    prim = np.where(down, GROUND, SKY).astype(np.int64)

    visible = _visible(scene.shapes_at(frame), origin, k, height, width)
    kinds = list(visible)
    offsets, start = {}, 0
    for kind in kinds:
        offsets[kind] = start
        start += len(visible[kind][0])

    th, tw = tile
    for v0 in range(0, height, th):
        v1 = min(v0 + th, height)
        for u0 in range(0, width, tw):
            u1 = min(u0 + tw, width)
            dx, dy = col_dx[u0:u1], row_dy[v0:v1]
            best_t = depth[v0:v1, u0:u1].reshape(-1).copy()
            best_p = prim[v0:v1, u0:u1].reshape(-1).copy()
            for kind in kinds:
                params, _, _, _, r = visible[kind]
                idx = np.flatnonzero((r[:, 0] < u1) & (r[:, 1] > u0) & (r[:, 2] < v1) & (r[:, 3] > v0))
                if idx.size == 0:
                    continue
                t = INTERSECT[kind](o, dx, dy, params[idx]).reshape(-1, idx.size)
                j = t.argmin(axis=1)
                tj = t[np.arange(len(t)), j]
                closer = tj < best_t
                best_t[closer] = tj[closer]
                best_p[closer] = offsets[kind] + idx[j[closer]]
            depth[v0:v1, u0:u1] = best_t.reshape(v1 - v0, u1 - u0)
            prim[v0:v1, u0:u1] = best_p.reshape(v1 - v0, u1 - u0)

    return _surface(scene, origin, rays, depth, prim, visible, offsets)


def _surface(scene, origin, rays, depth, prim, visible, offsets) -> Hits:
    """Hit points, normals, objects and categories from the winning primitive of every pixel."""
    h, w = depth.shape
    n_px = h * w
    flat_prim = prim.reshape(-1)
    flat_depth = depth.reshape(-1)
    hit = np.flatnonzero(np.isfinite(flat_depth))
    point = np.zeros((n_px, 3), np.float32)
    point[hit] = origin.astype(np.float32) + flat_depth[hit, None] * rays.reshape(-1, 3)[hit]
    normal = np.zeros((n_px, 3), np.float32)
    face_uv = np.zeros((n_px, 3), np.float32)
    obj = np.full(n_px, -1, np.int32)
    mul = np.ones(n_px, np.float32)
    pattern = np.zeros(n_px, np.int8)

    ground = np.flatnonzero(flat_prim == GROUND)
    normal[ground, 1] = 1.0
    obj[ground] = scene.ground_object(point[ground, 0], point[ground, 2])
    on_shape = hit[flat_prim[hit] >= 0]
    ids_all = flat_prim[on_shape]
    for kind, (params, pobj, pmul, ppat, _) in visible.items():
        local = ids_all - offsets[kind]
        mine = (local >= 0) & (local < len(params))
        if not mine.any():
            continue
        sel, ids = on_shape[mine], local[mine]
        normal[sel], face_uv[sel] = normals_at(kind, params[ids], point[sel])
        obj[sel] = pobj[ids]
        mul[sel] = pmul[ids]
        pattern[sel] = ppat[ids]

    category = np.full(n_px, CATEGORY["Sky"], np.uint8)
    category[hit] = scene.obj_category[obj[hit]]
    return Hits(
        depth, point.reshape(h, w, 3), normal.reshape(h, w, 3), obj.reshape(h, w), category.reshape(h, w),
        mul.reshape(h, w), pattern.reshape(h, w), face_uv.reshape(h, w, 3), rays,
    )
