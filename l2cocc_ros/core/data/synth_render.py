"""Ray casting of the synthetic street (synth_scene): camera images with procedural textures and a LiDAR scan.

All rays of one sensor share an origin. Rays are grouped into azimuth sectors and each sector is tested only
against the shapes whose angular extent (seen from the origin) overlaps it, so a frame costs a few hundred
thousand ray/shape tests rather than rays x shapes.

Textures are functions of the world point only (triplanar multi-octave value noise, lane markings, facade
windows), and shading is Lambertian with a fixed sun, so the left and right images agree wherever a point is
seen by both: stereo matching works. Octaves finer than the pixel footprint at the hit are faded out (a cheap
mip-map), which keeps the two views free of aliasing differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .synth_scene import World
from .synth_shapes import MAT_FACADE, MAT_FOLIAGE, MAT_GLASS, Primitives, raw_id

__all__ = ["Hits", "cast_rays", "render_camera", "scan_lidar", "lidar_directions", "rotate"]

_SECTORS = 96
_EPS = 1e-4
_SUN = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])
_ROAD, _PARKING, _SIDEWALK = raw_id("road"), raw_id("parking"), raw_id("sidewalk")
# ground colour (RGB 0..1), texture contrast and LiDAR reflectance per ground raw id
_GROUND_LOOK = {
    _ROAD: ((0.33, 0.33, 0.35), 1.1, 0.22),
    _PARKING: ((0.42, 0.40, 0.38), 1.1, 0.25),
    _SIDEWALK: ((0.62, 0.60, 0.57), 1.0, 0.30),
    raw_id("other-ground"): ((0.50, 0.45, 0.40), 1.2, 0.28),
    raw_id("terrain"): ((0.45, 0.42, 0.25), 1.8, 0.35),
}
_CONTRAST = {0: 1.2, MAT_FACADE: 0.9, MAT_GLASS: 1.0, MAT_FOLIAGE: 2.2}


@dataclass
class Hits:
    """First hits of a bundle of rays.

    Attributes:
        t: (N,) ray parameter of the hit (distance if the directions are unit vectors); inf = no hit.
        point: (N, 3) world hit points (undefined where t is inf).
        normal: (N, 3) unit surface normals.
        raw: (N,) raw SemanticKITTI ids (0 = no hit).
        mat: (N,) material ids; rgb: (N, 3) colour tint; intensity: (N,) LiDAR reflectance.
        ground: (N,) True where the ground plane was hit.
    """

    t: np.ndarray
    point: np.ndarray
    normal: np.ndarray
    raw: np.ndarray
    mat: np.ndarray
    rgb: np.ndarray
    intensity: np.ndarray
    ground: np.ndarray


def _angular_extent(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Middle azimuth, half width and "contains origin" flag of xy boxes seen from ``origin``."""
    cx = np.stack([lo[:, 0], hi[:, 0], hi[:, 0], lo[:, 0]], 1) - origin[0]
    cy = np.stack([lo[:, 1], lo[:, 1], hi[:, 1], hi[:, 1]], 1) - origin[1]
    ang = np.arctan2(cy, cx)
    rel = np.angle(np.exp(1j * (ang - ang[:, :1])))
    mid = ang[:, 0] + 0.5 * (rel.max(1) + rel.min(1))
    half = 0.5 * (rel.max(1) - rel.min(1))
    near = ((lo[:, 0] - 0.5 <= origin[0]) & (origin[0] <= hi[:, 0] + 0.5)
            & (lo[:, 1] - 0.5 <= origin[1]) & (origin[1] <= hi[:, 1] + 0.5))
    return mid, half, near


