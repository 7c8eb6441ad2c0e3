"""Scene-completion predictions and ground truth in the official SemanticKITTI layout (file I/O shared by
``l2cocc eval``, ``l2cocc score`` and the demo).

Predictions: ``OUT/sequences/<seq>/predictions/<id>.label``, uint16 raw ids (the semantic-kitti-api's
layout); ground truth: ``ROOT/sequences/<seq>/voxels/<id>.label`` + ``.invalid``, as its evaluator reads them.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from l2cocc_ros.core.classes import ClassTable, semantic_kitti
from l2cocc_ros.core.data import kitti_io
from l2cocc_ros.core.data.labels import ssc_target_from_raw
from l2cocc_ros.core.grid import SEMANTIC_KITTI_GRID

__all__ = ["DIMS", "prediction_path", "gt_frames", "load_ground_truth", "write_prediction", "read_prediction"]

#: voxels of a prediction / ground-truth volume (the grid spec's)
DIMS = SEMANTIC_KITTI_GRID.dims


def prediction_path(out: Path, sequence: str, frame: int) -> Path:
    """Where the official layout keeps the prediction of a frame: ``out/sequences/<seq>/predictions/<id>.label``."""
    return Path(out) / "sequences" / sequence / "predictions" / f"{int(frame):06d}.label"


def _seq(s: str) -> str:
    return f"{int(s):02d}" if str(s).isdigit() else str(s)


def gt_frames(dataset: Path, sequences: Sequence[str]) -> List[Tuple[str, str]]:
    """(sequence, frame id) of every ``voxels/*.label`` ground-truth file of the sequences.

    Raises:
        FileNotFoundError: a sequence without a voxels folder (all such folders named).
    """
    frames, missing = [], []
    for seq in (_seq(s) for s in sequences):
        vox = Path(dataset) / "sequences" / seq / "voxels"
        if not vox.is_dir():
            missing.append(str(vox))
            continue
        frames += [(seq, f.stem) for f in sorted(vox.glob("*.label"))]
    if missing:
        raise FileNotFoundError("ground-truth folder(s) not found: " + ", ".join(missing))
    return frames


def load_ground_truth(dataset: Path, seq: str, fid: str, table: Optional[ClassTable] = None) -> np.ndarray:
    """Official-evaluator GT of a frame: (256, 256, 32) uint8 training ids, 255 = ignored (incl. invalid)."""
    vox = Path(dataset) / "sequences" / seq / "voxels"
    raw = kitti_io.read_voxel_labels(vox / f"{fid}.label", DIMS)
    invalid = kitti_io.read_voxel_bits(vox / f"{fid}.invalid", DIMS)
    return ssc_target_from_raw(raw, invalid, table or semantic_kitti())


def write_prediction(out: Path, seq: str, fid: str, pred: np.ndarray, table: Optional[ClassTable] = None) -> Path:
    """Write a (256, 256, 32) training-id prediction as ``out/sequences/<seq>/predictions/<id>.label``.

    Values are uint16 raw ids through the inverse learning map (SemanticKITTI); for a table without one
    (KITTI-360) the training ids are written as uint16 unchanged.

    Raises:
        ValueError: wrong size or ids outside the table.
    """
    table = table or semantic_kitti()
    p = np.asarray(pred)
    if p.size != int(np.prod(DIMS)):
        raise ValueError(f"prediction has {p.size} voxels, expected {int(np.prod(DIMS))}")
    if p.size and (p.min() < 0 or p.max() >= table.num_classes):
        raise ValueError(f"prediction ids must be in 0..{table.num_classes - 1}")
    raw = table.to_raw_ids(p) if table.learning_map_inv is not None else p.astype(np.uint16)
    return kitti_io.write_voxel_labels(prediction_path(Path(out), seq, int(fid)), raw)


def read_prediction(path: Path, table: Optional[ClassTable] = None) -> np.ndarray:
    """Read an official-layout prediction file back to (256, 256, 32) training ids (uint8; 255 = unmapped)."""
    table = table or semantic_kitti()
    raw = kitti_io.read_voxel_labels(path, DIMS)
    if table.learning_map is None:
        return raw.astype(np.uint8)
    return table.to_training_ids(raw)
