"""L2COcc losses: task losses (all variants) and the -D distillation losses.

``task_losses(out, target, cfg, lidar_depth=..., d_bound=...)`` and
``distill_losses(student_out, teacher_out, target_1_2, cfg, target=...)`` return dicts of weighted scalar
terms; the training system sums them.
"""
from .distill import DistillWeights, distill_losses
from .task import DEPTH_TARGET_MODES, task_losses

__all__ = ["DEPTH_TARGET_MODES", "DistillWeights", "distill_losses", "task_losses"]
