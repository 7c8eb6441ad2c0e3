"""Tiny L2COcc-C / -L / -D: forward and backward on CPU with the real task and distillation losses."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import refvec_util  # noqa: E402

from l2cocc_ros.core.data.depth_target import lidar_depth_map  # noqa: E402
from l2cocc_ros.core.preprocess import build_camera_inputs  # noqa: E402
from l2cocc_ros.core.config import get_preset, with_overrides  # noqa: E402
from l2cocc_ros.core.data.labels import downsample_labels  # noqa: E402
from l2cocc_ros.core.losses import distill_losses, task_losses  # noqa: E402
from l2cocc_ros.core.model.l2cocc import CameraSegmentor, DistillSegmentor, LidarSegmentor, build_model  # noqa: E402

H0, W0 = 376, 1241  # original SemanticKITTI image size


def _frame(input_hw):
    """Synthetic frame: a smooth image, a ground-plane + wall depth map, the reference LiDAR scan, labels."""
    v, u = np.mgrid[0:H0, 0:W0].astype(np.float64)
    rgb = np.stack([0.5 + 0.3 * np.sin(0.05 * u + c) * np.cos(0.07 * v - c) for c in range(3)], -1)
    depth = np.minimum(np.where(v > 190, 718.856 * 1.73 / np.maximum(v - 185.2, 1e-3), np.inf), 25 + 5 * np.sin(0.01 * u))
    depth[v < 60] = 0
    P2 = np.array(refvec_util.P2)
    Tr = np.vstack([np.array(refvec_util.TR), [0, 0, 0, 1]])
    inputs, geom = build_camera_inputs((rgb * 255).astype(np.uint8), P2, input_hw,
                                       stereo_depth=depth.astype(np.float32), T_velo_to_cam=Tr)
    points = refvec_util.lidar_points()
    inputs["points"] = points
    lidar_depth = torch.from_numpy(lidar_depth_map(points.numpy(), geom))[None, None]
    x, y, z = np.meshgrid(np.arange(256), np.arange(256), np.arange(32), indexing="ij")
    labels = np.where(z < 4, 9, np.where((x // 16 + y // 16) % 5 == 0, (x // 8 + y // 8) % 19 + 1, 0))
    labels = np.where((x + y) % 97 == 0, 255, labels).astype(np.uint8)
    target = torch.from_numpy(labels).long()[None]
    target_1_2 = torch.from_numpy(downsample_labels(labels)).long()[None]
    return inputs, lidar_depth, target, target_1_2


def _losses(cfg, model, out, lidar_depth, target, target_1_2):
    terms = task_losses(out, target, cfg.loss, lidar_depth=lidar_depth if "depth_prob" in out else None,
                        d_bound=cfg.model.depth_net.dbound)
    if isinstance(model, DistillSegmentor):
        terms.update(distill_losses(out, out["teacher"], target_1_2, cfg.loss, target=target))
    return terms


def _check_output(out, cfg, camera: bool):
    X, Y, Z = cfg.model.internal_grid.dims
    assert out["logits"].shape == (1, cfg.model.num_classes, 256, 256, 32)
    assert torch.isfinite(out["logits"]).all()
    assert out["tpv_weights"].shape == (1, 4, X, Y, Z)
    feats = out["feats"]
    assert [len(p) for p in feats["tpv_backbone"]] == [3, 3, 3] and [len(p) for p in feats["tpv_neck"]] == [2, 2, 2]
    assert feats["feats3d_view_transformer"].shape == feats["feats3d_aggregator"].shape == (1, cfg.model.embed_dims,
                                                                                             X, Y, Z)
    if camera:
        D = len(np.arange(*cfg.model.depth_net.dbound))
        H, W = cfg.model.image_size
        assert out["depth_prob"].shape == (1, D, H // 8, W // 8)
        assert torch.allclose(out["depth_prob"].sum(1), torch.ones(1, H // 8, W // 8), atol=1e-4)
    else:
        assert "depth_prob" not in out


@pytest.mark.parametrize("variant", ["c", "l", "d"])
def test_tiny_forward_backward(variant):
    torch.manual_seed(0)
    cfg = get_preset(f"tiny_l2cocc_{variant}")
    model = build_model(cfg.model).train()
    assert type(model) is {"c": CameraSegmentor, "l": LidarSegmentor, "d": DistillSegmentor}[variant]
    with torch.no_grad():  # zero-initialised residual scales (NA gamma, channel-attention lambda) would block grads
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "layer_scale")):
                p.fill_(0.1)
    inputs, lidar_depth, target, target_1_2 = _frame(cfg.model.image_size)
    out = model(inputs)
    _check_output(out, cfg, camera=variant != "l")
    terms = _losses(cfg, model, out, lidar_depth, target, target_1_2)
    expected = {"loss_ce", "loss_sem_scal", "loss_geo_scal"} | ({"loss_depth"} if variant != "l" else set())
    if variant == "d":
        expected |= {"distill_logit_kl", "distill_tpv_weights_kl", "distill_feats_cosine", "distill_relation"}
        _check_output(out["teacher"], cfg, camera=False)
        teacher_tensors = [out["teacher"]["logits"], out["teacher"]["tpv_weights"],
                           *out["teacher"]["feats"]["tpv_neck"][0]]
        assert not any(t.requires_grad for t in teacher_tensors)
    assert set(terms) == expected
    assert all(torch.isfinite(t) and t.dim() == 0 for t in terms.values())
    sum(terms.values()).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    no_grad = [n for n, p in trainable.items() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:10]}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    zero = [n for n, p in trainable.items() if not p.grad.abs().sum() > 0]
    # level_embeds rows 1..3 are never used (one feature level), as in the original; the tensor gets a grad
    assert all(n.endswith("level_embeds") for n in zero), f"parameters with all-zero gradient: {zero[:10]}"
    if variant == "d":
        assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    expected_trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("teacher."))
    frozen_student = sum(p.numel() for n, p in model.named_parameters()
                         if not n.startswith("teacher.") and not p.requires_grad)
    assert sum(p.numel() for p in trainable.values()) == expected_trainable - frozen_student


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_teacher_mode(mode):
    cfg = with_overrides(get_preset("tiny_l2cocc_d"), {"model": {"teacher_mode": mode}})
    model = build_model(cfg.model).train()
    assert model.teacher.training == (mode == "train")
    inputs = _frame(cfg.model.image_size)[0]
    bn = model.teacher.voxel_backbone.layers[0][0].conv1.bn
    before = bn.running_mean.clone()
    with torch.no_grad():
        out = model(inputs)
    # the original's teacher (train mode) updates its BatchNorm running stats during distillation
    assert (not torch.equal(before, bn.running_mean)) == (mode == "train")
    assert "teacher" in out
    model.eval()
    assert not model.teacher.training
    with torch.no_grad():
        assert "teacher" not in model(inputs)


def test_missing_inputs_are_named():
    cfg = get_preset("tiny_l2cocc_c")
    model = build_model(cfg.model).eval()
    inputs = _frame(cfg.model.image_size)[0]
    del inputs["stereo_depth"]
    with pytest.raises(ValueError, match="stereo_depth"):
        model(inputs)
    lidar = build_model(get_preset("tiny_l2cocc_l").model).eval()
    with pytest.raises(ValueError, match="points"):
        lidar({"img": torch.zeros(1)})


def test_build_model_rejects_bad_config():
    with pytest.raises(TypeError, match="ModelConfig"):
        build_model({"variant": "c"})
    with pytest.raises(ValueError, match="image_neck.in_channels"):
        build_model(with_overrides(get_preset("tiny_l2cocc_c"), {"model": {"image_neck": {
            "in_channels": [8, 16, 32, 80, 321]}}}).model)
    assert math.isclose(get_preset("tiny_l2cocc_c").train.lr, 1e-3)
