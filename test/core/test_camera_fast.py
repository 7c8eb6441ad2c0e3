"""The fast preprocessing paths of core/preprocess give the same bits as the plain formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from l2cocc_ros.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, ResizeCrop, build_camera_inputs, normalize_image


def _reference_normalise(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0)
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def test_lookup_table_is_bit_identical_for_every_level():
    levels = np.arange(256, dtype=np.uint8)
    rgb = np.stack([levels, levels[::-1], np.roll(levels, 77)], -1)[None]  # (1, 256, 3): every level, each channel
    got = normalize_image(rgb)
    assert got.dtype == torch.float32 and got.shape == (3, 1, 256) and got.is_contiguous()
    assert torch.equal(got, _reference_normalise(rgb))


def test_float_input_is_not_modified_and_matches():
    x = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    got = normalize_image(x)
    assert torch.equal(x, before)
    ref = (before - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("orig_hw,input_hw", [((376, 1241), (384, 1280)), ((376, 1408), (384, 1408)),
                                              ((300, 1000), (96, 320)), ((120, 200), (100, 150))])
def test_array_crop_equals_pil_crop(orig_hw, input_hw):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, orig_hw + (3,), dtype=np.uint8)
    depth = rng.uniform(0, 80, orig_hw).astype(np.float32)
    rc = ResizeCrop.from_sizes(orig_hw, input_hw)
    pil = lambda img: np.asarray(img.resize(rc.resized_wh, Image.Resampling.BICUBIC).crop(rc.crop))  # noqa: E731
    out = rc.apply_image(rgb)
    assert out.shape == input_hw + (3,) and out.flags.c_contiguous
    assert np.array_equal(out, pil(Image.fromarray(rgb)))
    d = rc.apply_depth(depth)
    assert d.flags.writeable and d.dtype == np.float32
    assert np.array_equal(d, pil(Image.fromarray(depth)))


def test_build_camera_inputs_image_equals_reference_path():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (376, 1241, 3), dtype=np.uint8)
    p2 = np.array([[718.856, 0, 607.1928, 45.38225], [0, 718.856, 185.2157, -0.1130887], [0, 0, 1, 0.003779761]])
    inputs, _ = build_camera_inputs(rgb, p2, (384, 1280), T_grid_from_cam=np.eye(4))
    rc = ResizeCrop.from_sizes((376, 1241), (384, 1280))
    resized = np.asarray(Image.fromarray(rgb).resize(rc.resized_wh, Image.Resampling.BICUBIC).crop(rc.crop))
    assert torch.equal(inputs["img"][0, 0], _reference_normalise(resized))
