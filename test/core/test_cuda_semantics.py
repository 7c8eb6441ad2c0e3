"""The engines under CUDA's autocast and device rules, on a CPU (``test/cuda_proxy.py``).

For the tiny -C, -D and -L engines in fp16 and bf16 on one synthetic KITTI-like frame: no exception, no tensor
mixed across devices, no inf/nan made from finite inputs, at most 4 host syncs in the camera model (5 per frame),
and labels equal to the fp32 CPU engine's.

Weights: -L uses the shipped trained checkpoint ``l2cocc_ros/checkpoints/micro_l2cocc_l.pt``. -C and -D use
``l2cocc_ros/checkpoints/{tiny,micro}_l2cocc_{c,d}.pt`` (that preset) when shipped; until then the tiny preset with
RANDOM weights (seed 0), whose top-2 logit gaps are often below bf16's resolution, so for them the plain 99.5 %
check is skipped, with the reason printed. For every weight, labels must agree on the voxels whose fp32 top-2
gap exceeds ``CLEAR_MARGIN`` (>= 99.5 %). The full-size -C runs once with ``L2COCC_SLOW_TESTS=1``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from l2cocc_ros.core.checkpoint import load_model
from l2cocc_ros.core.config import get_preset
from l2cocc_ros.core.data.synth import SynthSequence
from l2cocc_ros.core.engine import InferenceEngine
from l2cocc_ros.core.frame import StereoFrame
from l2cocc_ros.core.model.l2cocc import build_model
from l2cocc_ros.core.model.ops import deform_conv2d
from l2cocc_ros.core.stereo import SGBMStereo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cuda_proxy import cuda_proxy  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parents[2] / "l2cocc_ros" / "checkpoints"
CLEAR_MARGIN = 0.05  # fp32 top-2 logit gap above which the weights decide a voxel's label (not a near-tie)
MAX_MODEL_SYNCS = 4  # in the camera model: LSS kept points, EVT proposed / unproposed voxels, EVT valid projections


@pytest.fixture(scope="module")
def frame():
    torch.set_num_threads(2)
    seq = SynthSequence(99)
    f = seq.frame(0, voxels=False)
    T_grid_from_cam = np.linalg.inv(np.vstack([seq.calib["Tr"], [0, 0, 0, 1]]))  # cam0 -> velodyne
    return StereoFrame.from_projections(f.left, f.right, seq.calib["P2"], seq.calib["P3"], T_grid_from_cam,
                                        stamp_ns=0, points=f.points)


def preset_of(variant: str) -> str:
    """The preset tested for a variant: the first shipped trained checkpoint of it, else tiny (random weights)."""
    for size in ("tiny", "micro"):
        if (CHECKPOINTS / f"{size}_l2cocc_{variant}.pt").is_file():
            return f"{size}_l2cocc_{variant}"
    return f"tiny_l2cocc_{variant}"


def weights(preset: str):
    """(model, model config, trained?) of a preset: its shipped checkpoint if present, else random (seed 0)."""
    path = CHECKPOINTS / f"{preset}.pt"
    if path.is_file():
        model, exp = load_model(path, preset)
        return model, exp.model, True
    cfg = get_preset(preset).model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(cfg), cfg, False


def run_engine(preset, frame, device="cpu", precision="fp32"):
    """Labels and fp32 logits of one frame (logits spied from the model's forward)."""
    model, cfg, trained = weights(preset)
    engine = InferenceEngine(model, cfg, device=torch.device(device), precision=precision,
                             stereo_backend=SGBMStereo())
    seen = {}
    real = engine.model.forward

    def forward(inputs):
        out = real(inputs)
        seen["logits"] = out["logits"]
        return out

    engine.model.forward = forward
    labels = engine.infer(frame).labels
    logits = seen["logits"][0]
    logits = getattr(logits, "elem", logits).float()
    return labels, logits, trained


def model_syncs(proxy) -> int:
    """Host syncs inside the model (the stereo backend's and the label copy are the engine's)."""
    return sum(n for (_, site), n in proxy.syncs.items() if site.startswith("l2cocc_ros/core/model/"))


_REFERENCE = {}


def reference(preset, frame):
    if preset not in _REFERENCE:
        _REFERENCE[preset] = run_engine(preset, frame)
    return _REFERENCE[preset]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("variant", ["c", "d", "l"])
def test_engine_under_cuda_autocast(variant, precision, frame):
    preset = preset_of(variant)
    ref_labels, ref_logits, trained = reference(preset, frame)
    with cuda_proxy() as proxy:
        labels, logits, _ = run_engine(preset, frame, device="cuda", precision=precision)
    print(f"{preset} {precision}:\n{proxy.report()}")
    assert not proxy.mismatches, proxy.report()
    assert not proxy.nonfinite, proxy.report()
    assert torch.isfinite(logits).all()
    if variant != "l":
        assert model_syncs(proxy) <= MAX_MODEL_SYNCS, proxy.report()
    equal = labels == ref_labels
    top2 = ref_logits.topk(2, dim=0).values
    clear = ((top2[0] - top2[1]) > CLEAR_MARGIN).numpy()
    assert clear.mean() > 0.3  # the margin leaves a large part of the voxels in the check
    # wherever the weights decide, the low-precision path gives the fp32 labels
    decided = (f"{100 * equal[clear].mean():.3f} % of the {100 * clear.mean():.1f} % voxels with a top-2 gap > "
               f"{CLEAR_MARGIN}")
    assert equal[clear].mean() >= 0.995, f"{preset} {precision}: {decided} agree"
    if not trained:
        pytest.skip(f"no trained {{tiny,micro}}_l2cocc_{variant}.pt shipped: random weights, {decided} agree "
                    f"({100 * equal.mean():.2f} % of all); the 99.5 % check waits for a trained checkpoint")
    assert equal.mean() >= 0.995, f"{preset} {precision}: {100 * equal.mean():.3f} % of voxels agree"


def test_deform_conv_sampler_index_is_exact_in_half_precision():
    """The full-size -C depth net samples a 48 x 160 map: the gather index h * W + w reaches 7679, which fp16
    rounds to 7680 (one past the end: a device-side assert on CUDA). Zero offsets = a plain convolution."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 48, 160)
    weight = torch.randn(8, 2, 3, 3) * 0.1
    offset = torch.zeros(1, 18, 48, 160)
    expected = torch.nn.functional.conv2d(x, weight, padding=1, groups=4)
    for dtype in (torch.float16, torch.bfloat16):
        got = deform_conv2d(x.to(dtype), offset.to(dtype), weight.to(dtype), 1, 1, 1, groups=4)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), expected, atol=0.1, rtol=0.05)
    with cuda_proxy() as proxy, torch.autocast("cuda", dtype=torch.float16):  # the autocast path
        got = deform_conv2d(x.to("cuda"), offset.to("cuda"), weight.to("cuda"), 1, 1, 1, groups=4)
        assert got.dtype == torch.float16 and got.device.type == "cuda"
        got = got.elem
    assert not proxy.mismatches and not proxy.syncs, proxy.report()
    torch.testing.assert_close(got.float(), expected, atol=0.05, rtol=0.05)


def test_proxy_sees_what_cuda_refuses():
    """The proxy itself: a CPU tensor in a CUDA op, a sync, an fp16 overflow and autocast's dtype choice."""
    with cuda_proxy() as proxy:
        a = torch.ones(4, 4).to("cuda")
        assert a.is_cuda and a.device == torch.device("cuda", 0)
        _ = a + torch.ones(4, 4)  # CPU operand
        _ = a.nonzero()
        _ = a.half() * 70000.0  # overflows fp16
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert (a @ a).dtype == torch.bfloat16 and a.softmax(0).dtype == torch.float32
    assert len(proxy.mismatches) == 1 and len(proxy.syncs) == 1 and len(proxy.nonfinite) == 1, proxy.report()


@pytest.mark.skipif(os.environ.get("L2COCC_SLOW_TESTS") != "1", reason="full-size -C (~minutes): L2COCC_SLOW_TESTS=1")
def test_full_size_camera_engine_under_cuda_fp16(frame):
    with cuda_proxy() as proxy:
        labels, logits, _ = run_engine("semantickitti_l2cocc_c", frame, device="cuda", precision="fp16")
    assert not proxy.mismatches and not proxy.nonfinite, proxy.report()
    assert model_syncs(proxy) <= MAX_MODEL_SYNCS, proxy.report()
    assert labels.shape == (256, 256, 32) and torch.isfinite(logits).all()


def test_precision_policy_traces_inside_a_whole_graph_stage():
    """The deformable conv sits in the depth net, a stage that cuda_graphs compiles with fullgraph=True: the
    policy's autocast switch must trace (an ExitStack did not), under autocast as on a GPU."""
    from l2cocc_ros.core.model.ops import DeformConv2dPack

    torch.manual_seed(0)
    layer = DeformConv2dPack(8, 8, 3, padding=1, groups=4)
    x = torch.randn(1, 8, 12, 40)
    expected = layer(x)
    layer.compile(fullgraph=True, dynamic=False, backend="eager")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = layer(x)
    finally:
        torch._dynamo.reset()
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.05, rtol=0.05)
