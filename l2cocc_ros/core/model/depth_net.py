"""Geometry depth network of L2COcc: mono depth/context net fused with a stereo depth volume.

Paper: L2COcc, arXiv 2503.12369, Fig. 2 (image branch; inherited from CGFormer, arXiv 2405.13675);
docs/model.md §3.4. Names follow the authors' ``GeometryDepth_Net`` (StudyingFuFu/L2COcc,
``core/models/img_view_transformer``) so released checkpoints load by key:

* ``depth_net``: BEVDepth-style DepthNet with camera-aware SE; depth head = 3 BasicBlocks + ASPP +
  deformable conv (groups 4) + 1x1; returns ``cat(depth logits D, context C)``.
* ``stereo_volume_encoder``: the precomputed stereo depth map turned into a per-8x8-patch one-hot
  volume (with the original's one-bin shift, §3.4) -> conv + GN -> SimpleUnet -> 1x1.
* ``depth_aggregation``: two residual 5x5 neighbourhood cross-attentions (mono<->stereo), a 3-D
  U-Net over (2, D, h, w), 3-D channel attention and a 3x3x3 output conv.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import DeformConv2dPack, NeighborhoodCrossAttention2D

__all__ = ["GeometryDepthNet", "MonoDepthNet", "StereoVolumeEncoder", "DepthAggregation",
           "stereo_depth_to_onehot", "get_mlp_input"]


def get_mlp_input(rot: Tensor, tran: Tensor, intrin: Tensor, post_rot: Tensor, post_tran: Tensor,
                  bda: Tensor) -> Tensor:
    """The 33-d camera vector of the camera-aware SE blocks (the one definition; the authors' order).

    fx, fy, cx, cy, P[0,3], P[1,3], P[2,3]; post_rot[0,0], post_rot[0,1], post_tran[0], post_rot[1,0],
    post_rot[1,1], post_tran[1]; bda[0,0], bda[0,1], bda[1,0], bda[1,1], bda[2,2], bda[:3,3];
    then [rot | tran] (camera -> LiDAR) row-major.

    Args:
        rot: (B, N, 3, 3). tran: (B, N, 3). intrin: (B, N, 4, 4) padded P2.
        post_rot: (B, N, 3, 3). post_tran: (B, N, 3). bda: (B, 4, 4).

    Returns:
        (B, N, 33).

    Raises:
        ValueError: on a wrong shape, naming the tensor.
    """
    if rot.dim() != 4:
        raise ValueError(f"get_mlp_input: rot has shape {tuple(rot.shape)}, expected (B, N, 3, 3)")
    b, n = rot.shape[:2]
    for name, t, shape in (("rot", rot, (b, n, 3, 3)), ("tran", tran, (b, n, 3)), ("intrin", intrin, (b, n, 4, 4)),
                           ("post_rot", post_rot, (b, n, 3, 3)), ("post_tran", post_tran, (b, n, 3)),
                           ("bda", bda, (b, 4, 4))):
        if tuple(t.shape) != shape:
            raise ValueError(f"get_mlp_input: {name} has shape {tuple(t.shape)}, expected {shape}")
    bd = bda.view(b, 1, 4, 4).expand(b, n, 4, 4)
    parts = [
        intrin[..., 0, 0], intrin[..., 1, 1], intrin[..., 0, 2], intrin[..., 1, 2],
        intrin[..., 0, 3], intrin[..., 1, 3], intrin[..., 2, 3],
        post_rot[..., 0, 0], post_rot[..., 0, 1], post_tran[..., 0],
        post_rot[..., 1, 0], post_rot[..., 1, 1], post_tran[..., 1],
        bd[..., 0, 0], bd[..., 0, 1], bd[..., 1, 0], bd[..., 1, 1], bd[..., 2, 2],
        bd[..., 0, 3], bd[..., 1, 3], bd[..., 2, 3],
    ]
    head = torch.stack(parts, dim=-1)
    rt = torch.cat([rot, tran.unsqueeze(-1)], dim=-1).reshape(b, n, 12)
    return torch.cat([head, rt.to(head.dtype)], dim=-1)


def stereo_depth_to_onehot(depth: Tensor, depth_bins: int, dmin: float = 2.0, step: float = 0.5,
                           downsample: int = 8) -> Tensor:
    """Per-patch one-hot stereo depth volume, exactly as the original (one-bin shift included).

    For each ``downsample`` x ``downsample`` patch the smallest non-zero depth d is taken;
    ``k = floor((d - (dmin - step / 2)) / step)``; the vector is one-hot at column ``k - 1`` when
    ``1 <= k <= depth_bins`` and all zeros otherwise (no valid pixel, too near or too far).

    Args:
        depth: (B, 1, H, W) or (B, H, W) metres, 0 = invalid; H, W multiples of ``downsample``.
        depth_bins: D.
        dmin, step: first bin centre and bin width [m].
        downsample: patch size.

    Returns:
        (B, D, H / downsample, W / downsample) float one-hot volume.
    """
    if depth.dim() == 4:
        if depth.shape[1] != 1:
            raise ValueError(f"stereo_depth_to_onehot: stereo_depth must be (B, 1, H, W), got {tuple(depth.shape)}")
        depth = depth[:, 0]
    if depth.dim() != 3 or depth.shape[1] % downsample or depth.shape[2] % downsample:
        raise ValueError(f"stereo_depth_to_onehot: stereo_depth shape {tuple(depth.shape)} must be (B, H, W) with "
                         f"H, W multiples of {downsample}")
    b, height, width = depth.shape
    h, w = height // downsample, width // downsample
    patches = depth.reshape(b, h, downsample, w, downsample).permute(0, 1, 3, 2, 4).reshape(b, h, w, -1)
    patches = torch.where(patches == 0.0, torch.full_like(patches, 1e5), patches)
    val = (patches.min(dim=-1).values - (dmin - step / 2)) / step
    val = torch.where((val < depth_bins + 1) & (val >= 0.0), val, torch.zeros_like(val))
    onehot = F.one_hot(val.long(), num_classes=depth_bins + 1)[..., 1:]
    return onehot.permute(0, 3, 1, 2).to(depth.dtype if depth.is_floating_point() else torch.float32)


# ----------------------------------------------------------------------------- mono branch
def _batch_norm_single_safe(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """BatchNorm that normalises with the running statistics when a training batch holds a single
    value per channel (the camera vector and ASPP's pooled branch at batch size 1).

    The original trained with 4-GPU SyncBN (4 values per channel); plain BN would raise here.
    """
    if bn.training and x.numel() // x.shape[1] == 1:
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return bn(x)


class Mlp(nn.Module):
    """fc1 -> ReLU -> fc2."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CameraSE(nn.Module):
    """``x * sigmoid(conv_expand(relu(conv_reduce(e))))`` with e a per-image (B, C, 1, 1) vector."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, channels, 1, bias=True)
        self.act1 = nn.ReLU()
        self.conv_expand = nn.Conv2d(channels, channels, 1, bias=True)

    def forward(self, x: Tensor, x_se: Tensor) -> Tensor:
        return x * torch.sigmoid(self.conv_expand(self.act1(self.conv_reduce(x_se))))


class BasicBlock(nn.Module):
    """ResNet basic block (mmdet naming): conv1/bn1/relu/conv2/bn2 + ``downsample`` shortcut."""

    def __init__(self, in_channels: int, out_channels: int, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample if downsample is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class ASPPBranch(nn.Module):
    """atrous_conv -> bn -> ReLU (Kaiming-normal conv init)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        pad = 0 if kernel_size == 1 else dilation
        self.atrous_conv = nn.Conv2d(in_channels, out_channels, kernel_size, 1, pad, dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        nn.init.kaiming_normal_(self.atrous_conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """ASPP: 1x1 + 3x3 at dilations 6/12/18 + image pooling, concat -> 1x1 -> BN -> ReLU -> Dropout(0.5)."""

    def __init__(self, in_channels: int, mid_channels: int) -> None:
        super().__init__()
        self.aspp1 = ASPPBranch(in_channels, mid_channels, 1, 1)
        self.aspp2 = ASPPBranch(in_channels, mid_channels, 3, 6)
        self.aspp3 = ASPPBranch(in_channels, mid_channels, 3, 12)
        self.aspp4 = ASPPBranch(in_channels, mid_channels, 3, 18)
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)),
                                             nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                             nn.BatchNorm2d(mid_channels), nn.ReLU())
        self.conv1 = nn.Conv2d(5 * mid_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)
        nn.init.kaiming_normal_(self.global_avg_pool[1].weight)
        nn.init.kaiming_normal_(self.conv1.weight)

    def forward(self, x: Tensor) -> Tensor:
        pool, conv, bn, act = self.global_avg_pool
        pooled = act(_batch_norm_single_safe(bn, conv(pool(x))))
        pooled = F.interpolate(pooled, size=x.shape[2:], mode="bilinear", align_corners=True)
        x = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled], dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


