"""Reference-vector helpers for tests: the deterministic weight rule, the deterministic inputs, and stats.

Implements ``../shared/reference/refvec/README.md`` §1 (weights), §2 (inputs) and §3 (stats) so that our
model can be compared block by block with the original code's forward pass. Weights are set by
manifest key (the module that owns a tensor is read from ``<cfg>.details.json``), so the rule does not
depend on our class names.
"""
from __future__ import annotations

import json
import math
import os
import re
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["REFERENCE", "manifest", "manifest_details", "refvec", "apply_weight_rule", "camera_inputs",
           "lidar_points", "tensor_stats", "compare_stats", "BlockRecorder"]

REFERENCE = Path(os.environ.get("L2COCC_REFERENCE", Path(__file__).resolve().parent / "data" / "reference"))
MANIFEST = REFERENCE / "ckpt-manifest"
REFVEC = REFERENCE / "refvec"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
P2 = [[718.856, 0, 607.1928, 45.38225], [0, 718.856, 185.2157, -0.1130887], [0, 0, 1, 0.003779761]]
TR = [[4.276802385584e-04, -9.999672484946e-01, -8.084491683471e-03, -1.198459927713e-02],
      [-7.210626507497e-03, 8.081198471645e-03, -9.999413164504e-01, -5.403984729748e-02],
      [9.999738645903e-01, 4.859485810390e-04, -7.206933692422e-03, -2.921968648686e-01]]


def _strip(d: Mapping[str, Any]) -> Dict[str, Any]:
    return {k[len("model."):] if k.startswith("model.") else k: v for k, v in d.items()}


def manifest(cfg: str) -> Dict[str, list]:
    """``{model-level key: shape}`` of the authors' model ``cfg``."""
    return _strip(json.loads((MANIFEST / f"{cfg}.json").read_text()))


def manifest_details(cfg: str) -> Dict[str, dict]:
    """``{model-level key: {shape, dtype, kind, module_type, module_extra}}``."""
    return _strip(json.loads((MANIFEST / f"{cfg}.details.json").read_text()))


def refvec(cfg: str) -> dict:
    """The reference-vector JSON of ``cfg``."""
    return json.loads((REFVEC / f"{cfg}.json").read_text())


# ------------------------------------------------------------------------------------------- §1 weights
def _wave(key: str, n: int, amp: float, off: float) -> np.ndarray:
    phase = (zlib.crc32(key.encode()) % 10000) / 1000
    return off + amp * np.sin(0.37 * np.arange(n, dtype=np.float64) + phase)


def rule_value(key: str, shape, info: Mapping[str, Any]) -> Tuple[str, Optional[np.ndarray]]:
    """(category, float64 values) for one key, or (category, None) when the tensor is left as built."""
    owner = info["module_type"].split(":")[-1]
    n = int(np.prod(shape)) if len(shape) else 1
    is_bn = owner.startswith("BatchNorm")
    if key.endswith("num_batches_tracked"):
        return "nbt=0", np.zeros(n)
    if is_bn and key.endswith("running_mean"):
        return "rm=0", np.zeros(n)
    if is_bn and key.endswith("running_var"):
        return "rv=1", np.ones(n)
    if info["kind"] != "param":
        return "as_built", None
    if (is_bn or owner in ("GroupNorm", "LayerNorm")) and key.endswith("weight"):
        return "norm_w", _wave(key, n, 0.1, 1.0)
    if len(shape) >= 2:
        return "w", _wave(key, n, 1.0 / math.sqrt(float(np.prod(shape[1:]))), 0.0)
    return "b", _wave(key, n, 0.01, 0.0)


@torch.no_grad()
def apply_weight_rule(model: nn.Module, cfg: str) -> Counter:
    """Overwrite every tensor of ``model`` by the README §1 rule; returns the per-category counts.

    Raises:
        KeyError: if the model has a key the manifest lacks.
    """
    details = manifest_details(cfg)
    counts: Counter = Counter()
    for key, tensor in model.state_dict(keep_vars=True).items():
        category, values = rule_value(key, list(tensor.shape), details[key])
        counts[category] += 1
        if values is not None:
            tensor.data.copy_(torch.from_numpy(values.reshape(tuple(tensor.shape))).to(tensor.dtype))
    return counts


