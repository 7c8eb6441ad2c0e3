"""L2COcc model blocks (one file per block of the paper's Fig. 2)."""

from .l2cocc import CameraSegmentor, DistillSegmentor, LidarSegmentor, build_model  # noqa: E402

__all__ = ["CameraSegmentor", "DistillSegmentor", "LidarSegmentor", "build_model"]
