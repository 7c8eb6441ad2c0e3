"""Distillation losses on small hand-made tensors (docs/model.md §5)."""
import math

import pytest
import torch

from l2cocc_ros.core.config import get_preset
from l2cocc_ros.core.losses import DistillWeights, distill_losses
from l2cocc_ros.core.losses.distill import masked_cosine, masked_kl, plane_masks, relation_l1

X, Y, Z, C = 4, 4, 2, 3   # half-resolution grid and class count of the toy outputs


def _fake_out(seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, requires_grad=requires_grad)

    planes = {"xy": (X, Y), "yz": (Y, Z), "zx": (X, Z)}
    # backbone maps at 1/2, 1/4 of the plane (at least 1 cell), neck at 1/2, 1/4
    back = [[r(1, ch, max(h // s, 1), max(w // s, 1)) for ch, s in ((6, 2), (8, 4), (10, 4))]
            for h, w in planes.values()]
    neck = [[r(1, 5, max(h // s, 1), max(w // s, 1)) for s in (2, 4)] for h, w in planes.values()]
    feats = {"tpv_backbone": back, "tpv_neck": neck,
             "feats3d_view_transformer": r(1, 5, X, Y, Z), "feats3d_aggregator": r(1, 5, X, Y, Z)}
    return {"logits": r(1, C, 2 * X, 2 * Y, 2 * Z), "tpv_weights": r(1, 4, X, Y, Z), "feats": feats}


def _targets(seed=3):
    g = torch.Generator().manual_seed(seed)
    t12 = torch.randint(0, C, (1, X, Y, Z), generator=g)
    t12[0, 0, 0, 0] = 255
    t = t12.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3)
    return t, t12


def test_all_terms_vanish_when_student_equals_teacher():
    target, t12 = _targets()
    out = _fake_out(0)
    losses = distill_losses(out, out, t12, None, target=target)
    assert set(losses) == {"distill_logit_kl", "distill_tpv_weights_kl", "distill_feats_cosine", "distill_relation"}
    assert losses["distill_logit_kl"].item() == 0.0
    assert losses["distill_tpv_weights_kl"].item() == 0.0
    assert losses["distill_relation"].item() == 0.0
    assert abs(losses["distill_feats_cosine"].item()) < 1e-6
    other = distill_losses(_fake_out(1), out, t12, None, target=target)
    assert all(v.item() > 1e-3 for v in other.values())


def test_masked_kl_hand_value_and_mask():
    s = torch.zeros(1, 2, 3, 1, 1)
    t = torch.zeros(1, 2, 3, 1, 1)
    s[0, 1, 0] = math.log(3.0)          # student (0.25, 0.75) on the labelled voxel, teacher (0.5, 0.5)
    labels = torch.tensor([5, 0, 255])[None, :, None, None]
    expected = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)) / (1 * 2)
    assert masked_kl(s, t, labels).item() == pytest.approx(expected, rel=1e-6)
    s2 = s.clone()
    s2[0, :, 1:, 0, 0] = torch.tensor([[7.0, -3.0], [-5.0, 2.0]])   # voxels labelled 0 and 255 do not count
    assert masked_kl(s2, t, labels).item() == pytest.approx(expected, rel=1e-6)
    assert masked_kl(s, t, torch.zeros_like(labels)).item() == 0.0


def test_plane_masks_collapse_one_axis():
    t12 = torch.zeros(1, 3, 2, 2, dtype=torch.long)
    t12[0, 2, 1, 0] = 4
    t12[0, 0, 0, 1] = 255           # ignored counts as empty
    m = plane_masks(t12)
    assert m["xy"][0].nonzero().tolist() == [[2, 1]]
    assert m["yz"][0].nonzero().tolist() == [[1, 0]]
    assert m["zx"][0].nonzero().tolist() == [[2, 0]]
    assert int(m["3d"].sum()) == 1


def test_masked_cosine_and_relation_hand_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)     # positions: e_x, e_y
    b = torch.tensor([[0.0, 1.0], [0.0, 3.0]]).T.reshape(1, 2, 1, 2)     # positions: e_y, 3 e_y
    both = torch.tensor([[[True, True]]])
    first = torch.tensor([[[True, False]]])
    assert masked_cosine(a, b, both).item() == pytest.approx(0.5)         # (1 - 0 + 1 - 1) / 2
    assert masked_cosine(a, b, first).item() == pytest.approx(1.0)
    # Gram(a) = I, Gram(b) = all ones -> mean |I - 1| = 2 / 4
    assert relation_l1(a, b).item() == pytest.approx(0.5)


def test_teacher_gets_no_gradient_and_weights_come_from_config():
    target, t12 = _targets()
    student, teacher = _fake_out(0, requires_grad=True), _fake_out(1, requires_grad=True)
    cfg = get_preset("semantickitti_l2cocc_d").loss
    losses = distill_losses(student, teacher, t12, cfg, target=target)
    sum(losses.values()).backward()
    assert teacher["logits"].grad is None and teacher["feats"]["tpv_neck"][0][0].grad is None
    assert student["logits"].grad is not None and student["feats"]["tpv_neck"][0][0].grad.abs().sum() > 0
    halved = distill_losses(student, teacher, t12, DistillWeights(35, 5, 2, 2.5), target=target)
    for k in losses:
        assert halved[k].item() == pytest.approx(losses[k].item() / 2, rel=1e-6)


def test_missing_feature_is_named():
    target, t12 = _targets()
    out = _fake_out(0)
    bad = dict(out, feats={k: v for k, v in out["feats"].items() if k != "feats3d_aggregator"})
    with pytest.raises(ValueError, match="feats3d_aggregator"):
        distill_losses(bad, out, t12, None, target=target)
