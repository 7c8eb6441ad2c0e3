"""Stereo depth backends: rectified left/right images -> metric depth map of the left image (0 = invalid).

The original L2COcc reads depth maps that MobileStereoNet (MSNet3D) computed offline (docs/model.md §3.5);
``msnet3d`` / ``msnet2d`` (:mod:`~l2cocc_ros.core.stereo.msnet`) reproduce that input from the released
weights file. Weights-free alternatives: OpenCV's semi-global block matching (``sgbm``, the default) and census
block matching in torch (``torch_census``). A new backend subclasses :class:`StereoBackend` (implement
:meth:`StereoBackend.disparity`) and registers a factory with :func:`register_stereo_backend`; the node and
``l2cocc preprocess stereo`` pick backends by name.

Modules: ``base`` (the interface, disparity -> depth), ``registry``, ``sgbm``, ``census``, ``msnet``.
"""
from l2cocc_ros.core.stereo.base import StereoBackend, disparity_to_depth
from l2cocc_ros.core.stereo.registry import available_stereo_backends, get_stereo_backend, register_stereo_backend
from l2cocc_ros.core.stereo.sgbm import SGBMStereo

__all__ = [
    "StereoBackend",
    "SGBMStereo",
    "disparity_to_depth",
    "register_stereo_backend",
    "get_stereo_backend",
    "available_stereo_backends",
]
