"""Camera <-> LiDAR(grid) geometry shared by the LSS view transformer, the voxel proposal and the EVT.

Conventions (docs/model.md §1.3): ``rot`` (3, 3) / ``tran`` (3,) map camera -> LiDAR; ``intrin`` is the rectified
P2 padded to 4x4 (its 4th column is honoured); ``post_rot`` / ``post_tran`` map original image pixels to the
network image, (u', v') = post_rot (u, v) + post_tran; ``bda`` is a 4x4 (or 3x3) augmentation on LiDAR
points (identity in every released config). Only one camera and batch size 1 are supported, as in the
original; the camera tensors may carry leading (B, N) = (1, 1) dimensions.

The operation order of both directions follows the original code so that voxel indices computed by
truncation agree to the last bit wherever float32 allows.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
from torch import Tensor

from l2cocc_ros.core.grid import SEMANTIC_KITTI_GRID

__all__ = ["PC_RANGE", "CamParams", "cam_params", "image_to_lidar", "lidar_to_image"]

#: SemanticKITTI / SSCBench point-cloud range (x_min, y_min, z_min, x_max, y_max, z_max) in metres, from the
#: grid spec (``GridSpec.upper`` rounds to the original configs' literals, so float32 results stay identical)
PC_RANGE: Tuple[float, float, float, float, float, float] = SEMANTIC_KITTI_GRID.point_cloud_range()


class CamParams(NamedTuple):
    """Single-camera parameters with the batch/camera dims removed.

    Attributes:
        rot: (3, 3) camera -> LiDAR rotation.
        tran: (3,) camera -> LiDAR translation.
        intrin: (3, 3) or (4, 4) intrinsics / padded projection.
        post_rot: (3, 3) image augmentation matrix (top-left 2x2 used).
        post_tran: (3,) image augmentation translation.
        bda: (4, 4) or (3, 3) LiDAR-space augmentation.
    """

    rot: Tensor
    tran: Tensor
    intrin: Tensor
    post_rot: Tensor
    post_tran: Tensor
    bda: Tensor


def _squeeze(t: Tensor, shape: Tuple[int, ...], name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.numel() != int(torch.tensor(shape).prod()):
        raise ValueError(f"{name}: expected {shape} (optionally with leading (1, 1) dims), got {tuple(t.shape)}")
    return t.reshape(shape)


def cam_params(rot: Tensor, tran: Tensor, intrin: Tensor, post_rot: Tensor, post_tran: Tensor,
               bda: Tensor) -> CamParams:
    """Validate the camera tensors of the model inputs and drop their (B, N) = (1, 1) dims.

    Args:
        rot: (1, 1, 3, 3) or (3, 3).
        tran: (1, 1, 3) or (3,).
        intrin: (1, 1, 4, 4), (4, 4), (1, 1, 3, 3) or (3, 3).
        post_rot: (1, 1, 3, 3) or (3, 3).
        post_tran: (1, 1, 3) or (3,).
        bda: (1, 4, 4), (4, 4) or 3x3 variants.

    Returns:
        CamParams with plain matrices / vectors.

    Raises:
        ValueError: naming the field with a wrong size.
    """
    k = 4 if intrin.shape[-1] == 4 else 3
    b = 4 if bda.shape[-1] == 4 else 3
    return CamParams(_squeeze(rot, (3, 3), "rot"), _squeeze(tran, (3,), "tran"),
                     _squeeze(intrin, (k, k), "intrin"), _squeeze(post_rot, (3, 3), "post_rot"),
                     _squeeze(post_tran, (3,), "post_tran"), _squeeze(bda, (b, b), "bda"))


def image_to_lidar(uvd: Tensor, cam: CamParams) -> Tensor:
    """Back-project network-image points (u', v', depth) to LiDAR coordinates.

    Undo post_rot/post_tran, scale (u, v) by depth, subtract P2[:3, 3], apply rot K^-1, add tran, apply bda.

    Args:
        uvd: (..., 3) pixel coordinates in the network image and depth [m] along the optical axis.
        cam: camera parameters.

    Returns:
        (..., 3) points in the LiDAR/grid frame.
    """
    shape = uvd.shape
    pts = uvd.reshape(-1, 3) - cam.post_tran.view(1, 3)
    pts = torch.inverse(cam.post_rot).view(1, 3, 3).matmul(pts.unsqueeze(-1))  # (M, 3, 1)
    pts = torch.cat((pts[:, :2] * pts[:, 2:3], pts[:, 2:3]), 1)
    intrin = cam.intrin
    if intrin.shape[-1] == 4:
        pts = pts - intrin[:3, 3].view(1, 3, 1)
        intrin = intrin[:3, :3]
    combine = cam.rot.matmul(torch.inverse(intrin))
    pts = combine.view(1, 3, 3).matmul(pts).squeeze(-1) + cam.tran.view(1, 3)
    if cam.bda.shape[-1] == 4:
        pts = torch.cat((pts, torch.ones_like(pts[:, :1])), -1)
        pts = cam.bda.view(1, 4, 4).matmul(pts.unsqueeze(-1)).squeeze(-1)[:, :3]
    else:
        pts = cam.bda.view(1, 3, 3).matmul(pts.unsqueeze(-1)).squeeze(-1)
    return pts.reshape(shape)


def lidar_to_image(xyz: Tensor, cam: CamParams, eps: float = 1e-5) -> Tuple[Tensor, Tensor]:
    """Project LiDAR points into the network image.

    Args:
        xyz: (..., 3) points in the LiDAR/grid frame.
        cam: camera parameters.
        eps: lower clamp of the depth used as divisor (the original uses 1e-5).

    Returns:
        uv: (..., 2) pixel coordinates in the network image (after post_rot/post_tran).
        depth: (...,) depth along the optical axis (not clamped; <= 0 behind the camera).
    """
    shape = xyz.shape[:-1]
    pts = xyz.reshape(-1, 3)
    if cam.bda.shape[-1] == 4:
        pts = torch.cat((pts, torch.ones_like(pts[:, :1])), -1)
        pts = torch.inverse(cam.bda).view(1, 4, 4).matmul(pts.unsqueeze(-1)).squeeze(-1)[:, :3]
    else:
        pts = torch.inverse(cam.bda).view(1, 3, 3).matmul(pts.unsqueeze(-1)).squeeze(-1)
    pts = pts - cam.tran.view(1, 3)
    pts = (cam.rot.inverse().view(1, 3, 3) @ pts.unsqueeze(-1)).squeeze(-1)
    if cam.intrin.shape[-1] == 4:
        pts = torch.cat((pts, torch.ones_like(pts[:, :1])), -1)
    proj = (cam.intrin.view(1, *cam.intrin.shape) @ pts.unsqueeze(-1)).squeeze(-1)
    depth = proj[:, 2:3]
    uv = proj[:, 0:2] / torch.maximum(depth, torch.ones_like(depth) * eps)
    uv = (cam.post_rot[:2, :2].view(1, 2, 2) @ uv.unsqueeze(-1)).squeeze(-1) + cam.post_tran[:2].view(1, 2)
    return uv.reshape(*shape, 2), depth.reshape(shape)
