"""3D backbone and necks: ``CustomResNet3D`` and ``GeneralizedLSSFPN`` (2-D or 3-D), docs/model.md §3.9 / §3.10.

``ConvNormAct`` mirrors mmcv's ConvModule (conv -> norm -> act, keys ``conv`` and ``bn``/``gn``) including its
initialisation (Kaiming normal, fan_out; norm weight 1, bias 0).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvNormAct", "BasicBlock3D", "CustomResNet3D", "GeneralizedLSSFPN"]


class ConvNormAct(nn.Module):
    """Conv (no bias) + optional norm + optional activation, mmcv ConvModule key layout.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: conv geometry.
        dims: 2 or 3 (Conv2d / Conv3d).
        norm: "bn" (BatchNorm with running stats), "bn_nostats" (BatchNorm, ``track_running_stats=False``,
            key ``bn``), "gn" (GroupNorm with ``gn_groups``) or None.
        act: "relu", "leaky_relu" (slope 0.01) or None.
        gn_groups: GroupNorm groups.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
                 dims: int = 3, norm: Optional[str] = "bn", act: Optional[str] = "relu", gn_groups: int = 32) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        bn = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
        if norm == "bn":
            self.bn = bn(out_channels)
        elif norm == "bn_nostats":
            self.bn = bn(out_channels, track_running_stats=False)
        elif norm == "gn":
            self.gn = nn.GroupNorm(gn_groups, out_channels)
        elif norm is not None:
            raise ValueError(f"unknown norm {norm!r}")
        self.norm_name = None if norm is None else ("gn" if norm == "gn" else "bn")
        if act == "relu":
            self.act: Optional[nn.Module] = nn.ReLU(inplace=True)
        elif act == "leaky_relu":
            self.act = nn.LeakyReLU(0.01, inplace=True)
        elif act is None:
            self.act = None
        else:
            raise ValueError(f"unknown act {act!r}")
        nonlin, a = ("leaky_relu", 0.01) if act == "leaky_relu" else ("relu", 0.0)
        nn.init.kaiming_normal_(self.conv.weight, a=a, mode="fan_out", nonlinearity=nonlin)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        if self.act is not None:
            x = self.act(x)
        return x


class BasicBlock3D(nn.Module):
    """conv3³(stride) BN ReLU -> conv3³ BN, + shortcut (``downsample`` if given), ReLU."""

    def __init__(self, channels_in: int, channels_out: int, *, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels_in, channels_out, 3, stride=stride, padding=1, norm="bn", act="relu")
        self.conv2 = ConvNormAct(channels_out, channels_out, 3, padding=1, norm="bn", act=None)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(self.conv2(self.conv1(x)) + identity)


class CustomResNet3D(nn.Module):
    """Light 3D ResNet: each stage = BasicBlock3D with a conv3³+BN shortcut (always, even at stride 1) + plain
    blocks. Returns every stage's output.

    Args:
        in_channels: input channels (128).
        num_layer: blocks per stage ((1, 1, 1) camera, (2, 2, 2) LiDAR).
        num_channels: channels per stage.
        stride: stride per stage.
    """

    def __init__(self, *, in_channels: int = 128, num_layer: Sequence[int] = (1, 1, 1),
                 num_channels: Sequence[int] = (128, 128, 128), stride: Sequence[int] = (1, 2, 2)) -> None:
        super().__init__()
        if not len(num_layer) == len(num_channels) == len(stride):
            raise ValueError("num_layer, num_channels and stride must have the same length")
        layers = []
        cur = in_channels
        for n, c, s in zip(num_layer, num_channels, stride):
            blocks = [BasicBlock3D(cur, c, stride=s,
                                   downsample=ConvNormAct(cur, c, 3, stride=s, padding=1, norm="bn", act=None))]
            cur = c
            blocks += [BasicBlock3D(cur, cur) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> List[Tensor]:
        """(1, C, X, Y, Z) -> list of stage outputs, e.g. (1,128,128,128,16), (1,128,64,64,8), (1,128,32,32,4)."""
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class GeneralizedLSSFPN(nn.Module):
    """Top-down FPN with concatenation: ``t_i = fpn_i(lateral_i(cat[x_i, up(t_{i+1})]))``, t_last = x_last.

    Produces ``len(in_channels) - 1`` outputs, finest first (the original's ``num_outs`` is ignored).

    Args:
        in_channels: channels of the inputs, finest first.
        out_channels: output channels.
        dims: 3 (voxel neck: GN(32) + ReLU, trilinear) or 2 (TPV neck: BN without running stats + LeakyReLU,
            bilinear), unless ``norm`` / ``act`` / ``mode`` are given.
        norm, act: see ``ConvNormAct``.
        gn_groups: GroupNorm groups.
    """

    def __init__(self, *, in_channels: Sequence[int] = (128, 128, 128), out_channels: int = 128, dims: int = 3,
                 norm: Optional[str] = None, act: Optional[str] = None, gn_groups: int = 32) -> None:
        super().__init__()
        norm = norm or ("gn" if dims == 3 else "bn_nostats")
        act = act or ("relu" if dims == 3 else "leaky_relu")
        self.mode = "trilinear" if dims == 3 else "bilinear"
        self.in_channels = list(in_channels)
        n = len(in_channels) - 1
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(n):
            cin = in_channels[i] + (in_channels[i + 1] if i == n - 1 else out_channels)
            self.lateral_convs.append(ConvNormAct(cin, out_channels, 1, dims=dims, norm=norm, act=act,
                                                  gn_groups=gn_groups))
            self.fpn_convs.append(ConvNormAct(out_channels, out_channels, 3, padding=1, dims=dims, norm=norm,
                                              act=act, gn_groups=gn_groups))

    def forward(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} inputs, got {len(inputs)}")
        lat = list(inputs)
        for i in range(len(lat) - 2, -1, -1):
            up = F.interpolate(lat[i + 1], size=lat[i].shape[2:], mode=self.mode, align_corners=False)
            lat[i] = self.fpn_convs[i](self.lateral_convs[i](torch.cat([lat[i], up], 1)))
        return lat[:-1]
