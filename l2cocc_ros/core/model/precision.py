"""The model's precision policy: what runs in float32 when the engine asks for fp16 / bf16.

The engine runs the model under ``torch.autocast`` (fp16 or bf16 on CUDA): convolutions, attention and matmuls
then compute in the low dtype, which is where the speed is. Some computations must not:

* pixel and metric coordinates, the frustum and camera geometry (fp16 keeps 11 significant bits: the
  full-size gather index 7679 rounds to 7680, ``u * depth`` overflows 65504; bf16 keeps 8 bits, too coarse
  for a pixel coordinate);
* index maths (voxel and pixel indices are computed in an integer dtype, or in float32 before the cast);
* scatter targets and the softmax-weighted sums of the samplers (lift-splat, voxel proposal, EVT sampling,
  the deformable-convolution sampler): thousands of small terms summed in fp16 lose the small ones.
* EVT's prior MLP, the only source of the features of the unproposed voxels (most of the grid): in bf16 it
  alone flipped 1.7 % of the trained camera model's labels.
* the TPV generator (softmax-weighted pooling over a whole grid axis, then a Swin and an FPN on the planes; 4.8 %
  of the full-size -C's FLOPs): in bf16 it flipped 0.2 % of the trained -D's labels, the most of any stage
  (the 3-D trunk, 48 % of the FLOPs, flips nearly as many and stays low precision).

Each such function of the model is decorated with :func:`full_precision`: it runs with autocast disabled and
its fp16 / bf16 tensor arguments cast to float32 (float32 and float64 pass unchanged, so CPU tests in float64
keep their precision). Its outputs stay float32; the next autocast op casts them down where that is safe.
One mechanism for -C, -D and -L; nothing else in the model casts for precision's sake.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch
from torch.utils._pytree import tree_map

__all__ = ["full_precision", "autocast_active", "LOW_PRECISION"]

#: dtypes that autocast computes in and that :func:`full_precision` lifts to float32
LOW_PRECISION = (torch.float16, torch.bfloat16)

F = TypeVar("F", bound=Callable[..., Any])


#: device types whose autocast state :func:`autocast_active` reads
AUTOCAST_DEVICES = ("cuda", "cpu")


def autocast_active() -> bool:
    """True while autocast is on for any device type."""
    return any(torch.is_autocast_enabled(d) for d in AUTOCAST_DEVICES)


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in LOW_PRECISION:
        return value.float()
    return value


def full_precision(fn: F) -> F:
    """Decorator: run ``fn`` in float32 with autocast disabled (see the module docstring).

    Tensor arguments, also inside tuples, lists, dicts and NamedTuples (``CamParams``), are lifted from
    fp16 / bf16 to float32; other arguments pass unchanged.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = tree_map(_to_fp32, args), tree_map(_to_fp32, kwargs)
        # plain autocast contexts (no ExitStack): torch.compile traces them inside a whole-graph stage
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
