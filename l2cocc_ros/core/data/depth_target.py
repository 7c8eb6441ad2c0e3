"""The depth net's training target: a sparse depth map at network size from the LiDAR scan.

As the authors' loader: scan points projected into the network image (the frame's camera geometry, with the
resize/crop bookkeeping), nearest point per pixel.
"""
from __future__ import annotations

import numpy as np

from l2cocc_ros.core.preprocess import CameraGeometry

__all__ = ["lidar_depth_map"]


def lidar_depth_map(points: np.ndarray, geom: CameraGeometry) -> np.ndarray:
    """Sparse depth ground truth at network size from a LiDAR scan.

    Points are projected into the network image; those with ``0 <= u <= W-1``, ``0 <= v <= H-1`` and
    ``d > 0`` are rounded to the nearest pixel, and where several hit one pixel the nearest wins.

    Args:
        points: (N, >=3) scan in the grid/LiDAR frame.
        geom: camera geometry of the frame.

    Returns:
        (H_in, W_in) float32 depth in metres, 0 where no point falls.
    """
    h, w = geom.input_hw
    out = np.zeros((h, w), dtype=np.float32)
    if len(points) == 0:
        return out
    uv, d = geom.project(points)
    keep = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1) & (d > 0)
    keep &= np.isfinite(d)
    if not keep.any():
        return out
    col = np.round(uv[keep, 0]).astype(np.int64)
    row = np.round(uv[keep, 1]).astype(np.int64)
    depth = d[keep].astype(np.float32)
    order = np.argsort(-depth, kind="stable")  # far first, so the nearest is written last and wins
    out[row[order], col[order]] = depth[order]
    return out
