"""Street objects made of primitives: vehicles, trees, lamps, signs, traffic lights, guard rails.

Each function adds one object (or one run of rail) to a SceneBuilder at a given place; sizes and
small variations come from the builder's rng. Traffic lights are big on purpose: a prototype
found lights of realistic size and frequency too small to learn at 96x320.
"""

from __future__ import annotations

import numpy as np

from lix_train.data.procedural.scene import GLASS, LAMP_HEAD, LAMPS, SIGN_FACE, TYRE, SceneBuilder

VEHICLE_SIZE = {"Car": (4.3, 1.8, 1.5), "Van": (5.0, 2.0, 2.3), "Truck": (9.0, 2.5, 3.6)}


def vehicle_kind(rng) -> str:
    return ("Car", "Van", "Truck")[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]


def vehicle(b: SceneBuilder, kind: str, x: float, z: float, length: float, velocity: float = 0.0) -> None:
    """A car, van or truck centred on x, starting at z (rear) and `length` long."""
    u = b.rng.uniform
    _, width, height = VEHICLE_SIZE[kind]
    width *= u(0.95, 1.05)
    height *= u(0.93, 1.07)
    hw = width / 2
    obj = b.obj(kind, anchor=(x, 0.0, z), velocity=velocity)
    clearance = 0.3 if kind == "Car" else 0.4
    for zw in (z + 0.18 * length, z + 0.82 * length):  # axles with tyres, full width
        b.box(obj, (x - hw + 0.05, 0.0, zw - 0.35), (x + hw - 0.05, clearance + 0.2, zw + 0.35), mul=TYRE)
    if kind == "Car":
        b.box(obj, (x - hw, clearance, z), (x + hw, clearance + 0.6, z + length))
        b.box(obj, (x - hw + 0.1, clearance + 0.6, z + 0.25 * length),
              (x + hw - 0.1, height, z + 0.78 * length), mul=GLASS)
    elif kind == "Van":
        b.box(obj, (x - hw, clearance, z), (x + hw, height, z + 0.82 * length))
        b.box(obj, (x - hw, clearance, z + 0.82 * length), (x + hw, clearance + 0.8, z + length))
        b.box(obj, (x - hw + 0.05, clearance + 0.8, z + 0.72 * length),
              (x + hw - 0.05, height - 0.3, z + 0.83 * length), mul=GLASS)
    else:
        cab = 2.2
        b.box(obj, (x - hw, clearance + 0.6, z), (x + hw, height, z + length - cab - 0.3))
        b.box(obj, (x - hw + 0.2, clearance, z), (x + hw - 0.2, clearance + 0.6, z + length - cab - 0.3), mul=0.6)
        b.box(obj, (x - hw, clearance, z + length - cab), (x + hw, height * 0.82, z + length))
        b.box(obj, (x - hw + 0.05, height * 0.5, z + length - 0.05),
              (x + hw - 0.05, height * 0.78, z + length + 0.01), mul=GLASS)


def tree(b: SceneBuilder, x: float, z: float) -> None:
    u = b.rng.uniform
    trunk_h = u(1.8, 3.2)
    rx = u(1.3, 2.8)
    ry = rx * u(1.0, 1.5)
    trunk = b.obj("Tree", anchor=(x, 0.0, z))
    b.cylinder(trunk, x, z, u(0.15, 0.3), 0.0, trunk_h + ry * 0.5, mul=0.7)
    b.ellipsoid(trunk, (x, trunk_h + ry * 0.85, z), (rx, ry, rx * u(0.85, 1.2)))


def street_lamp(b: SceneBuilder, side: float, x: float, z: float, lamp: bool) -> None:
    u = b.rng.uniform
    h = u(5.5, 8.5) if lamp else u(3.5, 6.0)
    r = u(0.09, 0.15)
    obj = b.obj("Pole", anchor=(side * x, 0.0, z))
    b.cylinder(obj, side * x, z, r, 0.0, h)
    if lamp:  # an arm reaching over the road and a lamp head
        reach = u(1.2, 2.5)
        x0, x1 = side * (x + 0.05), side * (x - reach)
        b.box(obj, (x0, h - 0.14, z - 0.07), (x1, h, z + 0.07))
        b.box(obj, (x1 - side * 0.05, h - 0.28, z - 0.2), (x1 + side * 0.55, h - 0.1, z + 0.2), mul=LAMP_HEAD)


def sign(b: SceneBuilder, side: float, x: float, z: float) -> None:
    u = b.rng.uniform
    h = u(2.4, 3.2)
    pole = b.obj("Pole", anchor=(side * x, 0.0, z))
    b.cylinder(pole, side * x, z, 0.05, 0.0, h)
    sign = b.obj("TrafficSign", anchor=(side * x, h, z))
    size = u(0.6, 0.9)
    face_z = z - 0.06 if side > 0 else z + 0.06  # right-side signs face the camera (-z)
    b.box(sign, (side * x - size / 2, h - size, face_z), (side * x + size / 2, h, z), pattern=SIGN_FACE)
    if b.rng.random() < 0.35:  # a second, smaller plate below
        s2 = size * 0.7
        b.box(sign, (side * x - s2 / 2, h - size - 0.05 - s2 * 0.6, face_z),
              (side * x + s2 / 2, h - size - 0.05, z), pattern=SIGN_FACE)


def light_housing(b: SceneBuilder, x: float, y_top: float, z: float, scale: float) -> None:
    """A traffic-light head with backplate: big on purpose (tiny lights are not learnable)."""
    obj = b.obj("TrafficLight", anchor=(x, y_top, z))
    w, h, d = 0.55 * scale, 1.35 * scale, 0.35 * scale
    b.box(obj, (x - w / 2, y_top - h, z - d), (x + w / 2, y_top, z), pattern=LAMPS)
    b.box(obj, (x - w / 2 - 0.12 * scale, y_top - h - 0.08, z + 0.0), (x + w / 2 + 0.12 * scale, y_top + 0.08, z + 0.05))


def guard_rail(b: SceneBuilder, side: float, x: float, z_min: float, z_end: float, free_runs, centre: bool = False) -> None:
    """Runs of rail (a beam on posts) with breaks; `centre` puts one in the median."""
    rng, u = b.rng, b.rng.uniform
    for z0, z1 in free_runs(z_min, z_end, margin=2.0):
        z = z0
        while z < z1:
            length = min(u(25.0, 120.0), z1 - z)
            if rng.random() < 0.8 and length > 6.0:
                obj = b.obj("GuardRail", anchor=(side * x, 0.0, z))
                y0, y1 = u(0.45, 0.55), u(0.8, 0.9)
                if centre:
                    b.box(obj, (-0.12, y0, z), (0.12, y1, z + length))
                else:
                    b.box(obj, (side * x, y0, z), (side * (x + 0.12), y1, z + length))
                post_x = 0.0 if centre else side * (x + 0.2)
                for zp in np.arange(z + 1.0, z + length, 4.0):
                    b.box(obj, (post_x - 0.06, 0.0, zp - 0.06), (post_x + 0.06, y1 - 0.02, zp + 0.06), mul=0.8)
            z += length + u(5.0, 40.0)
