"""Stereo backends: SGBM on synthetic rectified pairs with known disparity; the backend interface."""
import cv2
import numpy as np
import pytest
import torch

from l2cocc_ros.core import stereo

F_PX, BASELINE = 720.0, 0.54


def _texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(h, w, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 1.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min()) * 255.0
    return tex.astype(np.uint8)


def _right_from_left(left, disp):
    """right(x, y) = left(x + d(x, y), y): the left pixel x has disparity d."""
    h, w = left.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(left, xs + disp.astype(np.float32), ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("downscale", [1, 2])
def test_sgbm_constant_disparity(downscale):
    h, w, d = 96, 320, 24.0
    left = _texture(h, w)
    right = _right_from_left(left, np.full((h, w), d))
    backend = stereo.SGBMStereo(num_disparities=64, block_size=5, downscale=downscale)
    depth = backend.compute(left, right, F_PX, BASELINE)
    assert depth.shape == (h, w) and depth.dtype == np.float32
    valid = depth > 0
    assert valid[:, 80:].mean() > 0.8
    truth = F_PX * BASELINE / d
    rel = np.abs(depth[valid] - truth) / truth
    assert np.median(rel) < 0.02 and np.mean(rel < 0.05) > 0.95


def test_sgbm_planar_disparity_ground_like():
    h, w = 120, 320
    left = _texture(h, w, seed=3)
    rows = np.arange(h, dtype=np.float32)[:, None]
    disp = np.broadcast_to(8.0 + 0.3 * rows, (h, w))  # 8 px at the top to ~44 px at the bottom
    right = _right_from_left(left, disp)
    depth = stereo.get_stereo_backend("sgbm", num_disparities=64).compute(left, right, F_PX, BASELINE)
    valid = depth > 0
    assert valid[:, 80:].mean() > 0.8
    truth = F_PX * BASELINE / disp
    rel = np.abs(depth - truth)[valid] / truth[valid]
    assert np.median(rel) < 0.03 and np.mean(rel < 0.05) > 0.9


def test_invalid_and_textureless_give_zero():
    h, w = 64, 200
    flat = np.full((h, w, 3), 128, dtype=np.uint8)
    depth = stereo.SGBMStereo(num_disparities=32).compute(flat, flat, F_PX, BASELINE)
    assert (depth >= 0).all() and (depth == 0).mean() > 0.9
    np.testing.assert_array_equal(stereo.disparity_to_depth(np.array([[0.0, -1.0, np.nan, 2.0]]), 100.0, 0.5),
                                  [[0.0, 0.0, 0.0, 25.0]])


def test_argument_checks_and_registry():
    img = np.zeros((32, 64), dtype=np.uint8)
    b = stereo.SGBMStereo(num_disparities=16, use_color=False)
    with pytest.raises(ValueError, match="differ in shape"):
        b.compute(img, np.zeros((32, 63), dtype=np.uint8), F_PX, BASELINE)
    with pytest.raises(ValueError, match="uint8"):
        b.compute(img.astype(np.float32), img, F_PX, BASELINE)
    with pytest.raises(ValueError, match="focal"):
        b.compute(img, img, 0.0, BASELINE)
    with pytest.raises(ValueError, match="baseline"):
        b.compute(img, img, F_PX, -0.1)
    with pytest.raises(ValueError, match="multiple of 16"):
        stereo.SGBMStereo(num_disparities=100)
    with pytest.raises(ValueError, match="odd"):
        stereo.SGBMStereo(block_size=4)
    with pytest.raises(ValueError, match="unknown stereo backend 'nope'.*sgbm"):
        stereo.get_stereo_backend("nope")
    with pytest.raises(ValueError, match="bad options"):
        stereo.get_stereo_backend("sgbm", bogus=1)
    assert "sgbm" in stereo.available_stereo_backends()

    class Const(stereo.StereoBackend):
        name = "const"

        def disparity(self, left, right):
            return torch.full(left.shape[:2], 10.0, device=self.device)

    stereo.register_stereo_backend("const-test", Const)
    with pytest.raises(ValueError, match="already registered"):
        stereo.register_stereo_backend("const-test", Const)
    np.testing.assert_allclose(stereo.get_stereo_backend("const-test")(img, img, 100.0, 0.5), 5.0)
    depth = stereo.get_stereo_backend("const-test").depth(img, img, 100.0, 0.5)
    assert isinstance(depth, torch.Tensor) and depth.dtype == torch.float32


def test_disparity_to_depth_keeps_the_type_and_device():
    disp = torch.tensor([[0.0, -1.0, float("nan"), 2.0]])
    depth = stereo.disparity_to_depth(disp, 100.0, 0.5)
    assert isinstance(depth, torch.Tensor) and depth.device == disp.device
    torch.testing.assert_close(depth, torch.tensor([[0.0, 0.0, 0.0, 25.0]]))
    out = stereo.disparity_to_depth(np.array([[4.0]], np.float64), 100.0, 0.5)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out[0, 0] == 12.5


def test_sgbm_disparity_is_a_tensor_on_the_backend_device():
    left = _texture(48, 160, seed=1)
    b = stereo.SGBMStereo(num_disparities=32)
    assert b.to("cpu") is b
    disp = b.disparity(left, left)
    assert isinstance(disp, torch.Tensor) and disp.dtype == torch.float32 and disp.device == b.device


def test_sgbm_pickles_with_its_settings():
    import pickle

    h, w = 64, 200
    left = _texture(h, w, seed=7)
    right = _right_from_left(left, np.full((h, w), 12.0))
    b = stereo.SGBMStereo(num_disparities=32, block_size=7, uniqueness_ratio=5, downscale=2)
    b2 = pickle.loads(pickle.dumps(b))
    assert repr(b2) == repr(b) and b2._params == b._params
    np.testing.assert_array_equal(b2.disparity(left, right), b.disparity(left, right))
