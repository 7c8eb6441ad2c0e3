"""Camera geometry of one image as the network consumes it: camera -> grid pose, intrinsics, resize bookkeeping.

Projection of a grid (LiDAR) point X: ``Xc = rot⁻¹ (X − tran)``, ``p = intrin · [Xc; 1]``, ``d = p_z``,
``(u, v) = p_xy / d``, then ``post_rot`` / ``post_tran`` (docs/interfaces.md, "Model contract").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .resize import ResizeCrop

__all__ = ["CameraGeometry", "camera_geometry"]


def _as_matrix(mat: np.ndarray, name: str, allow_3x4: bool) -> np.ndarray:
    m = np.asarray(mat, dtype=np.float64)
    if allow_3x4 and m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise ValueError(f"{name} must be {'3x4 or ' if allow_3x4 else ''}4x4, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} contains NaN or inf")
    return m


@dataclass(frozen=True)
class CameraGeometry:
    """Camera parameters of one image as the network consumes them (the geometry keys of the input dict).

    Attributes:
        rot: (3, 3) camera -> grid rotation.
        tran: (3,) camera -> grid translation.
        intrin: (4, 4) rectified projection P2, padded.
        post_rot: (3, 3) image resize/crop matrix.
        post_tran: (3,) image resize/crop translation.
        bda: (4, 4) 3D augmentation (identity).
        input_hw: (H_in, W_in) of the network image.
    """

    rot: np.ndarray
    tran: np.ndarray
    intrin: np.ndarray
    post_rot: np.ndarray
    post_tran: np.ndarray
    bda: np.ndarray
    input_hw: Tuple[int, int]

    def project(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Project (N, >=3) grid-frame points to network-image pixels.

        Returns:
            (uv (N, 2) float64 pixel coordinates after post_rot/post_tran, depth (N,) = p_z).
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"points must be (N, >=3), got {pts.shape}")
        xc = (pts[:, :3] - self.tran.astype(np.float64)) @ self.rot.astype(np.float64)  # rot^T (X - t), rows
        p = np.concatenate([xc, np.ones((len(xc), 1))], axis=1) @ self.intrin.astype(np.float64).T
        d = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = p[:, :2] / d[:, None]
        uv = uv @ self.post_rot[:2, :2].astype(np.float64).T + self.post_tran[:2].astype(np.float64)
        return uv, d

    def as_tensors(self) -> Dict[str, torch.Tensor]:
        """The geometry keys of the model input dict with batch and camera axes (float32)."""
        f = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        return {
            "rot": f(self.rot)[None, None],
            "tran": f(self.tran)[None, None],
            "intrin": f(self.intrin)[None, None],
            "post_rot": f(self.post_rot)[None, None],
            "post_tran": f(self.post_tran)[None, None],
            "bda": f(self.bda)[None],
        }


def camera_geometry(
    P2: np.ndarray,
    resize: ResizeCrop,
    *,
    T_velo_to_cam: Optional[np.ndarray] = None,
    T_grid_from_cam: Optional[np.ndarray] = None,
) -> CameraGeometry:
    """Build the camera geometry of one frame.

    Args:
        P2: rectified left projection, 3x4 or 4x4 (``fx > 0``).
        resize: the image resize/crop (gives post_rot/post_tran and the input size).
        T_velo_to_cam: KITTI ``Tr`` (grid/LiDAR -> camera), 4x4 or 3x4. Exactly one of this and
            ``T_grid_from_cam`` must be given.
        T_grid_from_cam: camera -> grid transform, 4x4 (as TF gives it).

    Raises:
        ValueError: bad shapes, non-finite values, zero focal length, or not exactly one transform.
    """
    intrin = _as_matrix(P2, "P2", allow_3x4=True)
    if intrin[0, 0] <= 0 or intrin[1, 1] <= 0:
        raise ValueError(f"P2 focal lengths must be positive, got fx={intrin[0, 0]}, fy={intrin[1, 1]}")
    if (T_velo_to_cam is None) == (T_grid_from_cam is None):
        raise ValueError("give exactly one of T_velo_to_cam and T_grid_from_cam")
    if T_grid_from_cam is None:
        cam_to_grid = np.linalg.inv(_as_matrix(T_velo_to_cam, "T_velo_to_cam", allow_3x4=True))
    else:
        cam_to_grid = _as_matrix(T_grid_from_cam, "T_grid_from_cam", allow_3x4=False)
    return CameraGeometry(
        rot=cam_to_grid[:3, :3].astype(np.float32),
        tran=cam_to_grid[:3, 3].astype(np.float32),
        intrin=intrin.astype(np.float32),
        post_rot=resize.post_rot,
        post_tran=resize.post_tran,
        bda=np.eye(4, dtype=np.float32),
        input_hw=resize.input_hw,
    )
