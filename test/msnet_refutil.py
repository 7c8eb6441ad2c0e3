"""MobileStereoNet reference helpers for tests: the published weight rule, input rule and block statistics.

Implements the rules of ``test/data/reference/msnet/README.md`` (vendored from the team's reference folder):
weights by manifest key order, the analytic stereo pair, and the comparison of our tensors with the statistics
the ORIGINAL code recorded (cogsys-tuebingen/mobilestereonet @ 3c2931a, eval mode).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np
import torch

__all__ = ["MSNET_REFERENCE", "manifest", "refvec", "weight_rule_state_dict", "stereo_pair", "stats_errors"]

MSNET_REFERENCE = Path(__file__).resolve().parent / "data" / "reference" / "msnet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def manifest(model: str) -> dict:
    """The vendored manifest of ``model`` ("msnet3d" / "msnet2d"): entries = [key, shape, dtype] in order."""
    return json.loads((MSNET_REFERENCE / f"manifest_{model}.json").read_text())


def refvec(model: str) -> dict:
    """The vendored reference statistics of ``model`` (the ``pipeline_pad_crop`` case)."""
    return json.loads((MSNET_REFERENCE / f"refvec_{model}.json").read_text())


def weight_rule_state_dict(model: str) -> Dict[str, torch.Tensor]:
    """Every state_dict entry by the README's weight rule (float64 values rounded to float32; int64 counters 0)."""
    entries = manifest(model)["entries"]
    gain_classif = refvec(model)["weight_rule_constants"]["A_classifier_last_conv"]
    out = {}
    for k, (key, shape, dtype) in enumerate(entries):
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        j = np.arange(int(np.prod(shape)) if shape else 1, dtype=np.int64)
        t = (7919 * j * j + 104729 * j + 330013 * k + 555555) % 1000003
        s = np.sin(2.0 * math.pi * (t.astype(np.float64) / 1000003))
        if key.endswith("running_mean"):
            v = 0.1 * s
        elif key.endswith("running_var"):
            v = 1.25 + 0.25 * s
        elif len(shape) >= 2:
            if key.startswith("feature_extraction."):
                gain = 1.0
            elif key.startswith("classif") and key.endswith(".2.weight"):
                gain = gain_classif
            else:
                gain = 2.0
            v = gain * s / math.sqrt(float(np.prod(shape[1:])))
        elif key.endswith("weight"):
            v = 1 + 0.2 * s
        else:
            v = 0.1 * s
        out[key] = torch.from_numpy(v.astype(np.float32).reshape(shape))
    return out


def stereo_pair(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """The input rule's raw (3, H, W) float64 left/right images (values around 0.5, not normalised)."""
    y, x = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")

    def f(c: int, xx: np.ndarray) -> np.ndarray:
        return (0.5 + 0.2 * np.sin(0.11 * xx + 0.07 * y + 1.3 * c)
                + 0.15 * np.sin(0.031 * (1 + 0.5 * c) * xx - 0.05 * y)
                + 0.1 * np.cos(0.0017 * (xx - 200) ** 2 + 0.023 * (c + 1) * y))

    d = 6 + 18 * y / (h - 1) + 4 * np.sin(2 * np.pi * x / w)
    return np.stack([f(c, x) for c in range(3)]), np.stack([f(c, x + d) for c in range(3)])


def normalise(raw: np.ndarray) -> np.ndarray:
    """(3, H, W) float64 -> ImageNet-normalised float64."""
    return (raw - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]


def stats_errors(ours: torch.Tensor, ref: Mapping[str, Any], *, rel: float = 0.0, gap_factor: float = 0.0
                 ) -> List[str]:
    """What differs between ``ours`` and a recorded block, beyond the tolerance; [] when it matches.

    The tolerance on values is ``rel * max|ref| + gap_factor * max_abs_diff_vs_other_dtype`` (the recorded
    float32-float64 gap of the block): float64 runs use ``rel``, float32 runs ``gap_factor``. Sums are compared
    as means (tolerance / 1) and ``abs_sum`` relative to itself.
    """
    if list(ours.shape) != list(ref["shape"]):
        return [f"shape {list(ours.shape)} != {ref['shape']}"]
    x = ours.detach().double()
    scale = max(abs(ref["min"]), abs(ref["max"]), 1e-30)
    tol = rel * scale + gap_factor * ref.get("max_abs_diff_vs_other_dtype", 0.0) + 1e-12
    got = {"mean": float(x.mean()), "std": float(x.std(correction=0)), "min": float(x.min()),
           "max": float(x.max())}
    errs = [f"{k} {got[k]!r} != {ref[k]!r} (tol {tol:.3g})" for k in got if abs(got[k] - ref[k]) > tol]
    n = x.numel()
    if abs(float(x.abs().sum()) - ref["abs_sum"]) > tol * n:
        errs.append(f"abs_sum {float(x.abs().sum())!r} != {ref['abs_sum']!r}")
    for idx, value in ref["samples"]:
        if abs(float(x[tuple(idx)]) - value) > tol:
            errs.append(f"sample {idx}: {float(x[tuple(idx)])!r} != {value!r} (tol {tol:.3g})")
    return errs