# -------------------------------------------------------------------------------------------- §2 inputs
def camera_inputs() -> Dict[str, torch.Tensor]:
    """The SemanticKITTI -C inputs of README §2 in our model-input layout (docs/interfaces.md)."""
    H, W = 384, 1280
    s = 1280 / 1241
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    img = np.empty((3, H, W), dtype=np.float64)
    for c in range(3):
        raw = 0.5 + 0.3 * np.sin(0.05 * u + 0.5 * c) * np.cos(0.07 * v - 0.3 * c) \
            + 0.15 * np.sin(0.011 * (u + 2 * v) + c)
        img[c] = (raw - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    v_o = (v + 3) / s
    with np.errstate(divide="ignore"):
        dg = np.where(v_o > 190, 718.856 * 1.73 / (v_o - 185.2157), np.inf)
    dw = 25 + 8 * np.sin(0.013 * u) + 3 * np.cos(0.05 * v)
    d = np.minimum(dg, dw)
    box = (u >= 560) & (u < 720) & (v >= 170) & (v < 300)
    d = np.where(box, np.minimum(d, 11.5 + 0.002 * (u - 560)), d)
    d = d * (1 + 0.01 * np.sin(0.3 * u + 0.2 * v))
    d[v < 60] = 0
    tr = torch.eye(4)
    tr[:3] = torch.tensor(TR, dtype=torch.float32)
    cam2lidar = tr.inverse()
    intrin = torch.eye(4)
    intrin[:3] = torch.tensor(P2, dtype=torch.float32)
    post_rot = torch.eye(3)
    post_rot[:2, :2] = torch.eye(2) * s
    return {
        "img": torch.from_numpy(img).float().view(1, 1, 3, H, W),
        "rot": cam2lidar[:3, :3].reshape(1, 1, 3, 3).clone(),
        "tran": cam2lidar[:3, 3].reshape(1, 1, 3).clone(),
        "intrin": intrin.view(1, 1, 4, 4),
        "post_rot": post_rot.view(1, 1, 3, 3),
        "post_tran": torch.tensor([0.0, -3.0, 0.0]).view(1, 1, 3),
        "bda": torch.eye(4).view(1, 4, 4),
        "stereo_depth": torch.from_numpy(d).float().view(1, 1, H, W),
    }


def lidar_points(n: int = 20000) -> torch.Tensor:
    """The (n, 4) raw LiDAR points of README §2 (x, y, z, intensity), before any range crop."""
    i = np.arange(n, dtype=np.float64)
    frac = lambda x: x - np.floor(x)  # noqa: E731
    rho = 3 + 45 * frac(0.6180339887 * i)
    phi = -0.7 + 1.4 * frac(0.7548776662 * i)
    z = -1.7 + 0.4 * np.sin(0.05 * i) + (rho > 25) * 3 * frac(0.5698402910 * i)
    pts = np.stack([rho * np.cos(phi), rho * np.sin(phi), z, 0.5 + 0.5 * np.sin(0.1 * i)], axis=1)
    return torch.from_numpy(pts).float()


# --------------------------------------------------------------------------------------------- §3 stats
def tensor_stats(t: torch.Tensor) -> Dict[str, Any]:
    """README §3 record of one tensor (float64 accumulation, 64 sampled values)."""
    flat = t.detach().reshape(-1).double()
    idx = np.random.default_rng(0).integers(0, flat.numel(), 64)
    return {"shape": list(t.shape), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
            "sq_sum": float((flat * flat).sum()), "min": float(flat.min()), "max": float(flat.max()),
            "sample_val": flat[torch.from_numpy(idx)].tolist()}


def compare_stats(ours: Mapping[str, Any], ref: Mapping[str, Any], rel: float = 1e-4) -> Dict[str, float]:
    """Normalised errors of ``ours`` against ``ref`` (each must be <= 1 to pass at tolerance ``rel``).

    sum: |d| / (rel * abs_sum); abs_sum, sq_sum: relative / rel; min, max: |d| / (rel * max|x|);
    samples: max |d| / (rel * max|x| + 1e-6). A shape mismatch (ignoring size-1 dims) gives {"shape": inf}.
    """
    if [d for d in ours["shape"] if d != 1] != [d for d in ref["shape"] if d != 1]:
        return {"shape": math.inf}
    scale = max(abs(ref["min"]), abs(ref["max"]), 1e-30)
    tiny = 1e-30
    out = {"sum": abs(ours["sum"] - ref["sum"]) / (rel * ref["abs_sum"] + tiny),
           "abs_sum": abs(ours["abs_sum"] - ref["abs_sum"]) / (rel * ref["abs_sum"] + tiny),
           "sq_sum": abs(ours["sq_sum"] - ref["sq_sum"]) / (rel * ref["sq_sum"] + tiny),
           "min": abs(ours["min"] - ref["min"]) / (rel * scale),
           "max": abs(ours["max"] - ref["max"]) / (rel * scale)}
    d = np.abs(np.asarray(ours["sample_val"]) - np.asarray(ref["sample_val"]))
    out["samples"] = float(d.max()) / (rel * scale + 1e-6) if d.size else 0.0
    return out


# ------------------------------------------------------------------------------------ block recording
_PATH = re.compile(r"\[(\d+|'[^']*')\]")


def _resolve(obj: Any, path: str, numel: int) -> Optional[torch.Tensor]:
    """Follow an output path like "[1]['tpv_backbone'][0][2]" ("." = the output itself).

    Where the original wrapped a tensor in a list/dict that our block returns bare, the remaining indices
    are skipped when the tensor already has the recorded number of elements.
    """
    for tok in _PATH.findall(path):
        if isinstance(obj, torch.Tensor) and obj.numel() == numel:
            return obj
        key = tok.strip("'") if tok.startswith("'") else int(tok)
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return None
    return obj if isinstance(obj, torch.Tensor) else None


class BlockRecorder:
    """Forward hooks that compute README §3 stats of the outputs the reference recorded.

    ``stats[(module, call, output)]`` is filled during the forward; tensors are not kept. Records whose
    module does not exist in our model land in ``absent``; outputs that could not be found (or have another
    number of elements) in ``unmatched``.
    """

    def __init__(self, model: nn.Module, records) -> None:
        self.wanted: Dict[str, Dict[Tuple[int, str], int]] = {}
        for r in records:
            self.wanted.setdefault(r["module"], {})[(r["call"], r["output"])] = r["numel"]
        modules = dict(model.named_modules())
        self.absent = sorted(m for m in self.wanted if m not in modules)
        self.stats: Dict[Tuple[str, int, str], Dict[str, Any]] = {}
        self.unmatched = []
        self.calls: Counter = Counter()
        self.handles = [modules[m].register_forward_hook(self._hook(m)) for m in self.wanted if m in modules]

    def _hook(self, name: str):
        def hook(module, args, output):
            call = self.calls[name]
            self.calls[name] += 1
            for (c, path), numel in self.wanted[name].items():
                if c != call:
                    continue
                t = _resolve(output, path, numel)
                if t is None or t.numel() != numel:
                    self.unmatched.append((name, call, path))
                else:
                    self.stats[(name, call, path)] = tensor_stats(t)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