class MonoDepthNet(nn.Module):
    """Mono depth + context net with camera-aware SE (docs/model.md §3.4 "Mono branch").

    Args:
        in_channels: neck channels (640).
        mid_channels: reduce-conv channels (= in_channels in L2COcc).
        context_channels: context output channels (128).
        depth_channels: depth bins D (112).
        cam_channels: camera vector length (33).
    """

    def __init__(self, in_channels: int, mid_channels: int, context_channels: int, depth_channels: int,
                 cam_channels: int = 33) -> None:
        super().__init__()
        self.reduce_conv = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 3, 1, 1),
                                         nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True))
        self.context_conv = nn.Conv2d(mid_channels, context_channels, 1)
        self.bn = nn.BatchNorm1d(cam_channels)
        self.depth_mlp = Mlp(cam_channels, mid_channels, mid_channels)
        self.depth_se = CameraSE(mid_channels)
        self.context_mlp = Mlp(cam_channels, mid_channels, mid_channels)
        self.context_se = CameraSE(mid_channels)
        shortcut = nn.Conv2d(mid_channels, depth_channels, 3, 1, 1) if mid_channels != depth_channels else None
        self.depth_conv = nn.Sequential(
            BasicBlock(mid_channels, depth_channels, downsample=shortcut),
            BasicBlock(depth_channels, depth_channels),
            BasicBlock(depth_channels, depth_channels),
            ASPP(depth_channels, depth_channels),
            DeformConv2dPack(depth_channels, depth_channels, 3, padding=1, groups=4, deform_groups=1),
            nn.Conv2d(depth_channels, depth_channels, 1),
        )

    def forward(self, x: Tensor, mlp_input: Tensor) -> Tensor:
        """(B, C_in, h, w), (B, cam) -> (B, D + C_ctx, h, w) = cat(depth logits, context)."""
        m = _batch_norm_single_safe(self.bn, mlp_input.reshape(-1, mlp_input.shape[-1]))
        x = self.reduce_conv(x)
        context = self.context_conv(self.context_se(x, self.context_mlp(m)[..., None, None]))
        depth = self.depth_conv(self.depth_se(x, self.depth_mlp(m)[..., None, None]))
        return torch.cat([depth, context], dim=1)


