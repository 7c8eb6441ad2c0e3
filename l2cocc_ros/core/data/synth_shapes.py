"""Analytic shapes of the synthetic street (boxes, vertical cylinders, ellipsoids) and the props built from them.

Shapes are stored as flat numpy arrays (:class:`Primitives`) so the renderer and the voxeliser can work on
all of them at once. Props (vehicles, people, riders, trees) are small groups of shapes; their class is a raw
SemanticKITTI id from the project's class table, with the ``moving-*`` ids for moving props.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..classes import semantic_kitti

__all__ = ["MAT_PLAIN", "MAT_FACADE", "MAT_GLASS", "MAT_FOLIAGE", "Primitives", "ShapeBuilder", "concat_primitives",
           "raw_id", "jitter", "vehicle_length", "add_vehicle", "add_person", "add_rider", "add_tree", "VEHICLE_KINDS"]

# materials: how a surface is textured (see synth_render)
MAT_PLAIN, MAT_FACADE, MAT_GLASS, MAT_FOLIAGE = 0, 1, 2, 3


def raw_id(name: str) -> int:
    """Raw SemanticKITTI id of a class name (training classes and the ``moving-*`` ids), from the class table.

    Raises:
        ValueError: unknown name.
    """
    for rid, rname in semantic_kitti().raw_names.items():
        if rname == name:
            return int(rid)
    raise ValueError(f"unknown SemanticKITTI class name {name!r}")


@dataclass
class Primitives:
    """Flat arrays of the analytic shapes (one row each); positions at t = 0, velocities in the xy plane.

    Attributes:
        box_lo, box_hi: (B, 3) corners of axis-aligned boxes.
        cyl: (C, 5) vertical cylinders (cx, cy, radius, z_bottom, z_top).
        ell: (E, 6) axis-aligned ellipsoids (cx, cy, cz, rx, ry, rz).
        *_raw: raw SemanticKITTI ids; *_mat: material; *_rgb: (n, 3) float colour tint in 0..1;
        *_int: LiDAR reflectance in 0..1; *_vel: (n, 2) velocity [m/s].
    """

    box_lo: np.ndarray
    box_hi: np.ndarray
    box_raw: np.ndarray
    box_mat: np.ndarray
    box_rgb: np.ndarray
    box_int: np.ndarray
    box_vel: np.ndarray
    cyl: np.ndarray
    cyl_raw: np.ndarray
    cyl_mat: np.ndarray
    cyl_rgb: np.ndarray
    cyl_int: np.ndarray
    cyl_vel: np.ndarray
    ell: np.ndarray
    ell_raw: np.ndarray
    ell_mat: np.ndarray
    ell_rgb: np.ndarray
    ell_int: np.ndarray
    ell_vel: np.ndarray

    def at_time(self, t: float) -> "Primitives":
        """The shapes moved to time ``t`` [s] (static shapes have zero velocity)."""
        def shift(a: np.ndarray, vel: np.ndarray) -> np.ndarray:
            out = a.copy()
            out[:, :2] += vel * t
            return out
        return dataclasses.replace(self, box_lo=shift(self.box_lo, self.box_vel),
                                   box_hi=shift(self.box_hi, self.box_vel),
                                   cyl=shift(self.cyl, self.cyl_vel), ell=shift(self.ell, self.ell_vel))

    def select(self, boxes: np.ndarray, cyls: np.ndarray, ells: np.ndarray) -> "Primitives":
        """A subset (boolean masks or index arrays per kind)."""
        pick = {"box": boxes, "cyl": cyls, "ell": ells}
        return Primitives(**{f.name: getattr(self, f.name)[pick[f.name.split("_")[0]]]
                             for f in dataclasses.fields(self)})

    def xy_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """(n, 2) lower and upper xy corners of every shape: boxes, then cylinders, then ellipsoids."""
        c, e = self.cyl, self.ell
        lo = np.concatenate([self.box_lo[:, :2], c[:, :2] - c[:, 2:3], e[:, :2] - e[:, 3:5]])
        hi = np.concatenate([self.box_hi[:, :2], c[:, :2] + c[:, 2:3], e[:, :2] + e[:, 3:5]])
        return lo, hi


def concat_primitives(parts: Sequence[Primitives]) -> Primitives:
    """All shapes of ``parts`` in one :class:`Primitives`."""
    return Primitives(**{f.name: np.concatenate([getattr(p, f.name) for p in parts], axis=0)
                         for f in dataclasses.fields(Primitives)})


class ShapeBuilder:
    """Collects shapes (class given by name) as Python lists, then turns them into :class:`Primitives`."""

    def __init__(self) -> None:
        self.boxes: List[tuple] = []
        self.cyls: List[tuple] = []
        self.ells: List[tuple] = []

    def box(self, lo, hi, name, mat, rgb, inten, vel=(0.0, 0.0)) -> None:
        """Axis-aligned box from corner ``lo`` to corner ``hi``."""
        self.boxes.append((lo, hi, raw_id(name), mat, rgb, inten, vel))

    def cyl(self, cx, cy, r, z0, z1, name, mat, rgb, inten, vel=(0.0, 0.0)) -> None:
        """Vertical cylinder around (cx, cy) of radius ``r`` from z0 to z1."""
        self.cyls.append(((cx, cy, r, z0, z1), raw_id(name), mat, rgb, inten, vel))

    def ell(self, c, radii, name, mat, rgb, inten, vel=(0.0, 0.0)) -> None:
        """Axis-aligned ellipsoid of centre ``c`` and semi-axes ``radii``."""
        self.ells.append(((*c, *radii), raw_id(name), mat, rgb, inten, vel))

    def build(self) -> Primitives:
        """The collected shapes as arrays."""
        def cols(rows, widths):  # width > 0: float rows of that width; 0: int scalars; -1: float scalars
            return [np.array([r[i] for r in rows], dtype=np.float64).reshape(len(rows), w) if w > 0 else
                    np.array([r[i] for r in rows], dtype=np.int64 if w == 0 else np.float64).reshape(-1)
                    for i, w in enumerate(widths)]
        b = cols(self.boxes, (3, 3, 0, 0, 3, -1, 2))
        c = cols(self.cyls, (5, 0, 0, 3, -1, 2))
        e = cols(self.ells, (6, 0, 0, 3, -1, 2))
        return Primitives(*b, *c, *e)


def jitter(rng: np.random.Generator, rgb, amount: float = 0.08) -> tuple:
    """A colour varied by up to ``amount`` per channel."""
    return tuple(np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.02, 1.0))


_CAR_COLOURS = ((0.85, 0.85, 0.85), (0.62, 0.63, 0.65), (0.1, 0.1, 0.11), (0.35, 0.36, 0.38), (0.12, 0.2, 0.45),
                (0.6, 0.1, 0.08), (0.2, 0.3, 0.22), (0.75, 0.7, 0.55))
VEHICLE_KINDS = ("car", "truck", "van", "bus", "motorcycle")
_VEHICLE_CLASS = {"car": "car", "truck": "truck", "van": "other-vehicle", "bus": "other-vehicle",
                  "motorcycle": "motorcycle"}
_MOVING_CLASS = {"car": "moving-car", "truck": "moving-truck", "van": "moving-other-vehicle",
                 "bus": "moving-bus", "motorcycle": "moving-motorcyclist"}


def vehicle_length(rng: np.random.Generator, kind: str) -> float:
    """A random length [m] for a vehicle kind."""
    lo, hi = {"car": (3.9, 4.8), "truck": (6.5, 9.0), "van": (4.8, 5.6), "bus": (10.0, 12.0),
              "motorcycle": (1.9, 2.2)}[kind]
    return float(rng.uniform(lo, hi))


def add_vehicle(g: ShapeBuilder, rng: np.random.Generator, x: float, yc: float, length: float, kind: str,
                vel=(0.0, 0.0)) -> None:
    """A vehicle along the x axis from ``x`` to ``x + length``, centred on ``y = yc``.

    A moving motorcycle is a motorcyclist (SemanticKITTI labels the rider and the machine together).
    """
    if kind not in _VEHICLE_CLASS:
        raise ValueError(f"vehicle kind must be one of {VEHICLE_KINDS}, got {kind!r}")
    name = _MOVING_CLASS[kind] if vel[0] or vel[1] else _VEHICLE_CLASS[kind]
    if kind == "motorcycle":
        rgb = tuple(rng.uniform(0.05, 0.8, 3))
        g.box((x, yc - 0.35, 0.1), (x + length, yc + 0.35, 1.1), name, MAT_PLAIN, rgb, 0.5, vel)
        if vel[0] or vel[1]:
            g.cyl(x + 0.5 * length, yc, 0.25, 1.1, 1.75, name, MAT_PLAIN, tuple(rng.uniform(0.05, 0.5, 3)), 0.3, vel)
        return
    if kind in ("truck", "bus"):
        w = rng.uniform(2.3, 2.5)
        rgb = jitter(rng, (0.75, 0.75, 0.72) if kind == "truck" else (0.85, 0.75, 0.2), 0.2)
        if kind == "truck":
            g.box((x, yc - w / 2, 0.35), (x + 0.25 * length, yc + w / 2, 2.6), name, MAT_PLAIN, rgb, 0.4, vel)
            g.box((x + 0.25 * length, yc - w / 2, 0.35), (x + length, yc + w / 2, rng.uniform(3.0, 3.6)), name,
                  MAT_PLAIN, jitter(rng, (0.85, 0.85, 0.85), 0.1), 0.5, vel)
        else:
            g.box((x, yc - w / 2, 0.35), (x + length, yc + w / 2, 1.9), name, MAT_PLAIN, rgb, 0.5, vel)
            g.box((x, yc - w / 2, 1.9), (x + length, yc + w / 2, 3.1), name, MAT_GLASS, rgb, 0.2, vel)
        return
    w = rng.uniform(1.7, 1.9) if kind == "car" else rng.uniform(1.9, 2.1)
    rgb = jitter(rng, _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))], 0.05)
    body = 0.95 if kind == "car" else 1.3
    top = rng.uniform(1.35, 1.6) if kind == "car" else rng.uniform(2.0, 2.4)
    front, back = (0.22, 0.8) if kind == "car" else (0.15, 0.97)
    g.box((x, yc - w / 2, 0.2), (x + length, yc + w / 2, body), name, MAT_PLAIN, rgb, 0.55, vel)
    g.box((x + front * length, yc - 0.45 * w, body), (x + back * length, yc + 0.45 * w, top), name, MAT_GLASS, rgb,
          0.15, vel)


def add_person(g: ShapeBuilder, rng: np.random.Generator, x: float, y: float, z: float, vel=(0.0, 0.0)) -> None:
    """A standing or walking person (body cylinder and head) on the surface at height ``z``."""
    name = "moving-person" if vel[0] or vel[1] else "person"
    hgt = rng.uniform(1.55, 1.85)
    g.cyl(x, y, rng.uniform(0.2, 0.27), z, z + hgt - 0.22, name, MAT_PLAIN, tuple(rng.uniform(0.1, 0.8, 3)), 0.3, vel)
    g.ell((x, y, z + hgt - 0.11), (0.11, 0.11, 0.12), name, MAT_PLAIN, jitter(rng, (0.8, 0.62, 0.5)), 0.3, vel)


def add_rider(g: ShapeBuilder, rng: np.random.Generator, x: float, y: float, vel) -> None:
    """A moving bicyclist (bicycle and rider share the class, as in SemanticKITTI)."""
    g.box((x, y - 0.25, 0.05), (x + 1.7, y + 0.25, 1.0), "moving-bicyclist", MAT_PLAIN,
          tuple(rng.uniform(0.1, 0.6, 3)), 0.3, vel)
    g.cyl(x + 0.8, y, 0.22, 1.0, 1.7, "moving-bicyclist", MAT_PLAIN, tuple(rng.uniform(0.1, 0.9, 3)), 0.3, vel)


def add_tree(g: ShapeBuilder, rng: np.random.Generator, x: float, y: float, z: float) -> None:
    """A tree standing at height ``z``: trunk cylinder and ellipsoid crown."""
    h = rng.uniform(2.2, 3.5)  # clear height under the crown, above car roofs
    r = rng.uniform(1.4, 2.6)
    rz = r * rng.uniform(0.8, 1.2)
    g.ell((x, y, z + h + 0.9 * rz), (r, r, rz), "vegetation", MAT_FOLIAGE, jitter(rng, (0.22, 0.42, 0.16)), 0.2)
    g.cyl(x, y, rng.uniform(0.12, 0.25), z, z + h + 0.5 * rz, "trunk", MAT_PLAIN, jitter(rng, (0.36, 0.27, 0.2)), 0.25)
