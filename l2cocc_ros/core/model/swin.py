"""Swin-T shared by the three TPV planes (docs/model.md §3.10), mmseg/mmdet key layout.

Differences from ImageNet Swin-T that the original has and we keep: a stride-1 kernel-4 ``patch_embed_lidar``
with right/bottom ("corner") padding of 3, zero padding of each block's map to multiples of the window
(padded tokens are not masked), Unfold-ordered patch merging (channel index c*4 + kh*2 + kw), and output
LayerNorms ``norm1..norm3`` on stages 1-3 (before their merging).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DropPath", "WindowMSA", "ShiftWindowMSA", "SwinBlock", "PatchMerging", "PatchEmbed", "SwinTPV",
           "convert_official_swin"]


class DropPath(nn.Module):
    """Stochastic depth on the batch dim (identity in eval or with p = 0)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class WindowMSA(nn.Module):
    """Window attention with relative position bias (``relative_position_index`` int64 buffer)."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (embed_dims // num_heads) ** -0.5
        n = 2 * window_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(n * n, num_heads))
        seq = (torch.arange(0, n * window_size, n)[:, None] + torch.arange(window_size)[None, :]).reshape(1, -1)
        self.register_buffer("relative_position_index", (seq + seq.T).flip(1).contiguous())
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.proj = nn.Linear(embed_dims, embed_dims)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor = None) -> Tensor:
        """x (nW*B, N, C); mask (nW, N, N) additive or None."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = (attn.view(B // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)).view(
                -1, self.num_heads, N, N)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class ShiftWindowMSA(nn.Module):
    """Pad right/bottom to window multiples, optional cyclic shift with the -100 mask, window attention."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, shift_size: int, drop_path: float) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size)
        self.drop = DropPath(drop_path)

    def _partition(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        ws = self.window_size
        return x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, C)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        B, L, C = x.shape
        H, W = hw
        ws, ss = self.window_size, self.shift_size
        x = x.view(B, H, W, C)
        pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = x.shape[1], x.shape[2]
        mask = None
        if ss > 0:
            x = torch.roll(x, shifts=(-ss, -ss), dims=(1, 2))
            img = torch.zeros((1, Hp, Wp, 1), device=x.device)
            cnt = 0
            for h in (slice(0, -ws), slice(-ws, -ss), slice(-ss, None)):
                for w in (slice(0, -ws), slice(-ws, -ss), slice(-ss, None)):
                    img[:, h, w, :] = cnt
                    cnt += 1
            mw = self._partition(img).view(-1, ws * ws)
            mask = mw.unsqueeze(1) - mw.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        win = self.w_msa(self._partition(x).view(-1, ws * ws, C), mask).view(-1, ws, ws, C)
        x = win.view(B, Hp // ws, Wp // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
        if ss > 0:
            x = torch.roll(x, shifts=(ss, ss), dims=(1, 2))
        x = x[:, :H, :W, :].reshape(B, H * W, C)
        return self.drop(x)


class SwinFFN(nn.Module):
    """Linear -> GELU -> Linear with residual and DropPath (keys ``layers.0.0``, ``layers.1``)."""

    def __init__(self, embed_dims: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(embed_dims, hidden), nn.GELU(), nn.Dropout(0.0)),
                                    nn.Linear(hidden, embed_dims), nn.Dropout(0.0))
        self.drop = DropPath(drop_path)

    def forward(self, x: Tensor, identity: Tensor) -> Tensor:
        return identity + self.drop(self.layers(x))


class SwinBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)); x + ffn(norm2(x))."""

    def __init__(self, embed_dims: int, num_heads: int, hidden: int, window_size: int, shift: bool,
                 drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size, window_size // 2 if shift else 0, drop_path)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = SwinFFN(embed_dims, hidden, drop_path)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return self.ffn(self.norm2(x), x)


class PatchMerging(nn.Module):
    """2x2 merge via Unfold order (pad odd sizes right/bottom), LayerNorm(4C), Linear 4C -> 2C without bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, Tuple[int, int]]:
        B, L, C = x.shape
        H, W = hw
        x = x.view(B, H, W, C).permute(0, 3, 1, 2)
        x = F.pad(x, (0, W % 2, 0, H % 2))
        Ho, Wo = x.shape[2] // 2, x.shape[3] // 2
        x = F.unfold(x, kernel_size=2, stride=2).transpose(1, 2)  # (B, Ho*Wo, C*4)
        return self.reduction(self.norm(x)), (Ho, Wo)


class PatchEmbed(nn.Module):
    """Conv (kernel k, stride s) after "corner" padding, flatten, LayerNorm."""

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride=stride)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        k, s = self.kernel_size, self.stride
        H, W = x.shape[-2:]
        ph = max((-(-H // s) - 1) * s + k - H, 0)
        pw = max((-(-W // s) - 1) * s + k - W, 0)
        x = self.projection(F.pad(x, [0, pw, 0, ph]))
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class SwinTPV(nn.Module):
    """Swin encoder applied to each TPV plane; returns per plane the normed outputs of ``out_indices``.

    Args:
        in_channels: plane channels (128).
        embed_dims: stage-0 channels (96 for Swin-T).
        depths, num_heads: per stage.
        window_size: attention window (7).
        mlp_ratio: FFN expansion (4).
        patch_size, patch_stride: patch embedding kernel/stride (4, 1).
        drop_path_rate: stochastic depth, linear over all blocks (0.2).
        out_indices: stages whose (pre-merging) outputs are returned (1, 2, 3).
    """

    def __init__(self, *, in_channels: int = 128, embed_dims: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, mlp_ratio: int = 4,
                 patch_size: int = 4, patch_stride: int = 1, drop_path_rate: float = 0.2,
                 out_indices: Sequence[int] = (1, 2, 3)) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        self.out_indices = tuple(out_indices)
        self.patch_embed_lidar = PatchEmbed(in_channels, embed_dims, patch_size, patch_stride)
        dpr = [float(v) for v in torch.linspace(0, drop_path_rate, sum(depths))]
        self.stages = nn.ModuleList()
        self.num_features = [embed_dims * 2 ** i for i in range(len(depths))]
        c = embed_dims
        for i, (d, h) in enumerate(zip(depths, num_heads)):
            stage = nn.Module()
            stage.blocks = nn.ModuleList([
                SwinBlock(c, h, mlp_ratio * c, window_size, j % 2 == 1, dpr[sum(depths[:i]) + j]) for j in range(d)])
            stage.downsample = PatchMerging(c, 2 * c) if i < len(depths) - 1 else None
            self.stages.append(stage)
            c = 2 * c if i < len(depths) - 1 else c
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, planes: Sequence[Tensor]) -> List[List[Tensor]]:
        """planes: list of (1, C, H_p, W_p). Returns per plane a list of (1, C_i, H_p/2^i, W_p/2^i) maps."""
        outs = []
        for x in planes:
            x, hw = self.patch_embed_lidar(x)
            res = []
            for i, stage in enumerate(self.stages):
                for blk in stage.blocks:
                    x = blk(x, hw)
                if i in self.out_indices:
                    o = getattr(self, f"norm{i}")(x)
                    res.append(o.view(-1, hw[0], hw[1], self.num_features[i]).permute(0, 3, 1, 2).contiguous())
                if stage.downsample is not None:
                    x, hw = stage.downsample(x, hw)
            outs.append(res)
        return outs


def convert_official_swin(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Map a Microsoft Swin checkpoint (``swin_tiny_patch4_window7_224.pth``'s ``model``) onto ``SwinTPV`` keys.

    As the original's loader (mmseg converter): ``layers`` -> ``stages``, ``attn.`` -> ``attn.w_msa.``,
    ``mlp.fc1/fc2`` -> ``ffn.layers.0.0/1``, and patch-merging weights reordered from the concatenation order
    (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]) to the Unfold order used here. The ImageNet
    ``patch_embed``, the final ``norm``, the classifier ``head``, ``attn_mask`` and ``relative_position_index``
    buffers are dropped (the original never loads them: its patch embedding is the new ``patch_embed_lidar``).
    Load the result with ``strict=False``.

    Args:
        state_dict: official keys (``layers.0.blocks.0.attn.qkv.weight`` ...).

    Returns:
        ``{SwinTPV key: tensor}``.
    """
    out: Dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if not k.startswith("layers.") or k.endswith(("attn_mask", "relative_position_index")):
            continue
        nk = "stages." + k[len("layers."):]
        nk = nk.replace(".attn.", ".attn.w_msa.").replace(".mlp.fc1.", ".ffn.layers.0.0.")
        nk = nk.replace(".mlp.fc2.", ".ffn.layers.1.")
        if ".downsample.reduction." in nk:
            o, i = v.shape
            v = v.reshape(o, 4, i // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(o, i)
        elif ".downsample.norm." in nk:
            v = v.reshape(4, -1)[[0, 2, 1, 3], :].transpose(0, 1).reshape(-1)
        out[nk] = v
    return out
