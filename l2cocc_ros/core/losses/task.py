"""Task losses of L2COcc (all variants): weighted CE, scene-class affinity, depth KL.

L2COcc (arXiv 2503.12369) trains with the losses of its base CGFormer / MonoScene (arXiv 2112.00726):

* class-weighted cross entropy, weights ``1 / ln(freq + 0.001)`` from the one class table
  (:meth:`l2cocc_ros.core.classes.ClassTable.class_weights`), ignore label 255;
* MonoScene's semantic and geometric scene-class-affinity losses (``sem_scal``, ``geo_scal``);
* a KL depth loss (camera models only) between the fused depth distribution and a Gaussian target built
  from the LiDAR depth (min non-zero depth per 8x8 patch).

Definitions follow the docs/model.md §4 (authors' repository ``StudyingFuFu/L2COcc``); the code is
our own. Shapes: logits (B, C, X, Y, Z), target (B, X, Y, Z) long with 255 = ignore.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from ..classes import IGNORE

__all__ = [
    "DEPTH_TARGET_MODES",
    "weighted_ce",
    "sem_scal_loss",
    "geo_scal_loss",
    "downsample_lidar_depth",
    "depth_target_distribution",
    "depth_kl_loss",
    "task_losses",
]

DEPTH_TARGET_MODES = ("original", "corrected")
"""``original``: the authors' Gaussian (mean d/0.5, std 1, edges in metres -> peak at 2*d);
``corrected``: mean d, std 0.5 m (the evident intent)."""


def _check_logits_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != target.dim() + 1:
        raise ValueError(f"logits must be (B, C, ...) with target (B, ...); got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree in batch/space")


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor,
                ignore_index: int = IGNORE) -> torch.Tensor:
    """Class-weighted cross entropy, PyTorch weighted mean ``sum w_y l / sum w_y`` over non-ignored voxels.

    Args:
        logits: (B, C, X, Y, Z) raw scores.
        target: (B, X, Y, Z) long labels in [0, C) or ``ignore_index``.
        class_weights: (C,) float weights (e.g. ``ClassTable.class_weights()``).
        ignore_index: label that is ignored.

    Returns:
        Scalar loss (0 with a gradient path if every voxel is ignored).
    """
    _check_logits_target(logits, target)
    weights = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    if weights.numel() != logits.shape[1]:
        raise ValueError(f"class_weights has {weights.numel()} entries, logits have {logits.shape[1]} classes")
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.long(), weight=weights, ignore_index=ignore_index, reduction="mean")


def _bce_to_one(x: torch.Tensor) -> torch.Tensor:
    """``BCE(x, 1) = -log(x)`` with PyTorch's clamp of the log at -100.

    ``x`` is a ratio in [0, 1] by construction (precision, recall, specificity), but its numerator and
    denominator are float sums taken in different orders, so a ratio that is 1 exactly can come out a few ulps
    above it, which ``binary_cross_entropy`` refuses (it stopped a training run). It is clamped to [0, 1]:
    the same loss wherever the original is defined.
    """
    x = x.clamp(0.0, 1.0)
    return F.binary_cross_entropy(x, torch.ones_like(x))


def sem_scal_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """MonoScene semantic scene-class affinity loss (docs/model.md §4.2).

    For each class c present in the (non-ignored) GT: precision = sum p_c [y=c] / sum p_c, recall =
    sum p_c [y=c] / sum [y=c], specificity = sum (1-p_c)[y!=c] / sum [y!=c]; the loss of the class is the
    sum of ``BCE(term, 1)`` over the terms whose denominator is positive; the result is the mean over the
    present classes (class 0 included). Computed without a one-hot volume.

    Args:
        logits: (B, C, X, Y, Z) raw scores.
        target: (B, X, Y, Z) long labels, ``ignore_index`` ignored.
        ignore_index: ignored label.

    Returns:
        Scalar loss (0 if no voxel is labelled).
    """
    _check_logits_target(logits, target)
    n_cls = logits.shape[1]
    prob = F.softmax(logits, dim=1).movedim(1, -1).reshape(-1, n_cls)  # (V, C)
    tgt = target.reshape(-1).long()
    valid = tgt != ignore_index
    prob, tgt = prob[valid], tgt[valid]
    if tgt.numel() == 0:
        return logits.sum() * 0.0
    if int(tgt.max()) >= n_cls or int(tgt.min()) < 0:
        raise ValueError(f"target labels must be in [0, {n_cls}) or {ignore_index}")
    n_total = float(tgt.numel())
    count = torch.bincount(tgt, minlength=n_cls).to(prob.dtype)                       # sum [y=c]
    sum_p = prob.sum(0)                                                                # sum p_c
    hit = torch.zeros(n_cls, dtype=prob.dtype, device=prob.device)
    hit = hit.index_add(0, tgt, prob.gather(1, tgt[:, None])[:, 0])                    # sum p_c [y=c]
    not_c = n_total - count                                                            # sum [y!=c]
    spec_num = not_c - (sum_p - hit)                                                   # sum (1-p_c)[y!=c]
    loss = logits.sum() * 0.0
    present = (count > 0).tolist()                 # one host sync for all the branch conditions
    has_p = (sum_p.detach() > 0).tolist()
    has_not = (not_c > 0).tolist()
    n_present = 0
    for c in range(n_cls):
        if not present[c]:
            continue
        n_present += 1
        term = _bce_to_one(hit[c] / count[c])  # recall (denominator > 0 because present)
        if has_p[c]:
            term = term + _bce_to_one(hit[c] / sum_p[c])
        if has_not[c]:
            term = term + _bce_to_one(spec_num[c] / not_c[c])
        loss = loss + term
    return loss / n_present


def geo_scal_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE,
                  eps: float = 1e-5) -> torch.Tensor:
    """MonoScene geometric scene-class affinity loss (docs/model.md §4.3): occupied-vs-empty precision, recall
    and specificity, each pushed to 1 with ``BCE(., 1)``; q = 1 - p_empty, t = [y != 0].

    Args:
        logits: (B, C, X, Y, Z) raw scores; class 0 = empty.
        target: (B, X, Y, Z) long labels, ``ignore_index`` ignored.
        ignore_index: ignored label.
        eps: added to the three denominators.

    Returns:
        Scalar loss.
    """
    _check_logits_target(logits, target)
    p_empty = F.softmax(logits, dim=1)[:, 0]
    valid = target != ignore_index
    p_empty = p_empty[valid]
    if p_empty.numel() == 0:
        return logits.sum() * 0.0
    occ_t = (target[valid] != 0).to(p_empty.dtype)
    occ_p = 1.0 - p_empty
    inter = (occ_p * occ_t).sum()
    precision = inter / (occ_p.sum() + eps)
    recall = inter / (occ_t.sum() + eps)
    spec = (p_empty * (1.0 - occ_t)).sum() / ((1.0 - occ_t).sum() + eps)
    return _bce_to_one(precision) + _bce_to_one(recall) + _bce_to_one(spec)


def downsample_lidar_depth(depth: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Minimum non-zero depth per ``factor`` x ``factor`` patch of a sparse depth image.

    Args:
        depth: (B, N, H, W) or (B, H, W) depth in metres, 0 = no LiDAR point; H, W divisible by factor.
        factor: patch size (the image-feature stride, 8).

    Returns:
        (B*N, H/factor, W/factor) tensor, 0 where a patch holds no point.
    """
    if depth.dim() == 3:
        depth = depth[:, None]
    if depth.dim() != 4:
        raise ValueError(f"depth must be (B, N, H, W) or (B, H, W); got {tuple(depth.shape)}")
    b, n, h, w = depth.shape
    if h % factor or w % factor:
        raise ValueError(f"depth size {h}x{w} is not divisible by the patch size {factor}")
    patches = depth.reshape(b * n, h // factor, factor, w // factor, factor).permute(0, 1, 3, 2, 4)
    patches = patches.reshape(b * n, h // factor, w // factor, factor * factor)
    big = torch.full_like(patches, float("inf"))
    d_min = torch.where(patches > 0, patches, big).amin(dim=-1)
    return torch.where(torch.isinf(d_min), torch.zeros_like(d_min), d_min)


def _normal_cdf(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf((x - mean) / (std * math.sqrt(2.0))))


def depth_target_distribution(d_min: torch.Tensor, d_bound: Sequence[float] = (2.0, 58.0, 0.5),
                              mode: str = "original") -> torch.Tensor:
    """Gaussian target over the depth bins for each patch depth.

    The bins are ``arange(d_bound)`` (centres 2.0 ... 57.5 for the default, D = 112) with edges
    ``centre -/+ step/2``. ``original`` reproduces the authors' code: Normal(mean d/step, std 1) evaluated at
    the edges in metres, so the mass peaks at the bin of depth 2*d (docs/model.md §4.4). ``corrected`` uses
    Normal(mean d, std step) in metres, peaking at the bin of d.

    Args:
        d_min: (R,) patch depths in metres.
        d_bound: (start, stop, step) of the depth bins.
        mode: one of :data:`DEPTH_TARGET_MODES`.

    Returns:
        (R, D) probabilities (rows may sum to < 1 where the Gaussian leaves the bin range).
    """
    if mode not in DEPTH_TARGET_MODES:
        raise ValueError(f"depth target mode must be one of {DEPTH_TARGET_MODES}; got {mode!r}")
    start, stop, step = (float(v) for v in d_bound)
    n_bins = int(round((stop - start) / step))
    edges = start - step / 2 + step * torch.arange(n_bins + 1, dtype=d_min.dtype, device=d_min.device)
    if mode == "original":
        mean, std = d_min / step, step / step
    else:
        mean, std = d_min, step
    cdf = _normal_cdf(edges[None, :], mean[:, None], std)
    return cdf[:, 1:] - cdf[:, :-1]


def depth_kl_loss(depth_prob: torch.Tensor, lidar_depth: torch.Tensor,
                  d_bound: Sequence[float] = (2.0, 58.0, 0.5), mode: str = "original",
                  prob_eps: float = 1e-4) -> torch.Tensor:
    """KL(target || P) over image-feature patches that hold a LiDAR depth in the bin range (docs/model.md §4.4).

    ``sum target (log target - log(P + 1e-4))`` divided by the number of used patches ("batchmean").

    Args:
        depth_prob: (B*N, D, h, w) fused depth probabilities.
        lidar_depth: (B, N, H, W) sparse LiDAR depth image in metres (0 = no point), H = h * s, W = w * s.
        d_bound: depth bins (start, stop, step).
        mode: target mode, see :func:`depth_target_distribution`.
        prob_eps: added to P inside the log.

    Returns:
        Scalar loss (0 if no patch is usable).
    """
    if depth_prob.dim() != 4:
        raise ValueError(f"depth_prob must be (B*N, D, h, w); got {tuple(depth_prob.shape)}")
    bn, n_bins, h, w = depth_prob.shape
    if lidar_depth.dim() == 3:
        lidar_depth = lidar_depth[:, None]
    if lidar_depth.shape[-2] % h or lidar_depth.shape[-1] % w or \
            lidar_depth.shape[-2] // h != lidar_depth.shape[-1] // w:
        raise ValueError(f"lidar_depth {tuple(lidar_depth.shape)} is not an integer multiple of the depth map "
                         f"{h}x{w}")
    factor = lidar_depth.shape[-2] // h
    d_min = downsample_lidar_depth(lidar_depth.to(depth_prob.dtype), factor).reshape(-1)
    if d_min.numel() != bn * h * w:
        raise ValueError(f"lidar_depth has {d_min.numel() // (h * w)} images, depth_prob {bn}")
    start, stop, step = (float(v) for v in d_bound)
    if int(round((stop - start) / step)) != n_bins:
        raise ValueError(f"depth_prob has {n_bins} bins but d_bound {tuple(d_bound)} gives "
                         f"{int(round((stop - start) / step))}")
    rows = depth_prob.permute(0, 2, 3, 1).reshape(-1, n_bins)
    used = (d_min >= start) & (d_min <= stop - step)
    if not bool(used.any()):
        return depth_prob.sum() * 0.0
    target = depth_target_distribution(d_min[used], d_bound, mode)
    log_p = torch.log(rows[used] + prob_eps)
    kl = torch.xlogy(target, target) - target * log_p
    return kl.sum() / target.shape[0]


def task_losses(out: Mapping[str, torch.Tensor], target: torch.Tensor, cfg: object, *,
                lidar_depth: Optional[torch.Tensor] = None,
                d_bound: Sequence[float] = (2.0, 58.0, 0.5)) -> Dict[str, torch.Tensor]:
    """The weighted task losses of one batch (docs/model.md §4), each already multiplied by its weight.

    Args:
        out: model output dict (``logits`` (B, C, 256, 256, 32); ``depth_prob`` (B*N, D, h, w) for
            camera models).
        target: (B, 256, 256, 32) long labels, 255 = ignore.
        cfg: a ``LossConfig`` (``dataset``, ``ce_weight``, ``sem_scal_weight``, ``geo_scal_weight``,
            ``depth_weight``, ``depth_loss_target``).
        lidar_depth: (B, N, H, W) sparse LiDAR depth image for the depth loss; required when
            ``cfg.depth_weight > 0`` and the output has ``depth_prob``.
        d_bound: the depth bins (start, stop, step) of the model's depth net.

    Returns:
        ``{'loss_ce', 'loss_sem_scal', 'loss_geo_scal'[, 'loss_depth']}``; terms with weight 0 are left out.
    """
    if "logits" not in out:
        raise ValueError("model output has no 'logits'")
    logits = out["logits"]
    target = target.long()
    weights = torch.from_numpy(cfg.ce_class_weights())
    losses: Dict[str, torch.Tensor] = {}
    if cfg.ce_weight:
        losses["loss_ce"] = cfg.ce_weight * weighted_ce(logits, target, weights)
    if cfg.sem_scal_weight:
        losses["loss_sem_scal"] = cfg.sem_scal_weight * sem_scal_loss(logits, target)
    if cfg.geo_scal_weight:
        losses["loss_geo_scal"] = cfg.geo_scal_weight * geo_scal_loss(logits, target)
    if cfg.depth_weight and "depth_prob" in out:
        if lidar_depth is None:
            raise ValueError("the depth loss is on (loss.depth_weight > 0) but no lidar_depth was given")
        losses["loss_depth"] = cfg.depth_weight * depth_kl_loss(out["depth_prob"], lidar_depth, d_bound,
                                                                cfg.depth_loss_target)
    return losses
