"""Distillation losses of L2COcc-D (camera student, frozen LiDAR teacher).

L2COcc (arXiv 2503.12369) distils a LiDAR model into the camera model with four terms (docs/model.md §5;
authors' repository ``StudyingFuFu/L2COcc``; the code is our own):

* voxel-logit KL on non-empty, non-ignored GT voxels (x70; the paper's prediction alignment, PAD),
* KL between the TPV aggregator's 4-way fusion weights (x10),
* masked cosine alignment of 17 feature maps: per TPV plane the 3 Swin stage outputs and the 2 neck
  outputs, plus the aggregated 3D volume and the 3D-FPN volume (x4, sum / 17),
* TPV relation loss: L1 between the self-similarity (Gram) matrices of the L2-normalised plane neck
  outputs (x5, summed over the 3 planes).

No temperature (T = 1); KL terms use ``KLDivLoss(reduction='mean')`` semantics, i.e. they divide by
n_voxels * n_channels. Teacher tensors are always detached. Inputs are the model output dicts described in
``docs/interfaces.md`` (keys ``logits``, ``tpv_weights``, ``feats``).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..classes import IGNORE

__all__ = [
    "PLANES",
    "DistillWeights",
    "masked_kl",
    "plane_masks",
    "masked_cosine",
    "relation_l1",
    "feature_pairs",
    "distill_losses",
]

PLANES = ("xy", "yz", "zx")
"""Order of the TPV planes in ``feats['tpv_backbone']`` / ``feats['tpv_neck']``."""


class DistillWeights(Tuple[float, float, float, float]):
    """Named view of the four distillation weights (logit KL, TPV-weight KL, cosine features, relation)."""

    def __new__(cls, logit_kl: float = 70.0, tpv_weights_kl: float = 10.0, feats_cosine: float = 4.0,
                relation: float = 5.0) -> "DistillWeights":
        return super().__new__(cls, (float(logit_kl), float(tpv_weights_kl), float(feats_cosine), float(relation)))

    @property
    def logit_kl(self) -> float:
        return self[0]

    @property
    def tpv_weights_kl(self) -> float:
        return self[1]

    @property
    def feats_cosine(self) -> float:
        return self[2]

    @property
    def relation(self) -> float:
        return self[3]


def _nonempty(labels: torch.Tensor) -> torch.Tensor:
    return (labels != IGNORE) & (labels != 0)


def masked_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the channel softmax on voxels whose label is neither 0 nor 255.

    Per sample ``sum t (log t - log s) / (n_vox * n_channels)`` over the masked voxels (``KLDivLoss`` with
    ``reduction='mean'``), then the mean over the batch; a sample without masked voxels contributes 0.

    Args:
        student_logits: (B, C, X, Y, Z).
        teacher_logits: (B, C, X, Y, Z), detached here.
        labels: (B, X, Y, Z) long labels at the logits' resolution.

    Returns:
        Scalar loss.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
                         "logits differ in shape")
    if labels.shape != student_logits.shape[:1] + student_logits.shape[2:]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(student_logits.shape)}")
    n_ch = student_logits.shape[1]
    total = student_logits.sum() * 0.0
    for b in range(student_logits.shape[0]):
        mask = _nonempty(labels[b])
        n_vox = int(mask.sum())
        if n_vox == 0:
            continue
        s = F.log_softmax(student_logits[b].movedim(0, -1)[mask], dim=-1)
        t = F.log_softmax(teacher_logits[b].detach().movedim(0, -1)[mask], dim=-1)
        total = total + F.kl_div(s, t, reduction="sum", log_target=True) / (n_vox * n_ch)
    return total / student_logits.shape[0]


def plane_masks(target_1_2: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Boolean occupancy masks of the three TPV planes from the half-resolution labels (255 -> empty).

    Args:
        target_1_2: (B, X, Y, Z) labels (128x128x16 for SemanticKITTI).

    Returns:
        ``{'xy': (B, X, Y), 'yz': (B, Y, Z), 'zx': (B, X, Z), '3d': (B, X, Y, Z)}``; a plane cell is set
        when any voxel along the collapsed axis is non-empty; '3d' = label not in {0, 255}.
    """
    if target_1_2.dim() != 4:
        raise ValueError(f"target_1_2 must be (B, X, Y, Z); got {tuple(target_1_2.shape)}")
    occ = _nonempty(target_1_2)
    return {"xy": occ.any(dim=3), "yz": occ.any(dim=1), "zx": occ.any(dim=2), "3d": occ}


