"""The reference preprocessing: Pillow's resize on the CPU, as the network's training data was made."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from .base import Depth, ImageTransform, Preprocessor
from .normalize import normalize_image, unit_float
from .resize import ResizeCrop

__all__ = ["PillowPreprocessor"]


class PillowPreprocessor(Preprocessor):
    """:class:`~.base.Preprocessor` with Pillow on the CPU (the original's path; tensors on the CPU)."""

    name = "pillow"

    def _pixels(self, rc: ResizeCrop, rgb: np.ndarray, depth: Optional[Depth],
                image_transform: Optional[ImageTransform]) -> Dict[str, torch.Tensor]:
        resized = rc.apply_image(rgb)
        if image_transform is not None:
            img = normalize_image(image_transform(unit_float(resized)))
        else:
            img = normalize_image(resized)  # look-up table, no float temporaries
        out = {"img": img[None, None]}
        if depth is not None:
            if isinstance(depth, torch.Tensor):  # a stereo backend's tensor: Pillow works on the host
                depth = depth.cpu().numpy()
            out["stereo_depth"] = torch.from_numpy(rc.apply_depth(depth))[None, None]
        return out
