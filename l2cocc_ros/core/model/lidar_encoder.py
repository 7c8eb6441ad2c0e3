"""LiDAR teacher encoder (``LidarEncoder``, docs/model.md §3.12): per-point MLP + scatter-max into a dense grid."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from .geometry import PC_RANGE

__all__ = ["lidar_preprocess", "LidarEncoder"]


def lidar_preprocess(points: Tensor, *, pc_range: Sequence[float] = PC_RANGE,
                     occ_size: Sequence[int] = (256, 256, 32), coarse_ratio: int = 2) -> Tuple[Tensor, Tensor]:
    """Crop a scan to the range and build the 6-d point features of the original loader.

    Args:
        points: (P, 4) float x, y, z, intensity in the grid frame (extra columns are ignored).
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) [m]; points strictly inside are kept.
        occ_size: output grid; the cells are ``coarse_ratio`` output voxels wide.
        coarse_ratio: 2 for the 128x128x16 internal grid.

    Returns:
        feats: (P', 6) float32 [xyz - cell centre (3), x, y, intensity].
        grid_ind: (P', 3) int64 cell index floor((xyz - min) / cell).

    Raises:
        ValueError: if ``points`` is not (P, >=4).
    """
    if points.dim() != 2 or points.shape[1] < 4:
        raise ValueError(f"points: expected (P, 4), got {tuple(points.shape)}")
    pts = points[:, :4].to(torch.float32)
    rng = torch.tensor(list(pc_range), dtype=torch.float32, device=pts.device)
    occ = torch.tensor(list(occ_size), dtype=torch.int32, device=pts.device)
    grid_len = (rng[3:] - rng[:3]) / occ * coarse_ratio
    lo = rng[:3]
    xyz = pts[:, :3]
    mask = ((xyz > rng[:3]) & (xyz < rng[3:])).all(1)
    xyz, inten = xyz[mask], pts[mask, 3:4]
    grid_ind = torch.floor((xyz - lo) / grid_len).to(torch.int32)
    centres = (grid_ind.to(torch.float32) + 0.5) * grid_len + lo
    feats = torch.cat((xyz - centres, xyz[:, :2], inten), dim=-1)
    return feats, grid_ind.long()


class LidarEncoder(nn.Module):
    """Point MLP (BN1d without running stats) and per-cell max into a zero dense grid.

    Keys as the original: ``point_mlp.{0,2,5,8}`` BatchNorm1d, ``point_mlp.{1,4,7,10}`` Linear.

    Args:
        grid_size: (X, Y, Z) cells (128, 128, 16).
        in_channels: point feature size (6).
        out_channels: voxel feature channels (128).
        hidden: widths of the hidden layers (64, 128, 256).
        track_running_stats: BatchNorm1d running stats (False in the original: batch statistics always).
    """

    def __init__(self, *, grid_size: Sequence[int] = (128, 128, 16), in_channels: int = 6, out_channels: int = 128,
                 hidden: Sequence[int] = (64, 128, 256), track_running_stats: bool = False) -> None:
        super().__init__()
        if len(hidden) != 3:
            raise ValueError(f"hidden: expected 3 widths, got {hidden}")
        self.grid_size = tuple(int(n) for n in grid_size)
        self.out_channels = out_channels
        h1, h2, h3 = hidden
        t = track_running_stats
        self.point_mlp = nn.Sequential(
            nn.BatchNorm1d(in_channels, track_running_stats=t), nn.Linear(in_channels, h1),
            nn.BatchNorm1d(h1, track_running_stats=t), nn.ReLU(), nn.Linear(h1, h2),
            nn.BatchNorm1d(h2, track_running_stats=t), nn.ReLU(), nn.Linear(h2, h3),
            nn.BatchNorm1d(h3, track_running_stats=t), nn.ReLU(), nn.Linear(h3, out_channels))

    def forward(self, feats: Tensor, grid_ind: Tensor) -> Tensor:
        """feats (P, 6), grid_ind (P, 3) integer cell indices -> (1, C, X, Y, Z) (empty cells 0).

        Raises:
            ValueError: on shape mismatch, fewer than 2 points (batch statistics need >1) or indices outside.
        """
        if feats.dim() != 2 or grid_ind.shape != (feats.shape[0], 3):
            raise ValueError(f"feats (P, C) / grid_ind (P, 3) mismatch: {tuple(feats.shape)}, {tuple(grid_ind.shape)}")
        if feats.shape[0] < 2:
            raise ValueError(f"feats: need at least 2 points, got {feats.shape[0]}")
        X, Y, Z = self.grid_size
        g = grid_ind.long()
        if (g < 0).any() or (g >= g.new_tensor(self.grid_size)).any():
            raise ValueError("grid_ind: indices outside the grid")
        flat = (g[:, 0] * Y + g[:, 1]) * Z + g[:, 2]
        unq, inv = torch.unique(flat, return_inverse=True)
        pf = self.point_mlp(feats)
        pooled = pf.new_zeros(unq.shape[0], pf.shape[1]).scatter_reduce(
            0, inv.unsqueeze(1).expand_as(pf), pf, reduce="amax", include_self=False)
        dense = pf.new_zeros(X * Y * Z, pf.shape[1]).index_copy(0, unq, pooled)
        return dense.t().reshape(1, pf.shape[1], X, Y, Z)
