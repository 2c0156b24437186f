"""Lay out one street: lanes, sidewalks, buildings, junctions, traffic and furniture, per style.

Styles (urban / suburban / rural) change the mix of buildings, terrain, trees and guard rails so
that every class is covered across scenes. The layout draws only from an rng seeded by
(seed, scene index): appearance never feeds back into geometry or labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lix_train.data.procedural.props import (
    VEHICLE_SIZE,
    guard_rail,
    light_housing,
    sign,
    street_lamp,
    tree,
    vehicle,
    vehicle_kind,
)
from lix_train.data.procedural.scene import GLASS, PAVING, WINDOWS, Scene, SceneBuilder

STYLES = ("urban", "suburban", "rural")


def build_scene(seed: int, scene_index: int, frames: int) -> Scene:
    """The street of scene `scene_index` for dataset seed `seed`, long enough for `frames`.

    Deterministic in (seed, scene_index, frames); styles (urban / suburban / rural) vary the
    mix of buildings, terrain, trees and guard rails so the class set is covered across scenes.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    rng = np.random.default_rng([int(seed), int(scene_index), 0x57EE7])
    style = STYLES[int(rng.choice(3, p=[0.45, 0.35, 0.20]))]
    b = SceneBuilder(rng)
    u = rng.uniform

    lanes_per_side = int(rng.integers(1, 3))
    lane_w = u(3.1, 3.6)
    parking = style != "rural" and rng.random() < 0.85
    park_w = 2.3 if parking else 0.0
    road_half = lanes_per_side * lane_w + park_w
    sidewalk_w = {"urban": u(2.6, 4.5), "suburban": u(1.8, 3.0), "rural": 0.0}[style]
    curb_h = u(0.12, 0.18)
    step = u(1.2, 2.2)
    ego_lane = int(rng.integers(lanes_per_side))
    camera_x = (ego_lane + 0.5) * lane_w
    camera_z0 = 0.0
    z_last = camera_z0 + step * (frames - 1)
    z_min, z_end = -25.0, z_last + u(110.0, 150.0)

    # cross streets (junctions): road everywhere in a z band, no sidewalks or buildings there
    junctions = []
    z = u(25.0, 70.0) if style != "rural" else u(60.0, 200.0)
    while z < z_end - 30.0:
        width = u(9.0, 14.0)
        junctions.append((z, z + width))
        z += width + (u(50.0, 110.0) if style != "rural" else u(150.0, 300.0))
    junctions = np.asarray(junctions, np.float64).reshape(-1, 2)

    def in_junction(z0: float, z1: float, margin: float = 0.0) -> bool:
        return bool(np.any((z1 > junctions[:, 0] - margin) & (z0 < junctions[:, 1] + margin)))

    def free_runs(z0: float, z1: float, margin: float = 0.0):
        """Stretches of [z0, z1) not inside a junction (+ margin)."""
        cuts = [(a - margin, c + margin) for a, c in junctions]
        start = z0
        for a, c in cuts:
            if c <= start or a >= z1:
                continue
            if a > start:
                yield start, a
            start = max(start, c)
        if start < z1:
            yield start, z1

    road_obj = b.obj("Road")
    sidewalk_obj = b.obj("Road")
    terrain_obj = (b.obj("Terrain"), b.obj("Terrain"))

    lines: list[tuple[float, bool]] = []
    lines.append((0.0, lanes_per_side > 1 or rng.random() < 0.5))
    for k in range(1, lanes_per_side):
        lines += [(k * lane_w, True), (-k * lane_w, True)]
    lines += [(lanes_per_side * lane_w, False), (-lanes_per_side * lane_w, False)]

    for side in (-1.0, 1.0):
        _build_side(b, side, style, road_half, park_w, sidewalk_w, curb_h, z_min, z_end, free_runs, in_junction,
                    sidewalk_obj)

    _build_traffic(b, lanes_per_side, lane_w, ego_lane, step, camera_z0, z_min, z_end, in_junction)
    _build_traffic_lights(b, junctions, road_half, sidewalk_w, lane_w, lanes_per_side, z_end, style)
    if style != "rural" and lanes_per_side == 2 and rng.random() < 0.5:
        guard_rail(b, 0.0, 0.0, z_min, z_end, free_runs, centre=True)
    _build_backdrop(b, style, z_end)

    return b.build(
        road_obj=road_obj,
        sidewalk_obj=sidewalk_obj,
        terrain_obj=terrain_obj,
        road_half_width=float(road_half),
        lane_lines=tuple(lines),
        junctions=junctions,
        camera_x=float(camera_x),
        camera_height=float(u(1.45, 1.6)),
        camera_z0=camera_z0,
        step=float(step),
        frames=int(frames),
        style=style,
    )


