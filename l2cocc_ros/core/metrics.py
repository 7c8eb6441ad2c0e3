"""Semantic scene completion metrics, exactly as the official semantic-kitti-api evaluator.

``evaluate_completion.py`` of PRBonn/semantic-kitti-api accumulates a confusion matrix (rows = prediction,
columns = ground truth) over the whole split, on the voxels whose GT is not 255 (invalid voxels are 255
already in our targets). From it:

* per-class IoU_c = TP_c / (TP_c + FP_c + FN_c + 1e-15), mIoU = mean over classes 1..C-1;
* completion (occupied = class > 0): precision = sum conf[1:, 1:] / (sum conf[1:, :] + eps32),
  recall = sum conf[1:, 1:] / (sum conf[:, 1:] + eps32), IoU = sum conf[1:, 1:] / (sum conf - conf[0, 0]).

The matrix is int64; :meth:`SSCMetrics.merge` / :attr:`SSCMetrics.confusion` let distributed workers sum
their counts before :meth:`SSCMetrics.compute`.
"""
from __future__ import annotations

from typing import Dict, Sequence, Union

import numpy as np

from .classes import IGNORE

__all__ = ["SSCMetrics", "scores_from_confusion"]

ArrayLike = Union[np.ndarray, "torch.Tensor"]  # noqa: F821 (torch is optional here)

_IOU_EPS = 1e-15                      # np_ioueval.iouEval.getIoU
_RATIO_EPS = float(np.finfo(np.float32).eps)  # evaluate_completion.py precision / recall


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def scores_from_confusion(conf: np.ndarray) -> Dict[str, object]:
    """Official completion and semantic scores from a (C, C) confusion matrix (rows pred, cols GT).

    Args:
        conf: (C, C) integer counts.

    Returns:
        dict with ``iou``, ``precision``, ``recall`` (completion, floats in [0, 1]), ``miou`` (float),
        ``iou_per_class`` ((C,) float64 array, class 0 = empty included), ``n_voxels`` (int).
    """
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1] or conf.shape[0] < 2:
        raise ValueError(f"confusion matrix must be square (C, C) with C >= 2; got {conf.shape}")
    conf = conf.astype(np.int64)
    tp = np.diag(conf).astype(np.float64)
    fp = conf.sum(axis=1) - tp
    fn = conf.sum(axis=0) - tp
    iou = tp / (tp + fp + fn + _IOU_EPS)
    occ_tp = float(conf[1:, 1:].sum())
    denom_iou = float(conf.sum() - conf[0, 0])
    return {
        "iou": occ_tp / denom_iou if denom_iou > 0 else 0.0,
        "precision": occ_tp / (float(conf[1:, :].sum()) + _RATIO_EPS),
        "recall": occ_tp / (float(conf[:, 1:].sum()) + _RATIO_EPS),
        "miou": float(iou[1:].mean()),
        "iou_per_class": iou,
        "n_voxels": int(conf.sum()),
    }


class SSCMetrics:
    """Confusion-matrix accumulator over a split with the official SSC scores.

    Args:
        num_classes: C, including class 0 = empty (20 for SemanticKITTI, 19 for KITTI-360).
        ignore_index: GT label that is skipped (255; also the label of invalid voxels).

    Example:
        >>> m = SSCMetrics(20)
        >>> m.update(pred_labels, target)          # any shapes, equal sizes
        >>> m.compute()["miou"]
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE) -> None:
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class id (num_classes {num_classes})")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.n_frames = 0

    def reset(self) -> None:
        """Forget every accumulated count."""
        self.confusion[:] = 0
        self.n_frames = 0

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add one frame (or batch) of predicted labels and GT labels.

        Args:
            pred: integer class ids in [0, C), any shape (numpy array or torch tensor).
            target: GT with the same number of elements; values in [0, C) or ``ignore_index``.

        Raises:
            ValueError: sizes differ or a label is out of range (message names which).
        """
        p = _to_numpy(pred).reshape(-1)
        t = _to_numpy(target).reshape(-1)
        if p.size != t.size:
            raise ValueError(f"pred has {p.size} voxels but target has {t.size}")
        keep = t != self.ignore_index
        p = p[keep].astype(np.int64)
        t = t[keep].astype(np.int64)
        if t.size:
            if t.min() < 0 or t.max() >= self.num_classes:
                raise ValueError(f"target labels must be in [0, {self.num_classes}) or {self.ignore_index}; "
                                 f"found {int(t.min())}..{int(t.max())}")
            if p.min() < 0 or p.max() >= self.num_classes:
                raise ValueError(f"pred labels must be in [0, {self.num_classes}); found {int(p.min())}..{int(p.max())}")
            counts = np.bincount(p * self.num_classes + t, minlength=self.num_classes ** 2)
            self.confusion += counts.reshape(self.num_classes, self.num_classes)
        self.n_frames += 1

    def merge(self, other: Union["SSCMetrics", np.ndarray]) -> None:
        """Add another accumulator's (or a raw (C, C) matrix's) counts to this one."""
        conf = other.confusion if isinstance(other, SSCMetrics) else np.asarray(other)
        if conf.shape != self.confusion.shape:
            raise ValueError(f"confusion shape {conf.shape} != {self.confusion.shape}")
        self.confusion += conf.astype(np.int64)
        if isinstance(other, SSCMetrics):
            self.n_frames += other.n_frames

    def compute(self) -> Dict[str, object]:
        """Scores of everything accumulated so far (see :func:`scores_from_confusion`)."""
        return scores_from_confusion(self.confusion)

    def table(self, names: Sequence[str]) -> str:
        """Human-readable per-class table (percent) with IoU / precision / recall / mIoU."""
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names given for {self.num_classes} classes")
        s = self.compute()
        width = max(len(n) for n in names)
        lines = [f"{'class':<{width}}  IoU [%]"]
        lines += [f"{names[c]:<{width}}  {100 * s['iou_per_class'][c]:6.2f}" for c in range(1, self.num_classes)]
        lines += ["", f"completion IoU {100 * s['iou']:.2f}  precision {100 * s['precision']:.2f}  "
                      f"recall {100 * s['recall']:.2f}", f"mIoU {100 * s['miou']:.2f}  ({s['n_voxels']} voxels)"]
        return "\n".join(lines)
