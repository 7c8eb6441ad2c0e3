"""The ``msnet3d`` / ``msnet2d`` stereo backends: the released MobileStereoNet weights with VoxFormer's preprocessing.

The depth maps the L2COcc, CGFormer and VoxFormer models were trained on came from VoxFormer's ``image2depth``
(docs/model.md §3.5): MSNet3D with ``MSNet3D_SF_DS_KITTI2015.ckpt`` on the rectified colour pair, and

1. RGB / 255, ImageNet normalisation (mean 0.485 0.456 0.406, std 0.229 0.224 0.225);
2. zero padding (after normalisation, so the pad is the mean colour) at the TOP and on the RIGHT to a fixed
   canvas: 384 x 1248 for KITTI / SemanticKITTI frames, 576 x 1872 for KITTI-360; other cameras here get the
   next size the network accepts (multiples of 16);
3. the network in float32, its disparity cropped back to the image;
4. ``depth = 0.54 m * fx / max(disp, 1e-8)``: a hard-coded nominal baseline of 0.54 m (KITTI's colour pair is
   0.532-0.538 m; the offline maps are 0.4-1.4 % farther than the calibration says). That is the default here,
   because it is what the released L2COcc / CGFormer weights saw; ``baseline="calibrated"`` uses the rig's.

Output: float32 metres at the image size on the backend's device; no invalid pixels (the softmax never gives 0).

Low precision (``precision="fp16"/"bf16"`` on CUDA): the convolutions run under autocast; the cost volume and
the soft-argmin (upsampling, softmax, regression) stay in float32 (see :mod:`.models`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from l2cocc_ros.core.stereo.base import StereoBackend, check_focal_baseline, check_pair
from l2cocc_ros.core.stereo.msnet.models import MAXDISP, MSNet2D, MSNet3D, MSNetBase

__all__ = ["MSNetStereo", "load_msnet_weights", "normalize_image", "pad_to_canvas", "crop_to_image",
           "voxformer_depth", "canvas_for", "WEIGHTS_SOURCE", "NOMINAL_BASELINE_M", "CANVASES", "MSNET_MODELS"]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: VoxFormer's image2depth constant: depth = 0.54 * fx / disp
NOMINAL_BASELINE_M = 0.54

#: the fixed canvases of the official test path (H, W)
CANVASES: Dict[str, Tuple[int, int]] = {"semantickitti": (384, 1248), "kitti360": (576, 1872)}

MSNET_MODELS = {"msnet3d": MSNet3D, "msnet2d": MSNet2D}

WEIGHTS_SOURCE = (
    "MSNet3D_SF_DS_KITTI2015.ckpt (MobileStereoNet's KITTI-2015 weights, the ones VoxFormer, CGFormer and L2COcc "
    "used) is a plain file in the NVlabs/VoxFormer and pkqbajng/CGFormer repositories under "
    "preprocess/mobilestereonet/ (git blob 7a6d56c04064ca8b55e0b827f9a8afecd1a96b24: `git hash-object FILE` "
    "checks a download); MSNet2D weights come from cogsys-tuebingen/mobilestereonet's README")

PathLike = Union[str, Path]


def canvas_for(image_hw: Tuple[int, int], canvas: Union[str, Tuple[int, int]] = "auto") -> Tuple[int, int]:
    """The padded (H, W) the network sees for an image of ``image_hw``.

    Args:
        image_hw: image height and width.
        canvas: "auto" (KITTI-sized images, up to 384 x 1248 and at least 352 x 1200 -> 384 x 1248; KITTI-360's
            376 x 1408 -> 576 x 1872; anything else -> the next multiples of 16), "semantickitti", "kitti360",
            "minimal" (always the next multiples of 16), or an explicit (H, W).

    Raises:
        ValueError: unknown canvas name, a canvas smaller than the image, or not a multiple of 16.
    """
    h, w = image_hw
    minimal = (-(-h // MSNetBase.size_multiple) * MSNetBase.size_multiple,
               -(-w // MSNetBase.size_multiple) * MSNetBase.size_multiple)
    if isinstance(canvas, str):
        if canvas == "auto":
            if 352 <= h <= 384 and 1200 <= w <= 1248:
                return CANVASES["semantickitti"]
            return CANVASES["kitti360"] if (h, w) == (376, 1408) else minimal
        if canvas == "minimal":
            return minimal
        if canvas not in CANVASES:
            raise ValueError(f"canvas must be 'auto', 'minimal', {', '.join(map(repr, CANVASES))} or (H, W), "
                             f"got {canvas!r}")
        out = CANVASES[canvas]
    else:
        out = (int(canvas[0]), int(canvas[1]))
    if out[0] < h or out[1] < w or out[0] % MSNetBase.size_multiple or out[1] % MSNetBase.size_multiple:
        raise ValueError(f"canvas {out[0]}x{out[1]} must hold the {h}x{w} image and be a multiple of "
                         f"{MSNetBase.size_multiple}")
    return out


def normalize_image(rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32, /255 then ImageNet mean/std (torchvision's ToTensor+Normalize)."""
    x = rgb.permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return ((x - mean) / std)[None]