def _build_side(b, side, style, road_half, park_w, sidewalk_w, curb_h, z_min, z_end, free_runs, in_junction,
                sidewalk_obj):
    """Everything on one side of the road (side = -1 left, +1 right), from the curb outwards.

    The parts draw from the scene's rng one after another in this order, so the order is part
    of the layout: changing it changes every scene.
    """
    s = _Side(b, side, style, road_half, road_half + sidewalk_w, sidewalk_w, z_min, z_end, free_runs, in_junction)
    if sidewalk_w > 0:
        _sidewalk(s, sidewalk_obj, curb_h)
    if park_w > 0:
        _parked_vehicles(s, park_w)
    # the building line stands `setback` behind the sidewalk; gardens, hedges and fences live in between
    setback = {"urban": s.u(0.0, 1.5), "suburban": s.u(3.0, 8.0), "rural": s.u(8.0, 30.0)}[style]
    building_line = s.outer + setback
    _buildings(s, building_line)
    _trees(s, setback)
    if style != "urban" or setback > 0.8:
        _hedges_and_bushes(s, setback)
    _poles_and_signs(s)
    _guard_rails(s)
    _street_furniture(s, setback, building_line)


@dataclass(frozen=True)
class _Side:
    """One side of the road and the street it lines: distances are |x| from the road's centre line."""

    b: SceneBuilder
    side: float  # -1 left, +1 right
    style: str
    curb: float  # the road's edge
    outer: float  # the sidewalk's outer edge (= curb without a sidewalk)
    sidewalk_w: float
    z_min: float
    z_end: float
    free_runs: Callable  # (z0, z1, margin=0) -> the stretches of [z0, z1) outside junctions
    in_junction: Callable  # (z0, z1, margin=0) -> whether [z0, z1) touches a junction

    @property
    def rng(self) -> np.random.Generator:
        return self.b.rng

    def u(self, low: float, high: float) -> float:
        return self.b.rng.uniform(low, high)

    def xs(self, a: float, c: float) -> tuple[float, float]:
        """|x| a and c on this side."""
        return (self.side * a, self.side * c)


def _sidewalk(s: _Side, sidewalk_obj: int, curb_h: float) -> None:
    """The raised sidewalk, in pieces so that screen-space culling stays tight."""
    for z0, z1 in s.free_runs(s.z_min, s.z_end):
        for zz in np.arange(z0, z1, 20.0):
            x0, x1 = s.xs(s.curb, s.outer)
            s.b.box(sidewalk_obj, (x0, 0.0, zz), (x1, curb_h, min(zz + 20.0, z1)), pattern=PAVING)


def _parked_vehicles(s: _Side, park_w: float) -> None:
    """Parked vehicles along the curb, in the parking strip."""
    rng, u = s.rng, s.u
    z = s.z_min + u(0, 8)
    while z < s.z_end:
        kind = vehicle_kind(rng)
        length = VEHICLE_SIZE[kind][0] * u(0.95, 1.08)
        if rng.random() < 0.65 and not s.in_junction(z, z + length, margin=3.0):
            vehicle(s.b, kind, s.side * (s.curb - park_w / 2 - u(-0.1, 0.15)), z, length)
        z += length + u(0.8, 7.0)


def _buildings(s: _Side, building_line: float) -> None:
    """Facades along the building line, with gaps (more of them away from the city) and some roof storeys."""
    rng, u, style = s.rng, s.u, s.style
    gap_p = {"urban": 0.12, "suburban": 0.35, "rural": 0.75}[style]
    h_range = {"urban": (9.0, 26.0), "suburban": (5.0, 11.0), "rural": (4.0, 8.0)}[style]
    bl = building_line
    for z0, z1 in s.free_runs(s.z_min, s.z_end, margin=1.5):
        z = z0
        while z < z1:
            length = min(u(8.0, 28.0), z1 - z)
            if length < 3.0:
                break
            if rng.random() >= gap_p:  # else a gap in the building line
                depth, height = u(8.0, 18.0), u(*h_range)
                step_back = u(0.0, 1.2)
                x0, x1 = s.xs(bl + step_back, bl + step_back + depth)
                obj = s.b.obj("Building", anchor=(x0, 0.0, z))
                s.b.box(obj, (x0, 0.0, z), (x1, height, z + length), pattern=WINDOWS)
                if rng.random() < 0.3:  # a roof storey set back from the facade
                    xr0, xr1 = s.xs(bl + step_back + 2.0, bl + step_back + depth)
                    s.b.box(obj, (xr0, height, z + 1.0), (xr1, height + u(2.5, 4.0), z + length - 1.0),
                            pattern=WINDOWS)
            z += length + (u(0.0, 3.0) if style != "urban" else 0.0)


