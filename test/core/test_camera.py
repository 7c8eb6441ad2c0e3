"""Image/depth preprocessing and camera bookkeeping (docs/model.md §1.3, §3.1)."""
import numpy as np
import pytest
import torch

from l2cocc_ros.core import preprocess as cam
from l2cocc_ros.core.data.augment import color_jitter
from l2cocc_ros.core.data.depth_target import lidar_depth_map
from l2cocc_ros.core.model.depth_net import get_mlp_input

P2 = np.array([[718.856, 0.0, 607.1928, 45.38225],
               [0.0, 718.856, 185.2157, -0.1130887],
               [0.0, 0.0, 1.0, 0.003779761]])
TR = np.array([[4.276802e-04, -9.999672e-01, -8.084491e-03, -1.198459e-02],
               [-7.210626e-03, 8.081198e-03, -9.999413e-01, -5.403984e-02],
               [9.999738e-01, 4.859485e-04, -7.206933e-03, -2.921968e-01],
               [0.0, 0.0, 0.0, 1.0]])


def test_resize_crop_kitti_1241():
    rc = cam.ResizeCrop.from_sizes((376, 1241), (384, 1280))
    s = 1280 / 1241
    assert rc.scale == pytest.approx(s)
    assert rc.resized_wh == (int(1241 * s), int(376 * s)) == (1279, 387)
    assert rc.crop == (0, 3, 1280, 387)  # bottom 384 rows: top 3 dropped
    np.testing.assert_allclose(rc.post_rot, np.diag([s, s, 1.0]), rtol=1e-6)
    np.testing.assert_array_equal(rc.post_tran, [0.0, -3.0, 0.0])


def test_resize_crop_kitti360_pads_top():
    rc = cam.ResizeCrop.from_sizes((376, 1408), (384, 1408))
    assert rc.scale == 1.0 and rc.crop == (0, -8, 1408, 376)
    np.testing.assert_array_equal(rc.post_tran, [0.0, 8.0, 0.0])
    rgb = np.full((376, 1408, 3), 200, dtype=np.uint8)
    out = rc.apply_image(rgb)
    assert out.shape == (384, 1408, 3)
    assert (out[:8] == 0).all() and (out[8:] == 200).all()
    depth = rc.apply_depth(np.full((376, 1408), 7.5, dtype=np.float32))
    assert depth.dtype == np.float32 and (depth[:8] == 0).all()
    np.testing.assert_allclose(depth[8:], 7.5, atol=1e-5)


def test_image_content_follows_bookkeeping():
    """A bright dot in the original lands where post_rot/post_tran say it does."""
    rc = cam.ResizeCrop.from_sizes((376, 1241), (384, 1280))
    rgb = np.zeros((376, 1241, 3), dtype=np.uint8)
    u0, v0 = 600, 200
    rgb[v0 - 2:v0 + 3, u0 - 2:u0 + 3] = 255
    out = rc.apply_image(rgb).astype(np.float64)[..., 0]
    ys, xs = np.nonzero(out > 0)
    w = out[ys, xs]
    centre = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    # PIL (pixel-centre convention) puts original pixel u at (u + 0.5) * sx - 0.5, with the integer size's scale
    sx, sy = rc.content_scale
    assert (sx, sy) == (1279 / 1241, 387 / 376)
    np.testing.assert_allclose(centre, [(u0 + 0.5) * sx - 0.5, (v0 + 0.5) * sy - 0.5 - 3], atol=0.1)
    # the bookkeeping (exact s, as the original) agrees with the content to well under a pixel
    expected = rc.transform_pixels(np.array([[u0 + 0.5, v0 + 0.5]]))[0] - 0.5
    np.testing.assert_allclose(centre, expected, atol=0.6)


def test_projection_matches_scaled_original():
    rc = cam.ResizeCrop.from_sizes((376, 1241), (384, 1280))
    geom = cam.camera_geometry(P2, rc, T_velo_to_cam=TR)
    pts = np.array([[10.0, 2.0, -0.5], [25.0, -4.0, 1.0], [6.0, 0.3, 0.0]])
    uv, d = geom.project(pts)
    # direct KITTI projection in the original image: P2 @ Tr @ X
    ph = (P2 @ TR @ np.c_[pts, np.ones(3)].T).T
    uv0 = ph[:, :2] / ph[:, 2:3]
    s = 1280 / 1241
    np.testing.assert_allclose(uv, uv0 * s - np.array([0.0, 3.0]), atol=1e-3)
    np.testing.assert_allclose(d, ph[:, 2], rtol=1e-6)
    # the same geometry from the inverse transform (the live node's form)
    geom2 = cam.camera_geometry(P2, rc, T_grid_from_cam=np.linalg.inv(TR))
    np.testing.assert_allclose(geom2.project(pts)[0], uv, atol=1e-4)
    np.testing.assert_allclose(geom.rot, np.linalg.inv(TR)[:3, :3], atol=1e-6)