def pad_to_canvas(x: torch.Tensor, canvas_hw: Tuple[int, int]) -> Tuple[torch.Tensor, int, int]:
    """Zero-pad (B, C, H, W) at the top and on the right to ``canvas_hw``; returns (padded, top, right)."""
    top, right = canvas_hw[0] - x.shape[-2], canvas_hw[1] - x.shape[-1]
    if top < 0 or right < 0:
        raise ValueError(f"canvas {canvas_hw} is smaller than the image {tuple(x.shape[-2:])}")
    return F.pad(x, (0, right, top, 0)), top, right


def crop_to_image(disp: torch.Tensor, top: int, image_hw: Tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_canvas` on a (..., H_canvas, W_canvas) map."""
    return disp[..., top:top + image_hw[0], :image_hw[1]]


def voxformer_depth(disp: torch.Tensor, focal_baseline: float) -> torch.Tensor:
    """``focal_baseline / max(disp, 1e-8)`` in float32 (VoxFormer's conversion; no mask, no upper clip)."""
    return torch.tensor(focal_baseline, dtype=torch.float32, device=disp.device) / disp.float().clamp(min=1e-8)


def _state_dict_of(obj, source: str) -> Dict[str, torch.Tensor]:
    from l2cocc_ros.core.checkpoint import CheckpointError

    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: expected {{'model': state_dict}} (MobileStereoNet's train.py layout) or a "
                              f"state_dict of tensors")
    if all(k.startswith("module.") for k in obj):  # saved from nn.DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_msnet_weights(model: MSNetBase, path: PathLike) -> None:
    """Load a MobileStereoNet checkpoint strictly into ``model`` (``torch.load(weights_only=True)``).

    Accepts the official ``{'model': state_dict, ...}`` with the ``module.`` prefix of ``nn.DataParallel``, or a
    bare state_dict. BatchNorm ``num_batches_tracked`` entries may be absent (torch < 1.0 files; unused in eval).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable or unsafe file, or an unknown layout.
        CheckpointMismatchError: keys or shapes differ; the message is ``l2cocc ckpt-check``'s grouped report.
    """
    from l2cocc_ros.core.checkpoint import CheckpointMismatchError, safe_load, compare_state_dict

    state_dict = _state_dict_of(safe_load(path), str(path))
    own = model.state_dict()
    state_dict = {**{k: own[k] for k in own if k.endswith("num_batches_tracked") and k not in state_dict},
                  **state_dict}
    report = compare_state_dict(model, state_dict)
    if not report.ok:
        raise CheckpointMismatchError(report, f"{path} ({type(model).__name__})")
    model.load_state_dict(state_dict, strict=True)


class MSNetStereo(StereoBackend):
    """MobileStereoNet depth exactly as the released models' training data was made (see the module docstring).

    Args:
        weights: the checkpoint file (required: a randomly initialised MobileStereoNet is not a depth estimator).
        model: "msnet3d" (the released models' input) or "msnet2d".
        canvas: padding canvas, see :func:`canvas_for`.
        baseline: "nominal" (``nominal_baseline_m``, VoxFormer's 0.54 m; the default) or "calibrated" (the
            baseline the caller passes, from the rig's projections).
        nominal_baseline_m: the nominal baseline [m].
        precision: "fp32", or "fp16" / "bf16" for the convolutions under CUDA autocast (CPU always runs fp32).
        device: where it runs until :meth:`to` moves it (the engine moves it to the model's device).
        align_corners, residual_3d: corrected behaviours of the network (see :mod:`.models`); off by default,
            because the released weights were trained without them.

    Raises:
        FileNotFoundError: ``weights`` empty or missing (the message says where the file comes from).
        ValueError: unknown model, canvas, baseline or precision; a weights file that does not fit (the
            grouped key report of ``l2cocc ckpt-check``).
    """

    def __init__(self, weights: Optional[PathLike], model: str = "msnet3d", *,
                 canvas: Union[str, Tuple[int, int]] = "auto", baseline: str = "nominal",
                 nominal_baseline_m: float = NOMINAL_BASELINE_M, precision: str = "fp32",
                 device: Union[str, torch.device] = "cpu", align_corners: bool = False,
                 residual_3d: bool = False) -> None:
        if model not in MSNET_MODELS:
            raise ValueError(f"model must be one of {sorted(MSNET_MODELS)}, got {model!r}")
        if baseline not in ("nominal", "calibrated"):
            raise ValueError(f"baseline must be 'nominal' or 'calibrated', got {baseline!r}")
        if precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be 'fp32', 'fp16' or 'bf16', got {precision!r}")
        if not (np.isfinite(nominal_baseline_m) and nominal_baseline_m > 0):
            raise ValueError(f"nominal_baseline_m must be > 0 m, got {nominal_baseline_m}")
        if isinstance(canvas, str):
            canvas_for((1, 1), canvas)  # refuse an unknown name now, not on the first frame
        if not weights:
            raise FileNotFoundError(f"{model} needs its weights file and none was given; {WEIGHTS_SOURCE}")
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{model} weights file not found: {weights}; {WEIGHTS_SOURCE}")
        self.name = model
        self.canvas = canvas
        self.baseline = baseline
        self.nominal_baseline_m = float(nominal_baseline_m)
        self.precision = precision
        kwargs = {"align_corners": align_corners}
        if model == "msnet3d":
            kwargs["residual_3d"] = residual_3d
        elif residual_3d:
            raise ValueError("residual_3d applies to msnet3d only")
        self.net = MSNET_MODELS[model](MAXDISP, **kwargs).eval()
        load_msnet_weights(self.net, weights)
        self.weights = str(weights)
        self.to(device)
        logger.info("stereo %s: weights %s, canvas %s, baseline %s, %s", model, weights, canvas, baseline, precision)

    def __repr__(self) -> str:
        return (f"MSNetStereo({self.weights!r}, model={self.name!r}, canvas={self.canvas!r}, "
                f"baseline={self.baseline!r}, precision={self.precision!r})")

    def to(self, device: Union[str, torch.device]) -> "MSNetStereo":
        super().to(device)
        self.net.to(self.device)
        return self

    def _autocast(self):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        if self.device.type == "cuda" and dtype is not None:
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast(self.device.type if self.device.type in ("cpu", "cuda") else "cpu", enabled=False)

    def _rgb(self, img: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.require(img, requirements=["C", "W"])).to(self.device)  # uint8 over the bus
        if t.dim() == 2 or t.shape[2] == 1:  # grey: the network was trained on colour; repeat the channel
            t = t.reshape(t.shape[0], t.shape[1], 1).expand(-1, -1, 3)
        return t

    @torch.no_grad()
    def disparity(self, left: np.ndarray, right: np.ndarray) -> torch.Tensor:
        """Disparity [px] of the left image, (H, W) float32 on :attr:`device` (in (0, 191])."""
        check_pair(left, right)
        image_hw = left.shape[:2]
        canvas = canvas_for(image_hw, self.canvas)
        pl, top, _ = pad_to_canvas(normalize_image(self._rgb(left)), canvas)
        pr, _, _ = pad_to_canvas(normalize_image(self._rgb(right)), canvas)
        with self._autocast():
            disp = self.net(pl, pr)
        return crop_to_image(disp[0], top, image_hw).float().contiguous()

    def depth(self, left: np.ndarray, right: np.ndarray, focal_px: float, baseline_m: float) -> torch.Tensor:
        """Depth [m] (H, W) float32 on :attr:`device`: ``fx * b / max(disp, 1e-8)`` with b the nominal 0.54 m
        (default) or ``baseline_m`` (``baseline="calibrated"``).

        Raises:
            ValueError: images of different size / wrong dtype, non-positive focal length or baseline.
        """
        check_focal_baseline(focal_px, baseline_m)
        b = baseline_m if self.baseline == "calibrated" else self.nominal_baseline_m
        return voxformer_depth(self.disparity(left, right), focal_px * b)


def msnet3d(weights: Optional[PathLike] = None, **kwargs) -> MSNetStereo:
    """Registry factory of ``stereo.backend: msnet3d`` (see :class:`MSNetStereo`)."""
    return MSNetStereo(weights, "msnet3d", **kwargs)


def msnet2d(weights: Optional[PathLike] = None, **kwargs) -> MSNetStereo:
    """Registry factory of ``stereo.backend: msnet2d`` (see :class:`MSNetStereo`)."""
    return MSNetStereo(weights, "msnet2d", **kwargs)