def _trees(s: _Side, setback: float) -> None:
    """Trees: on the sidewalk (urban), in front gardens / gaps (suburban), scattered (rural); some streets have none."""
    rng, u, style = s.rng, s.u, s.style
    tree_spacing = {"urban": (9.0, 18.0), "suburban": (7.0, 16.0), "rural": (4.0, 12.0)}[style]
    tree_p = {"urban": 0.55, "suburban": 0.7, "rural": 0.8}[style]
    if rng.random() >= 0.85:
        return
    z = s.z_min + u(0, 10)
    while z < s.z_end:
        if rng.random() < tree_p and not s.in_junction(z - 3, z + 3):
            if style == "urban":
                x = s.outer - 0.9
            elif style == "suburban":
                x = s.outer + u(1.0, max(1.2, setback - 1.0))
            else:
                x = s.curb + u(3.0, 3.0 + setback + 15.0)
            tree(s.b, s.side * x, z)
        z += u(*tree_spacing)


def _hedges_and_bushes(s: _Side, setback: float) -> None:
    """Hedges and bushes on the terrain between the sidewalk and the building line."""
    rng, u, side = s.rng, s.u, s.side
    z = s.z_min + u(0, 10)
    while z < s.z_end:
        length = u(3.0, 14.0)
        if rng.random() < 0.5 and not s.in_junction(z, z + length, margin=1.0):
            x = s.outer + u(0.3, max(0.4, min(setback, 3.0) - 1.0))
            depth = u(0.6, 1.4)
            obj = s.b.obj("Vegetation", anchor=(side * x, 0.0, z))
            x0, x1 = s.xs(x, x + depth)
            s.b.box(obj, (x0, 0.0, z), (x1, u(0.7, 1.7), z + length))
        elif rng.random() < 0.4 and not s.in_junction(z - 2, z + 2):
            x = s.outer + u(0.5, max(0.8, setback + (6.0 if s.style == "rural" else 0.0)))
            r = u(0.6, 1.4)
            obj = s.b.obj("Vegetation", anchor=(side * x, 0.0, z))
            s.b.ellipsoid(obj, (side * x, r * 0.7, z), (r, r * u(0.7, 1.0), r * u(0.9, 1.4)))
        z += length + u(1.0, 8.0)


def _poles_and_signs(s: _Side) -> None:
    """Poles and street lamps at the curb; traffic signs facing oncoming traffic on the right, the other way on
    the left."""
    rng, u = s.rng, s.u
    pole_x = s.curb + (0.45 if s.sidewalk_w > 0 else 1.0)
    z = s.z_min + u(0, 15)
    while z < s.z_end:
        if not s.in_junction(z - 1, z + 1):
            street_lamp(s.b, s.side, pole_x, z, lamp=rng.random() < 0.7)
        z += u(18.0, 34.0)
    z = s.z_min + u(0, 20)
    while z < s.z_end:
        if not s.in_junction(z - 1, z + 1):
            sign(s.b, s.side, pole_x + u(-0.1, 0.4), z)
        z += u(16.0, 38.0)


def _guard_rails(s: _Side) -> None:
    """Guard rails: rural mostly; sometimes between sidewalk and terrain."""
    if s.style == "rural" and s.rng.random() < 0.85:
        guard_rail(s.b, s.side, s.curb + 0.6, s.z_min, s.z_end, s.free_runs)
    elif s.style != "rural" and s.rng.random() < 0.3:
        guard_rail(s.b, s.side, s.outer + 0.3, s.z_min, s.z_end, s.free_runs)


def _street_furniture(s: _Side, setback: float, building_line: float) -> None:
    """Misc street furniture: bins, utility boxes, fences along the building line, bus shelters / kiosks."""
    rng, u, side, b = s.rng, s.u, s.side, s.b
    bl = building_line
    z = s.z_min + u(0, 10)
    while z < s.z_end:
        if not s.in_junction(z - 2, z + 2):
            choice = rng.random()
            x = (s.outer - u(0.4, 1.0)) if s.sidewalk_w > 0 else s.curb + u(1.5, 4.0)
            if choice < 0.35:
                obj = b.obj("Misc", anchor=(side * x, 0.0, z))
                b.cylinder(obj, side * x, z, u(0.25, 0.4), 0.0, u(0.9, 1.3))
            elif choice < 0.65:
                obj = b.obj("Misc", anchor=(side * x, 0.0, z))
                w, d, h = u(0.5, 1.2), u(0.3, 0.6), u(1.0, 1.6)
                x0, x1 = s.xs(x - d / 2, x + d / 2)
                b.box(obj, (x0, 0.0, z), (x1, h, z + w))
            elif choice < 0.85 and setback > 1.0:
                length = u(6.0, 25.0)
                obj = b.obj("Misc", anchor=(side * bl, 0.0, z))
                x0, x1 = s.xs(bl - 0.3, bl - 0.22)
                h = u(1.0, 1.9)
                b.box(obj, (x0, 0.0, z), (x1, h, z + length))
                z += length
            else:  # a bus shelter / kiosk
                obj = b.obj("Misc", anchor=(side * x, 0.0, z))
                x0, x1 = s.xs(x - 0.8, x + 0.6)
                b.box(obj, (x0, 2.2, z), (x1, 2.4, z + 3.5))
                xb0, xb1 = s.xs(x + 0.5, x + 0.6)
                b.box(obj, (xb0, 0.0, z), (xb1, 2.2, z + 3.5), mul=GLASS * 2)
        z += u(8.0, 22.0)


