"""Synthetic SemanticKITTI sequences: a procedural street seen by a KITTI-like car (stereo pair, 64-beam LiDAR).

Writes, for one sequence, exactly the SemanticKITTI / KITTI odometry layout (docs/model.md §7.1)::

    ROOT/sequences/SS/calib.txt          P0..P3 (rectified, KITTI seq-00 intrinsics scaled to the image), Tr
    ROOT/sequences/SS/poses.txt          left gray camera (cam0) poses in cam0 of frame 0, 3x4 per line
    ROOT/sequences/SS/times.txt          0.1 s steps
    ROOT/sequences/SS/image_2/NNNNNN.png left colour image, rendered with exactly P2
    ROOT/sequences/SS/image_3/NNNNNN.png right colour image, rendered with exactly P3
    ROOT/sequences/SS/velodyne/NNNNNN.bin  float32 x, y, z, reflectance (velodyne frame)
    ROOT/sequences/SS/labels/NNNNNN.label  uint32 per point, raw SemanticKITTI ids (instance 0)
    ROOT/sequences/SS/voxels/NNNNNN.{bin,label,invalid,occluded}  256x256x32 ground truth (velodyne frame)

Geometry: ``Tr`` has KITTI's axis convention (cam z = velo x, cam x = -velo y, cam y = -velo z) with cam0
0.27 m ahead of and 0.08 m below the velodyne, which is 1.73 m above the ground. ``P2 = K [I | (0.06, 0, 0)]``
and ``P3 = K [I | (0.06 - 0.54, 0, 0)]``, so the stereo baseline ``(P2[0,3] - P3[0,3]) / fx`` is 0.54 m and the
colour cameras sit 6 cm left of cam0 as in KITTI. ``fx = fy = 718.856 * W / 1241``, ``cx = 607.1928 * W / 1241``,
``cy = 185.2157 * H / 376``.

Voxel ground truth of a frame (``voxels/``):

* ``.label``: raw ids of the complete scene geometry. Each shape is painted into every voxel it overlaps
  (centre inside the shape grown by half a voxel), the ground into the voxel layer that contains the ground
  surface of each column; below the ground stays empty.
* ``.bin``: voxels that contain at least one point of the frame's LiDAR scan (the SSC input).
* ``.occluded``: voxels the frame's LiDAR did not observe: no return inside, and farther than the first return
  of the nearest ray (range-image test on voxel centres, 0.2 m tolerance) or outside the beams' vertical field
  of view.
* ``.invalid``: voxels never observed, approximating SemanticKITTI's accumulation over the sequence: not
  observed by the frame's LiDAR, nor by the frame's left camera (depth-buffer test), nor by LiDAR scans
  taken from the ego poses ``accumulate_offsets`` frames later. Everything below the ground, building
  interiors and the far side of objects end up invalid.

SemanticKITTI ships voxels for every 5th frame; here ``voxel_every`` defaults to 1 (every frame) so that short
synthetic sequences still give many training samples; set it to 5 to mimic the dataset exactly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from ..grid import SEMANTIC_KITTI_GRID, GridSpec
from ..transforms import invert_transform
from . import kitti_io
from .synth_render import _Noise, lidar_directions, render_camera, scan_lidar
from .synth_scene import World

__all__ = ["SynthConfig", "SynthFrame", "SynthSequence", "write_sequence", "kitti_calibration", "voxelize"]

logger = logging.getLogger(__name__)

KITTI_SIZE = (1241, 376)
_FX, _CX, _CY = 718.856, 607.1928, 185.2157
_CAM2_OFFSET = 0.06
_CAM0_IN_VELO = (0.27, 0.0, -0.08)
_VELO_TO_CAM_ROT = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the generator.

    Attributes:
        width, height: image size [px] (KITTI: 1241 x 376); the intrinsics scale with it.
        baseline: stereo baseline between image_2 and image_3 [m].
        lidar_beams, lidar_azimuth_steps: LiDAR resolution (HDL-64E: 64 beams).
        lidar_fov_up_deg, lidar_fov_down_deg: vertical field of view [deg].
        lidar_max_range: farthest LiDAR return [m].
        frame_dt: time between frames [s].
        voxel_every: write voxel ground truth for frames whose index is a multiple of this (KITTI: 5).
        accumulate_offsets: later frames whose LiDAR scans also count as observations for ``.invalid``.
        image_noise: standard deviation of the per-pixel sensor noise [grey levels].
        grid: the voxel grid (SemanticKITTI's).
    """

    width: int = KITTI_SIZE[0]
    height: int = KITTI_SIZE[1]
    baseline: float = 0.54
    lidar_beams: int = 64
    lidar_azimuth_steps: int = 1024
    lidar_fov_up_deg: float = 2.0
    lidar_fov_down_deg: float = -24.8
    lidar_max_range: float = 80.0
    frame_dt: float = 0.1
    voxel_every: int = 1
    accumulate_offsets: Tuple[int, ...] = (10, 20)
    image_noise: float = 1.0
    grid: GridSpec = SEMANTIC_KITTI_GRID

    def __post_init__(self) -> None:
        for name in ("width", "height", "lidar_beams", "lidar_azimuth_steps", "voxel_every"):
            if int(getattr(self, name)) < (2 if name == "lidar_beams" else 1):
                raise ValueError(f"SynthConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if not self.baseline > 0 or not self.frame_dt > 0 or not self.lidar_max_range > 0:
            raise ValueError("SynthConfig.baseline, frame_dt and lidar_max_range must be > 0")
        if not self.lidar_fov_up_deg > self.lidar_fov_down_deg:
            raise ValueError(f"SynthConfig.lidar_fov_up_deg ({self.lidar_fov_up_deg}) must exceed lidar_fov_down_deg "
                             f"({self.lidar_fov_down_deg})")


@dataclass
class SynthFrame:
    """One generated frame.

    Attributes:
        index: frame number. time: seconds since frame 0.
        left, right: (H, W, 3) uint8 RGB images of cameras 2 and 3.
        depth: (H, W) float32 depth of the left image along its optical axis [m], 0 = sky.
        points: (P, 4) float32 LiDAR x, y, z, reflectance (velodyne frame).
        point_labels: (P,) uint32 raw ids of the points.
        occupancy, invalid, occluded: (X, Y, Z) bool volumes; labels: (X, Y, Z) uint16 raw ids
            (all four None when the frame has no voxel ground truth).
    """

    index: int
    time: float
    left: np.ndarray
    right: np.ndarray
    depth: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    occupancy: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    invalid: Optional[np.ndarray] = None
    occluded: Optional[np.ndarray] = None


def kitti_calibration(width: int = KITTI_SIZE[0], height: int = KITTI_SIZE[1], baseline: float = 0.54
                      ) -> Dict[str, np.ndarray]:
    """KITTI-like ``calib.txt`` content for an image size: ``P0..P3`` and ``Tr`` as 3x4 float64 arrays."""
    f = _FX * width / KITTI_SIZE[0]
    k = np.array([[f, 0.0, _CX * width / KITTI_SIZE[0]], [0.0, f, _CY * height / KITTI_SIZE[1]], [0.0, 0.0, 1.0]])
    proj = lambda tx: np.hstack([k, k @ np.array([[tx], [0.0], [0.0]])])  # noqa: E731
    tr = np.hstack([_VELO_TO_CAM_ROT, -_VELO_TO_CAM_ROT @ np.array(_CAM0_IN_VELO).reshape(3, 1)])
    return {"P0": proj(0.0), "P1": proj(-0.537), "P2": proj(_CAM2_OFFSET), "P3": proj(_CAM2_OFFSET - baseline),
            "Tr": tr}


def _h(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], :] = m
    return out


