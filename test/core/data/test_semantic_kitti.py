"""SemanticKITTI dataset over a tiny fake sequence written with our own writers."""
import numpy as np
import pytest
import torch

from l2cocc_ros.core import preprocess as cam
from l2cocc_ros.core.data.depth_target import lidar_depth_map
from l2cocc_ros.core.data import kitti_io, labels
from l2cocc_ros.core.data.semantic_kitti import SemanticKITTIDataset, modalities_for_variant, read_rgb
from l2cocc_ros.core.stereo import SGBMStereo

from fake_kitti import BASELINE, DISPARITY, FX, TR, projections, write_fake_sequence

INPUT = (32, 128)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("sk")
    info = write_fake_sequence(root, "08", n_frames=2)
    # preprocessed labels and stereo depth for one path of the tests
    for fid, raw, inv in zip(info["frame_ids"], info["raw"], info["invalid"]):
        t11, t12 = labels.make_targets(raw, inv)
        kitti_io.write_npy(root / "labels" / "08" / f"{fid}_1_1.npy", t11)
        kitti_io.write_npy(root / "labels" / "08" / f"{fid}_1_2.npy", t12)
        kitti_io.write_npy(root / "depth" / "sequences" / "08" / f"{fid}.npy", np.full((40, 124), 9.0, np.float32))
    info["root"] = root
    return info


def test_camera_sample_from_preprocessed_files(fake):
    root = fake["root"]
    ds = SemanticKITTIDataset(root, [8], modalities="camera", labels_root=root / "labels",
                              stereo_root=root / "depth", input_size=INPUT)
    assert len(ds) == 2 and ds.frames == [("08", "000000"), ("08", "000005")]
    s = ds[1]
    x = s["inputs"]
    assert x["img"].shape == (1, 3, *INPUT) and x["img"].dtype == torch.float32
    assert x["rot"].shape == (1, 3, 3) and x["tran"].shape == (1, 3) and x["intrin"].shape == (1, 4, 4)
    assert x["post_rot"].shape == (1, 3, 3) and x["post_tran"].shape == (1, 3) and x["bda"].shape == (4, 4)
    assert x["stereo_depth"].shape == (1, *INPUT) and "points" not in x
    np.testing.assert_allclose(x["stereo_depth"].numpy(), 9.0, atol=1e-4)
    np.testing.assert_allclose(x["rot"][0].numpy(), np.linalg.inv(TR)[:3, :3], atol=1e-6)
    np.testing.assert_allclose(x["intrin"][0, :3].numpy(), projections((40, 124))[0], rtol=1e-6)
    t11, t12 = labels.make_targets(fake["raw"][1], fake["invalid"][1])
    assert s["target"].dtype == torch.int64 and s["target"].shape == (256, 256, 32)
    np.testing.assert_array_equal(s["target"].numpy(), t11)
    np.testing.assert_array_equal(s["target_1_2"].numpy(), t12)
    assert s["meta"] == {"sequence": "08", "frame_id": "000005", "has_target": True}
    # LiDAR depth GT: equals the camera module's projection of the scan
    scan = kitti_io.read_velodyne(root / "sequences/08/velodyne/000005.bin")
    rc = cam.ResizeCrop.from_sizes((40, 124), INPUT)
    geom = cam.camera_geometry(projections((40, 124))[0], rc, T_velo_to_cam=TR)
    np.testing.assert_array_equal(s["lidar_depth"][0].numpy(), lidar_depth_map(scan, geom))
    assert (s["lidar_depth"] > 0).sum() > 10


def test_lidar_and_both_with_raw_voxel_targets(fake):
    root = fake["root"]
    ds = SemanticKITTIDataset(root, ["08"], modalities=modalities_for_variant("l"))
    s = ds[0]
    assert set(s["inputs"]) == {"points"} and "lidar_depth" not in s
    scan = kitti_io.read_velodyne(root / "sequences/08/velodyne/000000.bin")
    np.testing.assert_array_equal(s["inputs"]["points"].numpy(), scan)
    t11, _ = labels.make_targets(fake["raw"][0], fake["invalid"][0])
    np.testing.assert_array_equal(s["target"].numpy(), t11)
    both = SemanticKITTIDataset(root, ["08"], modalities="both", stereo_backend=SGBMStereo(num_disparities=16),
                                input_size=INPUT)
    sb = both[0]
    assert {"img", "points", "stereo_depth"} <= set(sb["inputs"])
    # on-the-fly SGBM: constant disparity -> depth f*b/d on the valid pixels
    d = sb["inputs"]["stereo_depth"].numpy()
    truth = FX * BASELINE / DISPARITY
    valid = d > 0
    assert valid.mean() > 0.3
    assert np.median(np.abs(d[valid] - truth) / truth) < 0.05


