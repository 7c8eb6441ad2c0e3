"""MSNet3D and MSNet2D (MobileStereoNet, Shamsafar et al., WACV 2022) in plain torch, eval path.

Module attribute names equal the official ones (``feature_extraction``, ``dres0``, ``encoder_decoder1..3``,
``classif0..3``, MSNet2D's ``preconv11`` / ``conv3d`` / ``volume11``), so ``state_dict()`` has exactly the keys,
shapes and dtypes of the official classes and the released ``MSNet3D_SF_DS_KITTI2015.ckpt`` loads with
``strict=True`` (after its ``module.`` prefix is stripped). ``classif0..2`` only serve training; they are kept so
the checkpoint loads, and never run.

The original's behaviour is the default, quirks included: the 3-D MobileNet-V2 blocks never add their input;
the quarter-resolution logits (48 bins) go to 192 bins at the input size by trilinear interpolation with
``align_corners=False`` before the softmax; the disparity is the softmax-weighted mean of 0..191. Corrected
behaviour only on request: ``residual_3d=True``, ``align_corners=True``.

Precision: the cost volume and the output stage (upsampling, softmax, regression) run with autocast off and in
at least float32, whatever autocast region the caller runs the model in; the convolutions follow the caller.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from l2cocc_ros.core.stereo.msnet.layers import (FeatureExtraction, Hourglass, InvertedResidual, conv_bn,
                                                 groupwise_cost_volume, interleave_channels)

__all__ = ["MSNet3D", "MSNet2D", "MSNetBase", "MAXDISP"]

#: disparity range [px] of the released weights (argparse default of the official scripts)
MAXDISP = 192

Taps = Optional[Dict[str, torch.Tensor]]


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged (the float64 reference runs stay float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _autocast_off(x: torch.Tensor):
    return torch.autocast(x.device.type, enabled=False) if x.device.type in ("cpu", "cuda") \
        else contextlib.nullcontext()


class MSNetBase(nn.Module):
    """Shared parts: feature extractor, 3 hourglasses, the output stage; subclasses build the cost.

    Args:
        maxdisp: disparity range at the input resolution (the released weights: 192); the network works on
            maxdisp // 4 hypotheses at quarter resolution.
        align_corners: of the final trilinear upsampling; False is the original (torch's default since 0.4.1).
    """

    #: input height and width must be multiples of this (two stride-2 stages, then two in each hourglass)
    size_multiple = 16

    def __init__(self, maxdisp: int = MAXDISP, align_corners: bool = False) -> None:
        super().__init__()
        if maxdisp <= 0 or maxdisp % 4:
            raise ValueError(f"maxdisp must be a positive multiple of 4, got {maxdisp}")
        self.maxdisp = int(maxdisp)
        self.align_corners = bool(align_corners)

    def check_input(self, left: torch.Tensor, right: torch.Tensor) -> None:
        """Raises ValueError unless both are (B, 3, H, W) of one size with H, W multiples of 16."""
        if left.dim() != 4 or left.shape[1] != 3 or left.shape != right.shape:
            raise ValueError(f"left and right must be (B, 3, H, W) of one size, got {tuple(left.shape)} and "
                             f"{tuple(right.shape)}")
        h, w = left.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"{type(self).__name__} needs H and W divisible by {self.size_multiple} (pad the "
                             f"images first), got {h}x{w}")

    def regress(self, logits: torch.Tensor, size, taps: Taps = None) -> torch.Tensor:
        """(B, 1, D/4, h, w) logits -> (B, H, W) disparity [px]: trilinear to (maxdisp, H, W), softmax, mean."""
        with _autocast_off(logits):
            logits = _full_precision(logits)
            up = F.interpolate(logits, [self.maxdisp, size[0], size[1]], mode="trilinear",
                               align_corners=self.align_corners)
            prob = F.softmax(up.squeeze(1), dim=1)
            values = torch.arange(self.maxdisp, dtype=prob.dtype, device=prob.device).view(1, -1, 1, 1)
            disp = torch.sum(prob * values, 1)
        if taps is not None:
            taps.update({"upsampled_logits": up, "softmax_prob": prob, "disparity": disp})
        return disp

    def aggregate(self, volume: torch.Tensor, taps: Taps = None) -> torch.Tensor:
        """Cost volume -> the input of ``classif3`` (dres0, dres1 with its skip, three hourglasses)."""
        cost = self.dres0(volume)
        refined = self.dres1(cost)
        out = refined + cost
        if taps is not None:
            taps.update({"dres0": cost, "dres1": refined, "hourglass1.input": out})
        for i in (1, 2, 3):
            out = getattr(self, f"encoder_decoder{i}")(out)
            if taps is not None:
                taps[f"hourglass{i}"] = out
        return out

    def features(self, left: torch.Tensor, right: torch.Tensor, taps: Taps = None):
        fl = self.feature_extraction(left)
        fr = self.feature_extraction(right)
        if taps is not None:
            taps.update({"feature_extraction.left": fl, "feature_extraction.right": fr})
        return fl, fr


class MSNet3D(MSNetBase):
    """MSNet3D: group-wise correlation volume (40 groups x 48 disparities) and 3-D MobileNet-V2 aggregation.

    Args:
        maxdisp, align_corners: see :class:`MSNetBase`.
        residual_3d: let the 3-D MobileNet-V2 blocks add their input where stride 1 and channels agree (the
            evident intent of the original, which never does it; the released weights were trained without).
    """

    def __init__(self, maxdisp: int = MAXDISP, *, align_corners: bool = False, residual_3d: bool = False) -> None:
        super().__init__(maxdisp, align_corners)
        self.num_groups, self.hourglass_size = 40, 32
        c = self.hourglass_size

        def block(cin: int, cout: int) -> InvertedResidual:
            return InvertedResidual(3, cin, cout, 1, 3, allow_skip=residual_3d)

        self.feature_extraction = FeatureExtraction(add_relus=False)
        self.dres0 = nn.Sequential(block(self.num_groups, c), block(c, c))
        self.dres1 = nn.Sequential(block(c, c), block(c, c))
        for i in (1, 2, 3):
            setattr(self, f"encoder_decoder{i}", Hourglass(3, c, allow_skip=residual_3d))
        for i in range(4):
            setattr(self, f"classif{i}", nn.Sequential(conv_bn(3, c, c, 3, 1, 1), nn.ReLU(inplace=True),
                                                       nn.Conv3d(c, 1, 3, padding=1, bias=False)))

    def forward(self, left: torch.Tensor, right: torch.Tensor, taps: Taps = None) -> torch.Tensor:
        """Disparity (B, H, W) [px] of the left image from normalised (B, 3, H, W) images (H, W multiples of 16).

        Args:
            left, right: ImageNet-normalised RGB, already padded.
            taps: if a dict, the named intermediate tensors are stored in it (reference tests).
        """
        self.check_input(left, right)
        fl, fr = self.features(left, right, taps)
        with _autocast_off(fl):
            volume = groupwise_cost_volume(_full_precision(fl), _full_precision(fr), self.maxdisp // 4,
                                           self.num_groups)
        if taps is not None:
            taps["cost_volume"] = volume
        logits = self.classif3(self.aggregate(volume, taps))
        if taps is not None:
            taps["classif3"] = logits
        return self.regress(logits, left.shape[-2:], taps)


class MSNet2D(MSNetBase):
    """MSNet2D: learned "interlaced" volume (disparity as 48 channels) and 2-D MobileNet-V2 aggregation.

    Needs an input width of at least 4 x 48 = 192 px (the interlaced stack runs on width w - 47).

    Args:
        maxdisp, align_corners: see :class:`MSNetBase`.
    """

    def __init__(self, maxdisp: int = MAXDISP, *, align_corners: bool = False) -> None:
        super().__init__(maxdisp, align_corners)
        self.volume_size, self.hg_size = 48, 48
        c = self.hg_size

        def block(cin: int, cout: int) -> InvertedResidual:
            return InvertedResidual(2, cin, cout, 1, 3)

        self.feature_extraction = FeatureExtraction(add_relus=True)
        self.preconv11 = nn.Sequential(conv_bn(2, 320, 256, 1), nn.ReLU(inplace=True),
                                       conv_bn(2, 256, 128, 1), nn.ReLU(inplace=True),
                                       conv_bn(2, 128, 64, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(64, 32, 1, 1, 0))
        self.conv3d = nn.Sequential(
            nn.Conv3d(1, 16, (8, 3, 3), (8, 1, 1), (0, 1, 1)), nn.BatchNorm3d(16), nn.ReLU(),
            nn.Conv3d(16, 32, (4, 3, 3), (4, 1, 1), (0, 1, 1)), nn.BatchNorm3d(32), nn.ReLU(),
            nn.Conv3d(32, 16, (2, 3, 3), (2, 1, 1), (0, 1, 1)), nn.BatchNorm3d(16), nn.ReLU())
        self.volume11 = nn.Sequential(conv_bn(2, 16, 1, 1), nn.ReLU(inplace=True))
        self.dres0 = nn.Sequential(block(c, c), nn.ReLU(inplace=True), block(c, c), nn.ReLU(inplace=True))
        self.dres1 = nn.Sequential(block(c, c), nn.ReLU(inplace=True), block(c, c))
        for i in (1, 2, 3):
            setattr(self, f"encoder_decoder{i}", Hourglass(2, c))
        for i in range(4):
            setattr(self, f"classif{i}", nn.Sequential(conv_bn(2, c, c, 3, 1, 1), nn.ReLU(inplace=True),
                                                       nn.Conv2d(c, c, 3, padding=1, bias=False)))

    def check_input(self, left: torch.Tensor, right: torch.Tensor) -> None:
        super().check_input(left, right)
        if left.shape[-1] < 4 * self.volume_size:
            raise ValueError(f"MSNet2D needs an input width of at least {4 * self.volume_size} px, "
                             f"got {left.shape[-1]}")

    def interlaced_volume(self, fl: torch.Tensor, fr: torch.Tensor, taps: Taps = None) -> torch.Tensor:
        """(B, 48, h, w): for each d, the shared Conv3d stack on the interleaved left(x) / right(x - d) features,
        cropped to width w - d first (its 3x3 kernels zero-pad at the crop's own edges); columns x < d stay 0."""
        b, _, h, w = fl.shape
        volume = fl.new_zeros((b, self.volume_size, h, w))
        for d in range(self.volume_size):
            x = interleave_channels(fl[..., d:], fr[..., :w - d]).unsqueeze(1)
            x = self.conv3d(x)
            y = self.volume11(x.squeeze(2))
            volume[:, d, :, d:] = y[:, 0]
            if taps is not None and d in (0, 1, 7, 47):
                taps[f"interlaced_conv3d[i={d}]"] = x
                taps[f"volume11[i={d}]"] = y
        return volume

    def forward(self, left: torch.Tensor, right: torch.Tensor, taps: Taps = None) -> torch.Tensor:
        """As :meth:`MSNet3D.forward`."""
        self.check_input(left, right)
        fl, fr = self.features(left, right, taps)
        pl, pr = self.preconv11(fl), self.preconv11(fr)
        if taps is not None:
            taps.update({"preconv11.left": pl, "preconv11.right": pr})
        with _autocast_off(pl):
            volume = self.interlaced_volume(_full_precision(pl), _full_precision(pr), taps)
        if taps is not None:
            taps["cost_volume"] = volume
        logits = self.classif3(self.aggregate(volume, taps))
        if taps is not None:
            taps["classif3"] = logits
        return self.regress(logits.unsqueeze(1), left.shape[-2:], taps)
