"""Tests of the synthetic SemanticKITTI generator (core.data.synth): layout, readers, geometry, determinism."""
from __future__ import annotations

import filecmp
from pathlib import Path

import cv2
import numpy as np
import pytest

from l2cocc_ros.core.classes import semantic_kitti
from l2cocc_ros.core.data import kitti_io
from l2cocc_ros.core.data.synth import SynthConfig, SynthSequence, kitti_calibration, write_sequence
from l2cocc_ros.core.grid import SEMANTIC_KITTI_GRID

SEED = 5
CFG = SynthConfig(width=320, height=96, lidar_azimuth_steps=512, accumulate_offsets=(10,))
N_VOX = 256 * 256 * 32


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return write_sequence(root, "08", frames=2, seed=SEED, config=CFG)


@pytest.fixture(scope="module")
def sequence() -> SynthSequence:
    return SynthSequence(SEED, SynthConfig(width=480, height=144, lidar_azimuth_steps=512, accumulate_offsets=()))


def _names(n):
    return [f"{i:06d}" for i in range(n)]


def test_layout_and_file_sizes(seq_dir):
    expected = {"calib.txt", "poses.txt", "times.txt", "image_2", "image_3", "velodyne", "labels", "voxels"}
    assert {p.name for p in seq_dir.iterdir()} == expected
    assert seq_dir.parent.name == "sequences" and seq_dir.name == "08"
    assert sorted(p.name for p in (seq_dir / "image_2").iterdir()) == [f"{n}.png" for n in _names(2)]
    assert sorted(p.name for p in (seq_dir / "image_3").iterdir()) == [f"{n}.png" for n in _names(2)]
    assert sorted(p.name for p in (seq_dir / "velodyne").iterdir()) == [f"{n}.bin" for n in _names(2)]
    assert sorted(p.name for p in (seq_dir / "labels").iterdir()) == [f"{n}.label" for n in _names(2)]
    assert sorted(p.name for p in (seq_dir / "voxels").iterdir()) == sorted(
        f"{n}{ext}" for n in _names(2) for ext in (".bin", ".label", ".invalid", ".occluded"))
    for n in _names(2):
        for ext in (".bin", ".invalid", ".occluded"):
            assert (seq_dir / "voxels" / f"{n}{ext}").stat().st_size == N_VOX // 8 == 262144
        assert (seq_dir / "voxels" / f"{n}.label").stat().st_size == N_VOX * 2
        n_bytes = (seq_dir / "velodyne" / f"{n}.bin").stat().st_size
        assert n_bytes % 16 == 0 and n_bytes // 16 > 10000
        assert (seq_dir / "labels" / f"{n}.label").stat().st_size == n_bytes // 4
        img = cv2.imread(str(seq_dir / "image_2" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
        assert img.shape == (96, 320, 3) and img.dtype == np.uint8


def test_kitti_io_reads_everything(seq_dir):
    calib = kitti_io.read_calib(seq_dir / "calib.txt", required=("P0", "P1", "P2", "P3", "Tr"))
    np.testing.assert_allclose(calib["P2"][:3], kitti_calibration(320, 96)["P2"], rtol=1e-9, atol=1e-9)
    fx = calib["P2"][0, 0]
    assert (calib["P2"][0, 3] - calib["P3"][0, 3]) / fx == pytest.approx(0.54)
    assert 0.0 < calib["P2"][0, 3] / fx < 0.1  # colour camera slightly left of cam0, as KITTI
    # Tr: cam z = velo x, cam x = -velo y, cam y = -velo z
    np.testing.assert_allclose(calib["Tr"][:3, :3], [[0, -1, 0], [0, 0, -1], [1, 0, 0]], atol=1e-12)
    poses = kitti_io.read_poses(seq_dir / "poses.txt")
    assert poses.shape == (2, 4, 4)
    np.testing.assert_array_equal(poses[0], np.eye(4))
    assert 0.4 < poses[1][2, 3] < 1.0  # the car moves forward (cam z) at 6-9 m/s
    np.testing.assert_allclose(kitti_io.read_times(seq_dir / "times.txt"), [0.0, 0.1])
    table = semantic_kitti()
    for n in _names(2):
        pts = kitti_io.read_velodyne(seq_dir / "velodyne" / f"{n}.bin")
        lab = kitti_io.read_point_labels(seq_dir / "labels" / f"{n}.label", num_points=len(pts))
        assert np.all(table.to_training_ids(lab) != 255)
        assert 0.0 <= pts[:, 3].min() and pts[:, 3].max() <= 1.0
        vox = kitti_io.read_voxel_labels(seq_dir / "voxels" / f"{n}.label")
        train = table.to_training_ids(vox)  # every raw id is in the learning map
        assert np.all(train != 255)
        for ext in (".bin", ".invalid", ".occluded"):
            assert kitti_io.read_voxel_bits(seq_dir / "voxels" / f"{n}{ext}").shape == (256, 256, 32)


def test_semantic_kitti_api_reads_the_output(seq_dir):
    from auxiliary.laserscan import SemLaserScan
    from auxiliary.SSCDataset import SSCDataset

    data = SSCDataset(str(seq_dir.parent.parent), split="valid")  # the official split reads sequence 08
    assert len(data) == 2
    (seq, name), coll = data[1]
    assert (seq, name) == ("08", "000001")
    np.testing.assert_array_equal(coll["label"], kitti_io.read_voxel_labels(seq_dir / "voxels" / "000001.label"))
    for key, ext in (("input", ".bin"), ("invalid", ".invalid"), ("occluded", ".occluded")):
        ours = kitti_io.read_voxel_bits(seq_dir / "voxels" / f"000001{ext}")
        np.testing.assert_array_equal(coll[key].astype(bool), ours)
    colors = {int(k): [128, 128, 128] for k in semantic_kitti().raw_names}
    scan = SemLaserScan(colors, project=True, H=64, W=512, fov_up=2.0, fov_down=-24.8)
    scan.open_scan(str(seq_dir / "velodyne" / "000001.bin"))
    scan.open_label(str(seq_dir / "labels" / "000001.label"))
    scan.colorize()
    pts = kitti_io.read_velodyne(seq_dir / "velodyne" / "000001.bin")
    np.testing.assert_array_equal(scan.points, pts[:, :3])
    np.testing.assert_array_equal(scan.sem_label, kitti_io.read_point_labels(seq_dir / "labels" / "000001.label"))
    assert (scan.proj_range > 0).mean() > 0.5  # the projected range image is mostly filled


def test_project_dataset_reads_the_output(seq_dir):
    from l2cocc_ros.core.data.semantic_kitti import SemanticKITTIDataset
    from l2cocc_ros.core.stereo import SGBMStereo

    ds = SemanticKITTIDataset(seq_dir.parent.parent, ["08"], modalities="both", stereo_backend=SGBMStereo(),
                              input_size=(96, 320))
    assert len(ds) == 2
    sample = ds[1]
    assert sample["meta"]["frame_id"] == "000001" and sample["meta"]["has_target"]
    target = sample["target"].numpy()
    assert target.shape == (256, 256, 32)
    invalid = kitti_io.read_voxel_bits(seq_dir / "voxels" / "000001.invalid")
    np.testing.assert_array_equal(target == 255, invalid)  # every raw id maps to a class; only invalid is ignored
    assert len(np.unique(target[target != 255])) >= 8
    depth = sample["inputs"]["stereo_depth"].numpy()
    assert (depth > 0).mean() > 0.3  # SGBM through the project's backend finds the texture


def test_deterministic_and_independent_of_start(seq_dir, tmp_path):
    again = write_sequence(tmp_path / "b", "08", frames=1, seed=SEED, start=1, config=CFG)
    for rel in ("calib.txt", "poses.txt", "times.txt", "image_2/000001.png", "image_3/000001.png",
                "velodyne/000001.bin", "labels/000001.label", "voxels/000001.bin", "voxels/000001.label",
                "voxels/000001.invalid", "voxels/000001.occluded"):
        assert filecmp.cmp(seq_dir / rel, again / rel, shallow=False), rel
    assert not (again / "image_2" / "000000.png").exists()
    other = write_sequence(tmp_path / "c", "08", frames=1, seed=SEED + 1, start=1, config=CFG)
    assert not filecmp.cmp(seq_dir / "image_2/000001.png", other / "image_2/000001.png", shallow=False)
    assert not filecmp.cmp(seq_dir / "voxels/000001.label", other / "voxels/000001.label", shallow=False)


def test_stereo_pair_gives_rendered_disparity(sequence):
    f = sequence.frame(3, voxels=False)
    p2, p3 = sequence.calib["P2"], sequence.calib["P3"]
    fx = p2[0, 0]
    fb = p2[0, 3] - p3[0, 3]  # fx * baseline
    left = cv2.cvtColor(f.left, cv2.COLOR_RGB2GRAY)
    right = cv2.cvtColor(f.right, cv2.COLOR_RGB2GRAY)
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=96, blockSize=5, P1=8 * 25, P2=32 * 25,
                                 uniquenessRatio=10)
    disp = sgbm.compute(left, right).astype(np.float32) / 16.0
    truth = np.where(f.depth > 0, fb / np.maximum(f.depth, 1e-6), 0.0)
    m = (disp > 0) & (truth > 1.0) & (truth < 90)
    assert m.mean() > 0.5, "SGBM should find disparities on most textured pixels"
    rel = np.abs(disp[m] - truth[m]) / truth[m]
    assert np.median(rel) < 0.05
    assert (rel < 0.1).mean() > 0.75
    assert fb / fx == pytest.approx(0.54)


def test_lidar_projects_onto_rendered_depth(sequence):
    """LiDAR, Tr and P2 agree with the image: projected points land where the rendered depth matches."""
    f = sequence.frame(3, voxels=False)
    p = sequence.calib["P2"] @ np.vstack([sequence.calib["Tr"], [0, 0, 0, 1]])
    xyz1 = np.hstack([f.points[:, :3].astype(np.float64), np.ones((len(f.points), 1))])
    c = xyz1 @ p.T
    z = c[:, 2]
    front = z > 1.0
    u = np.rint(c[front, 0] / z[front]).astype(int)
    v = np.rint(c[front, 1] / z[front]).astype(int)
    h, w = f.depth.shape
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    assert ok.sum() > 2000
    rendered = f.depth[v[ok], u[ok]]
    rel = np.abs(rendered - z[front][ok]) / z[front][ok]
    assert np.median(rel) < 0.02
    assert (rel < 0.1).mean() > 0.8


def test_voxels_agree_with_the_scan(seq_dir):
    grid = SEMANTIC_KITTI_GRID
    for n in _names(2):
        pts = kitti_io.read_velodyne(seq_dir / "velodyne" / f"{n}.bin")
        plab = kitti_io.read_point_labels(seq_dir / "labels" / f"{n}.label")
        vox = kitti_io.read_voxel_labels(seq_dir / "voxels" / f"{n}.label")
        occ = kitti_io.read_voxel_bits(seq_dir / "voxels" / f"{n}.bin")
        invalid = kitti_io.read_voxel_bits(seq_dir / "voxels" / f"{n}.invalid")
        occluded = kitti_io.read_voxel_bits(seq_dir / "voxels" / f"{n}.occluded")
        idx, inside = grid.index_of(pts)
        assert inside.sum() > 5000
        at = vox[tuple(idx[inside].T)]
        assert (at > 0).mean() > 0.97, "LiDAR points must land in labelled voxels"
        assert (at == plab[inside]).mean() > 0.9, "and mostly carry the same class"
        expect = np.zeros(grid.dims, dtype=bool)
        expect[tuple(idx[inside].T)] = True
        np.testing.assert_array_equal(occ, expect)  # input occupancy = voxelised scan
        assert not (occ & invalid).any() and not (occ & occluded).any()
        assert not (invalid & ~occluded).any()  # never observed implies not observed now
        assert 0.2 < invalid.mean() < 0.85
        assert invalid[:, :, 0].mean() > 0.95  # the layer below the ground is never seen
        assert not invalid[25:60, 118:138, 4:10].any()  # free space 5-12 m ahead, below the sensor, is observed
        assert (vox[:, :, 6:16][invalid[:, :, 6:16] == 0] == 0).mean() > 0.5


def test_poses_register_consecutive_scans(seq_dir):
    """poses.txt (cam0) and Tr move frame 1's static LiDAR points onto frame 0's labelled voxels."""
    tr = kitti_io.read_calib(seq_dir / "calib.txt")["Tr"]
    poses = kitti_io.read_poses(seq_dir / "poses.txt")
    v0_from_v1 = np.linalg.inv(tr) @ np.linalg.inv(poses[0]) @ poses[1] @ tr
    assert 0.4 < v0_from_v1[0, 3] < 1.0  # the car moved forward along velodyne x
    pts = kitti_io.read_velodyne(seq_dir / "velodyne" / "000001.bin").astype(np.float64)
    raw = kitti_io.read_point_labels(seq_dir / "labels" / "000001.label")
    ground = np.isin(raw, [40, 44, 48, 49, 72])  # flat classes line up under any motion along the road
    static = (raw < 252) & ~ground  # SemanticKITTI's moving-* ids start at 252
    xyz = pts[static, :3] @ v0_from_v1[:3, :3].T + v0_from_v1[:3, 3]
    vox0 = kitti_io.read_voxel_labels(seq_dir / "voxels" / "000000.label")
    idx, inside = SEMANTIC_KITTI_GRID.index_of(xyz)
    hit = vox0[tuple(idx[inside].T)]
    assert inside.sum() > 2000
    assert (hit > 0).mean() > 0.95
    # without the motion, far fewer points would line up (the check is not trivially true)
    idx_raw, inside_raw = SEMANTIC_KITTI_GRID.index_of(pts[static, :3])
    assert (vox0[tuple(idx_raw[inside_raw].T)] > 0).mean() < (hit > 0).mean() - 0.15


def test_class_diversity(seq_dir):
    table = semantic_kitti()
    train = table.to_training_ids(kitti_io.read_voxel_labels(seq_dir / "voxels" / "000000.label"))
    present = {table.names[i] for i in np.unique(train) if i}
    assert {"road", "sidewalk", "car"} <= present
    assert len(present) >= 8, present
    pts_lab = table.to_training_ids(kitti_io.read_point_labels(seq_dir / "labels" / "000000.label"))
    assert len(np.unique(pts_lab)) >= 6


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="sequence"):
        write_sequence(tmp_path, "8", frames=1, config=CFG)
    with pytest.raises(ValueError, match="frames"):
        write_sequence(tmp_path, "08", frames=0, config=CFG)
    with pytest.raises(ValueError, match="width"):
        SynthConfig(width=0)
    with pytest.raises(ValueError, match="seed"):
        SynthSequence(-1)
    with pytest.raises(ValueError, match="frame index"):
        SynthSequence(0, CFG).frame(-1)
