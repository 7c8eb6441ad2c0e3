"""Image encoder of L2COcc: EfficientNet backbone (mmcls layout) and the SECOND-FPN image neck.

Paper: L2COcc, arXiv 2503.12369, Fig. 2 "image encoder"; docs/model.md §3.2-§3.3. EfficientNet: Tan & Le,
arXiv 1905.11946. Layout and key names follow the authors' ``CustomEfficientNet`` (an mmcls copy)
and mmdet3d's ``SECONDFPN`` in StudyingFuFu/L2COcc, so released checkpoints load by name:
``layers.0`` stem, ``layers.1..5`` MBConv stages, ``layers.6`` 1x1 head conv; block fields
``expand_conv / depthwise_conv / se.conv1 / se.conv2 / linear_conv`` each ``.conv`` (+ ``.bn``).
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

__all__ = ["BlockSetting", "EFFICIENTNET_B_STAGES", "EFFICIENTNET_ARCHS", "Conv2dAdaptivePadding", "EfficientNet",
           "SECONDFPN", "make_divisible", "scale_stages"]


class BlockSetting(NamedTuple):
    """One MBConv (or stem/head conv) row of the EfficientNet-B0 table."""

    kernel_size: int
    out_channels: int
    se_ratio: int  # squeeze = block input channels / se_ratio (0 = no SE)
    stride: int
    expand_ratio: int


# EfficientNet-B0 stages (before width/depth scaling): stem, 5 MBConv stages, head conv.
EFFICIENTNET_B_STAGES: Tuple[Tuple[BlockSetting, ...], ...] = (
    (BlockSetting(3, 32, 0, 2, 0),),
    (BlockSetting(3, 16, 4, 1, 1),),
    (BlockSetting(3, 24, 4, 2, 6), BlockSetting(3, 24, 4, 1, 6)),
    (BlockSetting(5, 40, 4, 2, 6), BlockSetting(5, 40, 4, 1, 6)),
    (BlockSetting(3, 80, 4, 2, 6),) + (BlockSetting(3, 80, 4, 1, 6),) * 2 + (BlockSetting(5, 112, 4, 1, 6),) * 3,
    (BlockSetting(5, 192, 4, 2, 6),) + (BlockSetting(5, 192, 4, 1, 6),) * 3 + (BlockSetting(3, 320, 4, 1, 6),),
    (BlockSetting(1, 1280, 0, 1, 0),),
)

# (width multiplier, depth multiplier) of the B family.
EFFICIENTNET_ARCHS = {
    "b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2), "b3": (1.2, 1.4), "b4": (1.4, 1.8),
    "b5": (1.6, 2.2), "b6": (1.8, 2.6), "b7": (2.0, 3.1), "b8": (2.2, 3.6),
}


def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """Round ``value`` to a multiple of ``divisor``, never dropping below ``min_ratio * value``."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < min_ratio * value:
        new_value += divisor
    return new_value


def scale_stages(stages: Sequence[Sequence[BlockSetting]], width: float, depth: float) -> List[List[BlockSetting]]:
    """Width/depth scaling exactly as mmcls ``model_scaling``.

    Widths are scaled and rounded to multiples of 8. Each MBConv stage is split into runs of equal
    width; every run gets ``ceil(depth * n)`` blocks (truncated, or extended by repeating its last
    block). A run whose first block has stride 1 is appended to the previous stage.
    """
    scaled = [[b._replace(out_channels=make_divisible(b.out_channels * width, 8)) for b in st] for st in stages]
    runs = []
    for stage in scaled[1:-1]:
        start = 0
        for i in range(1, len(stage) + 1):
            if i == len(stage) or stage[i].out_channels != stage[i - 1].out_channels:
                runs.append(stage[start:i])
                start = i
    merged = [scaled[0]]
    for i, run in enumerate(runs):
        n = int(math.ceil(depth * len(run)))
        new_run = list(run[:n]) if n <= len(run) else list(run) + [run[-1]] * (n - len(run))
        if new_run[0].stride == 1 and i != 0:
            merged[-1] = merged[-1] + new_run
        else:
            merged.append(new_run)
    merged.append(scaled[-1])
    return merged