def test_color_jitter_changes_only_the_image(fake):
    root = fake["root"]
    kw = dict(modalities="camera", labels_root=root / "labels", stereo_root=root / "depth", input_size=INPUT)
    plain, jit = SemanticKITTIDataset(root, ["08"], **kw), SemanticKITTIDataset(root, ["08"], color_jitter=(0.4, 0.4, 0.4), **kw)
    torch.manual_seed(0)
    a, b = plain[0], jit[0]
    assert not torch.allclose(a["inputs"]["img"], b["inputs"]["img"])
    torch.testing.assert_close(a["inputs"]["stereo_depth"], b["inputs"]["stereo_depth"])


def test_missing_files_are_all_reported(fake, tmp_path):
    root = fake["root"]
    with pytest.raises(FileNotFoundError) as err:
        SemanticKITTIDataset(root, ["08"], modalities="camera", labels_root=tmp_path / "nolabels",
                             stereo_root=tmp_path / "nodepth", input_size=INPUT)
    msg = str(err.value)
    assert "6 dataset file(s) missing" in msg
    for name in ("nolabels/08/000000_1_1.npy", "nolabels/08/000005_1_2.npy", "nodepth/sequences/08/000005.npy"):
        assert name in msg
    with pytest.raises(FileNotFoundError, match="sequences/09/voxels"):
        SemanticKITTIDataset(root, ["08", "09"], modalities="lidar")
    with pytest.raises(ValueError, match="stereo_root or stereo_backend"):
        SemanticKITTIDataset(root, ["08"], modalities="camera")
    with pytest.raises(ValueError, match="modalities"):
        SemanticKITTIDataset(root, ["08"], modalities="radar")
    # hidden-test style: no labels and require_labels=False -> all-ignore target
    ds = SemanticKITTIDataset(root, ["08"], modalities="lidar", labels_root=tmp_path / "nolabels", require_labels=False)
    s = ds[0]
    assert not s["meta"]["has_target"] and (s["target"] == 255).all()


def test_corrupt_files_name_the_file(fake, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        read_rgb(bad)
    with pytest.raises(FileNotFoundError, match="none.png"):
        read_rgb(tmp_path / "none.png")


def test_sample_collates_to_the_model_layout(fake):
    from l2cocc_ros.core.training.data import collate_single

    root = fake["root"]
    ds = SemanticKITTIDataset(root, ["08"], modalities="both", labels_root=root / "labels",
                              stereo_root=root / "depth", input_size=INPUT)
    batch = collate_single([ds[0]])
    x = batch["inputs"]
    assert x["img"].shape == (1, 1, 3, *INPUT) and x["rot"].shape == (1, 1, 3, 3) and x["bda"].shape == (1, 4, 4)
    assert x["stereo_depth"].shape == (1, 1, *INPUT) and x["points"].shape[1] == 4
    assert batch["target"].shape == (1, 256, 256, 32) and batch["lidar_depth"].shape == (1, 1, *INPUT)


def test_reads_the_synthetic_generator_with_consistent_depths(tmp_path):
    """Synth output -> our reader: SGBM depth and projected LiDAR depth agree where both exist."""
    synth = pytest.importorskip("l2cocc_ros.core.data.synth")
    cfg = synth.SynthConfig(width=620, height=188, lidar_azimuth_steps=512, accumulate_offsets=())
    synth.write_sequence(tmp_path, "08", frames=1, seed=1, config=cfg)
    ds = SemanticKITTIDataset(tmp_path, ["08"], modalities="both", stereo_backend=SGBMStereo(num_disparities=64),
                              input_size=(192, 640))
    s = ds[0]
    d, ld = s["inputs"]["stereo_depth"][0].numpy(), s["lidar_depth"][0].numpy()
    both = (d > 0) & (ld > 0) & (ld < 30)
    assert both.sum() > 300
    rel = np.abs(d[both] - ld[both]) / ld[both]
    assert np.median(rel) < 0.05 and np.mean(rel < 0.1) > 0.7
    t = s["target"].numpy()
    assert t.shape == (256, 256, 32) and (t == 255).any() and len(np.unique(t[(t > 0) & (t < 255)])) >= 5
