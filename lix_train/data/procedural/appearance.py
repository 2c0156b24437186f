"""RGB for one lighting / weather variation: palettes, textures, shading, fog, sensor noise.

Why it looks the way it does: the dataset must make geometry *matter*. An `ambiguity` in
[0, 1] blends every object's own class colour with a colour drawn from a palette shared by
several classes (one grey family for road, buildings, vehicles, poles, signs, lights, rails and
misc; one green / brown family for terrain, vegetation and trees), raises the ambient light so
Lambertian shading carries only a weak normal cue, fades windows, lane markings, lamps and sign
faces, greys the sky and raises sensor noise. At ambiguity 1 RGB alone leaves the classes of a
family hard to tell apart while depth and normals still separate them. Per-object low-frequency
texture keeps colour from identifying an instance. Everything here is a function of the hits and
an rng: geometry and labels are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lix_train.data.procedural.raycast import Hits
from lix_train.data.procedural.scene import CATEGORY, LAMPS, PAVING, SIGN_FACE, WINDOWS, Scene


@dataclass(frozen=True)
class Lighting:
    """One vKITTI2-style variation: sun, sky, fog and exposure."""

    name: str
    sun_azimuth_deg: float  # 0 = along +z (ahead), 90 = from the right (+x)
    sun_elevation_deg: float
    sun_strength: float  # 0..1 share of direct light before ambiguity raises the ambient
    sun_rgb: tuple[float, float, float]
    ambient_rgb: tuple[float, float, float]
    sky_zenith: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    fog_density: float  # 1 / metres
    fog_rgb: tuple[float, float, float]
    exposure: float
    rain: bool = False

    def sun_direction(self) -> np.ndarray:
        """Unit world vector towards the sun."""
        az, el = np.radians(self.sun_azimuth_deg), np.radians(self.sun_elevation_deg)
        return np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)], np.float32)


# vKITTI2's weather / lighting names; geometry-changing ones (15-deg-left ...) are not modelled
LIGHTINGS: dict[str, Lighting] = {
    light.name: light
    for light in (
        Lighting("clone", 60, 45, 1.0, (1.0, 0.97, 0.9), (0.72, 0.76, 0.85), (0.36, 0.55, 0.85),
                 (0.75, 0.82, 0.9), 0.003, (0.78, 0.83, 0.9), 1.0),
        Lighting("morning", -70, 14, 0.9, (1.0, 0.86, 0.66), (0.72, 0.72, 0.8), (0.45, 0.6, 0.85),
                 (0.95, 0.86, 0.72), 0.005, (0.92, 0.86, 0.76), 1.05),
        Lighting("sunset", 20, 5, 0.85, (1.0, 0.55, 0.3), (0.6, 0.5, 0.58), (0.32, 0.32, 0.52),
                 (1.0, 0.62, 0.38), 0.006, (0.85, 0.6, 0.48), 0.85),
        Lighting("overcast", 30, 60, 0.2, (0.9, 0.9, 0.92), (0.82, 0.83, 0.86), (0.68, 0.7, 0.74),
                 (0.82, 0.83, 0.85), 0.007, (0.8, 0.81, 0.83), 0.95),
        Lighting("fog", 30, 50, 0.15, (0.9, 0.9, 0.9), (0.85, 0.86, 0.87), (0.75, 0.76, 0.78),
                 (0.8, 0.81, 0.82), 0.045, (0.8, 0.81, 0.82), 1.0),
        Lighting("rain", 40, 50, 0.1, (0.8, 0.82, 0.85), (0.62, 0.64, 0.68), (0.42, 0.44, 0.48),
                 (0.55, 0.57, 0.6), 0.016, (0.52, 0.54, 0.57), 0.85, rain=True),
    )
}
VARIATIONS = tuple(LIGHTINGS)
SHARED_GREY = frozenset(
    CATEGORY[c] for c in ("Road", "Building", "GuardRail", "TrafficSign", "TrafficLight", "Pole", "Misc", "Truck",
                          "Car", "Van")
)
SHARED_GREEN = frozenset(CATEGORY[c] for c in ("Terrain", "Tree", "Vegetation"))

# each class's own colour (display RGB, 0..1): what the class looks like at ambiguity 0
OWN_COLOUR = {
    "Terrain": (0.50, 0.44, 0.25), "Tree": (0.16, 0.34, 0.10), "Vegetation": (0.36, 0.58, 0.16),
    "Building": (0.66, 0.46, 0.36), "Road": (0.34, 0.34, 0.37), "GuardRail": (0.74, 0.76, 0.80),
    "TrafficSign": (0.15, 0.32, 0.72), "TrafficLight": (0.62, 0.55, 0.10), "Pole": (0.30, 0.44, 0.38),
    "Misc": (0.55, 0.34, 0.56), "Truck": (0.82, 0.58, 0.16), "Car": (0.66, 0.12, 0.12),
    "Van": (0.86, 0.86, 0.84), "Sky": (0.5, 0.7, 0.9), "Undefined": (0.0, 0.0, 0.0),
}
_OWN = np.array([OWN_COLOUR[name] for name in sorted(CATEGORY, key=CATEGORY.get)], np.float32)

GLASS_RGB = np.array([0.16, 0.2, 0.26], np.float32)
MARKING_RGB = np.array([0.86, 0.86, 0.82], np.float32)
LAMP_RGB = np.array([[0.95, 0.15, 0.1], [0.95, 0.75, 0.1], [0.2, 0.9, 0.35]], np.float32)


def object_albedo(scene: Scene, ambiguity: float) -> np.ndarray:
    """(O, 3) float32 base colour of every object: own class colour blended into a shared palette."""
    look = scene.obj_look
    cat = scene.obj_category
    own = _OWN[cat] * (0.85 + 0.3 * look[:, 0:1])  # +-15 % per instance
    # shared grey: a neutral level with a faint tint; shared green / brown: hue and value
    level = 0.30 + 0.32 * look[:, 1:2]
    tint = (look[:, 2:3] - 0.5) * 0.06
    grey = np.concatenate([level + tint, level, level - tint], axis=1)
    green = np.array([0.22, 0.36, 0.13], np.float32)
    brown = np.array([0.42, 0.36, 0.22], np.float32)
    hue = look[:, 1:2]
    natural = (green + (brown - green) * hue) * (0.75 + 0.5 * look[:, 2:3])
    shared = np.where(np.isin(cat, list(SHARED_GREEN))[:, None], natural, grey)
    shared = np.where(np.isin(cat, list(SHARED_GREY | SHARED_GREEN))[:, None], shared, own)
    return ((1.0 - ambiguity) * own + ambiguity * shared).astype(np.float32)


def _texture(scene: Scene, hits: Hits, frame: int, obj: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Low-frequency multiplicative texture per object, in object-local coordinates (flat arrays)."""
    look = scene.obj_look[obj]
    local = point - scene.obj_anchor[obj]
    local[:, 2] -= scene.obj_velocity[obj] * np.float32(frame)
    ang = look[:, 3] * np.float32(2 * np.pi)
    f1 = 0.25 + 1.2 * look[:, 4]
    f2 = 0.6 + 2.0 * look[:, 5]
    ca, sa = np.cos(ang), np.sin(ang)
    a = local[:, 0] * ca + local[:, 2] * sa
    c = local[:, 1] * 0.8 - local[:, 0] * sa + local[:, 2] * ca
    n = 0.6 * np.sin(f1 * a + 6.28 * look[:, 6]) * np.sin(f1 * 0.7 * c) + 0.4 * np.sin(f2 * c + 6.28 * look[:, 7])
    return (1.0 + 0.16 * n).astype(np.float32)


