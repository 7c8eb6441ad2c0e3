"""PointCloud2 <-> numpy: layouts with padding, organised clouds with row padding, big endian, non-finite points."""
import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from l2cocc_ros.ros.pointcloud import create_cloud, create_cloud_xyzi, dtype_from_fields, read_points, read_xyzi

XYZI = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)


def test_xyzi_round_trip():
    msg = create_cloud_xyzi(Header(frame_id="velodyne"), XYZI)
    assert (msg.point_step, msg.row_step, msg.width, msg.height) == (16, 16 * 50, 50, 1)
    pts, dropped = read_xyzi(msg)
    np.testing.assert_array_equal(pts, XYZI)
    assert dropped == 0


def test_padded_layout_with_ring_field_and_no_intensity():
    fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="ring", offset=16, datatype=PointField.UINT16, count=1),
    ]
    dtype = dtype_from_fields(fields, 32)
    arr = np.zeros(4, dtype=dtype)
    arr["x"], arr["y"], arr["z"], arr["ring"] = [1, 2, 3, 4], 5, 6, [7, 8, 9, 10]
    msg = create_cloud(Header(), fields, arr)
    assert msg.point_step == 32
    back = read_points(msg)
    np.testing.assert_array_equal(back["ring"], [7, 8, 9, 10])
    pts, _ = read_xyzi(msg, default_intensity=0.5)
    np.testing.assert_array_equal(pts[:, 0], [1, 2, 3, 4])
    np.testing.assert_array_equal(pts[:, 3], 0.5)


def test_organised_big_endian_cloud_with_row_padding():
    fields = [PointField(name=c, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, c in enumerate("xyz")]
    grid = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    rows = [np.concatenate([r.astype(">f4").view(np.uint8).ravel(), np.zeros(4, np.uint8)]) for r in grid]
    msg = PointCloud2(height=2, width=3, fields=fields, is_bigendian=True, point_step=12, row_step=40)
    msg.data = np.concatenate(rows).tobytes()
    pts, _ = read_xyzi(msg)
    np.testing.assert_array_equal(pts[:, :3], grid.reshape(6, 3))


def test_non_finite_points_are_dropped_and_counted():
    bad = XYZI.copy()
    bad[3, 0] = np.nan
    bad[7, 2] = np.inf
    pts, dropped = read_xyzi(create_cloud_xyzi(Header(), bad))
    assert dropped == 2 and pts.shape == (48, 4)
    assert np.isfinite(pts).all()


@pytest.mark.parametrize(
    "msg, phrase",
    [
        (PointCloud2(height=1, width=2, point_step=0), "point_step"),
        (PointCloud2(height=1, width=2, point_step=16, row_step=32,
                     fields=[PointField(name="x", offset=0, datatype=99, count=1)]), "unknown datatype"),
        (PointCloud2(height=1, width=2, point_step=4, row_step=8,
                     fields=[PointField(name="x", offset=2, datatype=PointField.FLOAT32, count=1)]), "beyond point_step"),
        (PointCloud2(height=1, width=4, point_step=16, row_step=64, fields=create_cloud_xyzi(Header(), XYZI).fields,
                     data=bytes(10)), "expected at least 64"),
    ],
)
def test_bad_clouds_are_refused(msg, phrase):
    with pytest.raises(ValueError, match=phrase):
        read_points(msg)


def test_missing_xyz_is_refused():
    fields = [PointField(name="intensity", offset=0, datatype=PointField.FLOAT32, count=1)]
    msg = create_cloud(Header(), fields, np.zeros(3, dtype=dtype_from_fields(fields, 4)))
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['x', 'y', 'z'\]"):
        read_xyzi(msg)


def test_fields_that_claim_float64_over_float32_data_are_refused():
    from sensor_msgs.msg import PointField

    from l2cocc_ros.ros.pointcloud import XYZI_FIELDS, create_cloud_xyzi, read_xyzi

    cloud = create_cloud_xyzi(Header(frame_id="velodyne"), np.ones((10, 4), np.float32))
    cloud.fields = [PointField(name=f.name, offset=f.offset, datatype=PointField.FLOAT64, count=1)
                    for f in XYZI_FIELDS[:3]]  # x, y, z at 0, 4, 8 as float64 over 16-byte float32 points
    with pytest.raises(ValueError, match="'y' \\(offset 4\\) overlaps 'x'"):
        read_xyzi(cloud)
