"""Checkpoints: our own files, the authors' released Lightning ``.ckpt`` files, and a mismatch report.

Every file is read with ``torch.load(..., weights_only=True)``: a file whose pickle holds anything but
tensors, containers and primitives is refused (never unpickled). Lightning checkpoints from the authors'
training (PL 1.7, torch 1.10) may carry pickled objects next to the weights (e.g. a learning-rate
scheduler's bound method); for those the error explains how to extract the plain ``state_dict`` once, in
the user's own trusted environment (:data:`CONVERT_HINT`).

Our format (``FORMAT``): ``{"format", "state_dict", "config" (to_dict of the ExperimentConfig),
"meta" (variant, dataset, class names, preset, state_dict_sha256, torch version), "extra"}``.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from l2cocc_ros.core.classes import class_table
from l2cocc_ros.core.config import ExperimentConfig, ModelConfig, from_dict, to_dict

__all__ = [
    "FORMAT", "CONVERT_HINT", "CheckpointError", "CheckpointMismatchError", "LoadReport", "LoadedCheckpoint",
    "safe_load", "save_checkpoint", "load_checkpoint", "load_released", "read_state_dict", "compare_state_dict",
    "state_dict_sha256", "DERIVED_TENSORS", "is_derived_key", "load_model", "variant_of_keys", "model_identity",
    "SHIPPED_CAMERA_CHECKPOINT", "SHIPPED_LIDAR_CHECKPOINT",
]

logger = logging.getLogger(__name__)

FORMAT = "l2cocc_ros.checkpoint/1"
CONVERT_HINT = (
    "To use such a file, extract its weights ONCE in an environment you trust (this runs the file's pickle):\n"
    "  python -c \"import torch; ck = torch.load('IN.ckpt', map_location='cpu', weights_only=False); "
    "torch.save({'state_dict': ck['state_dict']}, 'OUT.ckpt')\"\n"
    "and load OUT.ckpt instead. That environment needs the packages of the pickled objects (the first one is "
    "named above; for the authors' Lightning files e.g. pytorch_lightning / mmcv)."
)
PathLike = Union[str, Path]

_SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
SHIPPED_CAMERA_CHECKPOINT = _SHIPPED / "micro_l2cocc_c.pt"
"""The camera model shipped with the package (stereo -> grid): the node's and the demo's default."""
SHIPPED_LIDAR_CHECKPOINT = _SHIPPED / "micro_l2cocc_l.pt"
"""The small LiDAR teacher shipped with the package (``l2cocc demo --variant l``)."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (unsafe, unreadable, or of an unknown layout)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys/shapes do not match the model; ``.report`` holds the details."""

    def __init__(self, report: "LoadReport", source: str) -> None:
        super().__init__(f"checkpoint {source} does not match the model:\n{report.format()}")
        self.report = report