def _patterns(scene: Scene, hits: Hits, albedo: np.ndarray, ambiguity: float) -> None:
    """Paint windows, lane markings, lamps and sign faces (faded as ambiguity rises), in place.

    `albedo` is the flat (H*W, 3) view; masks are turned into flat indices once each.
    """
    fade = 1.0 - 0.8 * ambiguity
    p = hits.point.reshape(-1, 3)
    n = hits.normal.reshape(-1, 3)
    obj = hits.obj.reshape(-1)
    pattern = hits.pattern.reshape(-1)

    def blend(idx, colour, mix):
        albedo[idx] = albedo[idx] * (1 - mix) + colour * mix

    win = np.flatnonzero((pattern == WINDOWS) & (np.abs(n[:, 1]) < 0.5))
    if win.size:
        look = scene.obj_look[obj[win]]
        pw, nw = p[win], n[win]
        along = np.where(np.abs(nw[:, 0]) > 0.5, pw[:, 2], pw[:, 0])
        spacing = 2.6 + 1.6 * look[:, 4]
        width = spacing * (0.4 + 0.25 * look[:, 5])
        floor = 3.0 + 0.6 * look[:, 6]
        y = pw[:, 1]
        ym = y % floor
        is_win = ((along + 7.0 * look[:, 7]) % spacing < width) & (ym > 0.9) & (ym < 2.3) & (y > 1.5)
        blend(win, GLASS_RGB, (fade * 0.75 * is_win)[:, None])

    road = np.flatnonzero((obj == scene.road_obj) & (pattern == 0))
    if road.size:
        x, z = p[road, 0], p[road, 2]
        paint = np.zeros(x.shape, bool)
        in_junction = np.zeros(x.shape, bool)
        for z0, z1 in scene.junctions:
            in_junction |= (z >= z0) & (z < z1)
            paint |= (z >= z0 - 4.5) & (z < z0 - 1.0) & (np.abs(x) < scene.road_half_width) & (x % 1.2 < 0.6)
        for lx, dashed in scene.lane_lines:
            on = (np.abs(x - lx) < 0.08) & ~in_junction
            if dashed:
                on &= z % 9.0 < 3.0
            paint |= on
        sel = np.flatnonzero(paint)
        blend(road[sel], MARKING_RGB, np.float32(fade * 0.85))

    lamp = np.flatnonzero((pattern == LAMPS) & (np.abs(n[:, 2]) > 0.5))
    if lamp.size:
        uv = hits.face_uv.reshape(-1, 3)[lamp]
        lit = (scene.obj_look[obj[lamp], 4] * 3).astype(int)
        centres = np.array([0.78, 0.5, 0.22], np.float32)  # red on top (uv y grows upwards)
        which = np.argmin(np.abs(uv[:, 1:2] - centres[None]), axis=1)
        r2 = ((uv[:, 0] - 0.5) / 0.32) ** 2 + ((uv[:, 1] - centres[which]) / 0.11) ** 2
        inside = r2 < 1.0
        colour = np.where((inside & (which == lit))[:, None], LAMP_RGB[which], LAMP_RGB[which] * 0.25)
        blend(lamp, colour, (inside * (1.0 - 0.6 * ambiguity))[:, None].astype(np.float32))

    sign = np.flatnonzero((pattern == SIGN_FACE) & (np.abs(n[:, 2]) > 0.5))
    if sign.size:
        uv = hits.face_uv.reshape(-1, 3)[sign]
        edge = np.minimum(np.minimum(uv[:, 0], 1 - uv[:, 0]), np.minimum(uv[:, 1], 1 - uv[:, 1]))
        look = scene.obj_look[obj[sign]]
        face = np.where(look[:, 4:5] < 0.5, np.float32([0.8, 0.12, 0.1]), np.float32([0.1, 0.25, 0.75]))
        colour = np.where((edge < 0.12)[:, None], np.float32([0.9, 0.9, 0.88]), face)
        blend(sign, colour, np.float32(1.0 - 0.75 * ambiguity))

    paving = np.flatnonzero((pattern == PAVING) & (n[:, 1] > 0.5))
    if paving.size:
        x, z = p[paving, 0], p[paving, 2]
        joint = ((x % 0.6) < 0.04) | ((z % 0.6) < 0.04)
        albedo[paving] *= (1.0 - 0.25 * fade * joint)[:, None]