def rotate(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``v @ m[:3, :3].T`` for (N, 3) rows, by broadcasting (numpy's (N, 3) x (3, 3) matmul is slow)."""
    return v[:, :1] * m[:3, 0] + v[:, 1:2] * m[:3, 1] + v[:, 2:3] * m[:3, 2]


def _hit_boxes(o, d, lo, hi):
    tn, tf = None, None
    for a in range(3):  # slab test, one axis at a time (reductions over a length-3 axis are slow)
        da = d[:, a:a + 1]
        inv = 1.0 / np.where(np.abs(da) < 1e-12, 1e-12, da)
        t1 = (lo[:, a] - o[a]) * inv
        t2 = (hi[:, a] - o[a]) * inv
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        tn = near if tn is None else np.maximum(tn, near)
        tf = far if tf is None else np.minimum(tf, far)
    return np.where((tf >= tn) & (tn > _EPS), tn, np.inf)


def _hit_cyls(o, d, cyl):
    px, py = o[0] - cyl[:, 0], o[1] - cyl[:, 1]
    a = (d[:, 0] ** 2 + d[:, 1] ** 2)[:, None]
    b = 2 * (d[:, :1] * px + d[:, 1:2] * py)
    c = px ** 2 + py ** 2 - cyl[:, 2] ** 2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(disc)) / (2 * a)
    z = o[2] + ts * d[:, 2:3]
    ts = np.where((disc >= 0) & (ts > _EPS) & (z >= cyl[:, 3]) & (z <= cyl[:, 4]), ts, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = (cyl[:, 4] - o[2]) / d[:, 2:3]
    cx, cy = px + tc * d[:, :1], py + tc * d[:, 1:2]
    tc = np.where((tc > _EPS) & (cx ** 2 + cy ** 2 <= cyl[:, 2] ** 2), tc, np.inf)
    return np.minimum(ts, tc)


def _hit_ells(o, d, ell):
    p = (o - ell[:, :3]) / ell[:, 3:]
    a = b = 0.0
    for ax in range(3):
        q = d[:, ax:ax + 1] / ell[:, 3 + ax]
        a = a + q * q
        b = b + 2.0 * q * p[:, ax]
    c = (p * p).sum(1)[None] - 1.0
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def cast_rays(world: World, prims: Primitives, origin: np.ndarray, dirs: np.ndarray, max_t: float) -> Hits:
    """First hit of every ray ``origin + t * dirs`` (0 < t <= max_t) against the ground and ``prims``.

    Args:
        world: the world (ground classes).
        prims: the shapes at the sensor's time.
        origin: (3,) world origin shared by all rays.
        dirs: (N, 3) world directions (any length; ``t`` is in units of their length).
        max_t: largest accepted ``t``.

    Returns:
        The :class:`Hits`.
    """
    o = np.asarray(origin, dtype=np.float64)
    d = np.asarray(dirs, dtype=np.float64)
    n = len(d)
    with np.errstate(divide="ignore"):
        tg = np.where(d[:, 2] < -1e-9, -o[2] / d[:, 2], np.inf)
    best = np.where(tg <= max_t, tg, np.inf)
    kind = np.where(np.isfinite(best), 1, 0)  # 0 none, 1 ground, 2 box, 3 cylinder, 4 ellipsoid
    index = np.zeros(n, dtype=np.int64)

    lo, hi = prims.xy_bounds()
    mid, half, near = _angular_extent(lo, hi, o)
    gap = np.maximum(np.maximum(lo - o[:2], o[:2] - hi), 0.0)
    reach = np.hypot(gap[:, 0], gap[:, 1]) <= max_t
    nb, nc = len(prims.box_lo), len(prims.cyl)
    az = np.arctan2(d[:, 1], d[:, 0])
    sector = np.minimum(((az + np.pi) / (2 * np.pi) * _SECTORS).astype(np.int64), _SECTORS - 1)
    order = np.argsort(sector, kind="stable")
    bounds = np.searchsorted(sector[order], np.arange(_SECTORS + 1))
    sec_half = np.pi / _SECTORS
    for s in range(_SECTORS):
        rays = order[bounds[s]:bounds[s + 1]]
        if not len(rays):
            continue
        centre = -np.pi + (s + 0.5) * 2 * sec_half
        sel = reach & (near | (np.abs(np.angle(np.exp(1j * (mid - centre)))) <= half + sec_half + 1e-6))
        dd = d[rays]
        for k, (fn, args, off) in enumerate((
                (_hit_boxes, (prims.box_lo, prims.box_hi), 0),
                (_hit_cyls, (prims.cyl,), nb),
                (_hit_ells, (prims.ell,), nb + nc))):
            cnt = (nb, nc, len(prims.ell))[k]
            ids = np.flatnonzero(sel[off:off + cnt])
            if not len(ids):
                continue
            t = fn(o, dd, *[a[ids] for a in args])
            j = t.argmin(1)
            tj = t[np.arange(len(rays)), j]
            better = (tj < best[rays]) & (tj <= max_t)
            r = rays[better]
            best[r] = tj[better]
            kind[r] = 2 + k
            index[r] = ids[j[better]]
    return _describe(world, prims, o, d, best, kind, index)


def _describe(world, prims, o, d, t, kind, index) -> Hits:
    n = len(d)
    tt = np.where(np.isfinite(t), t, 0.0)
    point = o + tt[:, None] * d
    normal = np.zeros((n, 3))
    raw = np.zeros(n, dtype=np.int64)
    mat = np.zeros(n, dtype=np.int64)
    rgb = np.zeros((n, 3))
    inten = np.zeros(n)
    g = kind == 1
    normal[g] = (0, 0, 1)
    raw[g] = world.ground_raw(point[g, 0], point[g, 1])
    for rid, (col, _, refl) in _GROUND_LOOK.items():
        m = g & (raw == rid)
        rgb[m] = col
        inten[m] = refl
    m = kind == 2
    i = index[m]
    if m.any():
        lo, hi, p = prims.box_lo[i], prims.box_hi[i], point[m]
        dist = np.minimum(np.abs(p - lo), np.abs(p - hi))
        ax = dist.argmin(1)
        sgn = np.where(np.abs(p - lo)[np.arange(len(i)), ax] < np.abs(p - hi)[np.arange(len(i)), ax], -1.0, 1.0)
        nm = np.zeros((len(i), 3))
        nm[np.arange(len(i)), ax] = sgn
        normal[m] = nm
        raw[m], mat[m], rgb[m], inten[m] = prims.box_raw[i], prims.box_mat[i], prims.box_rgb[i], prims.box_int[i]
    m = kind == 3
    i = index[m]
    if m.any():
        c, p = prims.cyl[i], point[m]
        side = np.stack([p[:, 0] - c[:, 0], p[:, 1] - c[:, 1], np.zeros(len(i))], 1)
        top = np.abs(p[:, 2] - c[:, 4]) < 1e-6
        side[top] = (0, 0, 1)
        normal[m] = side / np.linalg.norm(side, axis=1, keepdims=True).clip(1e-9)
        raw[m], mat[m], rgb[m], inten[m] = prims.cyl_raw[i], prims.cyl_mat[i], prims.cyl_rgb[i], prims.cyl_int[i]
    m = kind == 4
    i = index[m]
    if m.any():
        e = prims.ell[i]
        nm = (point[m] - e[:, :3]) / e[:, 3:] ** 2
        normal[m] = nm / np.linalg.norm(nm, axis=1, keepdims=True).clip(1e-9)
        raw[m], mat[m], rgb[m], inten[m] = prims.ell_raw[i], prims.ell_mat[i], prims.ell_rgb[i], prims.ell_int[i]
    return Hits(t, point, normal, raw, mat, rgb, inten, g)


# ---------------------------------------------------------------------------------------------- textures
class _Noise:
    """Multi-octave 2D value noise from a seeded random tile, with per-octave fading by pixel footprint."""

    def __init__(self, seed: int, octaves: int = 7, base: float = 0.03) -> None:
        rng = np.random.default_rng([seed, 3])
        self.tile = rng.random((256, 256)).astype(np.float64)
        self.offsets = rng.uniform(0, 256, (octaves, 2))
        self.waves = base * 2.0 ** np.arange(octaves)
        self.amps = 0.8 ** np.arange(octaves)  # fine grain dominates: good for matching, no camouflage look

    def _lookup(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        iu, iv = np.floor(u), np.floor(v)
        fu, fv = u - iu, v - iv
        fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
        i0, j0 = iu.astype(np.int64) & 255, iv.astype(np.int64) & 255
        i1, j1 = (i0 + 1) & 255, (j0 + 1) & 255
        t = self.tile
        return ((t[i0, j0] * (1 - fu) + t[i1, j0] * fu) * (1 - fv) + (t[i0, j1] * (1 - fu) + t[i1, j1] * fu) * fv)

    def __call__(self, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Zero-mean noise (about +-0.5) at surface coordinates (u, v) [m]; ``footprint`` = metres per pixel."""
        acc = np.zeros_like(u)
        for (ou, ov), lam, amp in zip(self.offsets, self.waves, self.amps):
            fade = np.clip((lam / np.maximum(footprint, 1e-6) - 2.0) / 2.0, 0.0, 1.0)
            acc += (amp * fade) * (self._lookup(u / lam + ou, v / lam + ov) - 0.5)
        return acc


def _lane_marking(world: World, hits: Hits) -> np.ndarray:
    """Road hits on the painted lines: a dashed centre line (3 m of 9 m) and solid edge lines."""
    ay = np.abs(hits.point[:, 1])
    edge = world.road_half_width - 0.25
    lines = ((ay < 0.08) & (np.mod(hits.point[:, 0], 9.0) < 3.0)) | (np.abs(ay - edge) < 0.07)
    return hits.ground & (hits.raw == _ROAD) & lines


def _surface_colour(world: World, noise: _Noise, hits: Hits, view_dirs: np.ndarray,
                    footprint: np.ndarray) -> np.ndarray:
    """(N, 3) colours in 0..1 of the hit points (N = hits where t is finite)."""
    p, n = hits.point, hits.normal
    cos_v = np.abs((n * view_dirs).sum(1)) / np.linalg.norm(view_dirs, axis=1)
    fp = footprint / np.maximum(cos_v, 0.2)
    w = np.abs(n) ** 4
    w /= w.sum(1, keepdims=True)
    tex = np.zeros(len(p))
    for ax, (a, b) in enumerate(((1, 2), (0, 2), (0, 1))):
        m = w[:, ax] > 0.02
        if m.any():
            tex[m] += w[m, ax] * noise(p[m, a] + 17.0 * ax, p[m, b], fp[m])
    contrast = np.ones(len(p))
    for mat, c in _CONTRAST.items():
        contrast[hits.mat == mat] = c
    for rid, (_, c, _) in _GROUND_LOOK.items():
        contrast[hits.ground & (hits.raw == rid)] = c
    rgb = hits.rgb * (1.0 + contrast[:, None] * tex[:, None])
    # lane markings: dashed centre line, solid edge lines
    mark = _lane_marking(world, hits)
    rgb[mark] = (0.85, 0.85, 0.82) * (1.0 + 0.4 * tex[mark, None])
    # facade windows on vertical faces
    fac = (hits.mat == MAT_FACADE) & (np.abs(n[:, 2]) < 0.5)
    along = np.where(np.abs(n[:, 0]) > np.abs(n[:, 1]), p[:, 1], p[:, 0])
    win = fac & (np.mod(along, 3.0) > 0.8) & (np.mod(along, 3.0) < 2.2) & (np.mod(p[:, 2], 3.2) > 1.0) & (
        np.mod(p[:, 2], 3.2) < 2.4)
    rgb[win] = np.array([0.16, 0.19, 0.24]) * (1.0 + 1.5 * tex[win, None])
    glass = hits.mat == MAT_GLASS
    rgb[glass] = 0.3 * rgb[glass] + 0.7 * np.array([0.12, 0.14, 0.17]) * (1.0 + 2.0 * tex[glass, None])
    shade = 0.5 + 0.6 * np.clip((n * _SUN).sum(1), 0.0, 1.0)
    return np.clip(rgb * shade[:, None], 0.0, 1.0)


def render_camera(world: World, prims: Primitives, noise: _Noise, cam_to_world: np.ndarray, k: np.ndarray,
                  width: int, height: int, max_depth: float = 150.0) -> Tuple[np.ndarray, np.ndarray]:
    """Render one pinhole camera by ray casting.

    Args:
        world: the world. prims: shapes at the frame's time. noise: the world's texture noise.
        cam_to_world: 4x4 pose of the camera (optical frame: x right, y down, z forward).
        k: 3x3 intrinsics. width, height: image size in pixels.
        max_depth: rays hitting nothing closer are sky.

    Returns:
        (rgb (H, W, 3) float in 0..1, depth (H, W) float32 along the optical axis in metres, 0 = sky).
    """
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
    d_cam = rotate(pix, np.linalg.inv(k))  # z = 1: the ray parameter is the depth
    d_world = rotate(d_cam, cam_to_world)
    hits = cast_rays(world, prims, cam_to_world[:3, 3], d_world, max_depth)
    ok = np.isfinite(hits.t)
    rgb = np.empty((u.size, 3))
    elev = d_world[:, 2] / np.linalg.norm(d_world, axis=1)
    sky = np.array([0.78, 0.86, 0.95])[None] * (1 - 0.35 * elev.clip(0, 1))[:, None]
    rgb[:] = sky
    if ok.any():
        sub = Hits(*(getattr(hits, f)[ok] for f in Hits.__dataclass_fields__))
        rgb[ok] = _surface_colour(world, noise, sub, d_world[ok], hits.t[ok] / k[0, 0])
    depth = np.where(ok, hits.t, 0.0).astype(np.float32)
    return rgb.reshape(height, width, 3), depth.reshape(height, width)


def lidar_directions(beams: int, azimuth_steps: int, fov_up_deg: float, fov_down_deg: float) -> np.ndarray:
    """(beams * azimuth_steps, 3) unit directions in the sensor frame, beam-major, top beam first.

    Beam k has elevation ``fov_up - k * (fov_up - fov_down) / (beams - 1)``; azimuth step j points at
    ``-pi + 2 pi (j + 0.5) / azimuth_steps`` (counter-clockwise from behind).
    """
    elev = np.deg2rad(np.linspace(fov_up_deg, fov_down_deg, beams))
    az = -np.pi + 2 * np.pi * (np.arange(azimuth_steps) + 0.5) / azimuth_steps
    e, a = np.meshgrid(elev, az, indexing="ij")
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)


def scan_lidar(world: World, prims: Primitives, velo_to_world: np.ndarray, dirs: np.ndarray, max_range: float,
               rng: np.random.Generator | None = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cast a LiDAR scan.

    Args:
        world, prims: the world and its shapes at the scan's time.
        velo_to_world: 4x4 sensor pose. dirs: (R, 3) unit directions in the sensor frame.
        max_range: returns beyond it are dropped [m].
        rng: if given, adds 1 cm range noise and reflectance noise.

    Returns:
        (ranges (R,) with inf for no return, points (P, 4) float32 x, y, z, reflectance in the sensor frame of
        the rays that returned, raw ids (P,) of those points).
    """
    hits = cast_rays(world, prims, velo_to_world[:3, 3], rotate(dirs, velo_to_world), max_range)
    ok = np.isfinite(hits.t)
    r = hits.t.copy()
    if rng is not None:
        r[ok] += rng.normal(0.0, 0.01, int(ok.sum()))
    pts = dirs[ok] * r[ok, None]
    world_dirs = rotate(dirs[ok], velo_to_world)
    cos_i = np.abs((hits.normal[ok] * world_dirs).sum(1))
    refl = hits.intensity[ok] * (0.55 + 0.45 * cos_i)
    mark = _lane_marking(world, hits)[ok]
    refl[mark] = 0.75 * (0.55 + 0.45 * cos_i[mark])
    if rng is not None:
        refl += rng.normal(0.0, 0.02, len(refl))
    points = np.concatenate([pts, np.clip(refl, 0.0, 1.0)[:, None]], 1).astype(np.float32)
    return r, points, hits.raw[ok]
