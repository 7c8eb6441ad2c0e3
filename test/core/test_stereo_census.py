"""The torch census stereo backend: known disparities, invalid regions, registry, agreement with SGBM, and the
device it runs on (the engine's)."""
import numpy as np
import pytest
import torch

from l2cocc_ros.core import stereo
from l2cocc_ros.core.stereo.census import TorchCensusStereo

from test_stereo import BASELINE, F_PX, _right_from_left, _texture  # noqa: E402  (same folder)


@pytest.mark.parametrize("downscale", [1, 2])
def test_constant_disparity(downscale):
    h, w, d = 96, 320, 24.0
    left = _texture(h, w)
    right = _right_from_left(left, np.full((h, w), d))
    backend = stereo.get_stereo_backend("torch_census", num_disparities=64, downscale=downscale, device="cpu")
    disp = backend.disparity(left, right).numpy()
    valid = disp > 0
    assert valid[:, 80:].mean() > 0.9
    assert np.median(np.abs(disp[valid] - d)) < 0.3 * downscale
    depth = backend.compute(left, right, F_PX, BASELINE)
    inner = depth[:, 80:][valid[:, 80:]]
    assert np.median(np.abs(inner - F_PX * BASELINE / d) / (F_PX * BASELINE / d)) < 0.02


def test_sloped_disparity_matches_sgbm():
    h, w = 96, 320
    left = _texture(h, w, seed=3)
    disp_true = np.tile(np.linspace(10.0, 30.0, h, dtype=np.float32)[:, None], (1, w))  # ground-like
    right = _right_from_left(left, disp_true)
    ours = TorchCensusStereo(num_disparities=48, device="cpu").disparity(left, right).numpy()
    sgbm = stereo.SGBMStereo(num_disparities=48).disparity(left, right).numpy()
    both = (ours > 0) & (sgbm > 0)
    both[:, :50] = False
    assert both.mean() > 0.6
    assert np.median(np.abs(ours[both] - disp_true[both])) < 0.5
    assert np.median(np.abs(ours[both] - sgbm[both])) < 0.5


def test_textureless_is_invalid_and_bad_options_are_named():
    flat = np.full((64, 160, 3), 128, np.uint8)
    disp = TorchCensusStereo(num_disparities=32, device="cpu").disparity(flat, flat).numpy()
    assert (disp <= 0).mean() > 0.95
    with pytest.raises(ValueError, match="num_disparities"):
        stereo.get_stereo_backend("torch_census", num_disparities=20)
    with pytest.raises(ValueError, match="block_size"):
        TorchCensusStereo(block_size=4)
    assert "torch_census" in stereo.available_stereo_backends()


def test_runs_on_the_engine_device_not_its_own_choice():
    """The engine moves the backend to the model's device; every tensor of the matching lives there."""
    from l2cocc_ros.core.engine import InferenceEngine

    backend = TorchCensusStereo(num_disparities=32)
    assert backend.device == torch.device("cpu")  # no "auto" choice of its own
    engine = InferenceEngine.from_preset("tiny_l2cocc_c", device="cpu", stereo_backend=backend)
    assert engine.stereo is backend and backend.device == engine.device
    backend.to("meta")  # a device that is not the CPU: the images go there, nothing comes back to the host
    left = _texture(32, 96)
    disp = backend.disparity(left, left)
    assert disp.device.type == "meta" and disp.shape == (32, 96)
    depth = backend.depth(left, left, F_PX, BASELINE)
    assert depth.device.type == "meta"


def test_census_codes_and_hamming_cost_count_the_bits():
    from l2cocc_ros.core.stereo.census import CENSUS_BITS, _census, _popcount

    x = torch.randint(0, 1 << CENSUS_BITS, (1000,), dtype=torch.int32)
    assert _popcount(x).tolist() == [bin(v).count("1") for v in x.tolist()]
    grey = torch.tensor(_texture(12, 16)[..., 0], dtype=torch.float32)
    code = _census(grey)
    pad = torch.nn.functional.pad(grey[None, None], (2,) * 4, mode="replicate")[0, 0]
    assert bool(code[5, 7] & 1) == bool(pad[5, 7] > grey[5, 7])  # bit 0: the top-left neighbour
    assert int(_popcount(code).max()) <= CENSUS_BITS
