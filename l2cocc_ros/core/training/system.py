"""The Lightning system of L2COcc: model + task/distillation losses + optimiser/schedule + SSC metrics.

Recipe of the original (docs/model.md §6): AdamW (max lr, weight decay 0.01, default betas) over
the trainable parameters (the -D teacher is frozen), ``OneCycleLR(total_steps = steps + 10, pct_start,
anneal 'cos', cycle_momentum=False)`` stepped every iteration, batch 1 per process, fp32. Validation
accumulates the official SSC confusion matrix over the split (summed over DDP processes) and logs
``val/mIoU`` and ``val/IoU`` (plus precision / recall), which drive checkpoint selection.

The module's only sub-module is ``model``, so its ``state_dict`` keys are ``model.<authors' key>`` as in the
authors' Lightning checkpoints. Hyper-parameters are saved as plain dicts (``to_dict`` of the config), so a
checkpoint of this module loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import lightning as L
import torch

from ..checkpoint import load_released
from ..classes import class_table
from ..config import ExperimentConfig, from_dict, to_dict
from ..losses import distill_losses, task_losses
from ..metrics import SSCMetrics

__all__ = ["L2COccSystem", "build_optimizer"]

logger = logging.getLogger(__name__)


def build_optimizer(params, train_cfg) -> tuple:
    """AdamW + per-step OneCycleLR (cosine, no momentum cycling) from a ``TrainConfig``.

    Args:
        params: iterable of the trainable parameters.
        train_cfg: ``TrainConfig`` (lr, weight_decay, pct_start, steps, extra_scheduler_steps, div_factor,
            final_div_factor).

    Returns:
        (optimizer, scheduler).
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if train_cfg.steps <= 0:
        raise ValueError(f"train.steps must be > 0; got {train_cfg.steps}")
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=train_cfg.lr, total_steps=train_cfg.steps + train_cfg.extra_scheduler_steps,
        pct_start=train_cfg.pct_start, anneal_strategy="cos", cycle_momentum=False,
        div_factor=train_cfg.div_factor, final_div_factor=train_cfg.final_div_factor)
    return opt, sched


