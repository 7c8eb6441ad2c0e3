"""The frame: built once, checked once (each bad field named), one baseline rule, clouds moved into the grid."""
import dataclasses

import numpy as np
import pytest

from l2cocc_ros.core.frame import FrameError, LidarFrame, StereoFrame, baseline_from_projections
from l2cocc_ros.core.transforms import make_transform, transform_points

H, W, FX = 8, 12, 100.0
P_LEFT = np.array([[FX, 0, W / 2, 0], [0, FX, H / 2, 0], [0, 0, 1, 0]])
P_RIGHT = P_LEFT.copy()
P_RIGHT[0, 3] = -FX * 0.54
T = np.eye(4)
IMG = np.zeros((H, W, 3), np.uint8)


def test_baseline_rule_for_kitti_and_ros_projections():
    p2 = np.array([[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.002745884]])
    p3 = np.array([[721.5377, 0, 609.5593, -339.5242], [0, 721.5377, 172.854, 2.199936], [0, 0, 1, 0.002729905]])
    assert baseline_from_projections(p2, p3) == pytest.approx((44.85728 + 339.5242) / 721.5377)
    assert baseline_from_projections(P_LEFT, P_RIGHT) == pytest.approx(0.54)
    for left, right, phrase in ((P_LEFT, P_LEFT, "expected > 0"), (P_RIGHT, P_LEFT, "expected > 0"),
                                (P_LEFT[:2], P_RIGHT, "3x4 or 4x4"), (P_LEFT * 0, P_RIGHT, "focal length")):
        with pytest.raises(FrameError, match=phrase) as info:
            baseline_from_projections(left, right)
        assert info.value.field == "baseline_m"


def test_a_stereo_frame_from_projections_is_normalised_and_frozen():
    pts = np.array([[1, 2, 3], [np.nan, 0, 0], [4, 5, 6]], np.float64)
    f = StereoFrame.from_projections(IMG, IMG.copy(), P_LEFT, P_RIGHT, T.tolist(), np.int64(7), points=pts)
    assert f.baseline_m == pytest.approx(0.54) and isinstance(f.baseline_m, float)
    assert f.P_left.shape == (3, 4) and f.P_left[0, 3] == 0 and f.focal_px == FX and f.image_hw == (H, W)
    assert f.T_grid_from_camera.dtype == np.float64 and f.stamp_ns == 7 and type(f.stamp_ns) is int
    np.testing.assert_array_equal(f.points, [[1, 2, 3, 0], [4, 5, 6, 0]])  # (P, 4) float32, finite rows only
    assert f.points.dtype == np.float32 and f.points.flags.c_contiguous
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.baseline_m = 1.0
    k_only = StereoFrame(IMG, IMG, P_LEFT[:, :3], 0.54, T, 0)  # a 3x3 K is [K | 0]
    np.testing.assert_array_equal(k_only.P_left, P_LEFT)


@pytest.mark.parametrize("change, field, phrase", [
    (dict(left=IMG[..., 0]), "left", "left must be an \\(H, W, 3\\) uint8"),
    (dict(right=IMG.astype(np.float32)), "right", "right must be an"),
    (dict(right=IMG[:, :-2]), "right", "differ in size"),
    (dict(left=IMG[:0], right=IMG[:0]), "left", "empty"),
    (dict(P_left=P_LEFT * 0), "P_left", "fx, fy > 0"),
    (dict(P_left=np.full((3, 4), np.nan)), "P_left", "finite 3x4"),
    (dict(baseline_m=-0.5), "baseline_m", "baseline must be > 0"),
    (dict(baseline_m="wide"), "baseline_m", "must be a number"),
    (dict(T_grid_from_camera=None), "T_grid_from_camera", "finite 4x4"),
    (dict(T_grid_from_camera=np.eye(3)), "T_grid_from_camera", "finite 4x4"),
    (dict(stamp_ns=1.5), "stamp_ns", "integer number of nanoseconds"),
    (dict(stamp_ns=-1), "stamp_ns", "negative \\(before 1970\\)"),
    (dict(P_left=P_LEFT * [[1e300], [1e300], [1]]), "P_left", "fx = 1e\\+30[0-9] px gives a .* field of view"),
    (dict(P_left=P_LEFT * [[1e-4], [1], [1]]), "P_left", "fx = .* field of view"),
    (dict(points=np.zeros((4, 2))), "points", "\\(P, >=3\\)"),
    (dict(points=np.full((3, 4), np.inf)), "points", "no finite point"),
])
def test_each_bad_field_is_refused_by_name(change, field, phrase):
    kw = dict(left=IMG, right=IMG, P_left=P_LEFT, baseline_m=0.54, T_grid_from_camera=T, stamp_ns=0, points=None)
    with pytest.raises(FrameError, match=phrase) as info:
        StereoFrame(**{**kw, **change})
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_lidar_frame_and_cloud_to_grid_transform():
    cloud = np.array([[1, 0, 0, 0.5], [0, 2, 0, 0.25]], np.float32)
    t_grid_cloud = make_transform((10.0, 0.0, -1.0), (0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)))  # +90 deg about z
    grid = transform_points(t_grid_cloud, cloud)
    np.testing.assert_allclose(grid, [[10, 1, -1, 0.5], [8, 0, -1, 0.25]], atol=1e-6)
    assert grid.dtype == np.float32 and cloud[0, 0] == 1  # a new array in the cloud's dtype
    f = LidarFrame(grid, 5)
    np.testing.assert_array_equal(f.points, grid)
    with pytest.raises(FrameError, match="points are required"):
        LidarFrame(None, 5)
    with pytest.raises(ValueError, match="finite 4x4"):
        transform_points(np.eye(3), cloud)