class Conv2dAdaptivePadding(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (mmcv semantics)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, 1, groups, bias)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.weight.shape[-2:], self.stride):
            out = math.ceil(size / s)
            pads.append(max((out - 1) * s + k - size, 0))
        pad_h, pad_w = pads
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBNAct(nn.Module):
    """``conv`` -> optional ``bn`` (eps 1e-3) -> optional activation (mmcv ConvModule naming).

    Init as ConvModule: Kaiming-normal conv (fan_out, ReLU gain), BN weight 1 / bias 0.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, norm: bool = True, act: type[nn.Module] | None = nn.SiLU,
                 adaptive_padding: bool = True) -> None:
        super().__init__()
        if adaptive_padding:
            self.conv = Conv2dAdaptivePadding(in_channels, out_channels, kernel_size, stride, groups, bias=not norm)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                  groups=groups, bias=not norm)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3) if norm else nn.Identity()
        self.act = act() if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """``x * sigmoid(conv2(silu(conv1(avgpool(x)))))``, 1x1 convs with bias."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, squeeze_channels, norm=False, act=nn.SiLU, adaptive_padding=False)
        self.conv2 = ConvBNAct(squeeze_channels, channels, norm=False, act=nn.Sigmoid, adaptive_padding=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv2(self.conv1(F.adaptive_avg_pool2d(x, 1)))


def drop_path(x: Tensor, prob: float, training: bool) -> Tensor:
    """Stochastic depth per sample (mmcv DropPath): keep with ``1 - prob`` and rescale."""
    if prob == 0.0 or not training:
        return x
    keep = 1.0 - prob
    mask = torch.floor(keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device))
    return x.div(keep) * mask


class InvertedResidual(nn.Module):
    """MBConv block: [expand 1x1] -> depthwise kxk -> SE -> linear 1x1, residual when shapes allow.

    Args:
        in_channels: block input channels.
        out_channels: block output channels.
        expand_ratio: mid channels = in_channels * expand_ratio (no ``expand_conv`` when equal).
        kernel_size: depthwise kernel.
        stride: depthwise stride (1 or 2).
        se_ratio: squeeze channels = in_channels / se_ratio (0: no SE).
        drop_path_rate: stochastic-depth probability of the residual branch.
        with_cp: gradient checkpointing in training.
    """

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int, stride: int,
                 se_ratio: int, drop_path_rate: float = 0.0, with_cp: bool = False) -> None:
        super().__init__()
        mid = int(in_channels * expand_ratio)
        self.with_cp = with_cp
        self.drop_path_rate = drop_path_rate
        self.with_res_shortcut = stride == 1 and in_channels == out_channels
        self.expand_conv = ConvBNAct(in_channels, mid) if mid != in_channels else nn.Identity()
        self.depthwise_conv = ConvBNAct(mid, mid, kernel_size, stride, groups=mid)
        self.se = SqueezeExcite(mid, int(mid / (expand_ratio * se_ratio))) if se_ratio > 0 else nn.Identity()
        self.linear_conv = ConvBNAct(mid, out_channels, act=None)

    def _inner(self, x: Tensor) -> Tensor:
        out = self.linear_conv(self.se(self.depthwise_conv(self.expand_conv(x))))
        if self.with_res_shortcut:
            return x + drop_path(out, self.drop_path_rate, self.training)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(self._inner, x, use_reentrant=False)
        return self._inner(x)