# ----------------------------------------------------------------------------- stereo branch
def _conv_gn(dims: int, cin: int, cout: int, kernel_size: int, stride: int, pad: int) -> nn.Sequential:
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, cout, kernel_size, stride, pad, bias=False)
    return nn.Sequential(conv, nn.GroupNorm(2, cout))


class SimpleUnet(nn.Module):
    """Two-level U-Net (2-D or 3-D): GN(2) on the conv path, BatchNorm on the transposed convs.

    Spatial sizes must be multiples of 4.

    Args:
        channels: input/output channels c (inner widths 2c, 4c).
        dims: 2 or 3.
    """

    def __init__(self, channels: int, dims: int = 2) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"SimpleUnet: dims must be 2 or 3, got {dims}")
        c = channels
        convt = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv1 = nn.Sequential(_conv_gn(dims, c, 2 * c, 3, 2, 1), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_conv_gn(dims, 2 * c, 2 * c, 3, 1, 1), nn.ReLU(inplace=True))
        self.conv3 = nn.Sequential(_conv_gn(dims, 2 * c, 4 * c, 3, 2, 1), nn.ReLU(inplace=True))
        self.conv4 = nn.Sequential(_conv_gn(dims, 4 * c, 4 * c, 3, 1, 1), nn.ReLU(inplace=True))
        self.conv5 = nn.Sequential(convt(4 * c, 2 * c, 3, padding=1, output_padding=1, stride=2, bias=False),
                                   bn(2 * c))
        self.conv6 = nn.Sequential(convt(2 * c, c, 3, padding=1, output_padding=1, stride=2, bias=False), bn(c))
        self.redir1 = _conv_gn(dims, c, c, 1, 1, 0)
        self.redir2 = _conv_gn(dims, 2 * c, 2 * c, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        if any(s % 4 for s in x.shape[2:]):
            raise ValueError(f"SimpleUnet: spatial size {tuple(x.shape[2:])} must be a multiple of 4")
        conv2 = self.conv2(self.conv1(x))
        conv4 = self.conv4(self.conv3(conv2))
        conv5 = F.relu(self.conv5(conv4) + self.redir2(conv2))
        return F.relu(self.conv6(conv5) + self.redir1(x))


class StereoVolumeEncoder(nn.Module):
    """stem (conv3x3 + GN(2), no activation) -> ``Unet.0`` SimpleUnet -> 1x1 ``conv_out``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.stem = _conv_gn(2, channels, channels, 3, 1, 1)
        self.Unet = nn.Sequential(SimpleUnet(channels, dims=2))  # noqa: N815 (checkpoint key)
        self.conv_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, D, h, w) one-hot volume -> (B, D, h, w) stereo depth logits."""
        return self.conv_out(self.Unet(self.stem(x)))


# ----------------------------------------------------------------------------- fusion
class ResidualCrossAttention(nn.Module):
    """``gamma * NA(q, kv) + kv`` on NCHW maps (the original's ``Attention``; gamma starts at 0)."""

    def __init__(self, embed_dims: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.neighbor_atttention = NeighborhoodCrossAttention2D(embed_dims, num_heads=1, kernel_size=kernel_size)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, q: Tensor, kv: Tensor) -> Tensor:
        kv_last = kv.permute(0, 2, 3, 1)
        out = self.gamma * self.neighbor_atttention(q.permute(0, 2, 3, 1), kv_last) + kv_last
        return out.permute(0, 3, 1, 2)


class ChannelAttention3D(nn.Module):
    """``x + layer_scale * GN2(GELU(conv(a * w)))``, a = GN1(GELU(conv1 x)), w = sigmoid(GELU(MLP(avgpool a)))."""

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        if embed_dims < 8 or embed_dims % 2:
            raise ValueError(f"ChannelAttention3D: embed_dims must be even and >= 8, got {embed_dims}")
        self.conv1 = nn.Sequential(nn.Conv3d(embed_dims, embed_dims, 3, 1, 1), nn.GELU(), nn.GroupNorm(1, embed_dims))
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.conv2 = nn.Sequential(nn.Conv3d(embed_dims, embed_dims // 8, 1), nn.GELU(),
                                   nn.Conv3d(embed_dims // 8, embed_dims, 1), nn.GELU())
        self.conv = nn.Sequential(nn.Conv3d(embed_dims, embed_dims, 3, 1, 1), nn.GELU(), nn.GroupNorm(2, embed_dims))
        self.layer_scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv1(x)
        return x + self.layer_scale * self.conv(torch.sigmoid(self.conv2(self.avg_pool(a))) * a)


class DepthAggregation(nn.Module):
    """Mono/stereo fusion into depth logits over a (2, D, h, w) volume (docs/model.md §3.4 "Fusion").

    Args:
        depth_bins: D (channels of the attention).
        embed_dims: 3-D feature width (32).
        kernel_size: neighbourhood window (5).
    """

    def __init__(self, depth_bins: int = 112, embed_dims: int = 32, kernel_size: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv3d(2, embed_dims, 3, 1, 1)
        self.mono_stereo_attention = ResidualCrossAttention(depth_bins, kernel_size)
        self.stereo_mono_attention = ResidualCrossAttention(depth_bins, kernel_size)
        self.UNet_3D = SimpleUnet(embed_dims, dims=3)  # noqa: N815 (checkpoint key)
        self.channel_attention = ChannelAttention3D(embed_dims)
        self.out_conv = nn.Conv3d(embed_dims, 1, 3, 1, 1)

    def forward(self, depth_stereo: Tensor, depth_mono: Tensor) -> Tensor:
        """Stereo and mono probabilities (B, D, h, w) -> fused logits (B, D, h, w)."""
        mono_stereo = self.mono_stereo_attention(depth_mono, depth_stereo)
        stereo_mono = self.stereo_mono_attention(depth_stereo, depth_mono)
        feat = F.relu(self.stem(torch.stack([mono_stereo, stereo_mono], dim=1)))
        feat = self.channel_attention(self.UNet_3D(feat))
        return self.out_conv(feat).squeeze(1)


class GeometryDepthNet(nn.Module):
    """Depth/context network of the camera branch (``depth_net`` in the checkpoints).

    Defaults are the SemanticKITTI L2COcc-C values. Tiny test variant: e.g. ``in_channels=40,
    context_channels=16, dbound=(2.0, 10.0, 0.5), agg_embed_dims=8``.

    Args:
        in_channels: neck channels (640); the mono net's mid width equals it unless ``mid_channels``.
        context_channels: context channels C_ctx (128).
        dbound: (start, stop, step) of the depth bins [m]; D = len(arange(*dbound)) (112).
        cam_channels: camera vector length (33).
        downsample: image / feature stride (8).
        agg_embed_dims: width of the 3-D fusion U-Net (32).
        na_kernel_size: neighbourhood-attention window (5).
        mid_channels: mono-net width (defaults to ``in_channels``).
    """

    def __init__(self, in_channels: int = 640, context_channels: int = 128,
                 dbound: Sequence[float] = (2.0, 58.0, 0.5), cam_channels: int = 33, downsample: int = 8,
                 agg_embed_dims: int = 32, na_kernel_size: int = 5, mid_channels: int | None = None) -> None:
        super().__init__()
        if len(dbound) != 3 or dbound[2] <= 0 or dbound[1] <= dbound[0]:
            raise ValueError(f"GeometryDepthNet: dbound must be (start, stop, step>0) with stop > start, got {dbound}")
        self.dbound: Tuple[float, float, float] = tuple(float(v) for v in dbound)
        self.D = int(torch.arange(*self.dbound).numel())
        self.context_channels = context_channels
        self.downsample = downsample
        self.cam_channels = cam_channels
        self.stereo_volume_encoder = StereoVolumeEncoder(self.D)
        self.depth_net = MonoDepthNet(in_channels, mid_channels or in_channels, context_channels, self.D, cam_channels)
        self.depth_aggregation = DepthAggregation(self.D, agg_embed_dims, na_kernel_size)

    def forward(self, x: Tensor, mlp_input: Tensor, stereo_depth: Tensor) -> Tuple[Tensor, Tensor]:
        """Context features and fused depth distribution.

        Args:
            x: (B, C_in, h, w) neck output.
            mlp_input: (B, 33) or (B, 1, 33) camera vector from :func:`get_mlp_input`.
            stereo_depth: (B, 1, h * downsample, w * downsample) metres, 0 = invalid.

        Returns:
            context (B, C_ctx, h, w) and depth_prob (B, D, h, w) (softmax over D).
        """
        b, _, h, w = x.shape
        if mlp_input.shape[-1] != self.cam_channels or mlp_input.numel() != b * self.cam_channels:
            raise ValueError(f"GeometryDepthNet: mlp_input shape {tuple(mlp_input.shape)}, expected "
                             f"({b}, {self.cam_channels})")
        expected = (b, 1, h * self.downsample, w * self.downsample)
        if tuple(stereo_depth.shape) != expected:
            raise ValueError(f"GeometryDepthNet: stereo_depth shape {tuple(stereo_depth.shape)}, expected {expected}")
        feats = self.depth_net(x, mlp_input)
        mono = feats[:, :self.D].softmax(dim=1)
        context = feats[:, self.D:self.D + self.context_channels]
        onehot = stereo_depth_to_onehot(stereo_depth, self.D, self.dbound[0], self.dbound[2], self.downsample)
        stereo = self.stereo_volume_encoder(onehot.to(x.dtype)).softmax(dim=1)
        depth = self.depth_aggregation(stereo, mono).softmax(dim=1)
        return context, depth
