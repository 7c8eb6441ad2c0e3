"""TPV branch (docs/model.md §3.10): weighted pooling to three planes, shared Swin, 2-D FPN, 4-way aggregation."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from .precision import full_precision
from .swin import SwinTPV
from .voxel_backbone import GeneralizedLSSFPN

__all__ = ["TPVWeightedAvgPooler", "TPVGenerator", "TPVAggregator"]


def _plane_mlp(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, c, 1))


class TPVWeightedAvgPooler(nn.Module):
    """Softmax-weighted pooling of a (1, C, X, Y, Z) volume along z (xy plane), x (yz plane) and y (zx plane),
    each followed by a 1x1-conv MLP."""

    def __init__(self, *, embed_dims: int = 128) -> None:
        super().__init__()
        self.weights_conv = nn.Sequential(nn.Conv3d(embed_dims, 3, kernel_size=1, bias=False))
        self.mlp_xy = _plane_mlp(embed_dims)
        self.mlp_yz = _plane_mlp(embed_dims)
        self.mlp_zx = _plane_mlp(embed_dims)

    def forward(self, x: Tensor) -> List[Tensor]:
        """x (B, C, X, Y, Z) -> [xy (B, C, X, Y), yz (B, C, Y, Z), zx (B, C, X, Z)]."""
        w = self.weights_conv(x)
        xy = (x * F.softmax(w[:, 0:1], dim=-1)).sum(dim=-1)
        yz = (x * F.softmax(w[:, 1:2], dim=-3)).sum(dim=-3)
        zx = (x * F.softmax(w[:, 2:3], dim=-2)).sum(dim=-2)
        return [self.mlp_xy(xy), self.mlp_yz(yz), self.mlp_zx(zx)]


class TPVGenerator(nn.Module):
    """Pooler -> shared Swin (``global_encoder_backbone``) -> 2-D FPN (``global_encoder_neck``) -> planes.

    Args:
        embed_dims: volume / plane channels (128).
        swin_embed_dims, swin_depths, swin_num_heads, window_size, mlp_ratio, drop_path_rate: Swin sizes
            (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 4, 0.2 for Swin-T).
        out_indices: Swin stages fed to the neck (1, 2, 3).
    """

    def __init__(self, *, embed_dims: int = 128, swin_embed_dims: int = 96, swin_depths: Sequence[int] = (2, 2, 6, 2),
                 swin_num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, mlp_ratio: int = 4,
                 drop_path_rate: float = 0.2, out_indices: Sequence[int] = (1, 2, 3)) -> None:
        super().__init__()
        self.tpv_pooler = TPVWeightedAvgPooler(embed_dims=embed_dims)
        self.global_encoder_backbone = SwinTPV(
            in_channels=embed_dims, embed_dims=swin_embed_dims, depths=swin_depths, num_heads=swin_num_heads,
            window_size=window_size, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, out_indices=out_indices)
        chans = [swin_embed_dims * 2 ** i for i in out_indices]
        self.global_encoder_neck = GeneralizedLSSFPN(in_channels=chans, out_channels=embed_dims, dims=2)

    @full_precision
    def forward(self, x: Tensor) -> Tuple[List[Tensor], Dict[str, List[List[Tensor]]]]:
        """Planes of a volume.

        Args:
            x: (1, C, X, Y, Z) the 3D features F3d.

        Returns:
            tpv: [Txy (1, C, X, Y, 1), Tyz (1, C, 1, Y, Z), Tzx (1, C, X, 1, Z)] (neck's finest output resized
                bilinearly to the full plane).
            feats: {"tpv_backbone": [3 planes][Swin outputs], "tpv_neck": [3 planes][neck outputs]}.
        """
        X, Y, Z = x.shape[2:]
        planes = self.tpv_pooler(x)
        backbone = self.global_encoder_backbone(planes)
        neck = [self.global_encoder_neck(v) for v in backbone]
        sizes = [(X, Y), (Y, Z), (X, Z)]
        dims = [-1, 2, 3]
        tpv = [F.interpolate(n[0], size=s, mode="bilinear", align_corners=False).unsqueeze(d)
               for n, s, d in zip(neck, sizes, dims)]
        return tpv, {"tpv_backbone": backbone, "tpv_neck": neck}


class TPVAggregator(nn.Module):
    """``Fagg = sum_i softmax(combine_coeff(Txy + Tyz + Tzx + F3d))_i * [Txy, Tyz, Tzx, F3d]_i``."""

    def __init__(self, *, embed_dims: int = 128) -> None:
        super().__init__()
        self.combine_coeff = nn.Conv3d(embed_dims, 4, kernel_size=1, bias=False)

    def forward(self, tpv: Sequence[Tensor], x3d: Tensor) -> Tuple[Tensor, Tensor]:
        """Fuse the three broadcastable planes with the volume.

        Args:
            tpv: [Txy (1, C, X, Y, 1), Tyz (1, C, 1, Y, Z), Tzx (1, C, X, 1, Z)].
            x3d: (1, C, X, Y, Z).

        Returns:
            Fagg (1, C, X, Y, Z) and the raw fusion logits (1, 4, X, Y, Z).
        """
        feats = [*tpv, x3d]
        s = feats[0] + feats[1]
        for f in feats[2:]:
            s = s + f
        logits = self.combine_coeff(s)
        w = F.softmax(logits, dim=1)
        out = feats[0] * w[:, 0:1]
        for i in range(1, 4):
            out = out + feats[i] * w[:, i:i + 1]
        return out, logits
