"""Markers: per-class CUBE_LISTs with DELETEALL first, RGB colours, crop, 2x downsample, and CDR bytes ==
rclpy's serialize_message."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from visualization_msgs.msg import Marker, MarkerArray

from l2cocc_ros.core.classes import semantic_kitti
from l2cocc_ros.core.grid import SEMANTIC_KITTI_GRID, GridSpec
from l2cocc_ros.ros.markers import (
    MarkerEncoder,
    MarkerOptions,
    build_marker_array,
    class_voxel_centers,
    downsample_labels,
    encode_marker_array,
    same_cdr,
)


def test_same_cdr_masks_only_the_gaps():
    assert same_cdr(b"\x00\x01\x00\x00ab\x00\x00", b"\x00\x01\x00\x00ab\x55\x55", [(6, 2)])
    assert not same_cdr(b"\x00\x01\x00\x00ab\x00\x00", b"\x00\x01\x00\x00ac\x55\x55", [(6, 2)])
    assert not same_cdr(b"ab", b"abc", [])

TABLE = semantic_kitti()
GRID = SEMANTIC_KITTI_GRID
STAMP = Time(sec=17, nanosec=250_000_000)


def scene(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    labels = np.zeros(GRID.dims, np.uint8)
    idx = tuple(rng.integers(0, d, n) for d in GRID.dims)
    labels[idx] = rng.integers(1, 20, n)
    labels[5, 5, 5] = 255  # unknown is never drawn
    return labels


def test_one_cube_list_per_class_after_deleteall():
    labels = np.zeros(GRID.dims, np.uint8)
    labels[0, 0, 0] = 1  # car at the lower corner
    labels[255, 255, 31] = 9  # road at the upper corner
    labels[10, 128, 10] = 9
    arr = build_marker_array(labels, stamp=STAMP, frame_id="velodyne", grid=GRID, table=TABLE, options=MarkerOptions())
    first, *cubes = arr.markers
    assert first.action == Marker.DELETEALL
    assert [(m.ns, m.id, m.type) for m in cubes] == [("car", 1, Marker.CUBE_LIST), ("road", 9, Marker.CUBE_LIST)]
    car, road = cubes
    np.testing.assert_allclose([(p.x, p.y, p.z) for p in car.points], [(0.1, -25.5, -1.9)], atol=1e-9)
    np.testing.assert_allclose(sorted((p.x, p.y, p.z) for p in road.points), [(2.1, 0.1, 0.1), (51.1, 25.5, 4.3)], atol=1e-9)
    assert car.scale.x == pytest.approx(0.2) and car.header.frame_id == "velodyne" and car.header.stamp == STAMP
    # colours are RGB (the yaml stores BGR): car is blue-ish (100, 150, 245), road magenta
    assert (round(car.color.r * 255), round(car.color.g * 255), round(car.color.b * 255)) == (100, 150, 245)
    assert (round(road.color.r * 255), round(road.color.g * 255), round(road.color.b * 255)) == (255, 0, 255)


def test_crop_keeps_voxels_whose_centre_is_inside():
    labels = np.zeros(GRID.dims, np.uint8)
    labels[:, 128, 10] = 9  # a line along x at y = 0.1
    opts = MarkerOptions(crop_min=(10.0, -1.0, -2.0), crop_max=(20.0, 1.0, 4.4))
    arr = build_marker_array(labels, stamp=STAMP, frame_id="v", grid=GRID, table=TABLE, options=opts)
    xs = sorted(p.x for p in arr.markers[1].points)
    assert xs[0] == pytest.approx(10.1) and xs[-1] == pytest.approx(19.9) and len(xs) == 50


def test_downsample_takes_the_majority_class():
    labels = np.zeros((4, 4, 2), np.uint8)
    labels[0:2, 0:2, 0:2] = [[[1, 1], [1, 9]], [[9, 9], [0, 255]]]  # 3 x car, 3 x road: tie -> smaller id
    labels[2:4, 2:4, 0:2] = 0
    labels[2, 2, 0] = 15
    out = downsample_labels(labels, 2, 20)
    assert out.shape == (2, 2, 1)
    assert out[0, 0, 0] == 1 and out[1, 1, 0] == 15 and out[0, 1, 0] == 0
    labels[0, 0, 0] = 9
    assert downsample_labels(labels, 2, 20)[0, 0, 0] == 9
    small = GridSpec(lower=(0.0, 0.0, 0.0), voxel_size=0.2, dims=(4, 4, 2))
    arr = build_marker_array(labels, stamp=STAMP, frame_id="v", grid=small, table=TABLE,
                             options=MarkerOptions(crop_min=(0, 0, 0), crop_max=(1, 1, 1), downsample=2))
    road = next(m for m in arr.markers if m.ns == "road")
    assert road.scale.x == pytest.approx(0.4)
    np.testing.assert_allclose([(p.x, p.y, p.z) for p in road.points], [(0.2, 0.2, 0.2)], atol=1e-9)


@pytest.mark.parametrize("opts", [
    MarkerOptions(),
    MarkerOptions(crop_min=(0.0, -10.0, -2.0), crop_max=(30.0, 10.0, 2.0), downsample=2, alpha=0.7),
])
@pytest.mark.parametrize("frame_id", ["velodyne", "camera_color_left_x"])
def test_encoder_bytes_equal_serialize_message(opts, frame_id):
    labels = scene()
    kw = dict(stamp=STAMP, frame_id=frame_id, grid=GRID, table=TABLE, options=opts)
    pads = []
    raw = encode_marker_array(labels, padding=pads, **kw)
    reference = build_marker_array(labels, **kw)
    ref_raw = serialize_message(reference)
    assert same_cdr(raw, ref_raw, pads)  # every byte but the alignment gaps (rclpy leaves those unset)
    assert sum(n for _, n in pads) < 40 * len(reference.markers) and len(raw) > 10_000  # gaps are few and small
    assert deserialize_message(raw, MarkerArray) == deserialize_message(ref_raw, MarkerArray)
    if opts.downsample == 1 and frame_id == "velodyne":
        assert len(reference.markers) == 1 + 19  # DELETEALL + every class present in the random scene


def test_empty_volume_is_only_deleteall():
    labels = np.zeros(GRID.dims, np.uint8)
    kw = dict(stamp=STAMP, frame_id="v", grid=GRID, table=TABLE, options=MarkerOptions())
    pads = []
    raw = encode_marker_array(labels, padding=pads, **kw)
    assert same_cdr(raw, serialize_message(build_marker_array(labels, **kw)), pads)
    assert [m.action for m in deserialize_message(raw, MarkerArray).markers] == [Marker.DELETEALL]


def test_encoder_verifies_itself_and_falls_back(monkeypatch):
    enc = MarkerEncoder(GRID, TABLE, MarkerOptions())
    assert enc.use_bytes
    assert isinstance(enc.encode(scene(), stamp=STAMP, frame_id="v"), bytes)
    import l2cocc_ros.ros.markers as markers

    monkeypatch.setattr(markers, "_KNOWN_MARKER_FIELDS", ("header", "ns"))  # as if the distro's layout differed
    enc = MarkerEncoder(GRID, TABLE, MarkerOptions())
    assert not enc.use_bytes
    assert isinstance(enc.encode(scene(), stamp=STAMP, frame_id="v"), MarkerArray)


@pytest.mark.parametrize("kw, phrase", [
    (dict(downsample=3), "downsample"), (dict(alpha=1.5), "alpha"),
    (dict(crop_min=(5, 0, 0), crop_max=(1, 1, 1)), "below crop_max"),
])
def test_bad_options(kw, phrase):
    with pytest.raises(ValueError, match=phrase):
        MarkerOptions(**kw)


def reference_centers(labels, grid, num_classes, options):
    """class_voxel_centers the plain way: np.nonzero on the cropped box, ordered by (class, flat index)."""
    lab = downsample_labels(labels, options.downsample, num_classes)
    g = grid.downsampled(options.downsample) if options.downsample > 1 else grid
    centre = (np.indices(lab.shape).reshape(3, -1).T + 0.5) * g.voxel_size + np.asarray(g.lower)
    inside = np.all((centre >= options.crop_min) & (centre <= options.crop_max), axis=1)
    flat = lab.reshape(-1)
    return [(c, centre[inside & (flat == c)]) for c in range(1, num_classes) if np.any(inside & (flat == c))]


@pytest.mark.parametrize("grid, opts", [
    (GRID, MarkerOptions()),  # whole grid: the labels are read in place
    (GRID, MarkerOptions(crop_min=(10.3, -3.0, -1.0), crop_max=(20.0, 7.0, 0.5))),
    (GRID, MarkerOptions(crop_min=(-99.0, -99.0, -99.0), crop_max=(99.0, 99.0, 99.0), downsample=2)),
    (GridSpec(lower=(-1.0, 2.0, 0.5), voxel_size=0.3, dims=(7, 5, 3)),  # 105 voxels: not whole 8-byte words
     MarkerOptions(crop_min=(-9.0, -9.0, -9.0), crop_max=(9.0, 9.0, 9.0))),
    (GridSpec(lower=(-1.0, 2.0, 0.5), voxel_size=0.3, dims=(7, 5, 3)),
     MarkerOptions(crop_min=(-0.5, 2.5, 0.0), crop_max=(0.6, 3.5, 9.0))),
])
def test_centres_equal_a_plain_reference(grid, opts):
    rng = np.random.default_rng(3)
    labels = np.where(rng.random(grid.dims) < 0.5, rng.integers(1, 24, grid.dims), 0).astype(np.uint8)
    labels[rng.random(grid.dims) < 0.1] = 255  # unknown, and ids 20..23 (>= num_classes), are never drawn
    got, edge = class_voxel_centers(labels, grid, TABLE.num_classes, opts)
    want = reference_centers(labels, grid, TABLE.num_classes, opts)
    assert edge == pytest.approx(grid.voxel_size * opts.downsample)
    assert [c for c, _ in got] == [c for c, _ in want] and len(want) > 3
    for (_, a), (_, b) in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("labels, phrase", [
    (np.zeros((256, 256, 16), np.uint8), r"shape \(256, 256, 32\).*\(256, 256, 16\)"),
    (np.zeros(GRID.dims, np.int64), "uint8.*int64"),
])
def test_labels_must_be_uint8_on_the_grid(labels, phrase):
    with pytest.raises(ValueError, match=phrase):
        class_voxel_centers(labels, GRID, TABLE.num_classes, MarkerOptions())
