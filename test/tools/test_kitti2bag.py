"""kitti2bag: a KITTI-layout sequence -> rosbag2 -> read back: topics, counts, stamps, frames, baseline, TF."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from l2cocc_ros.core.data import kitti_io
from l2cocc_ros.core.transforms import invert_transform, make_transform
from l2cocc_ros.core.data.bag_layout import BagNames
from l2cocc_ros.tools.kitti2bag import convert_sequence, main, stereo_rig
from l2cocc_ros.tools.replay import open_bag

P2 = np.array([[718.856, 0, 607.1928, 45.38225], [0, 718.856, 185.2157, -0.1130887], [0, 0, 1, 0.003779761]])
P3 = np.array([[718.856, 0, 607.1928, -337.2877], [0, 718.856, 185.2157, 2.369057], [0, 0, 1, 0.004915215]])
TR = np.array([[4.276802385584e-04, -9.999672484946e-01, -8.084491683471e-03, -1.198459927713e-02],
               [-7.210626507497e-03, 8.081198471645e-03, -9.999413164504e-01, -5.403984729748e-02],
               [9.999738645903e-01, 4.859485810390e-04, -7.206933692422e-03, -2.921968648686e-01]])


def make_sequence(root: Path, n: int = 3, h: int = 40, w: int = 64) -> Path:
    seq = root / "sequences" / "08"
    for sub in ("image_2", "image_3", "velodyne"):
        (seq / sub).mkdir(parents=True)
    kitti_io.write_calib(seq / "calib.txt", {"P0": P2, "P1": P2, "P2": P2, "P3": P3, "Tr": TR})
    kitti_io.write_times(seq / "times.txt", 0.1 * np.arange(n))
    poses = np.stack([make_transform((0, 0, 1.5 * i), (0, 0, 0, 1)) for i in range(n)])
    kitti_io.write_poses(seq / "poses.txt", poses)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(seq / "image_2" / f"{i:06d}.png"), img)
        cv2.imwrite(str(seq / "image_3" / f"{i:06d}.png"), img[:, ::-1])
        kitti_io.write_velodyne(seq / "velodyne" / f"{i:06d}.bin", rng.normal(size=(100 + i, 4)).astype(np.float32))
    return root


def read_bag(path: Path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    out = {}
    with Reader(path) as reader:
        for c, t, raw in reader.messages():
            out.setdefault(c.topic, []).append((t, store.deserialize_cdr(raw, c.msgtype), c))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_convert_and_read_back(tmp_path, storage):
    root = make_sequence(tmp_path / "ds")
    summary = convert_sequence(root, "08", tmp_path / "bag", storage=storage)
    msgs = read_bag(tmp_path / "bag")
    names = BagNames()
    assert {k: len(v) for k, v in msgs.items()} == {
        "/tf_static": 1, "/tf": 3, names.left_image: 3, names.right_image: 3, names.left_info: 3,
        names.right_info: 3, names.pointcloud: 3}
    assert summary.stamps_ns == [1_000_000_000, 1_100_000_000, 1_200_000_000]
    for topic in (names.left_image, names.left_info, names.pointcloud, "/tf"):
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec if topic != "/tf"
                  else m.transforms[0].header.stamp.sec * 10**9 + m.transforms[0].header.stamp.nanosec
                  for _, m, _ in msgs[topic]]
        assert stamps == summary.stamps_ns, topic
        assert [t for t, _, _ in msgs[topic]] == summary.stamps_ns
    left = msgs[names.left_image][1][1]
    img = cv2.cvtColor(cv2.imread(str(root / "sequences/08/image_2/000001.png")), cv2.COLOR_BGR2RGB)
    assert left.encoding == "rgb8" and left.header.frame_id == names.left_frame
    assert np.array_equal(np.asarray(left.data).reshape(img.shape), img)
    info_l, info_r = msgs[names.left_info][0][1], msgs[names.right_info][0][1]
    assert info_r.header.frame_id == names.right_frame
    fx = info_l.p[0]
    baseline = (info_l.p[3] - info_r.p[3]) / fx
    k_inv = np.linalg.inv(P2[:3, :3])  # camera centres: X_cam = X_cam0 + K^-1 P[:, 3]
    expected_b = float((k_inv @ P2[:, 3] - k_inv @ P3[:, 3])[0])
    assert baseline == pytest.approx(expected_b, rel=1e-9) and 0.5 < baseline < 0.6
    assert info_l.p[3] == 0.0 and np.allclose(np.reshape(info_l.k, (3, 3)), P2[:3, :3])
    cloud = msgs[names.pointcloud][2][1]
    pts = np.frombuffer(bytes(cloud.data), "<f4").reshape(-1, 4)
    assert np.array_equal(pts, kitti_io.read_velodyne(root / "sequences/08/velodyne/000002.bin"))
    # static transforms: velodyne -> cam0 equals inv(Tr); the QoS is latched
    static = {(t.header.frame_id, t.child_frame_id): t.transform for t in msgs["/tf_static"][0][1].transforms}
    tf = static[(names.velodyne_frame, names.cam0_frame)]
    mat = make_transform((tf.translation.x, tf.translation.y, tf.translation.z),
                         (tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w))
    assert np.allclose(mat, invert_transform(np.vstack([TR, [0, 0, 0, 1]])), atol=1e-9)
    assert (names.base_frame, names.velodyne_frame) in static
    qos = msgs["/tf_static"][0][2].ext.offered_qos_profiles
    assert qos and qos[0].durability.name == "TRANSIENT_LOCAL"


def test_stereo_rig_puts_right_camera_right():
    rig = stereo_rig(np.vstack([P2, [0, 0, 0, 1]]), np.vstack([P3, [0, 0, 0, 1]]))
    assert rig["T_cam0_right"][0, 3] > rig["T_cam0_left"][0, 3]
    assert rig["P_right"][0, 3] == pytest.approx(-P2[0, 0] * rig["baseline"])


def test_errors_name_the_problem(tmp_path, capsys):
    root = make_sequence(tmp_path / "ds")
    (root / "sequences/08/image_3/000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="000001.png"):
        convert_sequence(root, "08", tmp_path / "bag1")
    assert main(["-d", str(root), "-s", "09", "-o", str(tmp_path / "bag2")]) == 2  # missing input: usage
    assert "sequences/09" in capsys.readouterr().err
    assert main(["-d", str(root), "-s", "08", "-o", str(tmp_path / "bag3"), "-f", "0"]) == 0
    assert main(["-d", str(root), "-s", "08", "-o", str(tmp_path / "bag3"), "-f", "0"]) == 2  # output exists
    assert "already exists" in capsys.readouterr().err


def test_a_failed_conversion_leaves_nothing_and_a_rerun_works(tmp_path, capsys):
    root = make_sequence(tmp_path / "ds")
    png = root / "sequences/08/image_3/000001.png"
    good = png.read_bytes()
    png.write_bytes(good[: len(good) // 2])  # truncated PNG on frame 1
    out = tmp_path / "bags" / "bag"
    assert main(["-d", str(root), "-s", "08", "-o", str(out)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "000001.png" in err[0]
    assert not out.exists() and list((tmp_path / "bags").iterdir()) == []  # no partial bag, no temp dir
    png.write_bytes(good)
    assert main(["-d", str(root), "-s", "08", "-o", str(out)]) == 0
    reader = open_bag(out)
    try:
        assert sum(1 for _ in reader.messages()) > 0 and sorted(p.name for p in out.iterdir()) == ["bag.mcap", "metadata.yaml"]
    finally:
        reader.close()