class EfficientNet(nn.Module):
    """EfficientNet (B family) backbone returning the feature maps of ``out_indices``.

    The default arguments build the L2COcc image backbone: B7 (width 2.0, depth 3.1), stochastic
    depth 0 -> 0.2 over the 55 blocks, outputs of layers 2..6 (48/80/224/640/2560 channels at
    strides 4/8/16/32/32). A tiny network for tests: ``EfficientNet(width_mult=0.25, depth_mult=0.3)``.

    Args:
        arch: "b0".."b8"; ignored when both ``width_mult`` and ``depth_mult`` are given.
        width_mult: channel multiplier (overrides the arch).
        depth_mult: depth multiplier (overrides the arch).
        drop_path_rate: maximum stochastic-depth rate (linear over all MBConv blocks).
        out_indices: indices into ``layers`` (0 stem .. 6 head) to return.
        with_cp: gradient checkpointing of every block during training.
        in_channels: image channels.

    Raises:
        ValueError: unknown arch or out index.
    """

    def __init__(self, arch: str = "b7", width_mult: float | None = None, depth_mult: float | None = None,
                 drop_path_rate: float = 0.2, out_indices: Sequence[int] = (2, 3, 4, 5, 6),
                 with_cp: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        if width_mult is None or depth_mult is None:
            if arch not in EFFICIENTNET_ARCHS:
                raise ValueError(f"EfficientNet: arch={arch!r} not in {sorted(EFFICIENTNET_ARCHS)}")
            width_mult = EFFICIENTNET_ARCHS[arch][0] if width_mult is None else width_mult
            depth_mult = EFFICIENTNET_ARCHS[arch][1] if depth_mult is None else depth_mult
        stages = scale_stages(EFFICIENTNET_B_STAGES, width_mult, depth_mult)
        bad = [i for i in out_indices if not 0 <= i < len(stages)]
        if bad or not out_indices:
            raise ValueError(f"EfficientNet: out_indices={tuple(out_indices)} must be non-empty within "
                             f"[0, {len(stages) - 1}]")
        self.out_indices = tuple(out_indices)
        stem, head = stages[0][0], stages[-1][0]
        channels = make_divisible(stem.out_channels, 8)
        self.layers = nn.ModuleList([ConvBNAct(in_channels, channels, stem.kernel_size, stem.stride)])
        blocks_total = sum(len(s) for s in stages[1:-1])
        rates = torch.linspace(0, drop_path_rate, blocks_total).tolist()
        block_idx = 0
        last = max(self.out_indices)
        for stage in stages[1:-1]:
            if len(self.layers) > last:
                break
            blocks = []
            for b in stage:
                out_ch = make_divisible(b.out_channels, 8)
                blocks.append(InvertedResidual(channels, out_ch, b.expand_ratio, b.kernel_size, b.stride,
                                               b.se_ratio, rates[block_idx], with_cp))
                channels = out_ch
                block_idx += 1
            self.layers.append(nn.Sequential(*blocks))
        if len(self.layers) <= last:
            self.layers.append(ConvBNAct(channels, head.out_channels, head.kernel_size, head.stride))
        self.out_channels = [self._channels(i) for i in self.out_indices]

    def _channels(self, index: int) -> int:
        layer = self.layers[index]
        last = layer[-1] if isinstance(layer, nn.Sequential) else layer
        return last.linear_conv.conv.out_channels if isinstance(last, InvertedResidual) else last.conv.out_channels

    def forward(self, x: Tensor) -> List[Tensor]:
        """(B, 3, H, W) image -> list of (B, C_i, H / s_i, W / s_i), one per out index."""
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class SECONDFPN(nn.Module):
    """SECOND-FPN image neck: every level to one stride, BN(1e-3, 0.01) + ReLU, then concatenated.

    A level with upsample stride < 1 uses a strided Conv2d (kernel = stride = 1/s); otherwise a
    ConvTranspose2d (kernel = stride = s), as mmdet3d with ``use_conv_for_no_stride=False``.

    Args:
        in_channels: channels of each input level.
        out_channels: output channels of each level.
        upsample_strides: per-level scale factor (0.5 = downsample by 2).

    Raises:
        ValueError: list lengths differ or a stride is not positive.
    """

    def __init__(self, in_channels: Sequence[int] = (48, 80, 224, 640, 2560),
                 out_channels: Sequence[int] = (128,) * 5,
                 upsample_strides: Sequence[float] = (0.5, 1, 2, 4, 4)) -> None:
        super().__init__()
        if not len(in_channels) == len(out_channels) == len(upsample_strides):
            raise ValueError(f"SECONDFPN: in_channels {len(in_channels)}, out_channels {len(out_channels)} and "
                             f"upsample_strides {len(upsample_strides)} must have the same length")
        deblocks = []
        for cin, cout, s in zip(in_channels, out_channels, upsample_strides):
            if s <= 0:
                raise ValueError(f"SECONDFPN: upsample stride must be > 0, got {s}")
            if s >= 1:
                k = int(s)
                up = nn.ConvTranspose2d(cin, cout, k, stride=k, bias=False)
            else:
                k = int(round(1 / s))
                up = nn.Conv2d(cin, cout, k, stride=k, bias=False)
            nn.init.kaiming_normal_(up.weight, mode="fan_out", nonlinearity="relu")
            deblocks.append(nn.Sequential(up, nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)))
        self.deblocks = nn.ModuleList(deblocks)
        self.out_channels = int(sum(out_channels))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """List of level maps -> (B, sum(out_channels), h, w) at the common stride."""
        if len(feats) != len(self.deblocks):
            raise ValueError(f"SECONDFPN: got {len(feats)} feature maps, expected {len(self.deblocks)}")
        ups = [deblock(f) for deblock, f in zip(self.deblocks, feats)]
        return torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]
