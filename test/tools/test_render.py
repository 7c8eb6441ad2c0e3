"""l2cocc render: bird's-eye and 3D pictures of small synthetic volumes, checked pixel by pixel."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from l2cocc_ros.core.classes import semantic_kitti
from l2cocc_ros.core.data.kitti_io import write_npy, write_voxel_bits, write_voxel_labels
from l2cocc_ros.tools import cli
from l2cocc_ros.tools.rendering import (BACKGROUND, UNKNOWN_RGB, bev_image, grid_title, load_labels,
                                        perspective_image, render_grid)

TABLE = semantic_kitti()
CAR, ROAD, BUILDING, VEGETATION, POLE, PERSON = 1, 9, 13, 15, 18, 6
RGB = {c: tuple(TABLE.colors_rgb[c].tolist()) for c in range(TABLE.num_classes)}
X, Y, Z = 16, 12, 6
IGN = 255


def _scene() -> np.ndarray:
    v = np.zeros((X, Y, Z), np.uint8)
    v[:, :, 0] = ROAD
    v[2:5, 1:4, 1:3] = CAR            # near (small x), right (small y)
    v[12:15, 8:11, 1:5] = BUILDING    # far, left
    v[8, 10, 1:4] = VEGETATION        # a column whose top is vegetation over road
    v[0, 11, :] = 0                   # a column with nothing
    v[15, 0, :] = IGN                 # a column with only unknown
    return v



def _pixel(img: np.ndarray, i: int, j: int, scale: int):
    """BEV pixel at the centre of column (i, j): x up, y left."""
    return tuple(img[(X - 1 - i) * scale + scale // 2, (Y - 1 - j) * scale + scale // 2].tolist())


def test_bev_shows_top_most_class_per_column():
    v = _scene()
    img = bev_image(v, TABLE.colors_rgb, scale=3)
    assert img.shape == (X * 3, Y * 3, 3) and img.dtype == np.uint8
    assert _pixel(img, 3, 2, 3) == RGB[CAR]
    assert _pixel(img, 13, 9, 3) == RGB[BUILDING]
    assert _pixel(img, 8, 10, 3) == RGB[VEGETATION]
    assert _pixel(img, 7, 6, 3) == RGB[ROAD]
    assert _pixel(img, 0, 11, 3) == BACKGROUND
    assert _pixel(img, 15, 0, 3) == UNKNOWN_RGB
    # orientation: the car (small x, small y) is in the bottom-right quarter
    rows, cols = np.nonzero(np.all(img == RGB[CAR], axis=-1))
    assert rows.min() > img.shape[0] // 2 and cols.min() > img.shape[1] // 2
    assert len(rows) == 3 * 3 * 9  # 3x3 columns, 3x3 pixels each


def _mask(img: np.ndarray, cls: int) -> np.ndarray:
    return np.all(img == RGB[cls], axis=-1)  # top faces are drawn in the exact class colour


def test_perspective_view_places_near_objects_low_and_right_objects_right():
    img = perspective_image(_scene(), TABLE.colors_rgb, size=(320, 256))
    assert img.shape == (256, 320, 3)
    car_r, car_c = np.nonzero(_mask(img, CAR))
    bld_r, bld_c = np.nonzero(_mask(img, BUILDING))
    assert len(car_r) > 20 and len(bld_r) > 20
    assert car_r.mean() > bld_r.mean()  # near objects lower in the picture
    assert car_c.mean() > bld_c.mean()  # y to the left, so small y is on the right
    assert _mask(img, ROAD).sum() > 500
    assert not _mask(img, PERSON).any()
    assert not np.all(img == UNKNOWN_RGB, axis=-1).any()  # unknown voxels are not drawn in 3D


def test_perspective_view_shades_sides_darker_than_tops():
    v = np.zeros((8, 8, 8), np.uint8)
    v[3:5, 3:5, 0:6] = BUILDING
    img = perspective_image(v, TABLE.colors_rgb, size=(200, 200)).reshape(-1, 3)
    solid = img[np.any(img != BACKGROUND, axis=-1)]
    top = np.all(solid == RGB[BUILDING], axis=-1).sum()
    darker = np.all(solid < np.array(RGB[BUILDING]) + 1, axis=-1) & ~np.all(solid == RGB[BUILDING], axis=-1)
    assert top > 0 and darker.sum() > top  # a tall tower shows more side than top


def test_render_grid_layout_legend_and_ground_truth():
    pred = _scene()
    gt = pred.copy()
    gt[2:5, 1:4, 1:3] = 0
    gt[6:9, 4:7, 1:3] = CAR  # the car elsewhere in the ground truth
    title = grid_title("velodyne", (12, 5), "l2cocc-d")
    assert title == "frame 'velodyne'  stamp 12.000000005 s  l2cocc-d"
    img = render_grid(pred, TABLE, title=title, gt=gt, panel_height=96)
    panels = img.info["panels"]
    assert set(panels) == {"prediction/bev", "prediction/3d", "ground truth/bev", "ground truth/3d", "legend"}
    arr = np.asarray(img)
    crop = lambda box: arr[box[1]:box[3], box[0]:box[2]]
    scale = 96 // X
    np.testing.assert_array_equal(crop(panels["prediction/bev"]), bev_image(pred, TABLE.colors_rgb, scale))
    np.testing.assert_array_equal(crop(panels["ground truth/bev"]), bev_image(gt, TABLE.colors_rgb, scale))
    assert _pixel(crop(panels["ground truth/bev"]), 7, 5, scale) == RGB[CAR]
    assert _pixel(crop(panels["ground truth/bev"]), 3, 2, scale) == RGB[ROAD]
    legend = crop(panels["legend"])
    for present in (CAR, ROAD, BUILDING, VEGETATION):
        assert _mask(legend, present).sum() >= 100, TABLE.names[present]  # a 14x14 swatch
    assert not _mask(legend, PERSON).any()
    assert np.all(legend == UNKNOWN_RGB, axis=-1).sum() >= 100
    alone = render_grid(pred, TABLE, title="x", panel_height=96)
    assert alone.size[0] == img.size[0] and alone.size[1] < img.size[1]
    assert set(alone.info["panels"]) == {"grid/bev", "grid/3d", "legend"}
    box = alone.info["panels"]["grid/bev"]
    np.testing.assert_array_equal(np.asarray(alone)[box[1]:box[3], box[0]:box[2]], crop(panels["prediction/bev"]))


def test_render_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="labels: value 20"):
        render_grid(np.full((4, 4, 2), 20, np.uint8), TABLE)
    with pytest.raises(ValueError, match="labels: expected uint8"):
        render_grid(np.zeros((4, 4, 2), np.int32), TABLE)
    with pytest.raises(ValueError, match="gt: shape"):
        render_grid(np.zeros((4, 4, 2), np.uint8), TABLE, gt=np.zeros((4, 4, 4), np.uint8))


def test_load_labels_from_label_invalid_and_npy(tmp_path):
    v = _scene()
    write_npy(tmp_path / "000000_1_1.npy", v)
    write_voxel_labels(tmp_path / "000000.label", TABLE.to_raw_ids(v))
    write_voxel_bits(tmp_path / "000000.invalid", v == IGN)
    np.testing.assert_array_equal(load_labels(tmp_path / "000000_1_1.npy", TABLE), v)
    with pytest.raises(ValueError):  # the voxel .label reader checks the (256, 256, 32) size
        load_labels(tmp_path / "000000.label", TABLE)
    with pytest.raises(ValueError, match="unsupported file type"):
        load_labels(tmp_path / "000000.invalid", TABLE)
    with pytest.raises(FileNotFoundError):
        load_labels(tmp_path / "missing.npy", TABLE)
    write_npy(tmp_path / "flat.npy", np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match="3D integer volume"):
        load_labels(tmp_path / "flat.npy", TABLE)


def test_cli_renders_label_file_with_invalid_next_to_ground_truth(tmp_path, capsys):
    full = np.zeros((256, 256, 32), np.uint8)
    full[90:120, 110:140, 0] = ROAD  # a small patch keeps the 3D views quick
    full[100:110, 120:130, 1:5] = CAR
    full[250:, :, :] = IGN
    pred = tmp_path / "pred.npy"
    write_npy(pred, full)
    write_voxel_labels(tmp_path / "gt.label", TABLE.to_raw_ids(full))
    write_voxel_bits(tmp_path / "gt.invalid", full == IGN)
    out = tmp_path / "out.png"
    rc = cli.main(["render", str(pred), "--gt", str(tmp_path / "gt.label"), "--gt-invalid",
                   str(tmp_path / "gt.invalid"), "-o", str(out), "--panel-height", "256"])
    assert rc == 0
    arr = np.asarray(Image.open(out).convert("RGB"))
    ref = render_grid(full, TABLE, title="t", gt=full, panel_height=256)
    for name in ("prediction/bev", "ground truth/bev", "ground truth/3d"):
        box = ref.info["panels"][name]
        np.testing.assert_array_equal(arr[box[1]:box[3], box[0]:box[2]],
                                      np.asarray(ref)[box[1]:box[3], box[0]:box[2]], err_msg=name)
    assert cli.main(["render", str(tmp_path / "nope.npy")]) == 2  # one error line naming the file, usage code
    assert "nope.npy" in capsys.readouterr().err
