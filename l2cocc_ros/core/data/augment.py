"""Training image augmentation: colour jitter of the resized left image (before the ImageNet normalisation)."""
from __future__ import annotations

from typing import Optional

import torch

from l2cocc_ros.core.preprocess import ImageTransform

__all__ = ["color_jitter", "jitter_transform"]


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def color_jitter(
    img: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Random brightness / contrast / saturation in random order (torchvision ColorJitter semantics).

    Each factor is drawn uniformly from ``[max(0, 1 - a), 1 + a]``; brightness scales the image,
    contrast blends with the mean grey level, saturation blends with the per-pixel grey image
    (ITU-R 601 weights); results are clamped to [0, 1].

    Args:
        img: (3, H, W) float image in [0, 1].
        brightness, contrast, saturation: jitter strengths (>= 0).
        generator: torch RNG for reproducibility.
    """
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"image tensor must be (3, H, W), got {tuple(img.shape)}")
    for name, a in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if a < 0:
            raise ValueError(f"{name} must be >= 0, got {a}")

    def factor(a: float) -> float:
        lo, hi = max(0.0, 1.0 - a), 1.0 + a
        return float(lo + (hi - lo) * torch.rand((), generator=generator))

    out = img.float()
    for op in torch.randperm(3, generator=generator).tolist():
        if op == 0 and brightness > 0:
            out = (out * factor(brightness)).clamp_(0.0, 1.0)
        elif op == 1 and contrast > 0:
            f = factor(contrast)
            out = (f * out + (1.0 - f) * _gray(out).mean()).clamp_(0.0, 1.0)
        elif op == 2 and saturation > 0:
            f = factor(saturation)
            out = (f * out + (1.0 - f) * _gray(out)).clamp_(0.0, 1.0)
    return out


def jitter_transform(brightness: float, contrast: float, saturation: float,
                     generator: Optional[torch.Generator] = None) -> ImageTransform:
    """:func:`color_jitter` with these strengths as a preprocessing ``image_transform``."""
    return lambda img: color_jitter(img, brightness, contrast, saturation, generator=generator)
