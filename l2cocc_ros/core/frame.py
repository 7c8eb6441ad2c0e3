"""The frame: one synchronized set of sensor data, as the inference engine takes it.

Two kinds, one per input of the model variants (docs/interfaces.md, "Frame"):

- :class:`StereoFrame`: the rectified stereo pair with its calibration and pose, plus, optionally, the LiDAR
  cloud of the same instant. The camera variants ("c", "d") need it; the LiDAR variant ("l") accepts it when
  it carries ``points``.
- :class:`LidarFrame`: a LiDAR cloud alone, for the LiDAR variant (no camera data to decode or look up).

A frame is checked once, when it is built (``__post_init__``): every later stage (stereo, preprocessing,
model) relies on the checks and does not repeat them. A bad field raises :class:`FrameError`, a ValueError
that names the field. Frames are frozen: the arrays are not copied, so the builder must not change them
afterwards.

The stereo baseline has one rule, :func:`baseline_from_projections` (KITTI's P2/P3 and ROS CameraInfo ``p``
alike); :meth:`StereoFrame.from_projections` builds a frame from the two projections with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

__all__ = ["Frame", "FrameError", "LidarFrame", "StereoFrame", "baseline_from_projections", "MIN_FOV_DEG",
           "MAX_FOV_DEG"]

#: the field of view a focal length may give over its image (each axis) [deg]: anything outside is no lens
#: (fx = 1e300 would pass "finite and > 0" and overflow the depth-to-voxel indices downstream)
MIN_FOV_DEG, MAX_FOV_DEG = 0.5, 179.0


class FrameError(ValueError):
    """A frame field is missing or malformed.

    Attributes:
        field: name of the offending field (``left``, ``right``, ``P_left``, ``baseline_m``,
            ``T_grid_from_camera``, ``stamp_ns``, ``points``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def baseline_from_projections(P_left: np.ndarray, P_right: np.ndarray) -> float:
    """Stereo baseline [m] of two rectified projections (3x4 or 4x4): the one place for this rule.

    ``P = K [I | t]`` with ``t_x = -B_cam`` for a camera ``B_cam`` metres along x from the reference, so
    ``P[0, 3] = -fx * B_cam`` and ``B = P_left[0, 3] / P_left[0, 0] - P_right[0, 3] / P_right[0, 0]``. This
    holds for KITTI's P2/P3 (both cameras offset from cam0) and for ROS CameraInfo ``p`` (left ``Tx = 0``,
    right ``Tx = -fx * B``).

    Raises:
        FrameError: (field ``baseline_m``) a bad shape, a zero or non-finite focal length, or a baseline that
            is not > 0 (the right projection's ``Tx`` missing or of the wrong sign).
    """
    pl, pr = np.asarray(P_left, dtype=np.float64), np.asarray(P_right, dtype=np.float64)
    for name, p in (("P_left", pl), ("P_right", pr)):
        if p.shape not in ((3, 4), (4, 4)):
            raise FrameError("baseline_m", f"{name} must be 3x4 or 4x4, got shape {p.shape}")
        if not np.isfinite(p).all() or p[0, 0] == 0:
            raise FrameError("baseline_m", f"{name} has a zero or non-finite focal length / values")
    b = pl[0, 3] / pl[0, 0] - pr[0, 3] / pr[0, 0]
    if not b > 0:
        raise FrameError("baseline_m", f"stereo baseline from P_left/P_right is {b:.6g} m (left Tx {pl[0, 3]}, "
                         f"right Tx {pr[0, 3]}); expected > 0: the right projection's Tx = -fx * baseline is "
                         "missing or the cameras are swapped")
    return float(b)


def _check_stamp(stamp_ns) -> int:
    if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)):
        raise FrameError("stamp_ns", f"stamp_ns must be an integer number of nanoseconds, got "
                         f"{type(stamp_ns).__name__}")
    if stamp_ns < 0:
        raise FrameError("stamp_ns", f"stamp {stamp_ns * 1e-9:.3f} s is negative (before 1970): not a capture time")
    return int(stamp_ns)


def _check_points(points) -> np.ndarray:
    """(P, 3) or (P, >=4) -> (P, 4) float32 x, y, z, intensity of the finite points (0 intensity for P, 3)."""
    if points is None:
        raise FrameError("points", "points are required (a LiDAR cloud in the grid frame)")
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise FrameError("points", f"points must be (P, >=3), got {pts.shape}")
    if pts.shape[1] == 3:
        pts = np.concatenate([pts, np.zeros((len(pts), 1), np.float32)], axis=1)
    pts = pts[:, :4]
    finite = np.isfinite(pts).all(axis=1)
    if not finite.all():
        pts = pts[finite]
    if len(pts) == 0:
        raise FrameError("points", f"points: no finite point left (of {len(finite)})")
    return np.ascontiguousarray(pts)