def _build_traffic(b, lanes_per_side, lane_w, ego_lane, step, camera_z0, z_min, z_end, in_junction):
    """Vehicles in lanes: one leading the ego car at its speed, others same-way and oncoming."""
    rng, u = b.rng, b.rng.uniform
    if rng.random() < 0.7:
        kind = vehicle_kind(rng)
        length = VEHICLE_SIZE[kind][0]
        vehicle(b, kind, (ego_lane + 0.5) * lane_w, camera_z0 + u(9.0, 30.0), length, velocity=step)
    for k in range(lanes_per_side):
        for direction in (1.0, -1.0):
            if direction > 0 and k == ego_lane:
                continue
            x = direction * (k + 0.5) * lane_w + u(-0.3, 0.3)
            z = z_min + u(0, 20)
            speed = step * (u(0.5, 1.3) if direction > 0 else -u(0.4, 1.0))
            while z < z_end:
                kind = vehicle_kind(rng)
                length = VEHICLE_SIZE[kind][0] * u(0.95, 1.08)
                if rng.random() < 0.6:
                    vehicle(b, kind, x, z, length, velocity=speed)
                z += length + u(8.0, 35.0)


def _build_traffic_lights(b, junctions, road_half, sidewalk_w, lane_w, lanes_per_side, z_end, style):
    """Lights at every junction (side poles + an overhead mast arm) and at mid-block crossings."""
    rng, u = b.rng, b.rng.uniform
    stops = [float(z0) - u(1.0, 3.0) for z0, _ in junctions]
    if style != "rural":  # pedestrian crossings between junctions
        z = u(30.0, 60.0)
        while z < z_end - 20:
            if rng.random() < 0.5 and all(abs(z - s) > 25 for s in stops):
                stops.append(z)
            z += u(40.0, 80.0)
    pole_x = road_half + (0.5 if sidewalk_w > 0 else 1.2)
    for z in stops:
        for side in (1.0, -1.0):
            if side < 0 and rng.random() < 0.4:
                continue
            h = u(5.2, 6.2)
            pole = b.obj("Pole", anchor=(side * pole_x, 0.0, z))
            b.cylinder(pole, side * pole_x, z, u(0.11, 0.16), 0.0, h)
            scale = u(1.0, 1.35)
            light_housing(b, side * (pole_x - 0.45), u(3.2, 3.9), z - 0.05, scale)
            if side > 0 and rng.random() < 0.8:  # mast arm over the lanes with 1-2 heads
                b.box(pole, (0.3, h - 0.2, z - 0.1), (pole_x, h, z + 0.1))
                for k in range(lanes_per_side):
                    x = (k + 0.5) * lane_w + u(-0.4, 0.4)
                    light_housing(b, x, h - 0.25, z - 0.05, scale)


def _build_backdrop(b, style: str, z_end: float) -> None:
    """Close the street: a row of buildings (urban) or a tree line (otherwise) across it."""
    u = b.rng.uniform
    x = -300.0
    if style == "urban":
        while x < 300.0:
            w = u(10.0, 30.0)
            obj = b.obj("Building", anchor=(x, 0.0, z_end))
            b.box(obj, (x, 0.0, z_end + u(0.0, 8.0)), (x + w, u(12.0, 40.0), z_end + 20.0), pattern=WINDOWS)
            x += w
    else:
        hedge = b.obj("Vegetation", anchor=(0.0, 0.0, z_end))
        b.box(hedge, (-300.0, 0.0, z_end + 4.0), (300.0, u(3.0, 6.0), z_end + 20.0))
        while x < 300.0:
            obj = b.obj("Tree", anchor=(x, 0.0, z_end))
            r = u(3.0, 6.0)
            b.ellipsoid(obj, (x, u(5.0, 9.0), z_end + u(4.0, 10.0)), (r, r * u(1.0, 1.6), r))
            x += u(5.0, 11.0)