def test_build_camera_inputs_shapes_and_values():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 124, 3), dtype=np.uint8)
    depth = np.full((40, 124), 12.0, dtype=np.float32)
    inputs, geom = cam.build_camera_inputs(rgb, P2, (32, 128), stereo_depth=depth, T_velo_to_cam=TR)
    assert inputs["img"].shape == (1, 1, 3, 32, 128)
    assert inputs["rot"].shape == (1, 1, 3, 3) and inputs["tran"].shape == (1, 1, 3)
    assert inputs["intrin"].shape == (1, 1, 4, 4) and inputs["post_rot"].shape == (1, 1, 3, 3)
    assert inputs["post_tran"].shape == (1, 1, 3) and inputs["bda"].shape == (1, 4, 4)
    assert inputs["stereo_depth"].shape == (1, 1, 32, 128)
    torch.testing.assert_close(inputs["bda"][0], torch.eye(4))
    np.testing.assert_allclose(inputs["intrin"][0, 0, :3].numpy(), P2, rtol=1e-6)
    # normalisation: undoing it gives the resized image
    rc = cam.ResizeCrop.from_sizes((40, 124), (32, 128))
    resized = rc.apply_image(rgb).astype(np.float32) / 255.0
    mean = torch.tensor(cam.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(cam.IMAGENET_STD).view(3, 1, 1)
    back = (inputs["img"][0, 0] * std + mean).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(back, resized, atol=1e-5)
    # 40 * 128/124 = 41.29 -> 41 rows, crop top 9 of them; depth stays ~12 m
    assert rc.crop[1] == 9
    np.testing.assert_allclose(inputs["stereo_depth"].numpy(), 12.0, atol=1e-4)


def test_bad_inputs_are_refused():
    rgb = np.zeros((10, 20, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="exactly one"):
        cam.build_camera_inputs(rgb, P2, (8, 16))
    with pytest.raises(ValueError, match="rgb must be"):
        cam.build_camera_inputs(rgb.astype(np.float32), P2, (8, 16), T_velo_to_cam=TR)
    with pytest.raises(ValueError, match="P2"):
        cam.build_camera_inputs(rgb, np.zeros((3, 4)), (8, 16), T_velo_to_cam=TR)
    with pytest.raises(ValueError, match="stereo_depth"):
        cam.build_camera_inputs(rgb, P2, (8, 16), T_velo_to_cam=TR, stereo_depth=np.zeros((5, 5)))
    bad = TR.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cam.build_camera_inputs(rgb, P2, (8, 16), T_velo_to_cam=bad)


def test_lidar_depth_map_nearest_wins():
    rc = cam.ResizeCrop.from_sizes((376, 1241), (384, 1280))
    geom = cam.camera_geometry(P2, rc, T_grid_from_cam=np.linalg.inv(TR))

    def back_project(u, v, d):  # original-image pixel + depth -> LiDAR point (exact inverse of §1.3)
        xc = np.linalg.solve(P2[:, :3], np.array([u, v, 1.0]) * d - P2[:, 3])
        return (np.linalg.inv(TR) @ np.r_[xc, 1.0])[:3]

    pts = np.stack([back_project(500.2, 150.3, 20.0), back_project(500.2, 150.3, 8.0),
                    back_project(100.0, 300.0, 15.0), np.array([-10.0, 0.0, 0.0])])  # last: behind
    dm = lidar_depth_map(np.c_[pts, np.zeros(4)], geom)
    assert dm.shape == (384, 1280) and dm.dtype == np.float32
    s = 1280 / 1241
    r, c = int(round(150.3 * s - 3)), int(round(500.2 * s))
    assert dm[r, c] == pytest.approx(8.0, rel=1e-5)  # the nearer of the two points on this pixel
    assert dm[int(round(300 * s - 3)), int(round(100 * s))] == pytest.approx(15.0, rel=1e-5)
    assert (dm > 0).sum() == 2
    # order does not matter
    np.testing.assert_array_equal(lidar_depth_map(np.c_[pts[::-1], np.zeros(4)], geom), dm)
    assert (lidar_depth_map(np.zeros((0, 4)), geom) == 0).all()


def test_color_jitter_and_mlp_input():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 8, 8, generator=g)
    out = color_jitter(img, generator=torch.Generator().manual_seed(1))
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1 and not torch.equal(out, img)
    same = color_jitter(img, 0.0, 0.0, 0.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(same, img)
    # saturation leaves grey pixels unchanged and moves coloured ones
    grey = torch.full((3, 2, 2), 0.5)
    torch.testing.assert_close(color_jitter(grey, 0, 0, 0.4, generator=torch.Generator().manual_seed(3)), grey)
    red = torch.tensor([0.6, 0.2, 0.2]).view(3, 1, 1).expand(3, 2, 2)
    assert not torch.allclose(color_jitter(red, 0, 0, 0.4, generator=torch.Generator().manual_seed(3)), red)
    # brightness only: a pure scale in [0.6, 1.4]
    b = color_jitter(grey, 0.4, 0, 0, generator=torch.Generator().manual_seed(4))
    assert 0.3 - 1e-6 <= float(b[0, 0, 0]) <= 0.7 + 1e-6 and torch.allclose(b, b[0, 0, 0].expand_as(b))
    rc = cam.ResizeCrop.from_sizes((376, 1241), (384, 1280))
    inputs = cam.camera_geometry(P2, rc, T_velo_to_cam=TR).as_tensors()
    m = get_mlp_input(*(inputs[k] for k in ("rot", "tran", "intrin", "post_rot", "post_tran", "bda")))
    assert m.shape == (1, 1, 33)
    v = m[0, 0].numpy()
    np.testing.assert_allclose(v[:7], [P2[0, 0], P2[1, 1], P2[0, 2], P2[1, 2], P2[0, 3], P2[1, 3], P2[2, 3]], rtol=1e-5)
    np.testing.assert_allclose(v[7:13], [1280 / 1241, 0, 0, 0, 1280 / 1241, -3], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v[13:21], [1, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(v[21:].reshape(3, 4), np.linalg.inv(TR)[:3], atol=1e-5)
