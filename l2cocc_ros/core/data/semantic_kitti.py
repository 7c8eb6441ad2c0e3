"""SemanticKITTI scene-completion dataset (docs/model.md §7.1, §7.3).

Layout read::

    ROOT/sequences/<seq>/voxels/<id>.bin           frame ids (every 5th frame as stored), glob only
    ROOT/sequences/<seq>/voxels/<id>.label/.invalid raw GT (used when no labels root is given)
    ROOT/sequences/<seq>/image_2/<id>.png          left RGB      (camera)
    ROOT/sequences/<seq>/image_3/<id>.png          right RGB     (only for on-the-fly stereo)
    ROOT/sequences/<seq>/velodyne/<id>.bin         LiDAR scan    (lidar; camera for the depth-loss GT)
    ROOT/sequences/<seq>/calib.txt                 P2, P3, Tr
    LABELS/<seq>/<id>_1_1.npy, <id>_1_2.npy        preprocessed GT (``l2cocc preprocess labels``)
    STEREO/sequences/<seq>/<id>.npy                stereo depth (``l2cocc preprocess stereo``)

A sample is the dict consumed by ``core/training/data.collate_single``: ``inputs`` (the model input dict
of docs/interfaces.md without the batch axis: ``img`` (1, 3, H, W), ``rot`` (1, 3, 3), ``tran`` (1, 3),
``intrin`` (1, 4, 4), ``post_rot`` (1, 3, 3), ``post_tran`` (1, 3), ``bda`` (4, 4), ``stereo_depth``
(1, H, W); ``points`` (P, 4) for LiDAR), ``target`` (256, 256, 32) long, ``target_1_2`` (128, 128, 16)
long, ``lidar_depth`` (1, H, W) and ``meta`` (sequence, frame_id, has_target).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..classes import IGNORE, ClassTable, semantic_kitti
from ..frame import baseline_from_projections
from ..grid import SEMANTIC_KITTI_GRID
from ..preprocess import build_camera_inputs
from ..stereo import StereoBackend
from . import kitti_io, labels
from .augment import jitter_transform
from .depth_target import lidar_depth_map

__all__ = ["MODALITIES", "modalities_for_variant", "read_rgb", "SSCDatasetBase", "SemanticKITTIDataset"]

logger = logging.getLogger(__name__)

MODALITIES = ("camera", "lidar", "both")
_MAX_LISTED = 20


def modalities_for_variant(variant: str) -> str:
    """The inputs a model variant needs: "c" -> "camera", "l" -> "lidar", "d" -> "both"."""
    try:
        return {"c": "camera", "l": "lidar", "d": "both"}[variant]
    except KeyError:
        raise ValueError(f"variant must be 'c', 'l' or 'd', got {variant!r}") from None


def read_rgb(path: Union[str, Path]) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable or corrupt image (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"image file {path} is corrupt or unreadable: {exc}") from None


class SSCDatasetBase(Dataset):
    """Shared logic of the scene-completion datasets; subclasses define the file layout.

    Args:
        sequences: sequence names.
        modalities: "camera", "lidar" or "both" (see :func:`modalities_for_variant`).
        labels_root: folder of ``<seq>/<id>_1_1.npy`` / ``_1_2.npy``.
        stereo_root: folder of ``sequences/<seq>/<id>.npy`` stereo depth maps.
        stereo_backend: compute stereo depth on the fly from the right image when no ``stereo_root``.
        input_size: network image (H, W).
        color_jitter: (brightness, contrast, saturation) for training, or None.
        lidar_depth: also build the LiDAR depth GT for the depth loss (camera modalities).
        require_labels: a frame without GT is an error; when False its target is all 255 and
            ``meta["has_target"]`` is False (hidden test sequences).
        resample: PIL resampling of image and depth ("bicubic" as the original).
        table: class table of the labels.
    """

    def __init__(
        self,
        sequences: Sequence[str],
        *,
        modalities: str = "camera",
        labels_root: Optional[Union[str, Path]] = None,
        stereo_root: Optional[Union[str, Path]] = None,
        stereo_backend: Optional[StereoBackend] = None,
        input_size: Tuple[int, int] = (384, 1280),
        color_jitter: Optional[Tuple[float, float, float]] = None,
        lidar_depth: bool = True,
        require_labels: bool = True,
        resample: str = "bicubic",
        table: Optional[ClassTable] = None,
    ) -> None:
        if modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {modalities!r}")
        if not sequences:
            raise ValueError("no sequences given")
        self.sequences = [str(s) for s in sequences]
        self.modalities = modalities
        self.use_camera = modalities in ("camera", "both")
        self.use_lidar = modalities in ("lidar", "both")
        self.labels_root = Path(labels_root) if labels_root is not None else None
        self.stereo_root = Path(stereo_root) if stereo_root is not None else None
        self.stereo_backend = stereo_backend
        if self.use_camera and self.stereo_root is None and stereo_backend is None:
            raise ValueError("camera input needs stereo depth: give stereo_root or stereo_backend")
        self.input_size = tuple(int(v) for v in input_size)
        if color_jitter is not None and len(tuple(color_jitter)) != 3:
            raise ValueError(f"color_jitter must be (brightness, contrast, saturation), got {color_jitter!r}")
        self.color_jitter = tuple(float(v) for v in color_jitter) if color_jitter is not None else None
        self.lidar_depth = bool(lidar_depth) and self.use_camera
        self.require_labels = bool(require_labels)
        self.resample = resample
        self.table = table or self.default_table()
        self.frames: List[Tuple[str, str]] = []
        missing_dirs = []
        for seq in self.sequences:
            try:
                self.frames += [(seq, fid) for fid in self.frame_ids(seq)]
            except FileNotFoundError as exc:
                missing_dirs.append(str(exc))
        if missing_dirs:
            raise FileNotFoundError("\n".join(missing_dirs))
        if not self.frames:
            raise ValueError(f"no frames found for sequences {self.sequences}")
        self._check_files()
        logger.info("%s: %d frames of sequences %s (%s)", type(self).__name__, len(self), self.sequences, modalities)

    # --------------------------------------------------------------------------------- layout hooks
    def default_table(self) -> ClassTable:
        raise NotImplementedError

    def frame_ids(self, seq: str) -> List[str]:
        raise NotImplementedError

    def paths(self, seq: str, fid: str) -> Dict[str, Path]:
        """Paths of one frame: left, right, velodyne, stereo, label_1_1, label_1_2, voxel_label, invalid."""
        raise NotImplementedError

    def preprocessed_paths(self, seq: str, fid: str) -> Dict[str, Path]:
        """Paths written by ``l2cocc preprocess`` (stereo depth, 1:1 and 1:2 labels) when those roots are set."""
        out: Dict[str, Path] = {}
        if self.stereo_root is not None:
            out["stereo"] = self.stereo_root / "sequences" / seq / f"{fid}.npy"
        if self.labels_root is not None:
            out["label_1_1"] = self.labels_root / seq / f"{fid}_1_1.npy"
            out["label_1_2"] = self.labels_root / seq / f"{fid}_1_2.npy"
        return out

    def calibration(self, seq: str) -> Dict[str, np.ndarray]:
        """4x4 ``P2``, ``P3`` and ``Tr`` (velodyne -> camera) of a sequence."""
        raise NotImplementedError

    def calibration_files(self, seq: str) -> List[Path]:
        return []

    # --------------------------------------------------------------------------------- checks
    def _label_paths(self, p: Dict[str, Path]) -> List[Path]:
        """The files that give this frame's targets (preprocessed .npy, else raw voxels/.label + .invalid)."""
        if self.labels_root is not None:
            return [p["label_1_1"], p["label_1_2"]]
        return [p["voxel_label"], p["invalid"]] if "voxel_label" in p else []

    def required_files(self, seq: str, fid: str) -> List[Path]:
        """Every file a sample of this frame reads."""
        p = self.paths(seq, fid)
        req: List[Path] = []
        if self.use_camera:
            req.append(p["left"])
            req.append(p["stereo"] if self.stereo_root is not None else p["right"])
        if self.use_lidar or self.lidar_depth:
            req.append(p["velodyne"])
        if self.require_labels:
            req += self._label_paths(p)
        return req

    def _check_files(self) -> None:
        missing: List[Path] = []
        if self.use_camera or self.lidar_depth:
            for seq in self.sequences:
                missing += [f for f in self.calibration_files(seq) if not f.is_file()]
        for seq, fid in self.frames:
            missing += [f for f in self.required_files(seq, fid) if not f.is_file()]
        if missing:
            listed = "\n  ".join(str(m) for m in missing[:_MAX_LISTED])
            more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
            raise FileNotFoundError(f"{len(missing)} dataset file(s) missing:\n  {listed}{more}")
        needs_calib = self.use_camera or self.lidar_depth
        self._calib = {seq: self.calibration(seq) for seq in self.sequences} if needs_calib else {}

    # --------------------------------------------------------------------------------- samples
    def __len__(self) -> int:
        return len(self.frames)

    def _targets(self, p: Dict[str, Path]) -> Tuple[np.ndarray, np.ndarray, bool]:
        dims = SEMANTIC_KITTI_GRID.dims
        half = tuple(d // 2 for d in dims)
        files = self._label_paths(p)
        if not files or not all(f.is_file() for f in files):
            if self.require_labels:
                raise FileNotFoundError(f"label files missing: {[str(f) for f in files if not f.is_file()]}")
            return np.full(dims, IGNORE, np.uint8), np.full(half, IGNORE, np.uint8), False
        if self.labels_root is not None:
            t11 = kitti_io.read_label_npy(p["label_1_1"], dims)
            t12 = kitti_io.read_label_npy(p["label_1_2"], half)
            for name, t in (("label_1_1", t11), ("label_1_2", t12)):
                bad = (t != IGNORE) & ((t < 0) | (t >= self.table.num_classes))
                if bad.any():
                    raise ValueError(f"{p[name]} holds labels outside 0..{self.table.num_classes - 1} / 255")
            return t11.astype(np.uint8), t12.astype(np.uint8), True
        raw = kitti_io.read_voxel_labels(p["voxel_label"], dims)
        invalid = kitti_io.read_voxel_bits(p["invalid"], dims)
        t11, t12 = labels.make_targets(raw, invalid, self.table)
        return t11, t12, True

    def _stereo_depth(self, p: Dict[str, Path], rgb: np.ndarray, calib: Dict[str, np.ndarray]) -> np.ndarray:
        if self.stereo_root is not None:
            depth = kitti_io.read_label_npy(p["stereo"])
            if depth.shape != rgb.shape[:2]:
                raise ValueError(f"stereo depth {p['stereo']} is {depth.shape}, but the image is {rgb.shape[:2]}")
            return depth.astype(np.float32)
        right = read_rgb(p["right"])
        if right.shape != rgb.shape:
            raise ValueError(f"right image {p['right']} is {right.shape}, left is {rgb.shape}")
        focal = float(calib["P2"][0, 0])
        return self.stereo_backend.compute(rgb, right, focal, baseline_from_projections(calib["P2"], calib["P3"]))

    def __getitem__(self, index: int) -> Dict[str, object]:
        seq, fid = self.frames[index]
        p = self.paths(seq, fid)
        inputs: Dict[str, torch.Tensor] = {}
        sample: Dict[str, object] = {}
        scan = kitti_io.read_velodyne(p["velodyne"]) if (self.use_lidar or self.lidar_depth) else None
        if self.use_camera:
            calib = self._calib[seq]
            rgb = read_rgb(p["left"])
            depth = self._stereo_depth(p, rgb, calib)
            jitter = None if self.color_jitter is None else jitter_transform(*self.color_jitter)
            cam_inputs, geom = build_camera_inputs(
                rgb, calib["P2"], self.input_size, stereo_depth=depth, T_velo_to_cam=calib["Tr"],
                resample=self.resample, image_transform=jitter)
            inputs.update({k: v[0] for k, v in cam_inputs.items()})  # drop the batch axis
            if self.lidar_depth:
                sample["lidar_depth"] = torch.from_numpy(lidar_depth_map(scan, geom))[None]
        if self.use_lidar:
            inputs["points"] = torch.from_numpy(scan.copy())
        t11, t12, has = self._targets(p)
        sample.update({
            "inputs": inputs,
            "target": torch.from_numpy(t11.astype(np.int64)),
            "target_1_2": torch.from_numpy(t12.astype(np.int64)),
            "meta": {"sequence": seq, "frame_id": fid, "has_target": has},
        })
        return sample


class SemanticKITTIDataset(SSCDatasetBase):
    """SemanticKITTI (``ROOT/sequences/<seq>/...``); see the module docstring for the layout.

    Args:
        root: dataset root (the folder holding ``sequences/``).
        sequences: e.g. ``["08"]``; plain numbers are zero-padded to two digits.
        **kwargs: see :class:`SSCDatasetBase`.
    """

    def __init__(self, root: Union[str, Path], sequences: Sequence[Union[str, int]], **kwargs) -> None:
        self.root = Path(root)
        seqs = [f"{int(s):02d}" if str(s).isdigit() else str(s) for s in sequences]
        super().__init__(seqs, **kwargs)

    def default_table(self) -> ClassTable:
        return semantic_kitti()

    def seq_dir(self, seq: str) -> Path:
        return self.root / "sequences" / seq

    def frame_ids(self, seq: str) -> List[str]:
        vox = self.seq_dir(seq) / "voxels"
        if not vox.is_dir():
            raise FileNotFoundError(f"voxels folder not found (frame ids are listed from it): {vox}")
        return sorted(f.stem for f in vox.glob("*.bin"))

    def paths(self, seq: str, fid: str) -> Dict[str, Path]:
        d = self.seq_dir(seq)
        out = {
            "left": d / "image_2" / f"{fid}.png",
            "right": d / "image_3" / f"{fid}.png",
            "velodyne": d / "velodyne" / f"{fid}.bin",
            "voxel_label": d / "voxels" / f"{fid}.label",
            "invalid": d / "voxels" / f"{fid}.invalid",
        }
        return {**out, **self.preprocessed_paths(seq, fid)}

    def calibration_files(self, seq: str) -> List[Path]:
        return [self.seq_dir(seq) / "calib.txt"]

    def calibration(self, seq: str) -> Dict[str, np.ndarray]:
        need = ("P2", "P3", "Tr") if self.stereo_root is None and self.use_camera else ("P2", "Tr")
        return kitti_io.read_calib(self.seq_dir(seq) / "calib.txt", required=need)