def voxelize(world: World, prims, velo_to_world: np.ndarray, grid: GridSpec = SEMANTIC_KITTI_GRID) -> np.ndarray:
    """Raw-id label volume (X, Y, Z) uint16 of the scene in the velodyne frame at ``velo_to_world``.

    Ground classes go into the voxel layer containing the ground surface; then boxes, cylinders and ellipsoids
    (``prims``, already at the frame's time) are painted, in that order, into the voxels they overlap.
    """
    dims = np.array(grid.dims)
    v = grid.voxel_size
    lower = np.asarray(grid.lower, dtype=np.float64)
    labels = np.zeros(grid.dims, dtype=np.uint16)
    rot, pos = velo_to_world[:3, :3], velo_to_world[:3, 3]
    # ground layer (the sensor frame is level: its z axis is the world's)
    k = int(np.floor((-pos[2] - lower[2]) / v))
    if 0 <= k < dims[2]:
        ix, iy = np.meshgrid(lower[0] + (np.arange(dims[0]) + 0.5) * v, lower[1] + (np.arange(dims[1]) + 0.5) * v,
                             indexing="ij")
        wx = pos[0] + rot[0, 0] * ix + rot[0, 1] * iy
        wy = pos[1] + rot[1, 0] * ix + rot[1, 1] * iy
        labels[:, :, k] = world.ground_raw(wx, wy).astype(np.uint16)
    grow = 0.5 * v + 0.01
    inv_rot = rot.T

    def paint(wlo, whi, raw, inside):
        corners = np.array(np.meshgrid(*zip(wlo, whi), indexing="ij")).reshape(3, -1).T
        cv = (corners - pos) @ inv_rot.T
        i0 = np.maximum(np.floor((cv.min(0) - lower) / v).astype(int), 0)
        i1 = np.minimum(np.ceil((cv.max(0) - lower) / v).astype(int), dims)
        if np.any(i1 <= i0):
            return
        axes = [lower[a] + (np.arange(i0[a], i1[a]) + 0.5) * v for a in range(3)]
        c = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
        wc = c @ rot.T + pos
        sub = labels[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]]
        sub[inside(wc)] = raw

    for lo, hi, raw in zip(prims.box_lo, prims.box_hi, prims.box_raw):
        glo, ghi = lo - grow, hi + grow
        paint(glo, ghi, raw, lambda w: np.all((w >= glo) & (w <= ghi), axis=-1))
    for (cx, cy, r, z0, z1), raw in zip(prims.cyl, prims.cyl_raw):
        rr = r + grow
        paint((cx - rr, cy - rr, z0 - grow), (cx + rr, cy + rr, z1 + grow), raw,
              lambda w: ((w[..., 0] - cx) ** 2 + (w[..., 1] - cy) ** 2 <= rr * rr) & (w[..., 2] >= z0 - grow)
              & (w[..., 2] <= z1 + grow))
    for e, raw in zip(prims.ell, prims.ell_raw):
        c, rad = e[:3], e[3:] + grow
        paint(c - rad, c + rad, raw, lambda w: (((w - c) / rad) ** 2).sum(-1) <= 1.0)
    return labels


