"""Task losses on small hand-made tensors with known answers (docs/model.md §1.2, §4)."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from l2cocc_ros.core.classes import kitti360, semantic_kitti
from l2cocc_ros.core.config import LossConfig, get_preset
from l2cocc_ros.core.losses import task_losses
from l2cocc_ros.core.losses.task import (depth_kl_loss, depth_target_distribution, downsample_lidar_depth,
                                         geo_scal_loss, sem_scal_loss, weighted_ce)

SK_WEIGHTS = [0.0446, 0.0603, 0.0852, 0.0856, 0.0747, 0.0734, 0.0801, 0.0796, 0.0818, 0.0557, 0.0653,
              0.0568, 0.0683, 0.0560, 0.0603, 0.0530, 0.0688, 0.0574, 0.0716, 0.0786]
K360_WEIGHTS = [0.0464, 0.0595, 0.0865, 0.0871, 0.0717, 0.0657, 0.0852, 0.0541, 0.0602, 0.0567, 0.0607,
                0.0540, 0.0636, 0.0513, 0.0564, 0.0701, 0.0774, 0.0580, 0.0690]


def _two_class_logits(p1):
    """(1, 2, n, 1, 1) logits whose softmax gives P(class 1) = p1."""
    p1 = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.log(1 - p1), torch.log(p1)])[None, :, :, None, None]


def test_ce_weights_match_the_papers_table():
    np.testing.assert_allclose(semantic_kitti().class_weights(), SK_WEIGHTS, atol=5e-5)
    np.testing.assert_allclose(kitti360().class_weights(), K360_WEIGHTS, atol=5e-5)


def test_enet_class_weights_follow_the_class_shares():
    counts = semantic_kitti().frequencies
    w = semantic_kitti().class_weights("enet")
    np.testing.assert_allclose(w, 1.0 / np.log(1.02 + counts / counts.sum()), rtol=1e-6)
    assert w[0] == pytest.approx(1.4965, abs=1e-3)           # empty, 92 % of the voxels
    assert w[1:].min() > 14 * w[0] and w.max() < 1 / np.log(1.02)  # every occupied class >> empty, bounded
    with pytest.raises(ValueError, match="'inverse'.*paper, enet"):
        semantic_kitti().class_weights("inverse")
    with pytest.raises(ValueError, match="loss.class_weighting"):
        LossConfig(class_weighting="inverse")


def test_task_losses_use_the_configured_class_weighting():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 20, 4, 4, 2, generator=g)
    target = torch.randint(0, 20, (1, 4, 4, 2), generator=g)
    cfg = LossConfig(class_weighting="enet", sem_scal_weight=0.0, geo_scal_weight=0.0, depth_weight=0.0)
    w = torch.from_numpy(semantic_kitti().class_weights("enet"))
    got = task_losses({"logits": logits}, target, cfg)["loss_ce"]
    assert got.item() == pytest.approx(3.0 * weighted_ce(logits, target, w).item(), rel=1e-6)
    tempered = dataclasses.replace(cfg, class_weight_exponent=0.75)
    got = task_losses({"logits": logits}, target, tempered)["loss_ce"]
    assert got.item() == pytest.approx(3.0 * weighted_ce(logits, target, w ** 0.75).item(), rel=1e-6)
    with pytest.raises(ValueError, match="loss.class_weight_exponent"):
        dataclasses.replace(cfg, class_weight_exponent=1.5)


def test_weighted_ce_is_weighted_mean_and_ignores_255():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 3.0, 1.0], [9.0, -9.0, 0.0]])
    target = torch.tensor([0, 2, 1, 255])
    w = torch.tensor([0.5, 1.0, 2.0])
    logp = torch.log_softmax(logits, dim=1)
    expected = -(0.5 * logp[0, 0] + 2.0 * logp[1, 2] + 1.0 * logp[2, 1]) / (0.5 + 2.0 + 1.0)
    got = weighted_ce(logits.T[None, :, :, None, None], target[None, :, None, None], w)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sem_scal_hand_computed():
    # targets [0, 1, 255]; P(class 1) = [0.2, 0.6, 0.9] (the third voxel is ignored)
    logits = _two_class_logits([0.2, 0.6, 0.9])
    target = torch.tensor([0, 1, 255])[None, :, None, None]
    loss0 = -math.log(0.8 / 1.2) - math.log(0.8) - math.log(0.6)   # precision, recall, specificity of class 0
    loss1 = -math.log(0.6 / 0.8) - math.log(0.6) - math.log(0.8)
    assert sem_scal_loss(logits, target).item() == pytest.approx((loss0 + loss1) / 2, rel=1e-9)


def test_geo_scal_hand_computed():
    logits = _two_class_logits([0.2, 0.6, 0.9])
    target = torch.tensor([0, 1, 255])[None, :, None, None]
    eps = 1e-5
    expected = -math.log(0.6 / (0.8 + eps)) - math.log(0.6 / (1 + eps)) - math.log(0.8 / (1 + eps))
    assert geo_scal_loss(logits, target).item() == pytest.approx(expected, rel=1e-9)


def test_scal_losses_vanish_for_a_perfect_prediction():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (1, 6, 5, 4), generator=g)
    target[0, 0, 0, :2] = 255
    logits = torch.nn.functional.one_hot(target.clamp(max=4), 5).movedim(-1, 1).double() * 40.0
    assert sem_scal_loss(logits, target).item() < 1e-6
    assert geo_scal_loss(logits, target).item() < 1e-4
    # a wrong prediction is penalised
    assert sem_scal_loss(-logits, target).item() > 1.0


def test_sem_scal_matches_a_loop_over_classes():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 4, 5, 3, 2, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (1, 5, 3, 2), generator=g)  # class 3 absent
    target[0, 0, 0, 0] = 255
    p = torch.softmax(logits, 1)[:, :, target[0] != 255][0]  # (C, V)
    t = target[target != 255]
    terms = []
    for c in range(4):
        yc = (t == c).double()
        if yc.sum() == 0:
            continue
        hit = (p[c] * yc).sum()
        terms.append(-torch.log(hit / p[c].sum()) - torch.log(hit / yc.sum())
                     - torch.log(((1 - p[c]) * (1 - yc)).sum() / (1 - yc).sum()))
    assert sem_scal_loss(logits, target).item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-9)


def test_scal_losses_survive_ratios_rounded_above_one():
    """Every voxel of one class, p close to 1: precision = hit / sum_p is 1 exactly but its two float sums are
    taken in different orders and land a few ulps above 1 (BCE refused it and stopped a training run)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 64, 64, 32, generator=g)
    logits[:, 1] += 10
    target = torch.ones(1, 64, 64, 32, dtype=torch.long)
    prob = torch.softmax(logits, 1)[0, 1].reshape(-1)
    hit = torch.zeros(3).index_add(0, target.reshape(-1), prob)[1]
    assert hit / prob.sum() > 1.0  # the rounding this guards against does happen with these inputs
    for loss in (sem_scal_loss(logits, target), geo_scal_loss(logits, target)):
        assert torch.isfinite(loss) and loss >= 0


