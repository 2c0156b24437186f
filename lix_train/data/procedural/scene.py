"""A procedural street as primitives: the geometry and labels of a whole drive (street.py builds it).

A scene is a straight street along +z (world frame of camera.py: x right, y up, ground y = 0),
closed at the far end by a backdrop so that no ground ray runs to the horizon. The ground plane
is implicit: road within the carriageway and in junctions, terrain elsewhere. Every primitive
belongs to an *object* that carries one vKITTI2 category and a few uniform random numbers
("look") from which appearance.py derives colour and texture; the layout never depends on
appearance, so every lighting / weather variation and ambiguity setting shares geometry and labels.

vKITTI2 has no sidewalk category: sidewalks are labelled Road (the curb is geometry only).

Primitives, as parameter rows:
  box        (x0, y0, z0, x1, y1, z1)   axis-aligned
  cylinder   (x, z, r, y0, y1)          vertical axis
  ellipsoid  (cx, cy, cz, rx, ry, rz)   axis-aligned
Moving objects (vehicles in lanes) shift along z by `velocity * frame`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lix_train.data.classes import VKITTI2_CATEGORIES

CATEGORY = {name: i for i, (name, _) in enumerate(VKITTI2_CATEGORIES)}
KINDS = ("box", "cylinder", "ellipsoid")
PARAM_WIDTH = {"box": 6, "cylinder": 5, "ellipsoid": 6}
LOOK_SIZE = 8  # uniform randoms per object for appearance.py

# surface patterns that appearance.py paints on a primitive (geometry never sees them)
PLAIN, WINDOWS, LAMPS, SIGN_FACE, PAVING = 0, 1, 2, 3, 4

# albedo multipliers for parts of one object (a car's glass and tyres are darker than its body)
GLASS, TYRE, LAMP_HEAD = 0.35, 0.22, 0.8


@dataclass(frozen=True)
class Shapes:
    """All primitives of one kind: parameter rows and, per row, object id, albedo multiplier
    and surface pattern."""

    params: np.ndarray  # (N, PARAM_WIDTH[kind]) float32
    obj: np.ndarray  # (N,) int32
    mul: np.ndarray  # (N,) float32
    pattern: np.ndarray  # (N,) int8


@dataclass(frozen=True)
class Scene:
    """A street and the drive along it."""

    shapes: dict[str, Shapes]
    obj_category: np.ndarray  # (O,) uint8 index into VKITTI2_CATEGORIES
    obj_look: np.ndarray  # (O, LOOK_SIZE) float32 in [0, 1)
    obj_anchor: np.ndarray  # (O, 3) float32 object origin at frame 0 (texture coordinates)
    obj_velocity: np.ndarray  # (O,) float32 metres per frame along z
    road_obj: int
    sidewalk_obj: int
    terrain_obj: tuple[int, int]  # left, right of the road
    road_half_width: float  # carriageway incl. parking strips, |x| below this is road
    lane_lines: tuple[tuple[float, bool], ...]  # (x, dashed) painted lines
    junctions: np.ndarray  # (J, 2) z ranges where a cross street is road everywhere
    camera_x: float
    camera_height: float
    camera_z0: float
    step: float  # metres driven per frame
    frames: int
    style: str

    def camera_origin(self, frame: int, baseline: float = 0.0) -> np.ndarray:
        """World position of the camera at `frame`; `baseline` shifts it right (stereo)."""
        return np.array(
            [self.camera_x + baseline, self.camera_height, self.camera_z0 + self.step * frame], np.float64
        )

    def shapes_at(self, frame: int) -> dict[str, Shapes]:
        """Primitives at `frame`: moving objects advanced along z."""
        out = {}
        for kind, s in self.shapes.items():
            vel = self.obj_velocity[s.obj] * np.float32(frame)
            if not np.any(vel):
                out[kind] = s
                continue
            params = s.params.copy()
            z_columns = {"box": (2, 5), "cylinder": (1,), "ellipsoid": (2,)}[kind]
            for c in z_columns:
                params[:, c] += vel
            out[kind] = Shapes(params, s.obj, s.mul, s.pattern)
        return out

    def ground_category(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Category of the ground plane at world (x, z): road or terrain."""
        road = np.abs(x) < self.road_half_width
        for z0, z1 in self.junctions:
            road |= (z >= z0) & (z < z1)
        return np.where(road, CATEGORY["Road"], CATEGORY["Terrain"]).astype(np.uint8)

    def ground_object(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Object id of the ground plane at world (x, z)."""
        cat = self.ground_category(x, z)
        terrain = np.where(x < 0, self.terrain_obj[0], self.terrain_obj[1])
        return np.where(cat == CATEGORY["Road"], self.road_obj, terrain).astype(np.int32)


class SceneBuilder:
    """Accumulates objects and primitives (street.py and props.py call it); turns them into a Scene."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows = {k: [] for k in KINDS}
        self.obj_category: list[int] = []
        self.obj_anchor: list[tuple[float, float, float]] = []
        self.obj_velocity: list[float] = []

    def obj(self, category: str, anchor=(0.0, 0.0, 0.0), velocity: float = 0.0) -> int:
        self.obj_category.append(CATEGORY[category])
        self.obj_anchor.append(tuple(float(a) for a in anchor))
        self.obj_velocity.append(float(velocity))
        return len(self.obj_category) - 1

    def box(self, obj: int, lo, hi, mul: float = 1.0, pattern: int = PLAIN) -> None:
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        self.rows["box"].append((*lo, *hi, obj, mul, pattern))

    def cylinder(self, obj: int, x: float, z: float, r: float, y0: float, y1: float, mul: float = 1.0) -> None:
        self.rows["cylinder"].append((x, z, r, y0, y1, obj, mul, PLAIN))

    def ellipsoid(self, obj: int, centre, radii, mul: float = 1.0) -> None:
        self.rows["ellipsoid"].append((*centre, *radii, obj, mul, PLAIN))

    def build(self, **fields) -> Scene:
        shapes = {}
        for kind in KINDS:
            w = PARAM_WIDTH[kind]
            rows = np.asarray(self.rows[kind], np.float64).reshape(-1, w + 3)
            shapes[kind] = Shapes(
                np.ascontiguousarray(rows[:, :w], np.float32),
                rows[:, w].astype(np.int32),
                rows[:, w + 1].astype(np.float32),
                rows[:, w + 2].astype(np.int8),
            )
        n = len(self.obj_category)
        return Scene(
            shapes=shapes,
            obj_category=np.asarray(self.obj_category, np.uint8),
            obj_look=self.rng.random((n, LOOK_SIZE), dtype=np.float64).astype(np.float32),
            obj_anchor=np.asarray(self.obj_anchor, np.float32).reshape(n, 3),
            obj_velocity=np.asarray(self.obj_velocity, np.float32),
            **fields,
        )