@dataclass(frozen=True)
class StereoFrame:
    """A rectified stereo pair with its calibration and pose (+ an optional LiDAR cloud).

    Attributes:
        left: (H, W, 3) uint8 RGB rectified left image (the reference camera).
        right: (H, W, 3) uint8 RGB rectified right image, same size.
        P_left: (3, 4) float64 rectified projection of the left image (a 3x3 K is taken as ``[K | 0]``);
            finite, ``fx, fy > 0`` giving a field of view of 0.5 to 179 deg over the image. Its ``[:3, :3]``
            are the intrinsics the stereo depth and the model use.
        baseline_m: stereo baseline [m], > 0 (:func:`baseline_from_projections` gives it from P_left/P_right).
        T_grid_from_camera: (4, 4) float64 rigid transform from the left camera frame to the grid frame.
        stamp_ns: capture time [ns] (>= 0).
        points: optional (P, 4) float32 LiDAR x, y, z, intensity in the GRID frame; built from (P, 3) or
            (P, >=4) with the non-finite rows dropped (at least one must remain).

    Raises:
        FrameError: the first bad field, named (shapes, dtypes, sizes, focal lengths, baseline, transform).
    """

    left: np.ndarray
    right: np.ndarray
    P_left: np.ndarray
    baseline_m: float
    T_grid_from_camera: np.ndarray
    stamp_ns: int
    points: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        for name in ("left", "right"):
            img = getattr(self, name)
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                got = f"{img.shape} {img.dtype}" if isinstance(img, np.ndarray) else type(img).__name__
                raise FrameError(name, f"{name} must be an (H, W, 3) uint8 RGB array, got {got}")
            if img.shape[0] < 1 or img.shape[1] < 1:
                raise FrameError(name, f"{name} image is empty: {img.shape}")
        if self.left.shape != self.right.shape:
            raise FrameError("right", f"left image {self.left.shape[:2]} and right image {self.right.shape[:2]} "
                             "differ in size")
        p = np.asarray(self.P_left, dtype=np.float64)
        if p.shape == (3, 3):
            p = np.concatenate([p, np.zeros((3, 1))], axis=1)
        if p.shape != (3, 4) or not np.isfinite(p).all() or not (p[0, 0] > 0 and p[1, 1] > 0):
            raise FrameError("P_left", f"P_left must be a finite 3x4 projection (or 3x3 K) with fx, fy > 0, "
                             f"got {p.tolist()}")
        for axis, focal, size in (("fx", p[0, 0], self.left.shape[1]), ("fy", p[1, 1], self.left.shape[0])):
            fov = float(np.degrees(2.0 * np.arctan2(size / 2.0, focal)))
            if not MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
                raise FrameError("P_left", f"focal length {axis} = {focal:.6g} px gives a {fov:.3g} deg field of view "
                                 f"over {size} px: no camera has that (expected {MIN_FOV_DEG:g} to {MAX_FOV_DEG:g} "
                                 "deg); check CameraInfo.p / the calibration")
        try:
            baseline = float(self.baseline_m)
        except (TypeError, ValueError):
            raise FrameError("baseline_m", f"baseline_m must be a number, got {self.baseline_m!r}") from None
        if not (np.isfinite(baseline) and baseline > 0):
            raise FrameError("baseline_m", f"baseline must be > 0 m, got {baseline}")
        t = np.asarray(self.T_grid_from_camera, dtype=np.float64) if self.T_grid_from_camera is not None else None
        if t is None or t.shape != (4, 4) or not np.isfinite(t).all():
            raise FrameError("T_grid_from_camera", "T_grid_from_camera must be a finite 4x4 transform, got "
                             f"{None if t is None else t.shape}")
        object.__setattr__(self, "P_left", p)
        object.__setattr__(self, "baseline_m", baseline)
        object.__setattr__(self, "T_grid_from_camera", t)
        object.__setattr__(self, "stamp_ns", _check_stamp(self.stamp_ns))
        if self.points is not None:
            object.__setattr__(self, "points", _check_points(self.points))

    @classmethod
    def from_projections(cls, left: np.ndarray, right: np.ndarray, P_left: np.ndarray, P_right: np.ndarray,
                         T_grid_from_camera: np.ndarray, stamp_ns: int,
                         points: Optional[np.ndarray] = None) -> "StereoFrame":
        """A frame whose baseline comes from the two rectified projections (:func:`baseline_from_projections`).

        Raises:
            FrameError: as the class, or a baseline that cannot be derived (field ``baseline_m``).
        """
        return cls(left, right, P_left, baseline_from_projections(P_left, P_right), T_grid_from_camera,
                   stamp_ns, points)

    @property
    def image_hw(self) -> tuple:
        """(H, W) of the images."""
        return self.left.shape[:2]

    @property
    def focal_px(self) -> float:
        """Horizontal focal length of the left image [px] (``P_left[0, 0]``)."""
        return float(self.P_left[0, 0])


@dataclass(frozen=True)
class LidarFrame:
    """A LiDAR cloud alone (the LiDAR variant's input).

    Attributes:
        points: (P, 4) float32 x, y, z, intensity in the GRID frame (built as ``StereoFrame.points``).
        stamp_ns: capture time [ns] (>= 0).

    Raises:
        FrameError: the bad field, named.
    """

    points: np.ndarray
    stamp_ns: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", _check_points(self.points))
        object.__setattr__(self, "stamp_ns", _check_stamp(self.stamp_ns))


#: what ``InferenceEngine.infer`` takes
Frame = Union[StereoFrame, LidarFrame]
