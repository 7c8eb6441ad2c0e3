"""Training on a GPU, checked on a CPU: the task and distillation losses (forward and backward) with every input
on another device (``cuda_proxy.device_mixing``: real data behind the ``meta`` device, with autograd) create
no tensor on the CPU that meets the device's tensors (class weights, masks, targets, distillation buffers)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils._pytree import tree_map

from l2cocc_ros.core.config import get_preset
from l2cocc_ros.core.losses import distill_losses
from l2cocc_ros.core.losses.task import task_losses

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cuda_proxy import OnDevice, device_mixing  # noqa: E402

X, Y, Z, C = 4, 4, 2, 20  # half-resolution grid, SemanticKITTI classes


def fake_out(seed: int, requires_grad: bool) -> dict:
    """A model output dict of the right structure (logits, tpv_weights, feats, depth_prob) on the device."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g).to("meta").requires_grad_(requires_grad)

    planes = ((X, Y), (Y, Z), (X, Z))
    back = [[r(1, ch, max(h // s, 1), max(w // s, 1)) for ch, s in ((6, 2), (8, 4), (10, 4))] for h, w in planes]
    neck = [[r(1, 5, max(h // s, 1), max(w // s, 1)) for s in (2, 4)] for h, w in planes]
    feats = {"tpv_backbone": back, "tpv_neck": neck,
             "feats3d_view_transformer": r(1, 5, X, Y, Z), "feats3d_aggregator": r(1, 5, X, Y, Z)}
    depth = torch.softmax(torch.randn(1, 112, 2, 3, generator=g), 1).to("meta").requires_grad_(requires_grad)
    return {"logits": r(1, C, 2 * X, 2 * Y, 2 * Z), "tpv_weights": r(1, 4, X, Y, Z), "feats": feats,
            "depth_prob": depth}


def test_task_and_distillation_losses_stay_on_the_device():
    exp = get_preset("tiny_l2cocc_d")
    g = torch.Generator().manual_seed(3)
    with device_mixing() as mixed:
        student, teacher = fake_out(0, True), fake_out(1, False)
        t12 = torch.randint(0, C, (1, X, Y, Z), generator=g)
        t12[0, 0, 0, 0] = 255
        target = t12.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3).to("meta")
        lidar_depth = torch.zeros(1, 1, 16, 24)
        lidar_depth[0, 0, ::3, ::5] = 10.0  # a LiDAR point in every patch: the depth loss is used
        losses = task_losses(student, target, exp.loss, lidar_depth=lidar_depth.to("meta"))
        losses.update(distill_losses(student, teacher, t12.to("meta"), exp.loss, target=target))
        assert set(losses) >= {"loss_ce", "loss_sem_scal", "loss_geo_scal", "loss_depth", "distill_logit_kl",
                               "distill_tpv_weights_kl", "distill_feats_cosine", "distill_relation"}
        total = sum(losses.values())
        total.backward()
        assert isinstance(total, OnDevice) and all(float(v.detach()) > 0 for v in losses.values()), losses
        grads = [student["logits"].grad, student["depth_prob"].grad, student["feats"]["tpv_neck"][0][0].grad]
        assert all(isinstance(gr, OnDevice) and bool(torch.isfinite(gr.elem).all()) for gr in grads)
    assert not mixed, mixed


def test_device_mixing_sees_a_cpu_tensor_in_forward_and_backward():
    with device_mixing() as mixed:
        x = torch.ones(3).to("meta").requires_grad_()
        y = (x * torch.arange(3.0)).sum()  # CPU operand
        y.backward()
        assert isinstance(x.grad, OnDevice) and x.grad.elem.tolist() == [0.0, 1.0, 2.0]
    assert sum(mixed.values()) >= 1 and all("mul" in op for op, _ in mixed), mixed


def test_distillation_model_training_step_stays_on_the_device():
    """Tiny -D (student -C + frozen -L teacher) in training mode: forward, task + distillation losses, backward."""
    import numpy as np

    from l2cocc_ros.core.preprocess import build_camera_inputs
    from l2cocc_ros.core.model.l2cocc import build_model

    torch.set_num_threads(2)
    exp = get_preset("tiny_l2cocc_d")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(exp.model).train()
    rng = np.random.default_rng(0)
    p2 = np.array([[718.856, 0, 607.1928, 45.38225], [0, 718.856, 185.2157, -0.1130887], [0, 0, 1, 0.003779761]])
    T = np.array([[0, 0, 1, 0.27], [-1, 0, 0, 0.0], [0, -1, 0, -0.08], [0, 0, 0, 1.0]])
    inputs, _ = build_camera_inputs(rng.integers(0, 255, (376, 1241, 3), dtype=np.uint8), p2, exp.model.image_size,
                                    stereo_depth=rng.uniform(3, 40, (376, 1241)).astype(np.float32), T_grid_from_cam=T)
    inputs["points"] = torch.from_numpy(np.column_stack([rng.uniform(0, 50, 5000), rng.uniform(-25, 25, 5000),
                                                         rng.uniform(-2, 4, 5000), rng.uniform(0, 1, 5000)])
                                        .astype(np.float32))
    t12 = torch.randint(0, C, (1, 128, 128, 16))
    lidar_depth = torch.zeros(1, 1, *exp.model.image_size)
    lidar_depth[..., ::4, ::4] = 12.0
    with device_mixing() as mixed:
        model = model.to("meta")
        out = model({k: v.to("meta") for k, v in inputs.items()})
        target = t12.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3).to("meta")
        losses = task_losses(out, target, exp.loss, lidar_depth=lidar_depth.to("meta"))
        losses.update(distill_losses(out, out["teacher"], t12.to("meta"), exp.loss, target=target))
        sum(losses.values()).backward()
        assert all(bool(torch.isfinite(v.detach().elem)) for v in losses.values()), losses
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(isinstance(g, OnDevice) for g in grads if g is not None)
    assert not mixed, mixed
