"""MobileStereoNet (MSNet3D / MSNet2D): the network that computed the depth maps L2COcc, CGFormer and VoxFormer
were trained on, with the official checkpoint's keys, and its backend with VoxFormer's exact preprocessing."""
from l2cocc_ros.core.stereo.msnet.models import MAXDISP, MSNet2D, MSNet3D

__all__ = ["MSNet3D", "MSNet2D", "MAXDISP"]
