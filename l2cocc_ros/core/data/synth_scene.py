"""Procedural street world for the synthetic SemanticKITTI generator: geometry, classes, ego motion, calibration.

The world frame has x along the road, y to the left, z up, and the ground plane at z = 0. The world is cut
into 40 m blocks along x; each block's content is drawn from its own random generator seeded by
``(seed, block)``, so a frame's content depends only on the seed and the frame's time, never on how many
frames are generated or where the sequence starts. Everything is analytic:

* the ground: the plane z = 0 whose class is a function of (x, y): road (|y| < road half-width), then on
  each side an optional parking strip, a raised sidewalk (a 0.12 m box), then per-segment terrain or
  other-ground;
* axis-aligned boxes (buildings, sidewalk slabs, fences, cars, trucks, bicycles, sign plates, hedges),
  vertical cylinders (trunks, poles, people) and axis-aligned ellipsoids (tree crowns, bushes, heads).

Moving objects (oncoming cars and trucks, cyclists, pedestrians) carry a velocity and use SemanticKITTI's
``moving-*`` raw ids; their blocks are indexed by their position at t = 0. Raw ids come from the class
table (:func:`l2cocc_ros.core.classes.semantic_kitti`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from ..classes import semantic_kitti

__all__ = ["BLOCK_LENGTH", "LIDAR_HEIGHT", "Primitives", "World", "raw_id"]

logger = logging.getLogger(__name__)

BLOCK_LENGTH = 40.0
"""Length of one procedurally generated street block along the world x axis [m]."""
LIDAR_HEIGHT = 1.73
"""Height of the velodyne above the ground [m] (KITTI)."""
SIDEWALK_HEIGHT = 0.12  # top at velodyne z = -1.61: the same 0.2 m voxel layer as the road

# materials: how a surface is textured (see synth_render)
MAT_PLAIN, MAT_FACADE, MAT_GLASS, MAT_FOLIAGE = 0, 1, 2, 3

_TRAFFIC_MAX_SPEED = 14.0  # |v| bound of every moving object [m/s], used to find the blocks in range


def raw_id(name: str) -> int:
    """Raw SemanticKITTI id of a class name (training classes and the ``moving-*`` ids), from the class table.

    Raises:
        ValueError: unknown name.
    """
    for rid, rname in semantic_kitti().raw_names.items():
        if rname == name:
            return int(rid)
    raise ValueError(f"unknown SemanticKITTI class name {name!r}")


_ID = {n: raw_id(n) for n in (
    "car", "bicycle", "truck", "other-vehicle", "person", "bicyclist", "road", "parking", "sidewalk",
    "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole", "traffic-sign",
    "moving-car", "moving-truck", "moving-person", "moving-bicyclist")}


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
        d3 = lambda v: np.concatenate([v * t, np.zeros((len(v), 1))], axis=1)  # noqa: E731
        cyl = self.cyl.copy()
        cyl[:, :2] += self.cyl_vel * t
        ell = self.ell.copy()
        ell[:, :2] += self.ell_vel * t
        return Primitives(self.box_lo + d3(self.box_vel), self.box_hi + d3(self.box_vel), self.box_raw, self.box_mat,
                          self.box_rgb, self.box_int, self.box_vel, cyl, self.cyl_raw, self.cyl_mat, self.cyl_rgb,
                          self.cyl_int, self.cyl_vel, ell, self.ell_raw, self.ell_mat, self.ell_rgb, self.ell_int,
                          self.ell_vel)

    def select(self, boxes: np.ndarray, cyls: np.ndarray, ells: np.ndarray) -> "Primitives":
        """A subset (boolean masks or index arrays per kind)."""
        return Primitives(self.box_lo[boxes], self.box_hi[boxes], self.box_raw[boxes], self.box_mat[boxes],
                          self.box_rgb[boxes], self.box_int[boxes], self.box_vel[boxes], self.cyl[cyls],
                          self.cyl_raw[cyls], self.cyl_mat[cyls], self.cyl_rgb[cyls], self.cyl_int[cyls],
                          self.cyl_vel[cyls], self.ell[ells], self.ell_raw[ells], self.ell_mat[ells],
                          self.ell_rgb[ells], self.ell_int[ells], self.ell_vel[ells])

    def xy_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """(n, 2) lower and upper xy corners of every shape: boxes, then cylinders, then ellipsoids."""
        lo = np.concatenate([self.box_lo[:, :2], self.cyl[:, :2] - self.cyl[:, 2:3], self.ell[:, :2] - self.ell[:, 3:5]])
        hi = np.concatenate([self.box_hi[:, :2], self.cyl[:, :2] + self.cyl[:, 2:3], self.ell[:, :2] + self.ell[:, 3:5]])
        return lo, hi


class _Builder:
    """Collects shapes of one block as Python lists, then turns them into :class:`Primitives`."""

    def __init__(self) -> None:
        self.boxes: List[tuple] = []
        self.cyls: List[tuple] = []
        self.ells: List[tuple] = []

    def box(self, lo, hi, name, mat, rgb, inten, vel=(0.0, 0.0)) -> None:
        self.boxes.append((lo, hi, _ID[name], mat, rgb, inten, vel))

    def cyl(self, cx, cy, r, z0, z1, name, mat, rgb, inten, vel=(0.0, 0.0)) -> None:
        self.cyls.append(((cx, cy, r, z0, z1), _ID[name], mat, rgb, inten, vel))

    def ell(self, c, radii, name, mat, rgb, inten, vel=(0.0, 0.0)) -> None:
        self.ells.append(((*c, *radii), _ID[name], mat, rgb, inten, vel))

    def build(self) -> Primitives:
        def cols(rows, width):
            if not rows:
                return [np.zeros((0, w)) if w else np.zeros(0) for w in width]
            return [np.array([r[i] for r in rows], dtype=np.float64).reshape(len(rows), -1) if w else
                    np.array([r[i] for r in rows]) for i, w in enumerate(width)]
        b = cols(self.boxes, (3, 3, 0, 0, 3, 0, 2))
        c = cols(self.cyls, (5, 0, 0, 3, 0, 2))
        e = cols(self.ells, (6, 0, 0, 3, 0, 2))
        ints = lambda a: np.asarray(a, dtype=np.int64).reshape(-1)  # noqa: E731
        flt = lambda a: np.asarray(a, dtype=np.float64).reshape(-1)  # noqa: E731
        return Primitives(b[0], b[1], ints(b[2]), ints(b[3]), b[4], flt(b[5]), b[6],
                          c[0], ints(c[1]), ints(c[2]), c[3], flt(c[4]), c[5],
                          e[0], ints(e[1]), ints(e[2]), e[3], flt(e[4]), e[5])


def _concat(parts: List[Primitives]) -> Primitives:
    names = Primitives.__dataclass_fields__.keys()
    return Primitives(**{n: np.concatenate([getattr(p, n) for p in parts], axis=0) for n in names})


def _jitter(rng: np.random.Generator, rgb, amount: float = 0.08) -> tuple:
    return tuple(np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.02, 1.0))


class World:
    """The procedural street of one seed: ground classes, shapes, ego trajectory.

    Args:
        seed: random seed; the same seed always gives the same world and trajectory.
    """

    def __init__(self, seed: int) -> None:
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, 7_000_001])
        self.road_half_width = float(rng.uniform(3.4, 4.4))
        self.sidewalk_width = (float(rng.uniform(2.8, 3.6)), float(rng.uniform(2.8, 3.6)))  # right (y<0), left
        self.ego_speed = float(rng.uniform(6.0, 9.0))
        self.ego_phase = float(rng.uniform(0, 2 * np.pi))
        self._blocks: Dict[int, Tuple[Primitives, dict]] = {}
        self._traffic: Dict[int, Primitives] = {}

    # ------------------------------------------------------------------------------------------ ego motion
    def ego_pose(self, t: float) -> np.ndarray:
        """World-from-velodyne 4x4 pose at time ``t`` [s]: right lane, gentle lateral sway, yaw along the path."""
        w = 0.35
        x = self.ego_speed * t
        y = -0.5 * self.road_half_width + 0.3 * np.sin(w * t + self.ego_phase)
        dy = 0.3 * w * np.cos(w * t + self.ego_phase)
        yaw = np.arctan2(dy, self.ego_speed)
        c, s = np.cos(yaw), np.sin(yaw)
        pose = np.eye(4)
        pose[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
        pose[:3, 3] = (x, y, LIDAR_HEIGHT)
        return pose

    # ------------------------------------------------------------------------------------------ ground
    def ground_raw(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Raw class id of the ground at world (x, y) (road, parking, sidewalk, terrain, other-ground)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        out = np.full(x.shape, _ID["road"], dtype=np.int64)
        blocks = np.floor(x / BLOCK_LENGTH).astype(np.int64)
        a = np.abs(y)
        side = (y >= 0).astype(np.int64)
        for b in np.unique(blocks):
            info = self._block(int(b))[1]
            m = blocks == b
            for s in (0, 1):
                ms = m & (side == s)
                if not ms.any():
                    continue
                park = self.road_half_width + info["parking"][s]
                walk = park + self.sidewalk_width[s]
                aa = a[ms]
                cls = np.where(aa < self.road_half_width, _ID["road"],
                               np.where(aa < park, _ID["parking"], np.where(aa < walk, _ID["sidewalk"], -1)))
                seg_x, seg_cls = info["segments"][s]
                beyond = cls < 0
                if beyond.any():
                    k = np.clip(np.searchsorted(seg_x, x[ms][beyond], side="right") - 1, 0, len(seg_cls) - 1)
                    cls[beyond] = seg_cls[k]
                out[ms] = cls
        return out

    # ------------------------------------------------------------------------------------------ shapes
    def primitives_near(self, x_lo: float, x_hi: float, t: float) -> Primitives:
        """All shapes that may overlap world x in [x_lo, x_hi] at time ``t``, moved to time ``t``."""
        static = [self._block(b)[0] for b in range(int(np.floor(x_lo / BLOCK_LENGTH)) - 1,
                                                   int(np.floor(x_hi / BLOCK_LENGTH)) + 2)]
        reach = _TRAFFIC_MAX_SPEED * abs(t)
        moving = [self._traffic_block(b) for b in range(int(np.floor((x_lo - reach) / BLOCK_LENGTH)) - 1,
                                                         int(np.floor((x_hi + reach) / BLOCK_LENGTH)) + 2)]
        prims = _concat(static + moving).at_time(t)
        lo, hi = prims.xy_bounds()
        keep = (hi[:, 0] >= x_lo) & (lo[:, 0] <= x_hi)
        nb, nc = len(prims.box_lo), len(prims.cyl)
        return prims.select(keep[:nb], keep[nb:nb + nc], keep[nb + nc:])

    def _block(self, b: int) -> Tuple[Primitives, dict]:
        if b not in self._blocks:
            self._blocks[b] = self._make_block(b)
        return self._blocks[b]

    def _make_block(self, b: int) -> Tuple[Primitives, dict]:
        rng = np.random.default_rng([self.seed, 1, b + 1_000_000])
        x0 = b * BLOCK_LENGTH
        x1 = x0 + BLOCK_LENGTH
        g = _Builder()
        info = {"parking": [0.0, 0.0], "segments": [None, None]}
        for s, sign in ((0, -1.0), (1, 1.0)):
            park = 2.4 if rng.random() < (0.65 if s == 0 else 0.35) else 0.0
            info["parking"][s] = park
            a_walk = self.road_half_width + park
            a_out = a_walk + self.sidewalk_width[s]
            span = lambda a0, a1: (min(sign * a0, sign * a1), max(sign * a0, sign * a1))  # noqa: E731
            y0, y1 = span(a_walk, a_out)
            g.box((x0, y0, 0.0), (x1, y1, SIDEWALK_HEIGHT), "sidewalk", MAT_PLAIN, (0.62, 0.60, 0.57), 0.30)
            if park:
                self._parked_cars(g, rng, x0, x1, sign * (self.road_half_width + park / 2))
            self._street_furniture(g, rng, x0, x1, sign, a_walk, a_out)
            info["segments"][s] = self._zone(g, rng, x0, x1, sign, a_out)
        return g.build(), info

    def _parked_cars(self, g: _Builder, rng, x0, x1, yc) -> None:
        x = x0 + rng.uniform(0.5, 4.0)
        while True:
            truck = rng.random() < 0.12
            length = rng.uniform(6.5, 9.0) if truck else rng.uniform(3.9, 4.8)
            if x + length > x1 - 0.3:
                break
            if rng.random() < 0.8:
                self._vehicle(g, rng, x, yc, length, truck, vel=(0.0, 0.0))
            x += length + rng.uniform(0.8, 5.0)

    def _vehicle(self, g: _Builder, rng, x, yc, length, truck, vel) -> None:
        moving = vel[0] != 0.0
        if truck:
            name = "moving-truck" if moving else "truck"
            w = rng.uniform(2.3, 2.5)
            rgb = _jitter(rng, (0.75, 0.75, 0.72), 0.2)
            g.box((x, yc - w / 2, 0.35), (x + 0.25 * length, yc + w / 2, 2.6), name, MAT_PLAIN, rgb, 0.4, vel)
            g.box((x + 0.25 * length, yc - w / 2, 0.35), (x + length, yc + w / 2, rng.uniform(3.0, 3.6)), name,
                  MAT_PLAIN, _jitter(rng, (0.85, 0.85, 0.85), 0.1), 0.5, vel)
            return
        name = "moving-car" if moving else "car"
        w = rng.uniform(1.7, 1.9)
        rgb = tuple(rng.uniform(0.05, 0.9, 3))
        h = rng.uniform(1.35, 1.6)
        g.box((x, yc - w / 2, 0.2), (x + length, yc + w / 2, 0.95), name, MAT_PLAIN, rgb, 0.55, vel)
        g.box((x + 0.22 * length, yc - 0.45 * w, 0.95), (x + 0.8 * length, yc + 0.45 * w, h), name, MAT_GLASS,
              rgb, 0.15, vel)

    def _street_furniture(self, g: _Builder, rng, x0, x1, sign, a_walk, a_out) -> None:
        top = SIDEWALK_HEIGHT
        x = x0 + rng.uniform(2.0, 12.0)
        while x < x1 - 1.0:  # lamp poles, traffic signs, sidewalk trees near the curb
            a = a_walk + 0.5
            kind = rng.choice(3, p=(0.4, 0.3, 0.3))
            if kind == 0:
                g.cyl(x, sign * a, rng.uniform(0.08, 0.12), top, rng.uniform(6.0, 8.0), "pole", MAT_PLAIN,
                      (0.5, 0.5, 0.52), 0.5)
            elif kind == 1:
                hgt = rng.uniform(2.2, 2.8)
                g.cyl(x, sign * a, 0.05, top, hgt, "pole", MAT_PLAIN, (0.55, 0.55, 0.55), 0.5)
                pw = rng.uniform(0.5, 0.8)
                rgb = ((0.85, 0.15, 0.1), (0.1, 0.3, 0.8), (0.9, 0.8, 0.1))[int(rng.integers(3))]
                g.box((x - 0.06, sign * a - pw / 2, hgt - 0.1), (x + 0.02, sign * a + pw / 2, hgt + pw - 0.1),
                      "traffic-sign", MAT_PLAIN, rgb, 0.9)
            else:
                self._tree(g, rng, x, sign * (a + 0.3), top)
            x += rng.uniform(8.0, 18.0)
        for _ in range(int(rng.integers(0, 3))):  # parked bicycles
            xb, yb = rng.uniform(x0 + 1, x1 - 3), sign * rng.uniform(a_walk + 1.0, a_out - 0.4)
            g.box((xb, yb - 0.25, top + 0.05), (xb + 1.7, yb + 0.25, top + 1.05), "bicycle", MAT_PLAIN,
                  _jitter(rng, (0.15, 0.15, 0.2)), 0.3)
        for _ in range(int(rng.integers(0, 3))):  # standing people
            self._person(g, rng, rng.uniform(x0, x1), sign * rng.uniform(a_walk + 0.8, a_out - 0.3), top, (0.0, 0.0))

    def _person(self, g: _Builder, rng, x, y, z, vel) -> None:
        name = "moving-person" if vel[0] else "person"
        hgt = rng.uniform(1.55, 1.85)
        g.cyl(x, y, rng.uniform(0.2, 0.27), z, z + hgt - 0.22, name, MAT_PLAIN, tuple(rng.uniform(0.1, 0.8, 3)), 0.3,
              vel)
        g.ell((x, y, z + hgt - 0.11), (0.11, 0.11, 0.12), name, MAT_PLAIN, _jitter(rng, (0.8, 0.62, 0.5)), 0.3, vel)

    def _tree(self, g: _Builder, rng, x, y, z) -> None:
        h = rng.uniform(2.0, 3.5)
        r = rng.uniform(1.4, 2.6)
        g.ell((x, y, z + h + 0.7 * r), (r, r, r * rng.uniform(0.8, 1.2)), "vegetation", MAT_FOLIAGE,
              _jitter(rng, (0.22, 0.42, 0.16)), 0.2)
        g.cyl(x, y, rng.uniform(0.12, 0.25), z, z + h + 0.3 * r, "trunk", MAT_PLAIN, _jitter(rng, (0.36, 0.27, 0.2)),
              0.25)

    def _zone(self, g: _Builder, rng, x0, x1, sign, a_out) -> Tuple[np.ndarray, np.ndarray]:
        """Buildings / green / yard segments beyond the sidewalk; returns (segment starts, ground raw ids)."""
        cuts = np.sort(rng.uniform(x0 + 6, x1 - 6, int(rng.integers(0, 3))))
        starts = np.concatenate([[x0], cuts])
        ends = np.concatenate([cuts, [x1]])
        seg_cls = []
        for xs, xe in zip(starts, ends):
            kind = rng.choice(3, p=(0.5, 0.35, 0.15))
            ground = "other-ground" if kind == 2 else "terrain"
            seg_cls.append(_ID[ground])
            if kind == 0:  # buildings with gaps, set back a little
                a = a_out + (0.0 if rng.random() < 0.5 else rng.uniform(0.5, 3.0))
                xb = xs + rng.uniform(0.0, 1.5)
                while xb < xe - 3.0:
                    xe_b = min(xe, xb + rng.uniform(8.0, 25.0))
                    depth = rng.uniform(8.0, 14.0)
                    ya, yb = sorted((sign * a, sign * (a + depth)))
                    rgb = _jitter(rng, ((0.72, 0.62, 0.5), (0.6, 0.58, 0.55), (0.75, 0.7, 0.6),
                                        (0.55, 0.35, 0.3))[int(rng.integers(4))], 0.06)
                    g.box((xb, ya, 0.0), (xe_b, yb, rng.uniform(6.0, 18.0)), "building", MAT_FACADE, rgb, 0.35)
                    xb = xe_b + (rng.uniform(1.0, 4.0) if rng.random() < 0.4 else 0.0)
            elif kind == 1:  # green: fence along the sidewalk, trees and bushes on terrain
                if rng.random() < 0.5:
                    ya, yb = sorted((sign * (a_out + 0.2), sign * (a_out + 0.3)))
                    g.box((xs, ya, 0.0), (xe, yb, rng.uniform(1.0, 1.8)), "fence", MAT_PLAIN,
                          _jitter(rng, (0.45, 0.38, 0.28)), 0.4)
                for _ in range(int(rng.integers(1, 5))):
                    self._tree(g, rng, rng.uniform(xs, xe), sign * (a_out + rng.uniform(2.0, 9.0)), 0.0)
                for _ in range(int(rng.integers(0, 4))):
                    r = rng.uniform(0.5, 1.2)
                    g.ell((rng.uniform(xs, xe), sign * (a_out + rng.uniform(1.0, 8.0)), 0.3 * r), (r, r, 0.7 * r),
                          "vegetation", MAT_FOLIAGE, _jitter(rng, (0.25, 0.45, 0.18)), 0.2)
                if rng.random() < 0.5:  # hedge
                    ya, yb = sorted((sign * (a_out + 0.6), sign * (a_out + 1.4)))
                    xh = rng.uniform(xs, xe)
                    g.box((xh, ya, 0.0), (min(xe, xh + rng.uniform(3, 10)), yb, rng.uniform(0.8, 1.5)), "vegetation",
                          MAT_FOLIAGE, _jitter(rng, (0.2, 0.4, 0.15)), 0.2)
            else:  # yard: a car parked off-street
                if rng.random() < 0.7 and xe - xs > 6:
                    self._vehicle(g, rng, rng.uniform(xs, xe - 5), sign * (a_out + rng.uniform(2, 5)), 4.3, False,
                                  (0.0, 0.0))
        return starts, np.asarray(seg_cls, dtype=np.int64)

    def _traffic_block(self, b: int) -> Primitives:
        """Moving objects whose position at t = 0 lies in block ``b``."""
        if b not in self._traffic:
            rng = np.random.default_rng([self.seed, 2, b + 1_000_000])
            g = _Builder()
            x0 = b * BLOCK_LENGTH
            lane = 0.5 * self.road_half_width
            for _ in range(int(rng.integers(0, 3))):  # oncoming traffic in the left lane
                truck = rng.random() < 0.15
                length = rng.uniform(6.5, 8.5) if truck else rng.uniform(3.9, 4.8)
                self._vehicle(g, rng, x0 + rng.uniform(0, BLOCK_LENGTH), lane + rng.uniform(-0.2, 0.2), length, truck,
                              (-rng.uniform(7.0, 12.0), 0.0))
            if rng.random() < 0.3:  # a cyclist at the left road edge
                xc, yc, v = x0 + rng.uniform(0, BLOCK_LENGTH), self.road_half_width - 0.7, (-rng.uniform(3.0, 5.0), 0.0)
                g.box((xc, yc - 0.25, 0.05), (xc + 1.7, yc + 0.25, 1.0), "moving-bicyclist", MAT_PLAIN,
                      tuple(rng.uniform(0.1, 0.6, 3)), 0.3, v)
                g.cyl(xc + 0.8, yc, 0.22, 1.0, 1.7, "moving-bicyclist", MAT_PLAIN, tuple(rng.uniform(0.1, 0.9, 3)),
                      0.3, v)
            for _ in range(int(rng.integers(0, 3))):  # pedestrians walking along a sidewalk
                sign = 1.0 if rng.random() < 0.5 else -1.0
                s = int(sign > 0)
                a = self.road_half_width + 0.5 * (2.4 + self.sidewalk_width[s])  # on the sidewalk with or without parking
                self._person(g, rng, x0 + rng.uniform(0, BLOCK_LENGTH), sign * a, SIDEWALK_HEIGHT,
                             (rng.choice((-1.0, 1.0)) * rng.uniform(0.8, 1.5), 0.0))
            self._traffic[b] = g.build()
        return self._traffic[b]