class L2COccSystem(L.LightningModule):
    """Trains / validates one L2COcc variant.

    Args:
        config: the ``ExperimentConfig`` (or its ``to_dict`` form, as stored in checkpoints).
        teacher_ckpt: -D only: a trained -L checkpoint (ours or the authors' release) loaded strictly into
            the frozen teacher. Required for a fresh -D run; on resume the teacher comes from the Lightning
            checkpoint as well.
        model: an already built model (default: ``build_model(config.model)``).
        init_ckpt: start from these weights (any checkpoint ``load_released`` reads, loaded strictly) instead
            of the random initialisation: fine-tuning, or a longer schedule after a finished one. Only the
            weights: the optimiser and the schedule start fresh (``--resume`` continues those instead). For
            -D a -C checkpoint initialises the student and the teacher stays the ``teacher_ckpt`` one.

    Raises:
        ValueError: -D without a teacher checkpoint, or a checkpoint for a non -D model.
    """

    def __init__(self, config: Union[ExperimentConfig, Mapping[str, Any]], teacher_ckpt: Optional[str] = None,
                 model: Optional[torch.nn.Module] = None, init_ckpt: Optional[str] = None) -> None:
        super().__init__()
        cfg = config if isinstance(config, ExperimentConfig) else from_dict(ExperimentConfig, config)
        self.cfg = cfg
        self.save_hyperparameters({"config": to_dict(cfg), "teacher_ckpt": None if teacher_ckpt is None
                                   else str(teacher_ckpt),
                                   "init_ckpt": None if init_ckpt is None else str(init_ckpt)})
        if model is None:
            from ..model.l2cocc import build_model
            model = build_model(cfg.model)
        self.model = model
        variant = cfg.model.variant
        if init_ckpt is not None:
            report = load_released(init_ckpt, self.model, keep_teacher=True)
            logger.info("weights initialised from %s (%d parameters)", init_ckpt, report.num_params)
        if teacher_ckpt is not None:
            if variant != "d":
                raise ValueError(f"--teacher is only for variant 'd' (config {cfg.name!r} is {variant!r})")
            load_released(teacher_ckpt, self.model.teacher)
            logger.info("teacher loaded from %s (%d frozen parameters)", teacher_ckpt,
                        sum(p.numel() for p in self.model.teacher.parameters()))
        if variant == "d":
            for p in self.model.teacher.parameters():
                p.requires_grad_(False)
        self.class_names = class_table(cfg.model.dataset).names
        self.val_metrics = SSCMetrics(cfg.model.num_classes)

    # ------------------------------------------------------------------------------------------ steps
    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        return self.model(inputs)

    def compute_losses(self, batch: Mapping[str, Any], out: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
        """All weighted loss terms of one batch (task losses, plus distillation for -D)."""
        cfg = self.cfg
        target = batch["target"]
        losses = task_losses(out, target, cfg.loss, lidar_depth=batch.get("lidar_depth"),
                             d_bound=cfg.model.depth_net.dbound)
        if cfg.loss.distill:
            if "teacher" not in out:
                raise ValueError("loss.distill is on but the model output has no 'teacher' entry "
                                 "(the model must be a -D DistillSegmentor in training mode)")
            if batch.get("target_1_2") is None:
                raise ValueError("distillation needs the half-resolution labels 'target_1_2' in the batch")
            losses.update(distill_losses(out, out["teacher"], batch["target_1_2"], cfg.loss, target=target))
        return losses

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.model(batch["inputs"])
        losses = self.compute_losses(batch, out)
        loss = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {self.global_step}: "
                                     f"{ {k: float(v) for k, v in losses.items()} }")
        self.log("train/loss", loss, prog_bar=True)
        for k, v in losses.items():
            self.log(f"train/{k}", v)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        # Lightning 2.x keeps each sub-module's mode; the original (PL 1.7) called model.train() on
        # everything, so a -D teacher ran in train mode. DistillSegmentor.train() honours teacher_mode.
        self.model.train()

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self.model(batch["inputs"])
        pred = out["logits"].argmax(dim=1)
        self.val_metrics.update(pred, batch["target"])

    def on_validation_epoch_end(self) -> None:
        conf = torch.as_tensor(self.val_metrics.confusion, device=self.device)
        if self.trainer.world_size > 1:
            conf = self.trainer.strategy.reduce(conf.clone(), reduce_op="sum")
        scores = SSCMetrics(self.cfg.model.num_classes)
        scores.merge(conf.cpu().numpy())
        s = scores.compute()
        self.log("val/mIoU", float(s["miou"]), prog_bar=True, sync_dist=False)
        self.log("val/IoU", float(s["iou"]), prog_bar=True, sync_dist=False)
        self.log("val/precision", float(s["precision"]), sync_dist=False)
        self.log("val/recall", float(s["recall"]), sync_dist=False)
        self.last_val_scores = s
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            logger.info("step %d validation:\n%s", self.global_step, scores.table(self.class_names))

    # -------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> Dict[str, Any]:
        train_cfg = self.cfg.train
        max_steps = self._trainer.max_steps if self._trainer is not None else None
        if max_steps is not None and max_steps > 0 and max_steps != train_cfg.steps:
            logger.info("schedule length follows max_steps=%d (config said %d)", max_steps, train_cfg.steps)
            train_cfg = dataclasses.replace(train_cfg, steps=int(max_steps))
        opt, sched = build_optimizer(self.model.parameters(), train_cfg)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def export(self, path: Union[str, Path], extra: Optional[Mapping[str, Any]] = None) -> str:
        """Write the model's weights in our checkpoint format (``core.checkpoint.save_checkpoint``)."""
        from ..checkpoint import save_checkpoint
        return save_checkpoint(path, self.model, self.cfg, extra=extra)
