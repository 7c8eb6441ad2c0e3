"""Stereo backends by name: the node's ``stereo.backend`` and ``l2cocc preprocess stereo --backend`` pick from here.

Factories are imported when their backend is chosen, so naming ``sgbm`` does not build torch models and naming
``msnet3d`` does not need OpenCV's matcher.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Union

from l2cocc_ros.core.stereo.base import StereoBackend

__all__ = ["register_stereo_backend", "get_stereo_backend", "available_stereo_backends"]

Factory = Callable[..., StereoBackend]

#: name -> factory, or "module:attribute" of a factory imported on first use
_REGISTRY: Dict[str, Union[Factory, str]] = {
    "sgbm": "l2cocc_ros.core.stereo.sgbm:SGBMStereo",
    "torch_census": "l2cocc_ros.core.stereo.census:TorchCensusStereo",
    "msnet3d": "l2cocc_ros.core.stereo.msnet.backend:msnet3d",
    "msnet2d": "l2cocc_ros.core.stereo.msnet.backend:msnet2d",
}


def register_stereo_backend(name: str, factory: Factory, *, overwrite: bool = False) -> None:
    """Make a backend available by name (e.g. a learned network).

    Raises:
        ValueError: the name is taken and ``overwrite`` is False.
    """
    key = name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"stereo backend {name!r} is already registered")
    _REGISTRY[key] = factory


def available_stereo_backends() -> List[str]:
    """Names accepted by :func:`get_stereo_backend`."""
    return sorted(_REGISTRY)


def _factory(key: str) -> Factory:
    entry = _REGISTRY[key]
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = _REGISTRY[key] = getattr(importlib.import_module(module), attr)
    return entry


def get_stereo_backend(name: str = "sgbm", **kwargs) -> StereoBackend:
    """Create a stereo backend by name with keyword options (e.g. ``get_stereo_backend("sgbm", downscale=2)``).

    Raises:
        ValueError: unknown name (the message lists the known ones) or options the backend refuses.
        FileNotFoundError: a learned backend's weights file is missing (the message says where it comes from).
    """
    key = name.lower()
    if key not in _REGISTRY:
        known = ", ".join(available_stereo_backends())
        raise ValueError(f"unknown stereo backend {name!r}; available: {known}")
    try:
        return _factory(key)(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options for stereo backend {name!r}: {exc}") from None
