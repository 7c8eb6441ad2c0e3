"""Scene-completion label preprocessing (docs/model.md §7.1): raw voxel labels -> training targets.

* 1:1 target: raw ``.label`` ids through the learning map of :mod:`l2cocc_ros.core.classes` (raw ids that
  map to 0, other than raw 0 itself, become 255), then voxels whose ``.invalid`` bit is set become 255.
* 1:2 target (and any integer factor): the LMSCNet rule per ``f×f×f`` block — if more than
  ``0.95·f³`` of the block is empty (0) or ignored (255), the block is 0 when it holds more 0 than 255,
  else 255; otherwise the block takes the most frequent label in 1..254 (ties: the smallest label, as
  ``argmax(bincount)``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..classes import EMPTY, IGNORE, ClassTable, semantic_kitti
from ..grid import SEMANTIC_KITTI_GRID

__all__ = ["ssc_target_from_raw", "downsample_labels", "make_targets"]


def ssc_target_from_raw(
    raw_labels: np.ndarray,
    invalid: Optional[np.ndarray] = None,
    table: Optional[ClassTable] = None,
    dims: Tuple[int, int, int] = SEMANTIC_KITTI_GRID.dims,
) -> np.ndarray:
    """Map raw voxel labels (+ invalid mask) to the 1:1 training target.

    Args:
        raw_labels: raw SemanticKITTI ids (uint16), ``prod(dims)`` values (flat or shaped).
        invalid: boolean/0-1 mask of the same size (voxels never observed), or None.
        table: class table with a learning map (default SemanticKITTI).
        dims: volume shape.

    Returns:
        (X, Y, Z) uint8 training ids, 255 = ignore.

    Raises:
        ValueError: wrong sizes or raw ids outside the learning map.
    """
    table = table or semantic_kitti()
    n = int(np.prod(dims))
    raw = np.asarray(raw_labels)
    if raw.size != n:
        raise ValueError(f"raw_labels has {raw.size} values, expected {n} for dims {tuple(dims)}")
    target = table.to_training_ids(raw.reshape(dims))
    if invalid is not None:
        inv = np.asarray(invalid)
        if inv.size != n:
            raise ValueError(f"invalid mask has {inv.size} values, expected {n} for dims {tuple(dims)}")
        target = target.copy()
        target[inv.reshape(dims).astype(bool)] = IGNORE
    return target


def downsample_labels(labels: np.ndarray, factor: int = 2, empty_ratio: float = 0.95) -> np.ndarray:
    """Downsample a label volume by ``factor`` per axis with the LMSCNet rule (vectorised).

    Args:
        labels: (X, Y, Z) integer labels in 0..255 (0 = empty, 255 = ignore); dims divisible by factor.
        factor: block edge (2 for the ``_1_2`` files).
        empty_ratio: fraction of the block above which it counts as empty/ignored (0.95).

    Returns:
        (X/f, Y/f, Z/f) uint8.

    Raises:
        ValueError: not 3-D, dims not divisible, or labels outside 0..255.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be a 3-D volume, got shape {lab.shape}")
    f = int(factor)
    if f < 1 or any(d % f for d in lab.shape):
        raise ValueError(f"volume {lab.shape} is not divisible by factor {factor}")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise ValueError("labels must be in 0..255")
    if f == 1:
        return lab.astype(np.uint8)
    x, y, z = (d // f for d in lab.shape)
    blocks = lab.astype(np.int16).reshape(x, f, y, f, z, f).transpose(0, 2, 4, 1, 3, 5).reshape(-1, f ** 3)

    n_empty = (blocks == EMPTY).sum(axis=1)
    n_ignore = (blocks == IGNORE).sum(axis=1)
    mostly_free = (n_empty + n_ignore) > empty_ratio * f ** 3

    out = np.where(n_empty > n_ignore, EMPTY, IGNORE).astype(np.uint8)
    rows = np.nonzero(~mostly_free)[0]
    if rows.size:
        sub = blocks[rows]
        valid = (sub > EMPTY) & (sub < IGNORE)
        counts = np.zeros(sub.shape, dtype=np.int32)
        for j in range(sub.shape[1]):  # f³ passes; each counts the equals of column j among valid labels
            counts[:, j] = ((sub == sub[:, j:j + 1]) & valid).sum(axis=1)
        counts[~valid] = -1
        # most frequent, ties -> smallest label: maximise count * 256 - label
        score = counts.astype(np.int64) * 256 - sub
        score[~valid] = np.iinfo(np.int64).min
        best = sub[np.arange(len(rows)), score.argmax(axis=1)]
        out[rows] = best.astype(np.uint8)
    return out.reshape(x, y, z)


def make_targets(
    raw_labels: np.ndarray,
    invalid: Optional[np.ndarray] = None,
    table: Optional[ClassTable] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """The ``_1_1`` (256, 256, 32) and ``_1_2`` (128, 128, 16) uint8 targets of one frame."""
    target = ssc_target_from_raw(raw_labels, invalid, table)
    return target, downsample_labels(target, 2)
