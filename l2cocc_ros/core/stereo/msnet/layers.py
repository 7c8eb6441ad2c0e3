"""Building blocks of MobileStereoNet (cogsys-tuebingen/mobilestereonet, ``models/submodule.py``), in plain torch.

Attribute names and ``nn.Sequential`` indices are those of the official modules, so the released checkpoint's
keys load strictly: ``conv`` (inverted residual: 0 expand, 1 BN, 2 ReLU6, 3 depthwise, 4 BN, 5 ReLU6, 6 project,
7 BN), ``downsample`` / ``conv1`` / ``conv2`` (MobileNet-V1 residual; ``downsample`` registered first), and
``.0`` conv / ``.1`` BN for every conv + BN pair. BatchNorms keep torch's defaults (eps 1e-5).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["conv_bn", "InvertedResidual", "MobileV1Residual", "FeatureExtraction", "Hourglass",
           "groupwise_cost_volume", "interleave_channels"]


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _bn(dims: int):
    return nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d


def conv_bn(dims: int, cin: int, cout: int, kernel: int, stride: int = 1, pad: int = 0,
            dilation: int = 1) -> nn.Sequential:
    """Bias-free conv (padding = dilation when dilation > 1) followed by BatchNorm; keys ``.0`` and ``.1``."""
    return nn.Sequential(
        _conv(dims)(cin, cout, kernel, stride, dilation if dilation > 1 else pad, dilation=dilation, bias=False),
        _bn(dims)(cout))


class InvertedResidual(nn.Module):
    """MobileNet-V2 block (1x1 expand, 3x3 depthwise, 1x1 linear project), 2-D or 3-D.

    Args:
        dims: 2 or 3 (Conv2d or Conv3d; in 3-D the stride applies to disparity, height and width).
        cin, cout: channels.
        stride: 1 or 2.
        ratio: expansion; hidden = round(cin * ratio) (the official 2-D code truncates; equal for the ratios used).
        dilation: of the depthwise conv (2-D only in the official models).
        allow_skip: add the input when ``stride == 1 and cin == cout``. The official 3-D block compares the stride
            with the tuple (1, 1, 1) while every caller passes an int, so it never adds; MSNet3D passes False here
            unless asked for the corrected behaviour.
    """

    def __init__(self, dims: int, cin: int, cout: int, stride: int, ratio: float, dilation: int = 1,
                 allow_skip: bool = True) -> None:
        super().__init__()
        hidden = round(cin * ratio)
        conv, bn = _conv(dims), _bn(dims)
        self.use_res_connect = allow_skip and stride == 1 and cin == cout
        self.conv = nn.Sequential(
            conv(cin, hidden, 1, 1, 0, bias=False), bn(hidden), nn.ReLU6(inplace=True),
            conv(hidden, hidden, 3, stride, dilation, dilation=dilation, groups=hidden, bias=False), bn(hidden),
            nn.ReLU6(inplace=True),
            conv(hidden, cout, 1, 1, 0, bias=False), bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _depthwise_separable(cin: int, cout: int, stride: int, dilation: int, final_relu: bool) -> nn.Sequential:
    """3x3 depthwise conv + BN + ReLU6, 1x1 pointwise conv + BN (+ ReLU6): keys 0, 1, 3, 4."""
    layers = [nn.Conv2d(cin, cin, 3, stride, dilation, dilation=dilation, groups=cin, bias=False),
              nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
              nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
    if final_relu:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class MobileV1Residual(nn.Module):
    """Two depthwise-separable units plus the input (or its 1x1 projection); no activation after the sum."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.conv1 = _depthwise_separable(cin, cout, stride, dilation, final_relu=True)
        self.conv2 = _depthwise_separable(cout, cout, 1, dilation, final_relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x)) + shortcut


def _layer(cin: int, cout: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(MobileV1Residual(cin, cout, stride, dilation),
                         *(MobileV1Residual(cout, cout, 1, dilation) for _ in range(blocks - 1)))


class FeatureExtraction(nn.Module):
    """Shared image encoder: (B, 3, H, W) normalised RGB -> (B, 320, ceil(H/4), ceil(W/4)).

    Args:
        add_relus: MSNet2D's stem has a ReLU after each of its three blocks (keys ``firstconv.0/2/4``);
            MSNet3D's has none (``firstconv.0/1/2``).
    """

    def __init__(self, add_relus: bool = False) -> None:
        super().__init__()
        stem = [InvertedResidual(2, 3, 32, 2, 3), InvertedResidual(2, 32, 32, 1, 3), InvertedResidual(2, 32, 32, 1, 3)]
        if add_relus:
            stem = [m for block in stem for m in (block, nn.ReLU(inplace=True))]
        self.firstconv = nn.Sequential(*stem)
        self.layer1 = _layer(32, 32, 3, 1, 1)
        self.layer2 = _layer(32, 64, 16, 2, 1)
        self.layer3 = _layer(64, 128, 3, 1, 1)
        self.layer4 = _layer(128, 128, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l2 = self.layer2(self.layer1(self.firstconv(x)))
        l3 = self.layer3(l2)
        return torch.cat((l2, l3, self.layer4(l3)), dim=1)


class Hourglass(nn.Module):
    """Encoder-decoder over the cost (2-D: disparity as channels; 3-D: disparity as depth), width ``c``.

    ``y5 = relu(conv5(conv4) + redir2(conv2))``, output ``relu(conv6(y5) + redir1(x))``; the strides halve every
    spatial axis twice, so they must be divisible by 4.
    """

    def __init__(self, dims: int, c: int, allow_skip: bool = True) -> None:
        super().__init__()
        up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d

        def block(cin: int, cout: int, stride: int) -> InvertedResidual:
            return InvertedResidual(dims, cin, cout, stride, 2, allow_skip=allow_skip)

        self.conv1 = block(c, 2 * c, 2)
        self.conv2 = block(2 * c, 2 * c, 1)
        self.conv3 = block(2 * c, 4 * c, 2)
        self.conv4 = block(4 * c, 4 * c, 1)
        self.conv5 = nn.Sequential(up(4 * c, 2 * c, 3, padding=1, output_padding=1, stride=2, bias=False),
                                   _bn(dims)(2 * c))
        self.conv6 = nn.Sequential(up(2 * c, c, 3, padding=1, output_padding=1, stride=2, bias=False), _bn(dims)(c))
        self.redir1 = block(c, c, 1)
        self.redir2 = block(2 * c, 2 * c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv2 = self.conv2(self.conv1(x))
        conv4 = self.conv4(self.conv3(conv2))
        y5 = torch.relu(self.conv5(conv4) + self.redir2(conv2))
        return torch.relu(self.conv6(y5) + self.redir1(x))


def groupwise_cost_volume(left: torch.Tensor, right: torch.Tensor, num_disp: int, groups: int) -> torch.Tensor:
    """GwcNet correlation volume (B, groups, num_disp, H, W): per channel group, the mean of left(x) * right(x - d).

    Columns x < d stay 0 (no wrap-around, no padding).
    """
    b, c, h, w = left.shape
    volume = left.new_zeros((b, groups, num_disp, h, w))
    for d in range(min(num_disp, w)):
        prod = left[..., d:] * right[..., :w - d]
        volume[:, :, d, :, d:] = prod.view(b, groups, c // groups, h, w - d).mean(dim=2)
    return volume


def interleave_channels(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x 2 -> (B, 2C, H, W) with channels L0, R0, L1, R1, ..."""
    b, c, h, w = left.shape
    return torch.stack((left, right), dim=2).reshape(b, 2 * c, h, w)
