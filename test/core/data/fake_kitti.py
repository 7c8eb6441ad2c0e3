"""Test helper (not a test module): write a tiny SemanticKITTI-layout sequence with kitti_io.

Images are small (default 40x124) with a textured left image and a right image shifted by a constant
disparity, so that stereo matching has a known answer; voxel GT is random over a few raw ids.
"""
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from l2cocc_ros.core.data import kitti_io

RAW_IDS = np.array([0, 0, 0, 0, 0, 10, 40, 44, 48, 50, 70, 72, 81, 52, 1], dtype=np.uint16)
TR = np.array([[4.276802e-04, -9.999672e-01, -8.084491e-03, -1.198459e-02],
               [-7.210626e-03, 8.081198e-03, -9.999413e-01, -5.403984e-02],
               [9.999738e-01, 4.859485e-04, -7.206933e-03, -2.921968e-01],
               [0.0, 0.0, 0.0, 1.0]])
FX, BASELINE, DISPARITY = 72.0, 0.54, 8.0


def projections(image_hw):
    h, w = image_hw
    p2 = np.array([[FX, 0.0, w / 2, 4.5], [0.0, FX, h / 2, 0.0], [0.0, 0.0, 1.0, 0.0]])
    p3 = p2.copy()
    p3[0, 3] = p2[0, 3] - FX * BASELINE
    return p2, p3


def texture(h, w, rng):
    noise = rng.integers(0, 256, size=(h, w, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 1.0)
    return ((tex - tex.min()) / (np.ptp(tex) + 1e-6) * 255).astype(np.uint8)


def write_fake_sequence(root, seq="08", n_frames=2, image_hw=(40, 124), seed=0, stride=5):
    """Write ``n_frames`` frames (ids 0, stride, 2*stride, ...) under ``root/sequences/seq``.

    Returns:
        dict with ``frame_ids`` and per-frame ``raw`` labels / ``invalid`` masks (flat).
    """
    rng = np.random.default_rng(seed)
    d = Path(root) / "sequences" / seq
    h, w = image_hw
    p2, p3 = projections(image_hw)
    kitti_io.write_calib(d / "calib.txt", {"P0": p2, "P1": p2, "P2": p2, "P3": p3, "Tr": TR})
    n_all = (n_frames - 1) * stride + 1
    poses = np.tile(np.eye(4), (n_all, 1, 1))
    poses[:, 2, 3] = np.arange(n_all) * 0.8
    kitti_io.write_poses(d / "poses.txt", poses)
    kitti_io.write_times(d / "times.txt", np.arange(n_all) * 0.1)
    out = {"frame_ids": [], "raw": [], "invalid": []}
    for i in range(n_frames):
        fid = f"{i * stride:06d}"
        left = texture(h, w, rng)
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        right = cv2.remap(left, xs + DISPARITY, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for cam, img in (("image_2", left), ("image_3", right)):
            (d / cam).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / cam / f"{fid}.png")
        pts = np.c_[rng.uniform(3, 40, 500), rng.uniform(-10, 10, 500), rng.uniform(-1.5, 1, 500),
                    rng.uniform(0, 1, 500)].astype(np.float32)
        kitti_io.write_velodyne(d / "velodyne" / f"{fid}.bin", pts)
        raw = RAW_IDS[rng.integers(0, len(RAW_IDS), size=256 * 256 * 32)]
        invalid = rng.random(256 * 256 * 32) < 0.2
        kitti_io.write_voxel_labels(d / "voxels" / f"{fid}.label", raw)
        kitti_io.write_voxel_bits(d / "voxels" / f"{fid}.invalid", invalid)
        kitti_io.write_voxel_bits(d / "voxels" / f"{fid}.bin", raw > 0)
        kitti_io.write_voxel_bits(d / "voxels" / f"{fid}.occluded", rng.random(256 * 256 * 32) < 0.1)
        out["frame_ids"].append(fid)
        out["raw"].append(raw)
        out["invalid"].append(invalid)
    return out
