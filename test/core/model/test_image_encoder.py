"""EfficientNet (mmcls layout) and SECONDFPN: checkpoint keys, scaling, padding, tiny forward/backward."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from l2cocc_ros.core.model.image_encoder import (EFFICIENTNET_B_STAGES, SECONDFPN, Conv2dAdaptivePadding,
                                                 EfficientNet, make_divisible, scale_stages)

from refvec_util import MANIFEST as _MANIFEST_DIR  # noqa: E402

MANIFEST = _MANIFEST_DIR / "semantickitti_l2cocc_c.json"


def _manifest(prefix: str) -> dict:
    man = json.loads(MANIFEST.read_text())
    head = "model." + prefix + "."
    return {k[len(head):]: tuple(v) for k, v in man.items() if k.startswith(head)}


def test_b7_and_neck_state_dict_equal_manifest():
    for prefix, module in (("img_backbone", EfficientNet()), ("img_neck", SECONDFPN())):
        ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert ours == _manifest(prefix), prefix
    # trainable count as in the manifest README (img_backbone 63,786,960)
    assert sum(p.numel() for p in EfficientNet().parameters()) == 63_786_960


def test_b7_stage_layout():
    stages = scale_stages(EFFICIENTNET_B_STAGES, 2.0, 3.1)
    assert [len(s) for s in stages[1:-1]] == [4, 7, 7, 20, 17]
    assert [s[-1].out_channels for s in stages] == [64, 32, 48, 80, 224, 640, 2560]
    assert [s[0].stride for s in stages[1:-1]] == [1, 2, 2, 2, 2]
    assert EfficientNet(width_mult=2.0, depth_mult=3.1, out_indices=(2, 3, 4, 5, 6)).out_channels == [48, 80, 224, 640,
                                                                                                      2560]


def test_make_divisible():
    assert make_divisible(32 * 2.0) == 64
    assert make_divisible(16 * 1.1) == 16  # 17.6 -> 16 (>= 0.9 * 17.6)
    assert make_divisible(40 * 1.1) == 48  # 44 -> 48
    assert make_divisible(3) == 8


def test_adaptive_padding_is_tf_same():
    torch.manual_seed(0)
    conv = Conv2dAdaptivePadding(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 7, 10)
    # TF SAME: out = ceil(in / s); total pad = (out-1)*s + k - in, the extra pixel on the bottom/right.
    pad_h = (math.ceil(7 / 2) - 1) * 2 + 3 - 7  # 1
    pad_w = (math.ceil(10 / 2) - 1) * 2 + 3 - 10  # 1
    ref = F.conv2d(F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)), conv.weight, stride=2)
    out = conv(x)
    assert out.shape == (1, 3, 4, 5)
    torch.testing.assert_close(out, ref)


def test_out_indices_validation():
    with pytest.raises(ValueError, match="out_indices"):
        EfficientNet(width_mult=0.25, depth_mult=0.3, out_indices=(7,))
    with pytest.raises(ValueError, match="arch"):
        EfficientNet(arch="b9")
    with pytest.raises(ValueError, match="same length"):
        SECONDFPN((8, 8), (4,), (1, 2))


def test_tiny_forward_backward_with_checkpointing():
    torch.manual_seed(0)
    net = EfficientNet(width_mult=0.25, depth_mult=0.3, drop_path_rate=0.2, with_cp=True)
    widths = net.out_channels
    neck = SECONDFPN(widths, (8,) * 5, (0.5, 1, 2, 4, 4))
    net.train()
    neck.train()
    img = torch.randn(2, 3, 32, 64)
    feats = net(img)
    assert [tuple(f.shape) for f in feats] == [(2, c, 32 // s, 64 // s) for c, s in zip(widths, (4, 8, 16, 32, 32))]
    out = neck(feats)
    assert out.shape == (2, 40, 4, 8)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in list(net.named_parameters()) + list(neck.named_parameters()) if p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_checkpointing_gives_same_result_in_eval_and_train():
    torch.manual_seed(1)
    a = EfficientNet(width_mult=0.25, depth_mult=0.3, drop_path_rate=0.0, with_cp=False)
    b = EfficientNet(width_mult=0.25, depth_mult=0.3, drop_path_rate=0.0, with_cp=True)
    b.load_state_dict(a.state_dict())
    img = torch.randn(2, 3, 32, 64, requires_grad=True)
    a.train()
    b.train()
    ya = a(img)[-1]
    yb = b(img)[-1]
    torch.testing.assert_close(ya, yb)
    ga = torch.autograd.grad(ya.sum(), img)[0]
    gb = torch.autograd.grad(yb.sum(), img)[0]
    torch.testing.assert_close(ga, gb)
