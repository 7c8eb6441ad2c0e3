"""DeviceResizeCrop reproduces Pillow's resize (and our crop / normalisation) value for value; the two
Preprocessor implementations give the same camera inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from l2cocc_ros.core.preprocess import (DeviceResizeCrop, PillowPreprocessor, ResizeCrop, TorchPreprocessor,
                                       build_camera_inputs, make_preprocessor, normalize_image, resample_taps)

CASES = [  # (original H, W), (network H, W), resampling
    ((376, 1241), (384, 1280), "bicubic"),   # SemanticKITTI: upscale, bottom crop
    ((376, 1408), (384, 1408), "bicubic"),   # KITTI-360: same width, 8 zero rows padded on top
    ((376, 1241), (96, 320), "bicubic"),     # the tiny preset: strong reduction (wider support)
    ((370, 1226), (384, 1280), "bilinear"),
    ((376, 1241), (96, 320), "lanczos"),
]


def _frame(hw, seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    rgb[: hw[0] // 3] = 255  # saturated and black areas exercise the clipping after each pass
    rgb[-hw[0] // 4:, : hw[1] // 5] = 0
    depth = rng.uniform(0.0, 80.0, hw).astype(np.float32)
    depth[rng.random(hw) < 0.3] = 0.0  # holes, as stereo leaves them
    return rgb, depth


@pytest.mark.parametrize("orig,net,resample", CASES)
def test_image_depth_and_normalisation_equal_pillow(orig, net, resample):
    rgb, depth = _frame(orig, seed=sum(net))
    rc = ResizeCrop.from_sizes(orig, net, resample)
    dev = DeviceResizeCrop(rc)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    np.testing.assert_array_equal(dev.image(chw).permute(1, 2, 0).numpy(), rc.apply_image(rgb))
    np.testing.assert_array_equal(dev.depth(torch.from_numpy(depth)).numpy(), rc.apply_depth(depth))
    assert torch.equal(dev.normalized_image(chw), normalize_image(rc.apply_image(rgb)))


def test_inputs_equal_build_camera_inputs():
    rgb, depth = _frame((376, 1241), seed=5)
    p2 = np.array([[718.856, 0, 607.19, 45.38], [0, 718.856, 185.22, -0.11], [0, 0, 1, 0.0038]])
    ref, _ = build_camera_inputs(rgb, p2, (384, 1280), stereo_depth=depth, T_grid_from_cam=np.eye(4))
    got = DeviceResizeCrop(ResizeCrop.from_sizes((376, 1241), (384, 1280))).inputs(
        torch.from_numpy(rgb).permute(2, 0, 1), torch.from_numpy(depth))
    for key in ("img", "stereo_depth"):
        assert got[key].shape == ref[key].shape and torch.equal(got[key], ref[key]), key


def test_the_two_preprocessors_give_the_same_camera_inputs():
    """One interface, two implementations: every key equal, with and without an image transform (jitter)."""
    rgb, depth = _frame((94, 310), seed=7)
    p2 = np.array([[180.0, 0, 155, 11.2], [0, 180, 47, 0.0], [0, 0, 1, 0.0]])
    t = np.array([[0, 0, 1, 0.3], [-1, 0, 0, 0.0], [0, -1, 0, 1.7], [0, 0, 0, 1]], dtype=np.float64)
    pillow, device = make_preprocessor("pillow", (96, 320)), make_preprocessor("torch", (96, 320), device="cpu")
    assert isinstance(pillow, PillowPreprocessor) and isinstance(device, TorchPreprocessor)
    darker = lambda img: img * 0.5  # noqa: E731 - what a jitter does: a transform in [0, 1] before normalising
    for transform in (None, darker):
        ref, geom = pillow.camera_inputs(rgb, p2, T_grid_from_cam=t, stereo_depth=depth, image_transform=transform)
        got, _ = device.camera_inputs(rgb, p2, T_grid_from_cam=t, stereo_depth=depth, image_transform=transform)
        assert set(got) == set(ref) == {"img", "stereo_depth", "rot", "tran", "intrin", "post_rot", "post_tran", "bda"}
        for key in ref:
            assert torch.equal(got[key], ref[key]), (key, transform)
    assert pillow.plan((94, 310)) is pillow.plan((94, 310)) and geom.input_hw == (96, 320)
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        make_preprocessor("opencv", (96, 320))
    with pytest.raises(ValueError, match="stereo_depth is"):
        pillow.camera_inputs(rgb, p2, T_grid_from_cam=t, stereo_depth=depth[:-1])


def test_taps_are_pillows_on_a_hand_checked_case():
    # 4 -> 2 bicubic: scale 2, support 4, centres 1.0 and 3.0; Pillow's weights sum to 1 per output pixel
    index, weight = resample_taps(4, 2, "bicubic")
    np.testing.assert_allclose(weight.sum(1), 1.0)
    assert index.shape == weight.shape == (2, 9)
    assert index[0, :4].tolist() == [0, 1, 2, 3] and index[1, :4].tolist() == [0, 1, 2, 3]
    # same sizes: the identity
    index, weight = resample_taps(5, 5, "bicubic")
    np.testing.assert_allclose(weight[np.arange(5), np.argmax(weight, 1)], 1.0)
    np.testing.assert_array_equal(index[np.arange(5), np.argmax(weight, 1)], np.arange(5))
    # against Pillow on a ramp through the public API (mode F keeps the float result)
    ramp = np.arange(16, dtype=np.float32).reshape(1, 16)
    pil = np.asarray(Image.fromarray(ramp, mode="F").resize((7, 1), Image.Resampling.BICUBIC))[0]
    idx, w = resample_taps(16, 7, "bicubic")
    np.testing.assert_allclose((ramp[0][idx] * w).sum(1), pil, rtol=1e-6)


def test_bad_input_is_named():
    rc = ResizeCrop.from_sizes((376, 1241), (384, 1280))
    dev = DeviceResizeCrop(rc)
    with pytest.raises(ValueError, match=r"image must be \(3, 376, 1241\)"):
        dev.image(torch.zeros(3, 370, 1241, dtype=torch.uint8))
    with pytest.raises(ValueError, match="image must be uint8"):
        dev.image(torch.zeros(3, 376, 1241))
    with pytest.raises(ValueError, match=r"depth must be \(376, 1241\)"):
        dev.depth(torch.zeros(1, 376, 1241))
    with pytest.raises(ValueError, match="device preprocessing supports resample"):
        DeviceResizeCrop(ResizeCrop.from_sizes((376, 1241), (384, 1280), "nearest"))
    with pytest.raises(ValueError, match="filter must be one of"):
        resample_taps(10, 5, "box")
