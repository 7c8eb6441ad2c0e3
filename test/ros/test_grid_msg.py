"""grid_msg: numpy <-> SemanticVoxelGrid, in memory (no DDS)."""
from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message

from l2cocc_ros.core.classes import kitti360, semantic_kitti
from l2cocc_ros.core.grid import SEMANTIC_KITTI_GRID, GridSpec
from l2cocc_ros.core.stamps import stamp_to_tuple
from l2cocc_ros.msg import SemanticVoxelGrid
from l2cocc_ros.ros.grid_msg import GridData, grid_to_msg, msg_to_grid

GRID = GridSpec(lower=(1.5, -2.25, 0.5), voxel_size=0.2, dims=(4, 5, 6))
TABLE = semantic_kitti()


def _labels(seed: int = 0, dims=GRID.dims) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, TABLE.num_classes, size=dims, dtype=np.uint8)
    labels.flat[rng.choice(labels.size, size=labels.size // 5, replace=False)] = 255
    return labels


def _msg(labels: np.ndarray, **kw) -> SemanticVoxelGrid:
    args = dict(stamp=(1234, 567890123), frame_id="velodyne", grid=GRID, table=TABLE,
                model_variant="l2cocc-d", model_name="semantickitti_l2cocc_d")
    args.update(kw)
    return grid_to_msg(labels, **args)


def test_fields_follow_the_message_definition():
    labels = _labels()
    msg = _msg(labels)
    assert (msg.size_x, msg.size_y, msg.size_z) == (4, 5, 6)
    assert msg.index_order == SemanticVoxelGrid.INDEX_ORDER_XYZ == "xyz"
    assert msg.voxel_size == 0.2
    assert (msg.origin.position.x, msg.origin.position.y, msg.origin.position.z) == (1.5, -2.25, 0.5)
    q = msg.origin.orientation
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1234, 567890123, "velodyne")
    assert list(msg.class_names) == list(TABLE.names)
    assert bytes(msg.class_colors) == TABLE.colors_rgb.tobytes()
    assert len(msg.confidence) == 0
    # index order: labels[(i * size_y + j) * size_z + k] is voxel (i, j, k), x slowest, z fastest
    for i, j, k in [(0, 0, 1), (1, 0, 0), (0, 1, 0), (3, 4, 5), (2, 3, 1)]:
        assert msg.labels[(i * 5 + j) * 6 + k] == labels[i, j, k]


def test_round_trip_is_exact():
    labels = _labels(1)
    conf = np.random.default_rng(2).random(GRID.dims, dtype=np.float32)
    conf[0, 0, 0], conf[-1, -1, -1] = 0.0, 1.0
    data = msg_to_grid(_msg(labels, confidence=conf))
    assert isinstance(data, GridData)
    assert data.labels.dtype == np.uint8 and data.labels.shape == GRID.dims
    np.testing.assert_array_equal(data.labels, labels)
    assert data.confidence.dtype == np.float32
    np.testing.assert_array_equal(data.confidence, conf)
    assert data.grid == GRID
    assert data.orientation == (0.0, 0.0, 0.0, 1.0)
    assert data.class_names == TABLE.names
    np.testing.assert_array_equal(data.colors, TABLE.colors_rgb)
    assert data.matches_table(TABLE) and not data.matches_table(kitti360())
    assert data.stamp == (1234, 567890123)
    assert (data.frame_id, data.model_variant, data.model_name) == ("velodyne", "l2cocc-d", "semantickitti_l2cocc_d")


def test_serialized_round_trip_full_size_grid():
    """Through CDR bytes, as over DDS or in a bag: the 256x256x32 SemanticKITTI grid comes back identical."""
    labels = _labels(3, SEMANTIC_KITTI_GRID.dims)
    msg = _msg(labels, grid=SEMANTIC_KITTI_GRID)
    raw = serialize_message(msg)
    assert len(raw) > labels.size  # the labels travel as one byte each
    data = msg_to_grid(deserialize_message(raw, SemanticVoxelGrid))
    np.testing.assert_array_equal(data.labels, labels)
    assert data.grid == SEMANTIC_KITTI_GRID
    assert data.confidence is None
    assert data.stamp == (1234, 567890123)


def test_non_contiguous_input_keeps_xyz_order():
    labels = _labels(4)
    zyx = np.ascontiguousarray(labels.transpose(2, 1, 0))
    view = zyx.transpose(2, 1, 0)  # same values as labels, Fortran-ordered memory
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(msg_to_grid(_msg(view)).labels, labels)


def test_labels_are_a_view_on_the_message_buffer():
    msg = _msg(_labels(5))
    data = msg_to_grid(msg)
    msg.labels[0] = 7
    assert data.labels[0, 0, 0] == 7


def test_stamp_forms():
    assert stamp_to_tuple(Time(sec=3, nanosec=4)) == (3, 4)
    assert stamp_to_tuple((5, 6)) == (5, 6)
    from rclpy.time import Time as RclpyTime
    assert stamp_to_tuple(RclpyTime(seconds=7, nanoseconds=8)) == (7, 8)
    with pytest.raises(TypeError, match="stamp"):
        stamp_to_tuple(1.5)
    with pytest.raises(ValueError, match="nanosec"):
        stamp_to_tuple((1, 1_000_000_000))


@pytest.mark.parametrize("labels, phrase", [
    (np.zeros((4, 5, 6), np.int64), "labels: expected a uint8"),
    (np.zeros((4, 5, 7), np.uint8), "labels: shape"),
    (np.full((4, 5, 6), 20, np.uint8), "labels: value 20"),
])
def test_grid_to_msg_rejects_bad_labels(labels, phrase):
    with pytest.raises(ValueError, match=phrase):
        _msg(labels)


def test_grid_to_msg_rejects_bad_confidence_and_frame():
    labels = _labels()
    with pytest.raises(ValueError, match="confidence: shape"):
        _msg(labels, confidence=np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="confidence: values"):
        _msg(labels, confidence=np.full(GRID.dims, 1.5, np.float32))
    with pytest.raises(ValueError, match="confidence: values"):
        _msg(labels, confidence=np.full(GRID.dims, np.nan, np.float32))
    with pytest.raises(ValueError, match="frame_id"):
        _msg(labels, frame_id="")


def _corrupt(field: str, value) -> SemanticVoxelGrid:
    msg = _msg(_labels(6), confidence=np.zeros(GRID.dims, np.float32))
    setattr(msg, field, value)
    return msg


@pytest.mark.parametrize("field, value, phrase", [
    ("index_order", "zyx", "index_order"),
    ("size_z", 7, "labels: 120 values for size 4x5x7"),
    ("size_x", 0, "size_x/size_y/size_z"),
    ("voxel_size", 0.0, "voxel_size"),
    ("confidence", [0.5] * 3, "confidence: 3 values"),
    ("class_colors", [1, 2, 3, 4], "class_colors: 4 values for 20 class_names"),
    ("class_names", ["empty", "car"], "class_colors: 60 values for 2 class_names"),
])
def test_msg_to_grid_rejects_inconsistent_messages(field, value, phrase):
    with pytest.raises(ValueError, match=phrase):
        msg_to_grid(_corrupt(field, value))


def test_msg_to_grid_rejects_labels_outside_the_class_table():
    msg = _msg(_labels(7))
    msg.class_names = list(TABLE.names[:3])
    msg.class_colors = TABLE.colors_rgb[:3].reshape(-1).tolist()
    with pytest.raises(ValueError, match=r"labels: value \d+ is neither a class id \(< 3\)"):
        msg_to_grid(msg)