class SynthSequence:
    """Frames of one synthetic sequence (world, trajectory and sensors fixed by ``seed``).

    Args:
        seed: random seed (>= 0). Equal seeds and configs give byte-identical frames.
        config: generator settings.
    """

    def __init__(self, seed: int, config: SynthConfig = SynthConfig()) -> None:
        self.seed = int(seed)
        self.config = config
        self.world = World(self.seed)
        self._noise = _Noise(self.seed)
        self.calib = kitti_calibration(config.width, config.height, config.baseline)
        self._tr = _h(self.calib["Tr"])
        self._k = self.calib["P2"][:, :3]
        self._dirs = lidar_directions(config.lidar_beams, config.lidar_azimuth_steps, config.lidar_fov_up_deg,
                                      config.lidar_fov_down_deg)
        self._centres: Optional[np.ndarray] = None
        self._own_rays: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self._cam_pix: Optional[Tuple[np.ndarray, np.ndarray]] = None

    # ---------------------------------------------------------------------------------------- poses
    def time(self, frame: int) -> float:
        """Time stamp of a frame [s]."""
        return frame * self.config.frame_dt

    def velo_pose(self, frame: int) -> np.ndarray:
        """4x4 world-from-velodyne pose of a frame."""
        return self.world.ego_pose(self.time(frame))

    def camera_pose(self, frame: int, cam: int) -> np.ndarray:
        """4x4 world-from-camera pose of camera ``cam`` (0..3) as its ``P{cam}`` describes it."""
        p = self.calib[f"P{cam}"]
        t = np.linalg.solve(p[:, :3], p[:, 3])  # P = K [I | t]: the camera sits at -t in cam0
        cam0_to_cam = np.eye(4)
        cam0_to_cam[:3, 3] = -t
        return self.velo_pose(frame) @ invert_transform(self._tr) @ cam0_to_cam

    def cam0_poses(self, frames: int) -> np.ndarray:
        """(N, 4, 4) KITTI ``poses.txt`` content: cam0 poses of frames 0..N-1 in the cam0 frame of frame 0."""
        first = invert_transform(self.camera_pose(0, 0))
        poses = np.stack([first @ self.camera_pose(i, 0) for i in range(frames)])
        poses[np.abs(poses) < 1e-12] = 0.0  # round-off of first @ pose, so frame 0 is exactly the identity
        return poses

    # ---------------------------------------------------------------------------------------- frames
    def _prims(self, frame: int, pose: np.ndarray):
        x = pose[0, 3]
        reach = self.config.lidar_max_range + 5.0
        return self.world.primitives_near(x - reach, x + max(reach, 160.0), self.time(frame))

    def frame(self, index: int, voxels: bool = True) -> SynthFrame:
        """Generate frame ``index`` (images, scan and, if ``voxels``, the voxel ground truth)."""
        if int(index) < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        cfg = self.config
        pose = self.velo_pose(index)
        prims = self._prims(index, pose)
        rng = np.random.default_rng([self.seed, 4, int(index)])
        images, depth = [], None
        for cam in (2, 3):
            rgb, dep = render_camera(self.world, prims, self._noise, self.camera_pose(index, cam),
                                     self._k, cfg.width, cfg.height)
            img = rgb * 255.0 + rng.normal(0.0, cfg.image_noise, rgb.shape) if cfg.image_noise > 0 else rgb * 255.0
            images.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
            depth = dep if cam == 2 else depth
        ranges, points, raw = scan_lidar(self.world, prims, pose, self._dirs, cfg.lidar_max_range, rng)
        out = SynthFrame(int(index), self.time(index), images[0], images[1], depth, points, raw.astype(np.uint32))
        if voxels:
            out.labels = voxelize(self.world, prims, pose, cfg.grid)
            out.occupancy = np.zeros(cfg.grid.dims, dtype=bool)
            idx, inside = cfg.grid.index_of(points)
            out.occupancy[tuple(idx[inside].T)] = True
            seen_lidar = self._lidar_observed(None, ranges) | out.occupancy.reshape(-1)  # a return is an observation
            seen = seen_lidar | self._camera_observed(depth)
            for off in cfg.accumulate_offsets:
                later = self.velo_pose(index + off)
                r_later, _, _ = scan_lidar(self.world, self._prims(index + off, later), later, self._dirs,
                                           cfg.lidar_max_range)
                todo = np.flatnonzero(~seen)
                seen[todo] = self._lidar_observed(invert_transform(later) @ pose, r_later, todo)
            out.occluded = ~seen_lidar.reshape(cfg.grid.dims)
            out.invalid = ~seen.reshape(cfg.grid.dims)
        return out

    def _voxel_centres(self) -> np.ndarray:
        """(3, X*Y*Z) float32 voxel centres (coordinate-major: numpy's small matmuls are fast this way)."""
        if self._centres is None:
            self._centres = np.ascontiguousarray(self.config.grid.voxel_centers().reshape(-1, 3).T)
        return self._centres

    def _range_image_index(self, c: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Distance of points (3, N) in the sensor frame and the flat index of their LiDAR ray (-1: no ray)."""
        cfg = self.config
        r = np.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2])
        up, down = np.deg2rad(cfg.lidar_fov_up_deg), np.deg2rad(cfg.lidar_fov_down_deg)
        step = (up - down) / (cfg.lidar_beams - 1)
        beam = np.rint((up - np.arcsin(c[2] / np.maximum(r, 1e-6))) / step).astype(np.int64)
        az = np.floor((np.arctan2(c[1], c[0]) + np.pi) * (cfg.lidar_azimuth_steps / (2 * np.pi)))
        az = np.clip(az.astype(np.int64), 0, cfg.lidar_azimuth_steps - 1)
        ray = np.where((beam >= 0) & (beam < cfg.lidar_beams), beam * cfg.lidar_azimuth_steps + az, -1)
        return r, ray

    def _lidar_observed(self, sensor_from_grid: Optional[np.ndarray], ranges: np.ndarray,
                        subset: Optional[np.ndarray] = None) -> np.ndarray:
        """Mask of voxel centres (flat, or of ``subset``) not farther than the first LiDAR return in their direction.

        ``sensor_from_grid`` None means the scan was taken in the grid frame (cached geometry).
        """
        if sensor_from_grid is None:
            if self._own_rays is None:
                self._own_rays = self._range_image_index(self._voxel_centres())
            r, ray = self._own_rays
        else:
            c = self._voxel_centres() if subset is None else self._voxel_centres()[:, subset]
            c = sensor_from_grid[:3, :3].astype(np.float32) @ c + sensor_from_grid[:3, 3:].astype(np.float32)
            r, ray = self._range_image_index(c)
        limit = np.where(np.isfinite(ranges), ranges, self.config.lidar_max_range) + self.config.grid.voxel_size
        return (ray >= 0) & (r <= limit[np.maximum(ray, 0)])

    def _camera_observed(self, depth: np.ndarray) -> np.ndarray:
        """Flat mask of voxel centres in the left image not behind its rendered depth (one voxel tolerance)."""
        if self._cam_pix is None:
            p2 = _h(self.calib["P2"]) @ self._tr
            c = p2[:3, :3].astype(np.float32) @ self._voxel_centres() + p2[:3, 3:].astype(np.float32)
            z = c[2]  # depth in camera 2 (P2's third row is [0 0 1 0])
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.rint(c[0] / z)
                v = np.rint(c[1] / z)
            h, w = depth.shape
            ok = (z > 0.1) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            pix = np.where(ok, np.where(ok, v, 0).astype(np.int64) * w + np.where(ok, u, 0).astype(np.int64), -1)
            self._cam_pix = (z, pix)
        z, pix = self._cam_pix
        d = np.where(depth > 0, depth, np.inf).reshape(-1)
        return (pix >= 0) & (z <= d[np.maximum(pix, 0)] + self.config.grid.voxel_size)


def write_sequence(root, sequence: str = "08", frames: int = 5, seed: int = 0, start: int = 0,
                   config: SynthConfig = SynthConfig(),
                   progress: Optional[Callable[[int], None]] = None) -> Path:
    """Generate frames ``start .. start+frames-1`` of a synthetic sequence and write them in the KITTI layout.

    ``calib.txt``, ``poses.txt`` and ``times.txt`` cover frames ``0 .. start+frames-1`` so that frame ids stay
    line numbers; a frame's content does not depend on ``start`` or ``frames``.

    Args:
        root: dataset root (the folder that holds ``sequences/``).
        sequence: two-digit sequence name.
        frames: number of frames (>= 1). seed: world seed (>= 0). start: first frame id (>= 0).
        config: generator settings.
        progress: called with 1 after each frame (e.g. ``tqdm.update``).

    Returns:
        The sequence folder ``root/sequences/<sequence>``.

    Raises:
        ValueError: bad sequence name, frame count, start or seed.
    """
    if not (isinstance(sequence, str) and sequence.isdigit() and len(sequence) == 2):
        raise ValueError(f"sequence must be two digits like '08', got {sequence!r}")
    if int(frames) < 1 or int(start) < 0:
        raise ValueError(f"frames must be >= 1 and start >= 0, got frames={frames}, start={start}")
    seq = SynthSequence(seed, config)
    out = Path(root) / "sequences" / sequence
    for sub in ("image_2", "image_3", "velodyne", "labels", "voxels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    total = int(start) + int(frames)
    kitti_io.write_calib(out / "calib.txt", seq.calib)
    kitti_io.write_poses(out / "poses.txt", seq.cam0_poses(total))
    kitti_io.write_times(out / "times.txt", np.arange(total) * config.frame_dt)
    for i in range(int(start), total):
        f = seq.frame(i, voxels=(i % config.voxel_every == 0))
        name = f"{i:06d}"
        for folder, img in (("image_2", f.left), ("image_3", f.right)):
            ok, png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            if not ok:
                raise ValueError(f"could not encode {out / folder / name}.png")
            kitti_io.atomic_write_bytes(out / folder / f"{name}.png", png.tobytes())
        kitti_io.write_velodyne(out / "velodyne" / f"{name}.bin", f.points)
        kitti_io.write_point_labels(out / "labels" / f"{name}.label", f.point_labels)
        if f.labels is not None:
            kitti_io.write_voxel_bits(out / "voxels" / f"{name}.bin", f.occupancy)
            kitti_io.write_voxel_labels(out / "voxels" / f"{name}.label", f.labels)
            kitti_io.write_voxel_bits(out / "voxels" / f"{name}.invalid", f.invalid)
            kitti_io.write_voxel_bits(out / "voxels" / f"{name}.occluded", f.occluded)
        if progress is not None:
            progress(1)
    logger.info("wrote %d synthetic frames to %s", frames, out)
    return out
