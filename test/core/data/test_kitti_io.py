"""Round-trip and corruption tests of the SemanticKITTI file readers/writers."""
import numpy as np
import pytest

from l2cocc_ros.core.data import kitti_io as kio

DIMS = (4, 4, 2)  # 32 voxels -> 4 bytes


def test_bits_match_hand_made_bytes(tmp_path):
    mask = np.zeros(32, dtype=bool)
    mask[0] = True     # MSB of byte 0 -> 0x80
    mask[7] = True     # LSB of byte 0 -> 0x01
    mask[9] = True     # byte 1, second bit -> 0x40
    mask[24:32] = True  # byte 3 -> 0xFF
    path = kio.write_voxel_bits(tmp_path / "a.invalid", mask.reshape(DIMS))
    assert path.read_bytes() == bytes([0x81, 0x40, 0x00, 0xFF])
    back = kio.read_voxel_bits(path, DIMS)
    assert back.shape == DIMS and back.dtype == bool
    np.testing.assert_array_equal(back.reshape(-1), mask)
    # hand-made bytes read the other way: 0b10100000 -> voxels 0 and 2 (z fastest: (0,0,0), (0,1,0))
    (tmp_path / "b.bin").write_bytes(bytes([0b10100000, 0, 0, 0]))
    vox = kio.read_voxel_bits(tmp_path / "b.bin", DIMS)
    assert vox[0, 0, 0] and not vox[0, 0, 1] and vox[0, 1, 0] and vox.sum() == 2


def test_bits_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.invalid"):
        kio.read_voxel_bits(tmp_path / "nope.invalid", DIMS)
    (tmp_path / "short.occluded").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="short.occluded.*truncated"):
        kio.read_voxel_bits(tmp_path / "short.occluded", DIMS)
    (tmp_path / "long.bin").write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="long.bin.*wrong size"):
        kio.read_voxel_bits(tmp_path / "long.bin", DIMS)
    with pytest.raises(ValueError, match="multiple of 8"):
        kio.pack_bits(np.ones(7, dtype=bool))


def test_full_size_voxel_files(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.random(kio.VOXEL_DIMS) < 0.3
    kio.write_voxel_bits(tmp_path / "000000.invalid", mask)
    assert (tmp_path / "000000.invalid").stat().st_size == 262144
    np.testing.assert_array_equal(kio.read_voxel_bits(tmp_path / "000000.invalid"), mask)
    labels = rng.integers(0, 260, size=kio.VOXEL_DIMS).astype(np.uint16)
    kio.write_voxel_labels(tmp_path / "000000.label", labels)
    assert (tmp_path / "000000.label").stat().st_size == 2 * 256 * 256 * 32
    back = kio.read_voxel_labels(tmp_path / "000000.label")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)


def test_voxel_labels_little_endian_and_errors(tmp_path):
    (tmp_path / "x.label").write_bytes(np.array([1, 258] + [0] * 30, dtype="<u2").tobytes())
    lab = kio.read_voxel_labels(tmp_path / "x.label", DIMS)
    assert lab[0, 0, 0] == 1 and lab[0, 0, 1] == 258
    (tmp_path / "y.label").write_bytes(b"\x00" * 63)
    with pytest.raises(ValueError, match="y.label"):
        kio.read_voxel_labels(tmp_path / "y.label", DIMS)
    with pytest.raises(ValueError):
        kio.write_voxel_labels(tmp_path / "z.label", np.array([70000]))


def test_point_labels_and_velodyne(tmp_path):
    pts = np.array([[1.5, -2.0, 0.25, 0.5], [10.0, 3.0, -1.0, 0.0]], dtype=np.float32)
    kio.write_velodyne(tmp_path / "000001.bin", pts)
    assert (tmp_path / "000001.bin").read_bytes() == pts.astype("<f4").tobytes()
    np.testing.assert_array_equal(kio.read_velodyne(tmp_path / "000001.bin"), pts)
    lab = np.array([40 | (3 << 16), 10], dtype=np.uint32)
    kio.write_point_labels(tmp_path / "000001.label", lab)
    np.testing.assert_array_equal(kio.read_point_labels(tmp_path / "000001.label", num_points=2), lab)
    with pytest.raises(ValueError, match="000001.label"):
        kio.read_point_labels(tmp_path / "000001.label", num_points=3)
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="bad.bin.*truncated"):
        kio.read_velodyne(tmp_path / "bad.bin")
    with pytest.raises(ValueError):
        kio.write_velodyne(tmp_path / "c.bin", np.zeros((3, 3)))