@dataclass
class LoadReport:
    """Key comparison of a checkpoint against a model (model-level keys, no ``model.`` prefix).

    Attributes:
        missing: keys the model has and the checkpoint lacks.
        unexpected: keys the checkpoint has and the model lacks.
        wrong_shape: (key, checkpoint shape, model shape).
        dropped: checkpoint keys removed on purpose before loading (e.g. ``teacher.*`` for a -C model).
        num_params: trainable parameter count of the model.
        file_variant, model_variant: "c", "l" or "d" as the keys show (:func:`variant_of_keys`), None if unclear.
    """

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    wrong_shape: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    num_params: int = 0
    file_variant: Optional[str] = None
    model_variant: Optional[str] = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def format(self, examples: int = 3) -> str:
        """A short human report grouped by top-level prefix (counts + a few example keys)."""
        lines = []
        if not self.ok and self.file_variant and self.model_variant and self.file_variant != self.model_variant:
            lines.append(f"this is an -{self.file_variant.upper()} checkpoint; the model is -"
                         f"{self.model_variant.upper()} (use a {self.file_variant.upper()} preset or config)")
        for title, keys in (("missing in checkpoint", self.missing), ("unexpected in checkpoint", self.unexpected),
                            ("wrong shape", [k for k, _, _ in self.wrong_shape])):
            if not keys:
                continue
            lines.append(f"{title}: {len(keys)} key(s)")
            for prefix, group in _group(keys).items():
                shown = group[:examples]
                if title == "wrong shape":
                    shapes = {k: (c, m) for k, c, m in self.wrong_shape}
                    shown = [f"{k} (checkpoint {list(shapes[k][0])}, model {list(shapes[k][1])})" for k in shown]
                more = f", ... (+{len(group) - examples})" if len(group) > examples else ""
                lines.append(f"  {prefix}: {len(group)}  e.g. {', '.join(shown)}{more}")
        if self.dropped:
            lines.append(f"dropped before loading: {len(self.dropped)} key(s) under "
                         f"{', '.join(_group(self.dropped))}")
        return "\n".join(lines) if lines else "all keys and shapes match"


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` returns."""

    model: nn.Module
    config: Optional[ExperimentConfig]
    meta: Dict[str, Any]
    extra: Any
    report: LoadReport


def _group(keys: List[str]) -> "OrderedDict[str, List[str]]":
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for k in keys:
        parts = k.split(".")
        prefix = ".".join(parts[:2]) if parts[0] == "teacher" and len(parts) > 2 else parts[0]
        groups.setdefault(prefix, []).append(k)
    return groups


def variant_of_keys(keys) -> Optional[str]:
    """The L2COcc variant a set of state_dict keys belongs to: "d" (``teacher.*``), "l" (a LiDAR tokenizer,
    no image branch), "c" (an image branch), or None for keys of none of them."""
    tops = {k.split(".", 1)[0] for k in keys}
    if "teacher" in tops:
        return "d"
    if "img_backbone" in tops or "depth_net" in tops:
        return "c"
    if "lidar_tokenizer" in tops:
        return "l"
    return None


def safe_load(path: PathLike) -> Any:
    """Read a torch file with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a directory, an empty or truncated file, or a pickle holding Python objects.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint (an interrupted copy or download?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        first = f"e.g. {found.group(1)}" if found else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a plain tensor checkpoint: its pickle holds Python objects ({first}); "
            f"refusing to unpickle objects (weights_only=True).\n{CONVERT_HINT}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {str(exc) or type(exc).__name__} "
                              f"({path.stat().st_size:,} bytes; truncated or not a torch file?)") from None


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted keys, dtypes, shapes and raw bytes of a state_dict."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _tensor_dict(obj: Any, source: str) -> Dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: 'state_dict' is not a mapping of tensors")
    return dict(obj)


def read_state_dict(path: PathLike) -> Tuple[Dict[str, torch.Tensor], str, Dict[str, Any]]:
    """Read the model-level weights of any supported file.

    Returns:
        (state_dict without ``model.`` prefixes, kind, raw top-level dict) where kind is "ours",
        "lightning" (``{'state_dict': {'model.' + k: v}, ...}``) or "plain" (a bare state_dict).

    Raises:
        FileNotFoundError, CheckpointError (unsafe or unknown file; our file with a wrong weights hash).
    """
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict at the top level, got {type(obj).__name__}")
    if obj.get("format") == FORMAT:
        state_dict = _tensor_dict(obj.get("state_dict"), str(path))
        recorded = (obj.get("meta") or {}).get("state_dict_sha256")
        digest = state_dict_sha256(state_dict)
        if recorded is not None and recorded != digest:
            raise CheckpointError(f"{path}: weights hash {digest[:12]} != recorded {str(recorded)[:12]} "
                                  f"(file corrupted or edited)")
        return state_dict, "ours", obj
    if "state_dict" in obj:
        sd = _tensor_dict(obj["state_dict"], str(path))
        if all(k.startswith("model.") for k in sd):
            sd = {k[len("model."):]: v for k, v in sd.items()}
        return sd, "lightning", obj
    return _tensor_dict(obj, str(path)), "plain", {}


def compare_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> LoadReport:
    """Compare ``state_dict`` with ``model.state_dict()`` (keys and shapes)."""
    ours = model.state_dict()
    report = LoadReport(num_params=sum(p.numel() for p in model.parameters() if p.requires_grad))
    report.missing = [k for k in ours if k not in state_dict]
    report.unexpected = [k for k in state_dict if k not in ours]
    report.wrong_shape = [(k, tuple(v.shape), tuple(ours[k].shape)) for k, v in state_dict.items()
                          if k in ours and tuple(v.shape) != tuple(ours[k].shape)]
    return report


def _load_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], report: LoadReport, source: str) -> None:
    if not report.ok:
        raise CheckpointMismatchError(report, source)
    model.load_state_dict(state_dict, strict=True)


def _has_teacher(model: nn.Module) -> bool:
    return isinstance(getattr(model, "teacher", None), nn.Module)


def load_released(path: PathLike, model: nn.Module, *, keep_teacher: bool = False) -> LoadReport:
    """Load an authors' Lightning ``.ckpt`` (or a plain / converted state_dict) strictly into ``model``.

    The ``model.`` prefix is stripped. A -D file loaded into a model without a teacher (-C) has its
    ``teacher.*`` keys dropped (listed in ``report.dropped``).

    Args:
        path: checkpoint file (any kind ``read_state_dict`` reads).
        model: the model to load into.
        keep_teacher: a -D model keeps its current teacher weights when the file has no ``teacher.*`` keys
            (a -C checkpoint as the student's starting point); the student's keys are still loaded strictly.

    Raises:
        FileNotFoundError, CheckpointError (unsafe/unknown file), CheckpointMismatchError (with a report).
    """
    state_dict, kind, _ = read_state_dict(path)
    if keep_teacher and _has_teacher(model) and not any(k.startswith("teacher.") for k in state_dict):
        state_dict = {**state_dict, **{f"teacher.{k}": v for k, v in model.teacher.state_dict().items()}}
    return _load_into(model, state_dict, f"{path} ({kind})")


def _load_into(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> LoadReport:
    file_variant = variant_of_keys(state_dict)
    dropped = []
    if not _has_teacher(model):
        dropped = [k for k in state_dict if k.startswith("teacher.")]
        if dropped:
            logger.info("%s: dropping %d teacher.* keys (the model has no teacher)", source, len(dropped))
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("teacher.")}
    state_dict = _with_derived(model, state_dict)
    report = compare_state_dict(model, state_dict)
    report.dropped = dropped
    report.file_variant, report.model_variant = file_variant, variant_of_keys(model.state_dict())
    _load_strict(model, state_dict, report, source)
    return report


# Tensors that are deterministic functions of the config (grids, frustum, Swin index tables): the authors'
# checkpoints carry them (manifest README "Things to know" 3), ours leave them out (12 MB of a tiny model) and
# take them from the freshly built model on load.
DERIVED_TENSORS = ("frustum", "dx", "bx", "nx", "image_grid", "ref_3d", "vox_coords", "relative_position_index")


def is_derived_key(key: str) -> bool:
    """True for a state_dict key of a config-derived constant tensor (see ``DERIVED_TENSORS``)."""
    return key.rsplit(".", 1)[-1] in DERIVED_TENSORS


def _with_derived(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state_dict`` completed with the model's own derived constants where the file leaves them out."""
    fill = {k: v for k, v in model.state_dict().items() if is_derived_key(k) and k not in state_dict}
    return {**state_dict, **fill} if fill else state_dict


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} must be str or int")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not (value is None or type(value) in (str, int, float, bool) or isinstance(value, torch.Tensor)):
        raise TypeError(f"{where}: {type(value).__name__} is not storable (use tensors, containers, str/int/float/bool)")


def save_checkpoint(path: PathLike, model: nn.Module, cfg: Union[ExperimentConfig, ModelConfig],
                    extra: Optional[Mapping[str, Any]] = None, *, weights_dtype: Optional[torch.dtype] = None) -> str:
    """Write ``model``'s weights with their config and metadata.

    Args:
        path: output file.
        model: the model (its ``state_dict`` is saved).
        cfg: the experiment (or model) config the model was built from.
        extra: optional metadata (tensors, containers and primitives only: it is read back with
            ``weights_only=True``), e.g. ``{"epoch": 3, "metrics": {"mIoU": 0.17}, "source": "..."}``.
        weights_dtype: store floating-point tensors in this dtype (e.g. ``torch.float16`` halves a shipped
            file); loading casts them back to the model's dtype.

    Returns:
        The SHA-256 of the stored state_dict (also stored in ``meta``).

    Raises:
        TypeError: ``cfg`` of the wrong type, or ``extra`` holding an object that could not be read back.
    """
    _check_plain(dict(extra or {}), "extra")
    exp = cfg if isinstance(cfg, ExperimentConfig) else None
    mcfg = exp.model if exp is not None else cfg
    if not isinstance(mcfg, ModelConfig):
        raise TypeError(f"cfg must be an ExperimentConfig or ModelConfig, got {type(cfg).__name__}")
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items() if not is_derived_key(k)}
    if weights_dtype is not None:
        state_dict = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    digest = state_dict_sha256(state_dict)
    meta = {"variant": mcfg.variant, "dataset": mcfg.dataset, "preset": mcfg.name,
            "class_names": list(class_table(mcfg.dataset).names), "state_dict_sha256": digest,
            "torch": str(torch.__version__)}
    payload = {"format": FORMAT, "state_dict": state_dict, "meta": meta, "extra": dict(extra or {}),
               "config": to_dict(exp) if exp is not None else {"model": to_dict(mcfg)}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    logger.info("saved %s (%s, sha256 %s)", path, mcfg.name, digest[:12])
    return digest


def _config_of(obj: Dict[str, Any], path: PathLike) -> Tuple[Optional[ExperimentConfig], ModelConfig]:
    cfg = obj.get("config") or {}
    try:
        if set(cfg) == {"model"}:
            return None, from_dict(ModelConfig, cfg["model"])
        exp = from_dict(ExperimentConfig, cfg)
        return exp, exp.model
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: stored config is invalid: {exc}") from None


def load_checkpoint(path: PathLike, model: Optional[nn.Module] = None) -> LoadedCheckpoint:
    """Load one of our checkpoints (strict), building the model from the stored config if not given.

    A -D checkpoint loads into a -C model (``teacher.*`` dropped, listed in ``report.dropped``): that is the
    deployed student.

    Raises:
        FileNotFoundError, CheckpointError (unsafe file, not our format, weights hash mismatch),
        CheckpointMismatchError (with a report).
    """
    state_dict, kind, obj = read_state_dict(path)
    if kind != "ours":
        raise CheckpointError(f"{path} is not an l2cocc_ros checkpoint (looks {kind}); use load_released()")
    meta = dict(obj.get("meta") or {})
    exp, mcfg = _config_of(obj, path)
    if model is None:
        from l2cocc_ros.core.model.l2cocc import build_model
        model = build_model(mcfg)
    report = _load_into(model, state_dict, str(path))
    return LoadedCheckpoint(model=model, config=exp, meta=meta, extra=obj.get("extra"), report=report)


def load_model(path: PathLike, config: Union[ExperimentConfig, str, None] = None) -> Tuple[nn.Module, ExperimentConfig]:
    """Build and load the deployed model of any supported checkpoint: the one entry point for tools and the engine.

    Our checkpoints carry their config; the authors' Lightning ``.ckpt`` files and plain state_dicts do not,
    so ``config`` names the model to build for them (loaded strictly, ``model.`` stripped). A -D checkpoint
    gives its student (``ModelConfig.student()``, a camera model): the teacher only takes part in training, so
    its ``teacher.*`` keys are dropped when present and need not be (a shipped -D file leaves them out).

    Args:
        path: checkpoint file (read with ``weights_only=True``).
        config: an ExperimentConfig, a preset name or a config YAML. Required for released/plain files. For
            ours, a preset name must equal the stored preset (guards against weights of another variant or
            dataset), and a given config replaces the stored one (e.g. other evaluation settings).

    Returns:
        (model in eval mode, its experiment config).

    Raises:
        FileNotFoundError: no such file. ValueError / CheckpointError / CheckpointMismatchError: a file
        that cannot be loaded, a missing or conflicting config, or weights that do not fit.
    """
    from l2cocc_ros.core.config import get_preset, load_config
    from l2cocc_ros.core.model.l2cocc import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    exp: Optional[ExperimentConfig] = None
    if isinstance(config, ExperimentConfig):
        exp = config
    elif isinstance(config, str):
        exp = load_config(config) if Path(config).suffix in (".yaml", ".yml") else get_preset(config)
    elif config is not None:
        raise TypeError(f"config must be an ExperimentConfig, a preset name or a YAML path, got {type(config).__name__}")
    _, kind, obj = read_state_dict(path)
    if kind != "ours":
        if exp is None:
            raise ValueError(f"checkpoint {path} is a {kind} state_dict without a config: give its preset")
        model = build_model(exp.model.student())
        load_released(path, model)
        return model.eval(), exp
    stored = (obj.get("meta") or {}).get("preset")
    if isinstance(config, str) and exp is not None and stored is not None and stored != exp.name:
        raise ValueError(f"checkpoint {path} holds preset {stored!r}, but {exp.name!r} was configured")
    if exp is None:
        stored_exp, _ = _config_of(obj, path)
        exp = stored_exp if stored_exp is not None else (get_preset(stored) if stored else None)
        if exp is None:
            raise ValueError(f"checkpoint {path} records no experiment config or preset; give its preset")
    loaded = load_checkpoint(path, build_model(exp.model.student()))
    return loaded.model.eval(), exp


def model_identity(path: PathLike, variant: str = "", preset: str = "") -> Tuple[str, str]:
    """The (variant, preset) of the model in ``path``: recorded in our files, configured for the others.

    Our checkpoints record both, so ``variant`` and ``preset`` may be left empty; a configured value must equal
    the recorded one. The authors' ``.ckpt`` files and plain state_dicts record neither: ``preset`` is needed
    (``variant`` then follows from it, or must agree with it).

    Args:
        path: checkpoint file.
        variant: configured variant ("c", "d", "l") or "" (take it from the file or the preset).
        preset: configured preset name or "" (take it from the file).

    Returns:
        (variant, preset).

    Raises:
        FileNotFoundError: no such file.
        ValueError / CheckpointError: an unreadable file, a configured value that contradicts the file (the
            message names both), or a file without a recorded preset and none configured.
    """
    from l2cocc_ros.core.config import get_preset

    obj = safe_load(path)
    meta = (obj.get("meta") or {}) if isinstance(obj, dict) and obj.get("format") == FORMAT else {}
    stored_preset, stored_variant = str(meta.get("preset") or ""), str(meta.get("variant") or "")
    if stored_preset:
        if preset and preset != stored_preset:
            raise ValueError(f"checkpoint {path} holds preset {stored_preset!r}, but preset {preset!r} was "
                             f"configured (leave preset empty to take it from the file)")
        preset = stored_preset
    if not preset:
        raise ValueError(f"checkpoint {path} records no preset (an authors' .ckpt or a plain state_dict): "
                         f"set preset (and variant) for it")
    preset_variant = get_preset(preset).model.variant
    stored_variant = stored_variant or preset_variant
    if variant and variant != stored_variant:
        source = f"checkpoint {path} holds" if meta.get("variant") else f"preset {preset!r} is"
        raise ValueError(f"{source} variant {stored_variant!r}, but variant {variant!r} was configured "
                         f"(leave variant empty to take it from the file)")
    return stored_variant, preset
