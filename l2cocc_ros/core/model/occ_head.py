"""Occupancy head (``OccHead``, docs/model.md §3.11): conv3³ -> GN -> ReLU -> conv1³ -> trilinear upsampling."""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OccHead"]


class OccHead(nn.Module):
    """Per-voxel classifier at the internal resolution, logits upsampled to the output grid.

    Keys as the original: ``occ_convs.0.{0: Conv3d C->C/2 3³, 1: GroupNorm, 3: Conv3d C/2->n_cls 1³}``.

    Args:
        in_channels: input channels (128).
        num_classes: classes (20 SemanticKITTI, 19 KITTI-360).
        out_size: output grid (256, 256, 32); the upsampling factor is out_size / input size.
        gn_groups: GroupNorm groups (32).
    """

    def __init__(self, *, in_channels: int = 128, num_classes: int = 20, out_size: Sequence[int] = (256, 256, 32),
                 gn_groups: int = 32) -> None:
        super().__init__()
        mid = in_channels // 2
        self.out_size = tuple(int(s) for s in out_size)
        self.occ_convs = nn.ModuleList([nn.Sequential(
            nn.Conv3d(in_channels, mid, 3, padding=1, bias=False), nn.GroupNorm(gn_groups, mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, num_classes, 1, bias=False))])

    def forward(self, x: Tensor) -> Tensor:
        """x (1, C, X, Y, Z) -> logits (1, n_cls, *out_size)."""
        y = self.occ_convs[0](x)
        return F.interpolate(y, size=self.out_size, mode="trilinear", align_corners=False).contiguous()
