"""Voxel proposal layer (``VoxelProposalLayer``, docs/model.md §3.7): stereo depth pixels -> binary occupancy."""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import Tensor, nn

from .geometry import PC_RANGE, cam_params, image_to_lidar

__all__ = ["VoxelProposalLayer", "make_image_grid"]

logger = logging.getLogger(__name__)


def make_image_grid(input_size: Sequence[int]) -> Tensor:
    """(1, 2, H, W) float pixel grid: channel 0 = u (0..W-1), channel 1 = v (0..H-1)."""
    H, W = int(input_size[0]), int(input_size[1])
    xs = torch.linspace(0, W - 1, W, dtype=torch.float).view(1, 1, W).expand(1, H, W)
    ys = torch.linspace(0, H - 1, H, dtype=torch.float).view(1, H, 1).expand(1, H, W)
    return torch.stack((xs, ys), 1)


class VoxelProposalLayer(nn.Module):
    """Back-project every stereo-depth pixel and mark the voxels hit (no learnable parameters).

    Buffer ``image_grid`` (1, 2, H, W) as the original. Points are kept strictly inside the range shrunk by
    1e-4 m; index = trunc(n * (p - min) / (max - min)). With fewer than 10 surviving points the original
    substitutes 10 random points in [0, 1)^3 m; this is reproduced (they fall in voxel 0 for the paper grid).

    Args:
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) [m].
        grid_size: voxels along x, y, z.
        input_size: network image (H, W).
    """

    def __init__(self, *, pc_range: Sequence[float] = PC_RANGE, grid_size: Sequence[int] = (128, 128, 16),
                 input_size: Sequence[int] = (384, 1280)) -> None:
        super().__init__()
        if len(pc_range) != 6 or len(grid_size) != 3 or len(input_size) != 2:
            raise ValueError("pc_range (6), grid_size (3), input_size (2) have wrong lengths")
        self.pc_range = tuple(float(v) for v in pc_range)
        self.grid_size = tuple(int(n) for n in grid_size)
        self.input_size = tuple(int(s) for s in input_size)
        self.register_buffer("image_grid", make_image_grid(input_size))

    def forward(self, stereo_depth: Tensor, rot: Tensor, tran: Tensor, intrin: Tensor, post_rot: Tensor,
                post_tran: Tensor, bda: Tensor) -> Tensor:
        """Binary occupancy of the back-projected depth map.

        Args:
            stereo_depth: (1, 1, H, W) metres (0 = invalid; still back-projected, as the original).
            rot, tran, intrin, post_rot, post_tran, bda: camera tensors (see ``geometry.cam_params``).

        Returns:
            (1, 1, X, Y, Z) float32 with 1 where at least one pixel landed.
        """
        if stereo_depth.dim() != 4 or stereo_depth.shape[:2] != (1, 1) \
                or tuple(stereo_depth.shape[2:]) != self.input_size:
            raise ValueError(f"stereo_depth: expected (1, 1, {self.input_size[0]}, {self.input_size[1]}), "
                             f"got {tuple(stereo_depth.shape)}")
        cam = cam_params(rot, tran, intrin, post_rot, post_tran, bda)
        H, W = self.input_size
        uvd = torch.cat([self.image_grid, stereo_depth.to(self.image_grid.dtype)], 1).view(3, H * W).t()
        pts = image_to_lidar(uvd, cam)
        lo, hi = self.pc_range[:3], self.pc_range[3:]
        mask = torch.ones(pts.shape[0], dtype=torch.bool, device=pts.device)
        for a in range(3):
            mask &= (pts[:, a] > lo[a] + 0.0001) & (pts[:, a] < hi[a] - 0.0001)
        pts = pts[mask]
        if pts.shape[0] < 10:
            logger.debug("voxel proposal: only %d points inside the grid, using 10 dummy points", pts.shape[0])
            pts = torch.rand(10, 3, dtype=pts.dtype, device=pts.device)
        idx = torch.stack([(self.grid_size[a] * (pts[:, a] - lo[a]) / (hi[a] - lo[a])).long()
                           for a in range(3)], -1)
        idx = torch.minimum(torch.clamp(idx, min=0), idx.new_tensor(self.grid_size) - 1)
        X, Y, Z = self.grid_size
        occ = torch.zeros(X * Y * Z, dtype=torch.float32, device=pts.device)
        occ[(idx[:, 0] * Y + idx[:, 1]) * Z + idx[:, 2]] = 1.0
        return occ.view(1, 1, X, Y, Z)
