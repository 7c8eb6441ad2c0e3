"""OccHead: output grid, upsampling factor, gradients, manifest layout."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from l2cocc_ros.core.model.occ_head import OccHead

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import refvec_util  # noqa: E402


def test_logits_are_trilinear_upsampling_of_the_internal_prediction():
    torch.manual_seed(0)
    head = OccHead(in_channels=8, num_classes=5, out_size=(16, 16, 4), gn_groups=4).eval()
    x = torch.randn(1, 8, 4, 4, 1)  # a x4 internal grid (tiny preset style)
    with torch.no_grad():
        out = head(x)
        low = head.occ_convs[0](x)
    assert out.shape == (1, 5, 16, 16, 4) and low.shape == (1, 5, 4, 4, 1)
    assert torch.allclose(out, F.interpolate(low, size=(16, 16, 4), mode="trilinear", align_corners=False))


def test_backward_reaches_every_parameter():
    head = OccHead(in_channels=8, num_classes=3, out_size=(8, 8, 4), gn_groups=2)
    x = torch.randn(1, 8, 4, 4, 2, requires_grad=True)
    out = head(x)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cfg,n_cls", [("semantickitti_l2cocc_c", 20), ("kitti360_l2cocc_l", 19)])
def test_state_dict_matches_manifest(cfg, n_cls):
    head = OccHead(num_classes=n_cls)
    ref = {k[len("pts_bbox_head."):]: v for k, v in refvec_util.manifest_details(cfg).items()
           if k.startswith("pts_bbox_head.")}
    sd = head.state_dict()
    assert list(sd) == list(ref)
    assert all(list(t.shape) == ref[k]["shape"] for k, t in sd.items())
