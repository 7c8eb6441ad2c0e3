"""Procedural street world for the synthetic SemanticKITTI generator: geometry, classes, ego motion, calibration.

The world frame has x along the road, y to the left, z up, and the ground plane at z = 0. The world is cut
into 40 m blocks along x; each block's content is drawn from its own random generator seeded by
``(seed, block)``, so a frame's content depends only on the seed and the frame's time, never on how many
frames are generated or where the sequence starts. Everything is analytic:

* the ground: the plane z = 0 whose class is a function of (x, y): road (|y| < road half-width), then on
  each side an optional parking strip, a raised sidewalk (a 0.12 m box), then per-segment terrain or
  other-ground;
* axis-aligned boxes (buildings, sidewalk slabs, fences, vehicles, bicycles, sign plates, hedges),
  vertical cylinders (trunks, poles, people) and axis-aligned ellipsoids (tree crowns, bushes, heads).

Moving objects (oncoming cars, trucks, vans, buses, motorcyclists, cyclists, pedestrians) carry a velocity
and use SemanticKITTI's ``moving-*`` raw ids; their blocks are indexed by their position at t = 0. Raw ids
come from the class table (:func:`l2cocc_ros.core.classes.semantic_kitti`).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from .synth_shapes import (MAT_FACADE, MAT_FOLIAGE, MAT_PLAIN, Primitives, ShapeBuilder, add_person, add_rider,
                           add_tree, add_vehicle, concat_primitives, jitter, raw_id, vehicle_length)

__all__ = ["BLOCK_LENGTH", "LIDAR_HEIGHT", "SIDEWALK_HEIGHT", "World"]

BLOCK_LENGTH = 40.0
"""Length of one procedurally generated street block along the world x axis [m]."""
LIDAR_HEIGHT = 1.73
"""Height of the velodyne above the ground [m] (KITTI)."""
SIDEWALK_HEIGHT = 0.12  # top at velodyne z = -1.61: the same 0.2 m voxel layer as the road

_ID = {n: raw_id(n) for n in ("road", "parking", "sidewalk", "other-ground", "terrain")}
_TRAFFIC_MAX_SPEED = 14.0  # |v| bound of every moving object [m/s], used to find the blocks in range


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
        prims = concat_primitives(static + moving).at_time(t)
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
        g = ShapeBuilder()
        info = {"parking": [0.0, 0.0], "segments": [None, None]}
        for s, sign in ((0, -1.0), (1, 1.0)):
            park = 2.4 if rng.random() < (0.75 if s == 0 else 0.5) else 0.0
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

    def _parked_cars(self, g: ShapeBuilder, rng, x0, x1, yc) -> None:
        x = x0 + rng.uniform(0.5, 4.0)
        while True:
            kind = ("car", "truck", "van", "motorcycle")[int(rng.choice(4, p=(0.78, 0.08, 0.08, 0.06)))]
            length = vehicle_length(rng, kind)
            if x + length > x1 - 0.3:
                break
            if rng.random() < 0.9:
                add_vehicle(g, rng, x, yc, length, kind)
            x += length + rng.uniform(0.8, 3.5)

    def _street_furniture(self, g: ShapeBuilder, rng, x0, x1, sign, a_walk, a_out) -> None:
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
                add_tree(g, rng, x, sign * (a + 0.3), top)
            x += rng.uniform(5.0, 12.0)
        for _ in range(int(rng.integers(0, 3))):  # parked bicycles
            xb, yb = rng.uniform(x0 + 1, x1 - 3), sign * rng.uniform(a_walk + 1.0, a_out - 0.4)
            g.box((xb, yb - 0.25, top + 0.05), (xb + 1.7, yb + 0.25, top + 1.05), "bicycle", MAT_PLAIN,
                  jitter(rng, (0.15, 0.15, 0.2)), 0.3)
        for _ in range(int(rng.integers(1, 4))):  # standing people
            add_person(g, rng, rng.uniform(x0, x1), sign * rng.uniform(a_walk + 0.8, a_out - 0.3), top, (0.0, 0.0))

    def _zone(self, g: ShapeBuilder, rng, x0, x1, sign, a_out) -> Tuple[np.ndarray, np.ndarray]:
        """Buildings / green / yard segments beyond the sidewalk; returns (segment starts, ground raw ids)."""
        cuts = np.sort(rng.uniform(x0 + 6, x1 - 6, int(rng.integers(0, 3))))
        starts = np.concatenate([[x0], cuts])
        ends = np.concatenate([cuts, [x1]])
        seg_cls = []
        for xs, xe in zip(starts, ends):
            kind = rng.choice(3, p=(0.45, 0.45, 0.10))
            ground = "other-ground" if kind == 2 else "terrain"
            seg_cls.append(_ID[ground])
            if kind == 0:  # buildings with gaps, set back a little
                a = a_out + (0.0 if rng.random() < 0.5 else rng.uniform(0.5, 3.0))
                xb = xs + rng.uniform(0.0, 1.5)
                while xb < xe - 3.0:
                    xe_b = min(xe, xb + rng.uniform(8.0, 25.0))
                    depth = rng.uniform(8.0, 14.0)
                    ya, yb = sorted((sign * a, sign * (a + depth)))
                    rgb = jitter(rng, ((0.72, 0.62, 0.5), (0.6, 0.58, 0.55), (0.75, 0.7, 0.6),
                                        (0.55, 0.35, 0.3))[int(rng.integers(4))], 0.06)
                    g.box((xb, ya, 0.0), (xe_b, yb, rng.uniform(6.0, 18.0)), "building", MAT_FACADE, rgb, 0.35)
                    xb = xe_b + (rng.uniform(1.0, 4.0) if rng.random() < 0.4 else 0.0)
            elif kind == 1:  # green: fence along the sidewalk, trees and bushes on terrain
                if rng.random() < 0.6:
                    ya, yb = sorted((sign * (a_out + 0.2), sign * (a_out + 0.3)))
                    g.box((xs, ya, 0.0), (xe, yb, rng.uniform(1.0, 1.8)), "fence", MAT_PLAIN,
                          jitter(rng, (0.45, 0.38, 0.28)), 0.4)
                for _ in range(int(rng.integers(3, 8))):
                    add_tree(g, rng, rng.uniform(xs, xe), sign * (a_out + rng.uniform(2.0, 9.0)), 0.0)
                for _ in range(int(rng.integers(2, 7))):
                    r = rng.uniform(0.5, 1.2)
                    g.ell((rng.uniform(xs, xe), sign * (a_out + rng.uniform(1.0, 8.0)), 0.3 * r), (r, r, 0.7 * r),
                          "vegetation", MAT_FOLIAGE, jitter(rng, (0.25, 0.45, 0.18)), 0.2)
                if rng.random() < 0.5:  # hedge
                    ya, yb = sorted((sign * (a_out + 0.6), sign * (a_out + 1.4)))
                    xh = rng.uniform(xs, xe)
                    g.box((xh, ya, 0.0), (min(xe, xh + rng.uniform(3, 10)), yb, rng.uniform(0.8, 1.5)), "vegetation",
                          MAT_FOLIAGE, jitter(rng, (0.2, 0.4, 0.15)), 0.2)
            else:  # yard: a car parked off-street
                if rng.random() < 0.7 and xe - xs > 6:
                    add_vehicle(g, rng, rng.uniform(xs, xe - 5), sign * (a_out + rng.uniform(2, 5)), 4.3,
                                "van" if rng.random() < 0.3 else "car")
        return starts, np.asarray(seg_cls, dtype=np.int64)

    def _traffic_block(self, b: int) -> Primitives:
        """Moving objects whose position at t = 0 lies in block ``b``."""
        if b not in self._traffic:
            rng = np.random.default_rng([self.seed, 2, b + 1_000_000])
            g = ShapeBuilder()
            x0 = b * BLOCK_LENGTH
            lane = 0.5 * self.road_half_width
            for _ in range(int(rng.integers(0, 3))):  # oncoming traffic in the left lane
                kind = ("car", "truck", "van", "bus", "motorcycle")[int(rng.choice(5, p=(0.7, 0.08, 0.08, 0.07, 0.07)))]
                add_vehicle(g, rng, x0 + rng.uniform(0, BLOCK_LENGTH), lane + rng.uniform(-0.2, 0.2),
                            vehicle_length(rng, kind), kind, (-rng.uniform(7.0, 12.0), 0.0))
            if rng.random() < 0.3:  # a cyclist at the left road edge
                add_rider(g, rng, x0 + rng.uniform(0, BLOCK_LENGTH), self.road_half_width - 0.7,
                          (-rng.uniform(3.0, 5.0), 0.0))
            for _ in range(int(rng.integers(1, 4))):  # pedestrians walking along a sidewalk
                sign = 1.0 if rng.random() < 0.5 else -1.0
                s = int(sign > 0)
                # on the sidewalk whether or not the block has a parking strip
                a = self.road_half_width + 0.5 * (2.4 + self.sidewalk_width[s])
                add_person(g, rng, x0 + rng.uniform(0, BLOCK_LENGTH), sign * a, SIDEWALK_HEIGHT,
                           (rng.choice((-1.0, 1.0)) * rng.uniform(0.8, 1.5), 0.0))
            self._traffic[b] = g.build()
        return self._traffic[b]
