"""The label and stereo-depth files the datasets read (docs/model.md §3.5, §7), the library behind
``l2cocc preprocess`` and ``l2cocc synth-benchmark``.

* :func:`preprocess_labels` writes ``LABELS/<seq>/<id>_1_1.npy`` (256x256x32 uint8, 255 = ignore) and
  ``<id>_1_2.npy`` (128x128x16, LMSCNet rule) from ``sequences/<seq>/voxels/<id>.label`` + ``.invalid``;
  :func:`preprocess_kitti360_labels` reads SSCBench's ``<seq>/<id>_1_1.npy`` instead and adds the missing ``_1_2``.
* :func:`preprocess_stereo` writes ``DEPTH/sequences/<seq>/<id>.npy`` (float32 metres at the original image
  size, 0 = invalid) from the rectified pair and the calibration with a stereo backend.

Both are resumable: a frame whose outputs already exist and load with the right shape is skipped, and
every file is written to a temporary name and renamed, so a killed run leaves no partial file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from l2cocc_ros.core.classes import kitti360, semantic_kitti
from l2cocc_ros.core.data import kitti_io, labels

__all__ = ["PreprocessSummary", "list_sequences", "preprocess_labels", "preprocess_kitti360_labels",
           "preprocess_stereo"]

logger = logging.getLogger(__name__)

DIMS = (256, 256, 32)
HALF = (128, 128, 16)


@dataclass
class PreprocessSummary:
    """Frames written and frames skipped because their outputs were already complete."""

    written: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)


def _complete(path: Path, shape: Optional[Sequence[int]] = None) -> bool:
    if not path.is_file():
        return False
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return shape is None or tuple(arr.shape) == tuple(shape)
    except (ValueError, OSError, EOFError):
        logger.warning("recomputing incomplete output %s", path)
        return False


def _seq_root(dataset: Path, seq: str, kitti360_layout: bool) -> Path:
    return dataset / "data_2d_raw" / seq if kitti360_layout else dataset / "sequences" / seq


def list_sequences(dataset: Path, kitti360_layout: bool = False) -> List[str]:
    """Sequences of a dataset root that have a ``voxels`` folder."""
    base = dataset / ("data_2d_raw" if kitti360_layout else "sequences")
    if not base.is_dir():
        raise FileNotFoundError(f"no {base.name} folder in {dataset}")
    return sorted(d.name for d in base.iterdir() if (d / "voxels").is_dir())


def _voxel_frames(dataset: Path, seq: str, kitti360_layout: bool = False) -> List[str]:
    vox = _seq_root(dataset, seq, kitti360_layout) / "voxels"
    if not vox.is_dir():
        raise FileNotFoundError(f"voxels folder not found: {vox}")
    return sorted(f.stem for f in vox.glob("*.bin"))


def _run(frames: List[tuple], work: Callable[[str, str], bool], desc: str, progress: bool) -> PreprocessSummary:
    summary = PreprocessSummary()
    for seq, fid in tqdm(frames, desc=desc, unit="frame", disable=not progress, dynamic_ncols=True):
        (summary.written if work(seq, fid) else summary.skipped).append(f"{seq}/{fid}")
    return summary


def preprocess_labels(dataset: Path, out: Path, sequences: Optional[Sequence[str]] = None, *,
                      overwrite: bool = False, progress: bool = True) -> PreprocessSummary:
    """SemanticKITTI ``voxels/<id>.label`` + ``.invalid`` -> ``out/<seq>/<id>_1_1.npy`` and ``_1_2.npy``.

    Frames without a ``.label`` file (hidden test sequences) are skipped with a log line.

    Raises:
        FileNotFoundError / ValueError: missing voxels folder, or a corrupt label/invalid file (named).
    """
    dataset, out = Path(dataset), Path(out)
    table = semantic_kitti()
    frames = []
    for seq in sequences or list_sequences(dataset):
        ids = _voxel_frames(dataset, seq)
        with_gt = [f for f in ids if (dataset / "sequences" / seq / "voxels" / f"{f}.label").is_file()]
        if len(with_gt) < len(ids):
            logger.info("sequence %s: %d of %d frames have no .label (no GT), skipped",
                        seq, len(ids) - len(with_gt), len(ids))
        frames += [(seq, f) for f in with_gt]

    def work(seq: str, fid: str) -> bool:
        p11, p12 = out / seq / f"{fid}_1_1.npy", out / seq / f"{fid}_1_2.npy"
        if not overwrite and _complete(p11, DIMS) and _complete(p12, HALF):
            return False
        vox = dataset / "sequences" / seq / "voxels"
        raw = kitti_io.read_voxel_labels(vox / f"{fid}.label", DIMS)
        invalid = kitti_io.read_voxel_bits(vox / f"{fid}.invalid", DIMS)
        t11, t12 = labels.make_targets(raw, invalid, table)
        kitti_io.write_npy(p11, t11)
        kitti_io.write_npy(p12, t12)
        return True

    return _run(frames, work, "labels", progress)


def preprocess_kitti360_labels(labels_in: Path, out: Path, sequences: Optional[Sequence[str]] = None, *,
                               overwrite: bool = False, progress: bool = True) -> PreprocessSummary:
    """SSCBench ``labels_in/<seq>/<id>_1_1.npy`` -> ``out/<seq>/<id>_1_1.npy`` (uint8) and ``_1_2.npy``."""
    labels_in, out = Path(labels_in), Path(out)
    if not labels_in.is_dir():
        raise FileNotFoundError(f"SSCBench labels folder not found: {labels_in}")
    seqs = sequences or sorted(d.name for d in labels_in.iterdir() if d.is_dir())
    frames = []
    for seq in seqs:
        if not (labels_in / seq).is_dir():
            raise FileNotFoundError(f"SSCBench labels of sequence {seq} not found: {labels_in / seq}")
        frames += [(seq, f.name[: -len("_1_1.npy")]) for f in sorted((labels_in / seq).glob("*_1_1.npy"))]
    n_cls = kitti360().num_classes

    def work(seq: str, fid: str) -> bool:
        p11, p12 = out / seq / f"{fid}_1_1.npy", out / seq / f"{fid}_1_2.npy"
        if not overwrite and _complete(p11, DIMS) and _complete(p12, HALF):
            return False
        src = labels_in / seq / f"{fid}_1_1.npy"
        t11 = kitti_io.read_label_npy(src, DIMS)
        if ((t11 != 255) & ((t11 < 0) | (t11 >= n_cls))).any():
            raise ValueError(f"{src} holds labels outside 0..{n_cls - 1} / 255")
        t11 = t11.astype(np.uint8)
        kitti_io.write_npy(p11, t11)
        kitti_io.write_npy(p12, labels.downsample_labels(t11, 2))
        return True

    return _run(frames, work, "labels", progress)


def preprocess_stereo(dataset: Path, out: Path, sequences: Optional[Sequence[str]] = None, *, backend=None,
                      kitti360_layout: bool = False, all_frames: bool = False, focal_baseline: Optional[float] = None,
                      overwrite: bool = False, progress: bool = True) -> PreprocessSummary:
    """Stereo depth maps ``out/sequences/<seq>/<id>.npy`` for every frame with voxels (or every image).

    Args:
        dataset: SemanticKITTI root (``sequences/``) or KITTI-360 root (``data_2d_raw/``).
        out: output root.
        sequences: default: every sequence with a voxels folder.
        backend: a :class:`~l2cocc_ros.core.stereo.StereoBackend` (default SGBM with its defaults).
        kitti360_layout: read the SSCBench-KITTI-360 layout with its fixed calibration.
        all_frames: every left image instead of the voxel frames.
        focal_baseline: use this f·b [px·m] instead of the calibration's (the original's MobileStereoNet
            maps used 388.1823 for SK 00-02 and 13-21, 389.6304 for 03, 381.8293 for 04-12, 331.532557 for
            KITTI-360; docs/model.md §3.5).
        overwrite: recompute existing outputs.
        progress: show a progress bar.
    """
    from l2cocc_ros.core.data.kitti360 import kitti360_calibration
    from l2cocc_ros.core.data.semantic_kitti import read_rgb
    from l2cocc_ros.core.frame import baseline_from_projections
    from l2cocc_ros.core.stereo import get_stereo_backend

    dataset, out = Path(dataset), Path(out)
    backend = backend or get_stereo_backend("sgbm")
    left_dir, right_dir = (("image_00/data_rect", "image_01/data_rect") if kitti360_layout else ("image_2", "image_3"))
    frames, rigs = [], {}
    for seq in sequences or list_sequences(dataset, kitti360_layout):
        root = _seq_root(dataset, seq, kitti360_layout)
        if all_frames:
            ids = sorted(f.stem for f in (root / left_dir).glob("*.png"))
        else:
            ids = _voxel_frames(dataset, seq, kitti360_layout)
        calib = kitti360_calibration() if kitti360_layout else kitti_io.read_calib(root / "calib.txt", ("P2", "P3"))
        if focal_baseline is not None:
            if not focal_baseline > 0:
                raise ValueError(f"focal_baseline must be > 0, got {focal_baseline}")
            rigs[seq] = (float(focal_baseline), 1.0)
        else:
            rigs[seq] = (float(calib["P2"][0, 0]), baseline_from_projections(calib["P2"], calib["P3"]))
        frames += [(seq, f) for f in ids]
        logger.info("sequence %s: %d frames, f = %.3f px, b = %.4f m", seq, len(ids), *rigs[seq])

    def work(seq: str, fid: str) -> bool:
        target = out / "sequences" / seq / f"{fid}.npy"
        if not overwrite and _complete(target):
            return False
        root = _seq_root(dataset, seq, kitti360_layout)
        left = read_rgb(root / left_dir / f"{fid}.png")
        right = read_rgb(root / right_dir / f"{fid}.png")
        depth = backend.compute(left, right, *rigs[seq])
        kitti_io.write_npy(target, depth.astype(np.float32))
        return True

    return _run(frames, work, f"stereo ({backend.name})", progress)
