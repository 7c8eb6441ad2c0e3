"""Rigid transforms: 4x4 matrices <-> (translation, quaternion x, y, z, w), as TF uses them; points between frames.

Camera -> grid enters the model as ``rot``/``tran`` (:func:`l2cocc_ros.core.preprocess.camera_geometry`); a LiDAR
cloud is moved into the grid frame with :func:`transform_points`.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = ["quaternion_from_matrix", "matrix_from_quaternion", "make_transform", "invert_transform", "transform_points"]


def quaternion_from_matrix(rot: np.ndarray) -> Tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w) of a 3x3 rotation matrix (w >= 0)."""
    m = np.asarray(rot, dtype=np.float64)[:3, :3]
    if not np.allclose(m @ m.T, np.eye(3), atol=1e-4):
        raise ValueError(f"not a rotation matrix (R R^T != I):\n{m}")
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q) / np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return tuple(float(v) for v in q)


def matrix_from_quaternion(q: Sequence[float]) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (x, y, z, w); the quaternion is normalised first."""
    x, y, z, w = np.asarray(q, dtype=np.float64)
    n = x * x + y * y + z * z + w * w
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"invalid quaternion {tuple(q)}")
    s = 2.0 / n
    return np.array([
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
    ])


def make_transform(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """4x4 matrix from a translation (x, y, z) and a quaternion (x, y, z, w)."""
    t = np.eye(4)
    t[:3, :3] = matrix_from_quaternion(quaternion)
    t[:3, 3] = translation
    return t


def invert_transform(t: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (uses R^T, not a general inverse)."""
    t = np.asarray(t, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = t[:3, :3].T
    out[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return out


def transform_points(T_target_from_source: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points in the ``source`` frame -> the ``target`` frame (a new array; columns after x, y, z are kept).

    The arithmetic runs in the points' dtype (float32 clouds stay float32): ``x' = R x + t``.

    Args:
        T_target_from_source: rigid 4x4 transform (e.g. ``T_grid_from_cloud`` from TF).
        points: (P, >=3) x, y, z[, intensity, ...].

    Raises:
        ValueError: a transform that is not a finite 4x4, or points that are not (P, >=3).
    """
    t = np.asarray(T_target_from_source, dtype=np.float64)
    if t.shape != (4, 4) or not np.all(np.isfinite(t)):
        raise ValueError(f"T_target_from_source must be a finite 4x4 transform, got shape {t.shape}")
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be (P, >=3), got {pts.shape}")
    dtype = pts.dtype if np.issubdtype(pts.dtype, np.floating) else np.float64
    out = pts.astype(dtype, copy=True)
    out[:, :3] = pts[:, :3].astype(dtype) @ t[:3, :3].astype(dtype).T + t[:3, 3].astype(dtype)
    return out
