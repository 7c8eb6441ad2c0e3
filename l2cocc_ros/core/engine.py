"""Inference engine: a frame in, a uint8 semantic label volume out, with per-stage timings.

The live path of the design (design.md, "The live path"): stereo depth from the rectified pair (a
:class:`~l2cocc_ros.core.stereo.StereoBackend`, SGBM by default), the network input dict built by a
:class:`~l2cocc_ros.core.preprocess.Preprocessor` (resize + bottom crop with the matching intrinsics
bookkeeping; Pillow on the CPU or torch on the model's device, chosen here once), the model forward under ``torch.no_grad`` (autocast on CUDA only), then argmax to uint8.
The LiDAR variant ("l") skips the cameras and takes the point cloud. The input is one
:mod:`~l2cocc_ros.core.frame` (checked when it was built). Nothing here knows about ROS.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch
from torch import nn

from l2cocc_ros.core.config import ModelConfig, get_preset
from l2cocc_ros.core.frame import Frame, LidarFrame, StereoFrame
from l2cocc_ros.core.preprocess import Preprocessor, make_preprocessor
from l2cocc_ros.core.stereo import StereoBackend, get_stereo_backend

__all__ = ["EngineResult", "InferenceEngine", "capture_static_stages", "check_fast_path", "resolve_device",
           "to_channels_last", "PRECISIONS"]

logger = logging.getLogger(__name__)

#: precision name -> autocast dtype (None = plain fp32)
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; otherwise the named device.

    Raises:
        ValueError: unknown device string, or CUDA asked for but not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put every 4-D conv weight in channels_last and every 5-D one in channels_last_3d memory format."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() in (4, 5):
            module.to(memory_format=torch.channels_last if weight.dim() == 4 else torch.channels_last_3d)
    return model


def check_fast_path(device_type: str, *, compile_model: bool = False, cuda_graphs: bool = False) -> None:
    """Refuse fast-path options that cannot run together or on a device of ``device_type`` ("cpu", "cuda").

    Raises:
        ValueError: ``cuda_graphs`` off CUDA, or with ``compile_model``.
    """
    if cuda_graphs and device_type != "cuda":
        raise ValueError(f"cuda_graphs needs a CUDA device, got {device_type}")
    if cuda_graphs and compile_model:
        raise ValueError("cuda_graphs and compile_model exclude each other (cuda_graphs compiles the "
                         "static-shape stages itself)")


def capture_static_stages(model: nn.Module, **compile_kwargs) -> List[str]:
    """Compile the model's static-shape stages in place, each as one whole graph.

    Every block named in ``model.static_shape_stages`` is compiled with ``nn.Module.compile`` (state_dict keys
    unchanged) with ``fullgraph=True, dynamic=False``: a graph break raises instead of silently splitting the
    stage (``test_engine`` checks that every stage's graph has plain-int sizes only). With
    ``mode="reduce-overhead"`` on CUDA, torch records each stage as a CUDA graph on its first calls and replays
    it afterwards (one launch instead of hundreds of kernels).

    Args:
        model: a segmentor from ``build_model``.
        **compile_kwargs: passed to ``torch.compile`` (e.g. ``mode="reduce-overhead"``, or ``backend="eager"``
            to check on a CPU that every stage traces as one static graph).

    Returns:
        The attribute names of the compiled stages.

    Raises:
        ValueError: the model declares no static-shape stages.
    """
    names = [n for n in getattr(model, "static_shape_stages", ()) if isinstance(getattr(model, n, None), nn.Module)]
    if not names:
        raise ValueError(f"{type(model).__name__} declares no static_shape_stages to capture")
    for name in names:
        getattr(model, name).compile(**{"fullgraph": True, "dynamic": False, **compile_kwargs})
    return names


@dataclass
class EngineResult:
    """One frame's prediction.

    Attributes:
        labels: (X=256, Y=256, Z=32) uint8 class ids of the grid.
        confidence: (X, Y, Z) float32 softmax probability of the label, or None when not requested.
        timings_ms: wall time per stage: ``stereo``, ``preprocess``, ``model``, ``argmax``, ``total``.
    """

    labels: np.ndarray
    confidence: Optional[np.ndarray] = None
    timings_ms: Dict[str, float] = field(default_factory=dict)


class InferenceEngine:
    """Runs L2COcc on one frame of arrays.

    Args:
        model: a model from ``build_model(cfg)`` (weights loaded); it is put in eval mode on ``device``.
        cfg: its model config (variant, image size, grid).
        device: "auto", "cpu", "cuda" or "cuda:N".
        stereo_backend: depth from the stereo pair (camera variants); default SGBM with KITTI settings. It is
            moved to ``device`` (:meth:`~l2cocc_ros.core.stereo.StereoBackend.to`).
        precision: "fp32", "fp16" or "bf16" (autocast, used on CUDA only; CPU always runs fp32).
        with_confidence: also return the softmax probability of each label.
        resample: PIL resampling of the image resize ("bicubic" as the original).
        channels_last: store 4-D/5-D conv weights channels-last (faster convolutions on GPUs with tensor cores).
        compile_model: wrap the model in ``torch.compile`` (first frames compile; later ones run faster).
        cuda_graphs: record the model's static-shape stages (``static_shape_stages``: image encoder, depth
            net, 3D trunk) as CUDA graphs and replay them (:func:`capture_static_stages`); LSS, voxel proposal
            and EVT, whose sizes depend on the data, run eagerly in between. CUDA only; not with
            ``compile_model``. The first two frames record.
        device_preprocess: resize, crop and normalise the image and the stereo depth on ``device`` (the "torch"
            :class:`~l2cocc_ros.core.preprocess.Preprocessor`, bit-identical to the "pillow" one). Frees
            ~15 ms of CPU per frame next to a GPU; on a CPU-only machine the Pillow path is faster.

    Raises:
        TypeError: ``model`` is not an nn.Module or ``cfg`` not a ModelConfig.
        ValueError: unknown precision or device.

    Example:
        >>> engine = InferenceEngine.from_checkpoint("model.ckpt", device="auto")  # doctest: +SKIP
        >>> frame = StereoFrame.from_projections(left, right, P2, P3, T_grid_from_cam, stamp_ns=0)  # doctest: +SKIP
        >>> result = engine.infer(frame)  # doctest: +SKIP
        >>> result.labels.shape  # doctest: +SKIP
        (256, 256, 32)
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: ModelConfig,
        device: Union[str, torch.device] = "cpu",
        stereo_backend: Optional[StereoBackend] = None,
        precision: str = "fp32",
        *,
        with_confidence: bool = False,
        resample: str = "bicubic",
        channels_last: bool = False,
        compile_model: bool = False,
        cuda_graphs: bool = False,
        device_preprocess: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        check_fast_path(self.device.type, compile_model=compile_model, cuda_graphs=cuda_graphs)
        self.cfg = cfg
        self.model = model.to(self.device).eval()
        if channels_last:
            to_channels_last(self.model)
        if compile_model:
            self.model = torch.compile(self.model)
        self.cuda_graphs = bool(cuda_graphs)
        if self.cuda_graphs:
            capture_static_stages(self.model, mode="reduce-overhead")
        # the stereo backend runs on the model's device: its depth tensor goes to the model without a host copy
        self.stereo = (stereo_backend if stereo_backend is not None else get_stereo_backend("sgbm")).to(self.device)
        self.precision = precision
        self.with_confidence = bool(with_confidence)
        self.device_preprocess = bool(device_preprocess)
        self.preprocess: Preprocessor = make_preprocessor("torch" if self.device_preprocess else "pillow",
                                                          cfg.image_size, resample, self.device)

    @property
    def needs_points(self) -> bool:
        """True for the LiDAR variant, which predicts from the point cloud."""
        return self.cfg.variant == "l"

    @property
    def needs_cameras(self) -> bool:
        """True for the camera variants ("c", "d")."""
        return self.cfg.variant != "l"

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], preset: Optional[str] = None, device: str = "cpu",
                        **kwargs) -> "InferenceEngine":
        """Load a checkpoint and wrap its model.

        Our checkpoints (``core.checkpoint.save_checkpoint``) carry their config; the authors' released
        Lightning ``.ckpt`` files and plain state_dicts do not, so ``preset`` names the model to build for them
        (loaded strictly, ``model.`` prefix stripped, ``teacher.*`` dropped for -C).

        Args:
            path: checkpoint file (read with ``weights_only=True``).
            preset: the configured preset; required for released/plain files, and for ours it must equal the
                stored preset (guards against weights of another variant or dataset).
            device: see the class.
            **kwargs: the other constructor arguments.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a loadable checkpoint (``CheckpointError``), weights that do not fit, or a preset
                that differs from the stored one.
        """
        from l2cocc_ros.core.checkpoint import load_model

        model, exp = load_model(path, preset)  # CheckpointError is a ValueError
        logger.info("loaded %s (%s)", path, exp.name)
        return cls(model, exp.model, device=device, **kwargs)

    @classmethod
    def from_preset(cls, preset: str, device: str = "cpu", *, seed: int = 0, **kwargs) -> "InferenceEngine":
        """A randomly initialised model of a preset (tests, demos; its output is meaningless).

        Raises:
            ValueError: unknown preset.
        """
        from l2cocc_ros.core.model.l2cocc import build_model

        cfg = get_preset(preset).model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(cfg)
        return cls(model, cfg, device=device, **kwargs)

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if self.device.type == "cuda" and dtype is not None:
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast("cpu", enabled=False)

    def infer(self, frame: Frame) -> EngineResult:
        """Predict the label volume of one frame (the only inference entry).

        Args:
            frame: a :class:`~l2cocc_ros.core.frame.StereoFrame` for the camera variants; the LiDAR variant
                takes a :class:`~l2cocc_ros.core.frame.LidarFrame` or a StereoFrame that carries ``points``.
                The frame was checked when it was built; nothing here checks it again.

        Returns:
            :class:`EngineResult` with (256, 256, 32) uint8 labels.

        Raises:
            TypeError: ``frame`` is not a frame.
            ValueError: a frame of the wrong kind for the variant (the missing part is named).
        """
        if not isinstance(frame, (StereoFrame, LidarFrame)):
            raise TypeError(f"frame must be a StereoFrame or LidarFrame, got {type(frame).__name__}")
        timings: Dict[str, float] = {}
        t_start = time.perf_counter()
        if self.needs_points:
            if frame.points is None:
                raise ValueError("the LiDAR variant ('l') needs frame.points (a LidarFrame, or a StereoFrame "
                                 "with points)")
            timings["stereo"] = timings["preprocess"] = 0.0
            inputs = {"points": torch.from_numpy(frame.points)}
        elif isinstance(frame, StereoFrame):
            inputs = self._camera_inputs(frame, timings)
        else:
            raise ValueError(f"the camera variant ({self.cfg.variant!r}) needs a StereoFrame, got a LidarFrame")
        t0 = time.perf_counter()
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        if self.cuda_graphs:  # a new frame: the graphs' outputs of the previous one may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad(), self._autocast():
            logits = self.model(inputs)["logits"][0]  # (n_cls, X, Y, Z)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings["model"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        with torch.no_grad():
            # max() gives argmax's indices (first maximum on ties) ~3x faster on CPU, and the top logit
            top, idx = logits.max(dim=0)  # (X, Y, Z)
            confidence = None
            if self.with_confidence:  # softmax probability of the top class: 1 / sum_c exp(l_c - l_top)
                prob = torch.exp(logits.float() - top.float()).sum(dim=0).reciprocal_()
                confidence = prob.cpu().numpy().astype(np.float32)
            labels = idx.to(torch.uint8).cpu().numpy()
        timings["argmax"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return EngineResult(labels=labels, confidence=confidence, timings_ms=timings)

    __call__ = infer

    def _camera_inputs(self, frame: StereoFrame, timings: Dict[str, float]) -> Dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        # (H, W) metres, 0 = invalid, on the engine's device
        depth = self.stereo.depth(frame.left, frame.right, frame.focal_px, frame.baseline_m)
        if self.device.type == "cuda":  # account the device work to this stage
            torch.cuda.synchronize(self.device)
        timings["stereo"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        inputs, _ = self.preprocess.camera_inputs(frame.left, frame.P_left, T_grid_from_cam=frame.T_grid_from_camera,
                                                  stereo_depth=depth)
        if self.device_preprocess and self.device.type == "cuda":  # account the device work to this stage
            torch.cuda.synchronize(self.device)
        timings["preprocess"] = (time.perf_counter() - t0) * 1e3
        return inputs