def test_calib_roundtrip_and_empty_line(tmp_path):
    p2 = np.array([[718.856, 0, 607.1928, 45.38225], [0, 718.856, 185.2157, -0.1130887], [0, 0, 1, 0.003779761]])
    tr = np.eye(4)
    tr[:3, 3] = (-0.004, -0.076, -0.27)
    kio.write_calib(tmp_path / "calib.txt", {"P0": p2, "P1": p2, "P2": p2, "P3": p2, "Tr": tr})
    cal = kio.read_calib(tmp_path / "calib.txt", required=("P2", "P3", "Tr"))
    assert set(cal) == {"P0", "P1", "P2", "P3", "Tr"}
    np.testing.assert_allclose(cal["P2"][:3], p2)
    np.testing.assert_array_equal(cal["P2"][3], [0, 0, 0, 1])
    np.testing.assert_allclose(cal["Tr"], tr)
    # parsing stops at the first empty line: the garbage after it is never read
    text = "P2: " + " ".join(map(str, p2.reshape(-1))) + "\nTr: " + " ".join(map(str, tr[:3].reshape(-1)))
    (tmp_path / "c2.txt").write_text(text + "\n\nthis is not: a matrix\n")
    assert set(kio.read_calib(tmp_path / "c2.txt")) == {"P2", "Tr"}
    (tmp_path / "c3.txt").write_text("P2: 1 2 3\n")
    with pytest.raises(ValueError, match="c3.txt.*P2 has 3 values"):
        kio.read_calib(tmp_path / "c3.txt")
    (tmp_path / "c4.txt").write_text("P2: " + " ".join(["1"] * 12) + "\n")
    with pytest.raises(ValueError, match="c4.txt lacks Tr"):
        kio.read_calib(tmp_path / "c4.txt")
    with pytest.raises(FileNotFoundError, match="missing_calib.txt"):
        kio.read_calib(tmp_path / "missing_calib.txt")


def test_poses_times_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, :] = rng.normal(size=(3, 3, 4))
    kio.write_poses(tmp_path / "poses.txt", poses)
    np.testing.assert_allclose(kio.read_poses(tmp_path / "poses.txt"), poses, rtol=1e-11)
    times = np.array([0.0, 0.103736, 0.207342])
    kio.write_times(tmp_path / "times.txt", times)
    np.testing.assert_allclose(kio.read_times(tmp_path / "times.txt"), times)
    (tmp_path / "p.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="p.txt, line 1"):
        kio.read_poses(tmp_path / "p.txt")
    (tmp_path / "t.txt").write_text("0.1\nabc\n")
    with pytest.raises(ValueError, match="t.txt, line 2"):
        kio.read_times(tmp_path / "t.txt")


def test_npy_roundtrip_and_corruption(tmp_path):
    arr = np.random.default_rng(2).integers(0, 20, size=(8, 8, 4)).astype(np.uint8)
    path = kio.write_npy(tmp_path / "000000_1_1.npy", arr)
    assert path.name == "000000_1_1.npy"
    np.testing.assert_array_equal(kio.read_label_npy(path, shape=(8, 8, 4)), arr)
    with pytest.raises(ValueError, match="000000_1_1.npy has shape"):
        kio.read_label_npy(path, shape=(8, 8, 8))
    data = path.read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) - 10])
    with pytest.raises(ValueError, match="cut.npy"):
        kio.read_label_npy(tmp_path / "cut.npy")
    # no temp files left behind by the atomic writers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000_1_1.npy", "cut.npy"]


def test_voxel_files_read_by_semantic_kitti_api(tmp_path):
    """The PyPI semantic-kitti-api's own SSC reader sees exactly what we wrote."""
    api = pytest.importorskip("auxiliary.SSCDataset")
    rng = np.random.default_rng(3)
    vox = tmp_path / "sequences" / "08" / "voxels"
    data = {
        "input": rng.random(kio.VOXEL_DIMS) < 0.1,
        "invalid": rng.random(kio.VOXEL_DIMS) < 0.2,
        "occluded": rng.random(kio.VOXEL_DIMS) < 0.3,
        "label": rng.integers(0, 260, size=kio.VOXEL_DIMS).astype(np.uint16),
    }
    kio.write_voxel_bits(vox / "000000.bin", data["input"])
    kio.write_voxel_bits(vox / "000000.invalid", data["invalid"])
    kio.write_voxel_bits(vox / "000000.occluded", data["occluded"])
    kio.write_voxel_labels(vox / "000000.label", data["label"])
    (name, got) = api.SSCDataset(str(tmp_path), split="valid")[0]
    assert name == ("08", "000000")
    for key, want in data.items():
        np.testing.assert_array_equal(got[key], want.astype(got[key].dtype), err_msg=key)
