"""CustomResNet3D and the 3-D GeneralizedLSSFPN: shapes, structure, gradients, manifest layout."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from l2cocc_ros.core.model.voxel_backbone import ConvNormAct, CustomResNet3D, GeneralizedLSSFPN

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import refvec_util  # noqa: E402


def test_tiny_forward_shapes_and_backward():
    torch.manual_seed(0)
    bb = CustomResNet3D(in_channels=8, num_layer=(2, 1, 1), num_channels=(8, 8, 8), stride=(1, 2, 2))
    neck = GeneralizedLSSFPN(in_channels=(8, 8, 8), out_channels=8, dims=3, gn_groups=4)
    x = torch.randn(1, 8, 8, 8, 4, requires_grad=True)
    feats = bb(x)
    assert [tuple(f.shape) for f in feats] == [(1, 8, 8, 8, 4), (1, 8, 4, 4, 2), (1, 8, 2, 2, 1)]
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 8, 8, 8, 4), (1, 8, 4, 4, 2)]
    (outs[0] * torch.randn_like(outs[0])).sum().backward()
    for mod in (bb, neck):
        for name, p in mod.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_stride1_stage_still_has_conv_shortcut_and_outputs_are_relu():
    bb = CustomResNet3D(in_channels=4, num_layer=(1, 1, 1), num_channels=(4, 4, 4), stride=(1, 2, 2)).eval()
    sc = bb.layers[0][0].downsample
    assert isinstance(sc, ConvNormAct) and sc.conv.kernel_size == (3, 3, 3) and sc.conv.stride == (1, 1, 1)
    with torch.no_grad():
        feats = bb(torch.randn(1, 4, 4, 4, 4))
    assert all((f >= 0).all() for f in feats)


def test_fpn_concatenates_current_level_first():
    neck = GeneralizedLSSFPN(in_channels=(4, 4, 4), out_channels=4, dims=3, gn_groups=1)
    # lateral 1 sees cat[x1, up(x2)] (8 channels): zeroing the weights of the x2 half removes x2's influence
    with torch.no_grad():
        neck.lateral_convs[1].conv.weight[:, 4:] = 0
    a = [torch.randn(1, 4, 4, 4, 4), torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 1, 1, 1)]
    b = [a[0], a[1], torch.randn(1, 4, 1, 1, 1)]
    with torch.no_grad():
        assert torch.allclose(neck(a)[1], neck(b)[1])


def _check_manifest(modules, cfg):
    details = refvec_util.manifest_details(cfg)
    for prefix, mod in modules.items():
        ref = {k[len(prefix) + 1:]: v for k, v in details.items() if k.startswith(prefix + ".")}
        sd = mod.state_dict()
        assert list(sd) == list(ref), prefix
        for k, t in sd.items():
            assert list(t.shape) == ref[k]["shape"] and str(t.dtype) == "torch." + ref[k]["dtype"], k


@pytest.mark.parametrize("cfg,blocks", [("semantickitti_l2cocc_c", (1, 1, 1)), ("semantickitti_l2cocc_l", (2, 2, 2)),
                                        ("kitti360_l2cocc_l", (2, 2, 2))])
def test_state_dict_matches_manifest(cfg, blocks):
    _check_manifest({"voxel_backbone": CustomResNet3D(num_layer=blocks), "voxel_neck": GeneralizedLSSFPN(dims=3)}, cfg)
    gn = GeneralizedLSSFPN(dims=3).lateral_convs[0].gn
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32