def test_downsample_lidar_depth_takes_min_nonzero_per_patch():
    depth = torch.zeros(1, 1, 8, 12)
    depth[0, 0, 1, 1], depth[0, 0, 3, 2] = 7.0, 5.0      # patch (0, 0): min 5
    depth[0, 0, 5, 9] = 30.0                              # patch (1, 2)
    out = downsample_lidar_depth(depth, 4)
    np.testing.assert_array_equal(out[0].numpy(), [[5.0, 0.0, 0.0], [0.0, 0.0, 30.0]])


def test_depth_target_peaks_at_twice_the_depth_in_original_mode_and_at_depth_when_corrected():
    centres = torch.arange(2.0, 58.0, 0.5)
    d = torch.tensor([10.0, 6.25, 6.5])
    orig = depth_target_distribution(d, mode="original")
    corr = depth_target_distribution(d, mode="corrected")
    assert centres[orig.argmax(1)].tolist() == [20.0, 12.5, 13.0]
    assert centres[corr.argmax(1)].tolist()[::2] == [10.0, 6.5]
    assert corr[0].sum().item() == pytest.approx(1.0, abs=1e-6)
    # std 1 m in the original (1 bin-unit read in metres) vs 0.5 m corrected: the peak is lower
    assert orig[0].max() < corr[0].max()
    with pytest.raises(ValueError, match="depth target mode"):
        depth_target_distribution(d, mode="fixed")


def test_depth_kl_batchmean_over_used_patches():
    n_bins = 112
    prob = torch.full((1, n_bins, 2, 2), 1.0 / n_bins, dtype=torch.float64)
    lidar = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    lidar[0, 0, 0, 0] = 10.0     # patch (0, 0): used
    lidar[0, 0, 0, 9] = 1.0      # patch (0, 1): below 2 m -> not used
    lidar[0, 0, 9, 0] = 60.0     # patch (1, 0): beyond 57.5 m -> not used
    t = depth_target_distribution(torch.tensor([10.0], dtype=torch.float64), mode="corrected")[0]
    expected = (torch.xlogy(t, t) - t * math.log(1.0 / n_bins + 1e-4)).sum().item()
    got = depth_kl_loss(prob, lidar, mode="corrected")
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # a prediction equal to the target is better than uniform
    prob2 = prob.clone()
    prob2[0, :, 0, 0] = t / t.sum()
    assert depth_kl_loss(prob2, lidar, mode="corrected").item() < got.item()
    assert depth_kl_loss(prob, torch.zeros_like(lidar)).item() == 0.0


def test_task_losses_use_config_weights():
    g = torch.Generator().manual_seed(2)
    out = {"logits": torch.randn(1, 20, 4, 4, 2, generator=g), "depth_prob": torch.softmax(
        torch.randn(1, 112, 2, 2, generator=g), 1)}
    target = torch.randint(0, 20, (1, 4, 4, 2), generator=g)
    lidar = torch.zeros(1, 1, 16, 16)
    lidar[0, 0, 3, 3] = 12.0
    d_cfg = get_preset("semantickitti_l2cocc_d").loss
    c_cfg = get_preset("semantickitti_l2cocc_c").loss
    ld = task_losses(out, target, d_cfg, lidar_depth=lidar)
    lc = task_losses(out, target, c_cfg, lidar_depth=lidar)
    assert set(lc) == {"loss_ce", "loss_sem_scal", "loss_geo_scal", "loss_depth"}
    assert ld["loss_sem_scal"].item() == pytest.approx(0.5 * lc["loss_sem_scal"].item(), rel=1e-6)
    assert ld["loss_geo_scal"].item() == pytest.approx(1.5 * lc["loss_geo_scal"].item(), rel=1e-6)
    w = torch.from_numpy(semantic_kitti().class_weights())
    assert lc["loss_ce"].item() == pytest.approx(3.0 * weighted_ce(out["logits"], target, w).item(), rel=1e-6)
    assert lc["loss_depth"].item() == pytest.approx(1e-4 * depth_kl_loss(out["depth_prob"], lidar).item(), rel=1e-6)
    with pytest.raises(ValueError, match="lidar_depth"):
        task_losses(out, target, c_cfg)
    lidar_only = task_losses({"logits": out["logits"]}, target, LossConfig(depth_weight=0.0))
    assert "loss_depth" not in lidar_only
