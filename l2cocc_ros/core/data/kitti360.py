"""SSCBench-KITTI-360 scene-completion dataset (docs/model.md §2.5, §7.2).

Layout read::

    ROOT/data_2d_raw/<seq>/voxels/<id>.bin                 frame ids (glob only)
    ROOT/data_2d_raw/<seq>/image_00/data_rect/<id>.png     left image, 1408x376
    ROOT/data_2d_raw/<seq>/image_01/data_rect/<id>.png     right image (only for on-the-fly stereo)
    ROOT/data_3d_raw/<seq>/velodyne_points/data/<id>.bin   LiDAR (from the original KITTI-360 release)
    LABELS/<seq>/<id>_1_1.npy, <id>_1_2.npy                19-class GT, 255 = invalid
    STEREO/sequences/<seq>/<id>.npy                        stereo depth

SSCBench ships ``_1_1`` (and ``_1_8``) but not ``_1_2``; ``l2cocc preprocess labels --kitti360`` makes
it with the LMSCNet rule. The calibration is fixed (not read from files), as in the original.
Samples have the same keys as :class:`~l2cocc_ros.core.data.semantic_kitti.SemanticKITTIDataset`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np

from ..classes import ClassTable, kitti360
from .semantic_kitti import SSCDatasetBase

__all__ = ["KITTI360_P2", "KITTI360_P3", "KITTI360_CAM0_TO_VELO", "KITTI360_INPUT_SIZE", "kitti360_calibration",
           "KITTI360Dataset"]

KITTI360_P2 = np.array([[552.554261, 0.0, 682.049453, 0.0],
                        [0.0, 552.554261, 238.769549, 0.0],
                        [0.0, 0.0, 1.0, 0.0],
                        [0.0, 0.0, 0.0, 1.0]])
KITTI360_P3 = KITTI360_P2.copy()
KITTI360_P3[0, 3] = -328.318735
KITTI360_CAM0_TO_VELO = np.array([[0.04307104361, -0.08829286498, 0.995162929, 0.8043914418],
                                  [-0.999004371, 0.007784614041, 0.04392796942, 0.2993489574],
                                  [-0.01162548558, -0.9960641394, -0.08786966659, -0.1770225824],
                                  [0.0, 0.0, 0.0, 1.0]])
KITTI360_INPUT_SIZE = (384, 1408)


def kitti360_calibration() -> Dict[str, np.ndarray]:
    """The fixed SSCBench-KITTI-360 calibration: 4x4 ``P2``, ``P3`` and ``Tr`` (velodyne -> camera)."""
    return {"P2": KITTI360_P2.copy(), "P3": KITTI360_P3.copy(), "Tr": np.linalg.inv(KITTI360_CAM0_TO_VELO)}


class KITTI360Dataset(SSCDatasetBase):
    """SSCBench-KITTI-360 (see the module docstring for the layout).

    Args:
        root: dataset root holding ``data_2d_raw`` (and ``data_3d_raw`` for LiDAR).
        sequences: e.g. ``["2013_05_28_drive_0009_sync"]``.
        labels_root: folder of ``<seq>/<id>_1_1.npy`` / ``_1_2.npy`` (required unless
            ``require_labels=False``).
        input_size: network image size, (384, 1408) as the original.
        **kwargs: see :class:`~l2cocc_ros.core.data.semantic_kitti.SSCDatasetBase`.
    """

    def __init__(self, root: Union[str, Path], sequences: Sequence[str], *, labels_root=None,
                 input_size=KITTI360_INPUT_SIZE, **kwargs) -> None:
        self.root = Path(root)
        if labels_root is None and kwargs.get("require_labels", True):
            raise ValueError("KITTI-360 targets come from preprocessed labels: give labels_root "
                             "(or require_labels=False)")
        super().__init__(sequences, labels_root=labels_root, input_size=input_size, **kwargs)

    def default_table(self) -> ClassTable:
        return kitti360()

    def frame_ids(self, seq: str) -> List[str]:
        vox = self.root / "data_2d_raw" / seq / "voxels"
        if not vox.is_dir():
            raise FileNotFoundError(f"voxels folder not found (frame ids are listed from it): {vox}")
        return sorted(f.stem for f in vox.glob("*.bin"))

    def paths(self, seq: str, fid: str) -> Dict[str, Path]:
        d2 = self.root / "data_2d_raw" / seq
        out = {
            "left": d2 / "image_00" / "data_rect" / f"{fid}.png",
            "right": d2 / "image_01" / "data_rect" / f"{fid}.png",
            "velodyne": self.root / "data_3d_raw" / seq / "velodyne_points" / "data" / f"{fid}.bin",
        }
        return {**out, **self.preprocessed_paths(seq, fid)}

    def calibration(self, seq: str) -> Dict[str, np.ndarray]:
        return kitti360_calibration()