def surface_albedo(scene: Scene, hits: Hits, frame: int, ambiguity: float) -> np.ndarray:
    """(H, W, 3) float32 albedo of every hit pixel (0 on sky): palette blend, texture, patterns.

    Independent of the lighting, so a writer computes it once per frame for all variations.
    """
    if not 0.0 <= ambiguity <= 1.0:
        raise ValueError(f"ambiguity must be in [0, 1], got {ambiguity}")
    h, w = hits.depth.shape
    flat = np.zeros((h * w, 3), np.float32)
    idx = np.flatnonzero(np.isfinite(hits.depth))
    obj = hits.obj.reshape(-1)[idx]
    tex = _texture(scene, hits, frame, obj, hits.point.reshape(-1, 3)[idx])
    # dark parts (glass, tyres) are a colour cue for vehicles: fade them with the ambiguity
    mul = 1.0 - (1.0 - hits.mul.reshape(-1)[idx]) * np.float32(1.0 - 0.8 * ambiguity)
    flat[idx] = object_albedo(scene, ambiguity)[obj] * (mul * tex)[:, None]
    _patterns(scene, hits, flat, ambiguity)
    return flat.reshape(h, w, 3)


def _sky(hits: Hits, light: Lighting, ambiguity: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) sky colour for every pixel: zenith / horizon gradient, faint clouds, greyed."""
    d = hits.rays
    elev = d[..., 1] / np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2 + 1.0)
    s = np.clip(elev * 3.0, 0.0, 1.0)[..., None]
    col = np.float32(light.sky_horizon) * (1 - s) + np.float32(light.sky_zenith) * s
    phase = rng.uniform(0, 2 * np.pi, 2).astype(np.float32)
    clouds = 0.5 + 0.5 * np.sin(d[..., 0] * 5 + phase[0]) * np.sin(elev * 23 + phase[1] + d[..., 0] * 2)
    col = col + (0.9 - col) * (0.35 * clouds)[..., None]
    grey = col.mean(axis=-1, keepdims=True)
    return (col + (grey - col) * (0.7 * ambiguity)).astype(np.float32)


def shade(hits: Hits, albedo: np.ndarray, light: Lighting, ambiguity: float,
          rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the hits with `albedo` (from surface_albedo) under `light`."""
    if not 0.0 <= ambiguity <= 1.0:
        raise ValueError(f"ambiguity must be in [0, 1], got {ambiguity}")
    hit = np.isfinite(hits.depth)
    n = hits.normal
    if light.rain:  # wet ground is darker
        albedo = albedo * np.where(n[..., 1:2] > 0.9, np.float32(0.75), np.float32(1.0))

    # Lambertian sun + hemispheric ambient; ambiguity moves weight from sun to ambient
    ambient_w = 0.45 + 0.45 * ambiguity
    sun_w = (1.0 - ambient_w) * light.sun_strength
    ambient_w = 1.0 - sun_w
    lambert = np.maximum(n @ light.sun_direction(), 0.0)[..., None]
    sky_light = 1.0 + np.float32(0.2 * (1.0 - 0.8 * ambiguity)) * (n[..., 1:2] - 1.0)  # sky sees up-facing more
    radiance = np.float32(ambient_w * 1.15) * np.float32(light.ambient_rgb) * sky_light
    radiance += np.float32(sun_w * 1.6) * np.float32(light.sun_rgb) * lambert
    rgb = albedo * radiance

    # exponential fog with Euclidean distance
    dist = np.where(hit, hits.depth, 0.0) * np.sqrt((hits.rays * hits.rays).sum(axis=-1))
    f = np.exp(np.float32(-light.fog_density) * dist)[..., None]
    rgb = rgb * f + np.float32(light.fog_rgb) * (1 - f)
    rgb = np.where(hit[..., None], rgb, _sky(hits, light, ambiguity, rng))

    rgb *= np.float32(light.exposure * np.exp(rng.normal(0.0, 0.08)))
    if light.rain:
        rgb = _rain_streaks(rgb, rng)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 0.6)  # optics: soften the one-sample-per-pixel edges

    # sensor noise: read (Gaussian) + shot (signal-dependent), stronger with ambiguity
    scale = np.float32(1.0 + ambiguity)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    noise = rng.standard_normal(rgb.shape, dtype=np.float32)
    rgb += noise * (0.008 * scale + 0.02 * scale * np.sqrt(rgb))
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_rgb(scene: Scene, hits: Hits, frame: int, light: Lighting, ambiguity: float,
               rng: np.random.Generator) -> np.ndarray:
    """surface_albedo + shade in one call (for a single variation)."""
    return shade(hits, surface_albedo(scene, hits, frame, ambiguity), light, ambiguity, rng)


def _rain_streaks(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thin slanted bright streaks, drawn by smearing sparse dots along a short line."""
    h, w = rgb.shape[:2]
    drops = (rng.random((h, w), dtype=np.float32) < 0.004).astype(np.float32)
    length = max(3, h // 16)
    kernel = np.zeros((length, length), np.float32)
    for i in range(length):
        kernel[i, min(length - 1, int(i * 0.25))] = 1.0 / length
    streaks = np.clip(cv2.filter2D(drops, -1, kernel) * 3.0, 0.0, 1.0)[..., None]
    return rgb * (1 - 0.3 * streaks) + np.float32(0.85 * 0.3) * streaks