def masked_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos(f_s, f_t)`` (cosine along channels, eps 1e-8) over the masked positions.

    Args:
        student: (B, C, *S) features.
        teacher: (B, C, *S) features, detached here.
        mask: (B, *S) boolean.

    Returns:
        Scalar (0 if the mask is empty).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} features differ")
    if mask.shape != student.shape[:1] + student.shape[2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match features {tuple(student.shape)}")
    if not bool(mask.any()):
        return student.sum() * 0.0
    cos = F.cosine_similarity(student, teacher.detach(), dim=1, eps=1e-8)
    return (1.0 - cos[mask]).mean()


def relation_l1(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean |G_s - G_t| of the Gram matrices of channel-L2-normalised features over all positions.

    Args:
        student: (B, C, h, w) plane features (the neck's finest output).
        teacher: (B, C, h, w), detached here.

    Returns:
        Scalar loss.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} features differ")

    def gram(x: torch.Tensor) -> torch.Tensor:
        f = F.normalize(x.flatten(2), dim=1)        # (B, C, h*w)
        return f.transpose(1, 2) @ f                # (B, h*w, h*w)

    return (gram(student) - gram(teacher.detach())).abs().mean()


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def feature_pairs(student_feats: Mapping, teacher_feats: Mapping, target_1_2: torch.Tensor
                  ) -> List[Tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The 17 (name, student, teacher, mask) pairs of the cosine alignment, resized to the plane sizes.

    Args:
        student_feats: the student's ``feats`` dict (``tpv_backbone`` [3 planes][3], ``tpv_neck``
            [3 planes][2], ``feats3d_view_transformer``, ``feats3d_aggregator``).
        teacher_feats: the teacher's ``feats`` dict, same structure.
        target_1_2: (B, X, Y, Z) half-resolution labels.

    Returns:
        List of (name, student (B, C, *S), teacher (B, C, *S), mask (B, *S)).
    """
    masks = plane_masks(target_1_2)
    _, nx, ny, nz = target_1_2.shape
    sizes = {"xy": (nx, ny), "yz": (ny, nz), "zx": (nx, nz)}
    pairs = []
    for group, n_maps in (("tpv_backbone", 3), ("tpv_neck", 2)):
        for feats, who in ((student_feats, "student"), (teacher_feats, "teacher")):
            if group not in feats or len(feats[group]) != len(PLANES) or \
                    any(len(maps) < n_maps for maps in feats[group]):
                raise ValueError(f"{who} feats[{group!r}] must hold {len(PLANES)} planes of {n_maps} maps")
        for p, plane in enumerate(PLANES):
            for i in range(n_maps):
                s = _resize(student_feats[group][p][i], sizes[plane])
                t = _resize(teacher_feats[group][p][i], sizes[plane])
                pairs.append((f"{group}.{plane}.{i}", s, t, masks[plane]))
    for key in ("feats3d_aggregator", "feats3d_view_transformer"):
        for feats, who in ((student_feats, "student"), (teacher_feats, "teacher")):
            if key not in feats:
                raise ValueError(f"{who} feats has no {key!r}")
        pairs.append((key, student_feats[key], teacher_feats[key], masks["3d"]))
    return pairs


def distill_losses(student_out: Mapping, teacher_out: Mapping, target_1_2: torch.Tensor,
                   cfg: object = None, *, target: torch.Tensor) -> Dict[str, torch.Tensor]:
    """All four L2COcc-D distillation terms, already multiplied by their weights.

    Args:
        student_out: the student's output dict (``logits``, ``tpv_weights``, ``feats``).
        teacher_out: the teacher's output dict (same keys); every tensor is detached.
        target_1_2: (B, 128, 128, 16) long half-resolution labels (plane and TPV-weight masks).
        cfg: an object with ``distill_weights`` (a :class:`DistillWeights` or 4-sequence) or with the
            attributes ``ratio_logit_kl``, ``ratio_aggregator_weights``, ``ratio_feats_numeric``,
            ``ratio_feats_relation``; None = the paper's 70 / 10 / 4 / 5.
        target: (B, 256, 256, 32) long full-resolution labels (mask of the logit KL).

    Returns:
        ``{'distill_logit_kl', 'distill_tpv_weights_kl', 'distill_feats_cosine', 'distill_relation'}``.
    """
    w = _weights_from(cfg)
    for out, who in ((student_out, "student"), (teacher_out, "teacher")):
        for key in ("logits", "tpv_weights", "feats"):
            if key not in out:
                raise ValueError(f"{who} output has no {key!r}")
    target_1_2 = target_1_2.long()
    losses = {
        "distill_logit_kl": w.logit_kl * masked_kl(student_out["logits"], teacher_out["logits"], target.long()),
        "distill_tpv_weights_kl": w.tpv_weights_kl * masked_kl(student_out["tpv_weights"],
                                                               teacher_out["tpv_weights"], target_1_2),
    }
    pairs = feature_pairs(student_out["feats"], teacher_out["feats"], target_1_2)
    cos = sum(masked_cosine(s, t, m) for _, s, t, m in pairs)
    losses["distill_feats_cosine"] = w.feats_cosine * cos / len(pairs)
    rel = sum(relation_l1(student_out["feats"]["tpv_neck"][p][0], teacher_out["feats"]["tpv_neck"][p][0])
              for p in range(len(PLANES)))
    losses["distill_relation"] = w.relation * rel
    return losses


def _weights_from(cfg: object) -> DistillWeights:
    if cfg is None:
        return DistillWeights()
    if isinstance(cfg, DistillWeights):
        return cfg
    explicit = getattr(cfg, "distill_weights", None)
    if explicit is not None:
        if len(explicit) != 4:
            raise ValueError(f"distill_weights must have 4 entries; got {explicit!r}")
        return DistillWeights(*explicit)
    names = ("ratio_logit_kl", "ratio_aggregator_weights", "ratio_feats_numeric", "ratio_feats_relation")
    missing = [n for n in names if not hasattr(cfg, n)]
    if missing:
        raise ValueError(f"config {type(cfg).__name__} lacks the distillation weights {missing}")
    return DistillWeights(*(getattr(cfg, n) for n in names))
