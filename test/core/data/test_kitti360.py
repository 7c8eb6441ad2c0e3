"""SSCBench-KITTI-360 dataset: layout, fixed calibration, top padding of 1408x376 images."""
import numpy as np
import pytest
import torch
from PIL import Image

from l2cocc_ros.core import preprocess as cam
from l2cocc_ros.core.data import kitti_io
from l2cocc_ros.core.data.kitti360 import KITTI360Dataset, kitti360_calibration
from l2cocc_ros.core.frame import baseline_from_projections

SEQ = "2013_05_28_drive_0009_sync"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("k360")
    rng = np.random.default_rng(0)
    d2 = root / "data_2d_raw" / SEQ
    for fid in ("000000", "000005"):
        kitti_io.write_voxel_bits(d2 / "voxels" / f"{fid}.bin", np.zeros((256, 256, 32), bool))
        (d2 / "image_00" / "data_rect").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((376, 1408, 3), 180, np.uint8)).save(d2 / "image_00" / "data_rect" / f"{fid}.png")
        pts = np.c_[rng.uniform(3, 40, 300), rng.uniform(-8, 8, 300), rng.uniform(-1.5, 1, 300), np.zeros(300)]
        kitti_io.write_velodyne(root / "data_3d_raw" / SEQ / "velodyne_points" / "data" / f"{fid}.bin", pts)
        t11 = rng.integers(0, 19, size=(256, 256, 32)).astype(np.uint8)
        t11[:10] = 255
        kitti_io.write_npy(root / "labels" / SEQ / f"{fid}_1_1.npy", t11)
        kitti_io.write_npy(root / "labels" / SEQ / f"{fid}_1_2.npy", t11[::2, ::2, ::2].copy())
        kitti_io.write_npy(root / "depth" / "sequences" / SEQ / f"{fid}.npy", np.full((376, 1408), 20.0, np.float32))
    return root


def test_fixed_calibration():
    c = kitti360_calibration()
    assert baseline_from_projections(c["P2"], c["P3"]) == pytest.approx(328.318735 / 552.554261)
    assert 0.59 < baseline_from_projections(c["P2"], c["P3"]) < 0.6
    # a point 10 m straight ahead of the camera lies ~10 m ahead of the velodyne (x forward)
    x_velo = np.linalg.inv(c["Tr"]) @ np.array([0.0, 0.0, 10.0, 1.0])
    assert 10.0 < x_velo[0] < 11.5


def test_sample_pads_top_rows(root):
    ds = KITTI360Dataset(root, [SEQ], labels_root=root / "labels", stereo_root=root / "depth", modalities="both")
    assert len(ds) == 2
    s = ds[0]
    x = s["inputs"]
    assert x["img"].shape == (1, 3, 384, 1408) and x["stereo_depth"].shape == (1, 384, 1408)
    np.testing.assert_allclose(x["post_tran"][0].numpy(), [0.0, 8.0, 0.0])
    np.testing.assert_allclose(x["post_rot"][0].numpy(), np.eye(3))
    black = torch.tensor([-m / sd for m, sd in zip(cam.IMAGENET_MEAN, cam.IMAGENET_STD)]).view(3, 1, 1)
    torch.testing.assert_close(x["img"][0, :, :8], black.expand(3, 8, 1408))
    assert (x["stereo_depth"][0, :8] == 0).all() and torch.allclose(x["stereo_depth"][0, 8:], torch.tensor(20.0))
    np.testing.assert_allclose(x["rot"][0].numpy(), kitti360_calibration()["Tr"][:3, :3].T, atol=1e-6)
    assert x["points"].shape == (300, 4) and s["lidar_depth"].shape == (1, 384, 1408)
    assert s["target"].shape == (256, 256, 32) and (s["target"][:10] == 255).all()
    assert s["target"][10:].max() <= 18


def test_errors(root, tmp_path):
    with pytest.raises(ValueError, match="labels_root"):
        KITTI360Dataset(root, [SEQ], stereo_root=root / "depth")
    with pytest.raises(FileNotFoundError, match="2 dataset file"):
        KITTI360Dataset(root, [SEQ], labels_root=root / "labels", stereo_root=tmp_path, modalities="camera")
    bad = tmp_path / "labels" / SEQ
    kitti_io.write_npy(bad / "000000_1_1.npy", np.full((256, 256, 32), 19, np.uint8))
    kitti_io.write_npy(bad / "000000_1_2.npy", np.zeros((128, 128, 16), np.uint8))
    kitti_io.write_npy(bad / "000005_1_1.npy", np.zeros((256, 256, 32), np.uint8))
    kitti_io.write_npy(bad / "000005_1_2.npy", np.zeros((128, 128, 16), np.uint8))
    ds = KITTI360Dataset(root, [SEQ], labels_root=tmp_path / "labels", modalities="lidar")
    with pytest.raises(ValueError, match="000000_1_1.npy holds labels outside 0..18"):
        ds[0]
