"""score: grids matched to frames by stamp, official metric over frames with GT, predictions written."""
import threading
import time

import numpy as np
import pytest

from l2cocc_ros.core.classes import semantic_kitti
from l2cocc_ros.core.data import kitti_io
from l2cocc_ros.core.data.labels import ssc_target_from_raw
from l2cocc_ros.core.grid import SEMANTIC_KITTI_GRID
from l2cocc_ros.core.metrics import SSCMetrics
from l2cocc_ros.core.data.bag_layout import frame_stamp_ns
from l2cocc_ros.core.data.predictions import prediction_path
from l2cocc_ros.tools.score import Scorer, cdr_header_stamp_ns, run_live

from test_kitti2bag import make_sequence  # noqa: E402  (same folder)

DIMS = SEMANTIC_KITTI_GRID.dims


def add_ground_truth(root, frames, seed=0):
    rng = np.random.default_rng(seed)
    table = semantic_kitti()
    raw_ids = table.learning_map_inv
    vox = root / "sequences/08/voxels"
    vox.mkdir(parents=True, exist_ok=True)
    for f in frames:
        raw = raw_ids[rng.integers(0, 20, DIMS)].astype(np.uint16)
        kitti_io.write_voxel_labels(vox / f"{f:06d}.label", raw)
        kitti_io.write_voxel_bits(vox / f"{f:06d}.invalid", rng.random(DIMS) < 0.1)


def random_prediction(seed):
    return np.random.default_rng(100 + seed).integers(0, 20, DIMS).astype(np.uint8)


def test_scorer_matches_direct_metric(tmp_path):
    root = make_sequence(tmp_path / "ds", n=4)
    add_ground_truth(root, [0, 2])  # frames 1 and 3 have no GT (as SemanticKITTI's every-5th voxels)
    scorer = Scorer(root, "08", tmp_path / "pred")
    stamps = frame_stamp_ns(kitti_io.read_times(root / "sequences/08/times.txt"))
    direct = SSCMetrics(20)
    table = semantic_kitti()
    for f in range(4):
        pred = random_prediction(f)
        scorer.image_arrived(int(stamps[f]), t=10.0 + f)
        score = scorer.add(pred, int(stamps[f]), t=10.25 + f)
        assert score.frame == f and score.latency_ms == pytest.approx(250.0)
        assert score.scored == (f in (0, 2))
        if score.scored:
            vox = root / "sequences/08/voxels"
            target = ssc_target_from_raw(kitti_io.read_voxel_labels(vox / f"{f:06d}.label"),
                                         kitti_io.read_voxel_bits(vox / f"{f:06d}.invalid"))
            direct.update(pred, target)
        written = kitti_io.read_voxel_labels(prediction_path(tmp_path / "pred", "08", f))
        assert np.array_equal(table.to_training_ids(written), pred)
    assert scorer.add(random_prediction(9), 123) is None and scorer.unmatched == 1
    s = scorer.summary()
    ref = direct.compute()
    assert s["frames"] == 4 and s["scored_frames"] == 2
    assert s["iou"] == pytest.approx(ref["iou"]) and s["miou"] == pytest.approx(ref["miou"])
    assert s["latency_ms_p50"] == pytest.approx(250.0)


def test_live_scoring_over_ros(tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from l2cocc_ros.msg import SemanticVoxelGrid
    from l2cocc_ros.ros.grid_msg import grid_to_msg
    from l2cocc_ros.ros.qos import OUTPUT_QOS, SENSOR_QOS

    root = make_sequence(tmp_path / "ds", n=3)
    add_ground_truth(root, [0, 1, 2])
    stamps = frame_stamp_ns(kitti_io.read_times(root / "sequences/08/times.txt"))
    scorer = Scorer(root, "08", tmp_path / "pred")
    rclpy.init()
    try:
        pub_node = rclpy.create_node("fake_l2cocc")
        grid_pub = pub_node.create_publisher(SemanticVoxelGrid, "/l2cocc_node/output/semantic_grid", OUTPUT_QOS)
        img_pub = pub_node.create_publisher(Image, "/kitti/camera_color_left/image_raw", SENSOR_QOS)

        def publish():
            deadline = time.monotonic() + 10
            while grid_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            for f in range(3):
                sec, nsec = divmod(int(stamps[f]), 10**9)
                img = Image(height=1, width=1, encoding="rgb8", step=3, data=b"abc")
                img.header.stamp.sec, img.header.stamp.nanosec = sec, nsec
                raw = serialize_message(img)
                assert cdr_header_stamp_ns(raw) == int(stamps[f])
                img_pub.publish(raw)
                time.sleep(0.05)
                grid_pub.publish(grid_to_msg(random_prediction(f), stamp=(sec, nsec), frame_id="velodyne",
                                             grid=SEMANTIC_KITTI_GRID, table=semantic_kitti(),
                                             model_variant="l2cocc-c", model_name="test"))
                time.sleep(0.05)

        executor = SingleThreadedExecutor()
        executor.add_node(pub_node)
        publisher = threading.Thread(target=publish)
        publisher.start()
        run_live(scorer, "/l2cocc_node/output/semantic_grid", "/kitti/camera_color_left/image_raw",
                 expected_frames=3, idle_timeout_s=5, timeout_s=30, echo=False)
        publisher.join(10)
        pub_node.destroy_node()
    finally:
        rclpy.shutdown()
    s = scorer.summary()
    assert s["frames"] == 3 and s["scored_frames"] == 3
    assert s["latency_ms_p50"] is not None and 0 < s["latency_ms_p50"] < 5000
    assert all(prediction_path(tmp_path / "pred", "08", f).is_file() for f in range(3))
