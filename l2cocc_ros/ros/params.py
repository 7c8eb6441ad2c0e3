"""The node's parameters: one table (:data:`PARAMS`) -> declarations, validation, JSON schemas, config.

Every parameter is declared read-only with a description, type and range (style rule 11). Required ones
have no default and come from ``config/l2cocc_node.param.yaml``; the diagnostic limits in
``config/common.param.yaml`` default to Autoware's 200 ms / 1 s. :func:`config_from_values` checks
everything at once and raises one ValueError naming every bad or missing parameter. The shipped
``schema/*.schema.json`` files are :func:`json_schema` of this table (a test keeps them equal).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import yaml

__all__ = [
    "ParamSpec",
    "PARAMS",
    "REQUIRED",
    "DiagnosticLimits",
    "NodeConfig",
    "declare_parameters",
    "read_parameters",
    "config_from_values",
    "json_schema",
    "load_param_file",
    "declared_names",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # marks a parameter without default


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter.

    Attributes:
        name: dotted name (YAML nesting).
        type: "string", "bool", "integer", "double" or "double_array".
        description: meaning, with [units].
        default: value when absent from the param files, or REQUIRED.
        minimum / maximum: inclusive numeric range (None = open).
        choices: allowed strings (empty = any).
        length: required length of a double_array (0 = any).
        file: "node" (config/l2cocc_node.param.yaml) or "common" (config/common.param.yaml).
    """

    name: str
    type: str
    description: str
    default: Any = REQUIRED
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Tuple[str, ...] = ()
    length: int = 0
    file: str = "node"


_S = ParamSpec
PARAMS: Tuple[ParamSpec, ...] = (
    _S("grid_frame", "string", "TF frame of the output grid (the LiDAR frame of the SemanticKITTI grid)"),
    _S("variant", "string", "model variant: c (camera), d (distilled camera), l (LiDAR); empty: the one the "
       "checkpoint records (needed only for the authors' .ckpt files)", default="", choices=("", "c", "d", "l")),
    _S("preset", "string", "model preset, e.g. semantickitti_l2cocc_d; empty: the one the checkpoint records "
       "(needed only for the authors' .ckpt files and random weights)", default=""),
    _S("checkpoint", "string",
       "path of the model weights; empty: the shipped camera model (random weights with allow_random_weights)"),
    _S("allow_random_weights", "bool", "run a randomly initialised model of preset when checkpoint is empty "
       "(tests only)", default=False),
    _S("device", "string", "torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N"),
    _S("precision", "string", "autocast precision on CUDA (CPU always runs fp32)", choices=("fp32", "fp16", "bf16")),
    _S("fast.channels_last", "bool", "channels-last conv weights (faster on GPUs with tensor cores)", default=False),
    _S("fast.compile", "bool", "torch.compile the model (slow first frames, faster later ones)", default=False),
    _S("fast.cuda_graphs", "bool", "record the image encoder, depth net and 3D trunk as CUDA graphs and replay "
       "them (CUDA only; not with fast.compile; the first frames record)", default=False),
    _S("fast.device_preprocess", "bool", "resize/crop/normalise the image and stereo depth on the model's device "
       "(bit-identical to Pillow; frees ~15 ms CPU per frame next to a GPU, slower on a CPU-only machine)",
       default=False),
    _S("publish_confidence", "bool", "fill the grid's per-voxel confidence (softmax probability of the label)"),
    _S("stereo.backend", "string", "stereo depth backend: sgbm, torch_census, msnet3d (the released models' input: "
       "MobileStereoNet as VoxFormer ran it), msnet2d, or a registered name (core.stereo registry)"),
    _S("stereo.weights", "string", "MobileStereoNet weights file for msnet3d/msnet2d (MSNet3D_SF_DS_KITTI2015.ckpt "
       "from the VoxFormer or CGFormer repository); empty for the other backends"),
    _S("stereo.num_disparities", "integer", "SGBM disparity range at full resolution [px], multiple of 16",
       minimum=16, maximum=512),
    _S("stereo.block_size", "integer", "SGBM matching block size [px], odd", minimum=1, maximum=21),
    _S("stereo.downscale", "integer", "shrink both images by this factor before matching", minimum=1, maximum=4),
    _S("sync.queue_size", "integer", "messages kept per input while waiting for a synchronized set",
       minimum=1, maximum=100),
    _S("sync.slop_s", "double", "largest stamp spread within a synchronized set [s]", minimum=0.0, maximum=1.0),
    _S("stamp_reset_s", "double", "a backward stamp jump larger than this resets the node (bag loop) [s]; "
       "smaller jumps are rejected; 0 = never reset", minimum=0.0, maximum=3600.0),
    _S("tf.timeout_s", "double", "how long a TF lookup at the image stamp may wait [s]", minimum=0.0, maximum=5.0),
    _S("tf.use_fallback", "bool", "use the fixed transform below when TF has no camera -> grid_frame transform"),
    _S("tf.fallback_translation", "double_array", "fallback T_grid_from_camera translation x, y, z [m]", length=3),
    _S("tf.fallback_rotation", "double_array", "fallback T_grid_from_camera rotation quaternion x, y, z, w", length=4),
    _S("markers.enabled", "bool", "publish ~/output/markers (only while someone subscribes)"),
    _S("markers.max_rate_hz", "double", "highest marker publishing rate [Hz]", minimum=0.01, maximum=100.0),
    _S("markers.downsample", "integer", "1 = every voxel, 2 = majority class of 2x2x2 blocks", minimum=1, maximum=2),
    _S("markers.crop_min", "double_array", "lower corner x, y, z of the shown box, grid frame [m]", length=3),
    _S("markers.crop_max", "double_array", "upper corner x, y, z of the shown box, grid frame [m]", length=3),
    _S("markers.alpha", "double", "cube opacity", default=1.0, minimum=0.0, maximum=1.0),
    _S("diagnostics.period_s", "double", "period of /diagnostics [s]", default=1.0, minimum=0.05, maximum=60.0,
       file="common"),
    _S("diagnostics.max_processing_time_warn_ms", "double", "WARN when a frame takes longer to process [ms]",
       default=200.0, minimum=1.0, maximum=600000.0, file="common"),
    _S("diagnostics.max_consecutive_delay_error_ms", "double",
       "ERROR when no grid was published for longer than this while input arrives [ms]",
       default=1000.0, minimum=1.0, maximum=600000.0, file="common"),
    _S("diagnostics.rejection_window_s", "double", "WARN while a rejected input is younger than this [s]",
       default=5.0, minimum=0.1, maximum=3600.0, file="common"),
    _S("diagnostics.log_throttle_s", "double", "at most one log line per kind of rejected input per period [s]",
       default=5.0, minimum=0.0, maximum=3600.0, file="common"),
)
_BY_NAME = {p.name: p for p in PARAMS}


@dataclass(frozen=True)
class DiagnosticLimits:
    """Thresholds of /diagnostics (common.param.yaml)."""

    period_s: float = 1.0
    max_processing_time_warn_ms: float = 200.0
    max_consecutive_delay_error_ms: float = 1000.0
    rejection_window_s: float = 5.0
    log_throttle_s: float = 5.0


@dataclass(frozen=True)
class NodeConfig:
    """The validated parameters of the node (see :data:`PARAMS` for meanings)."""

    grid_frame: str
    variant: str
    preset: str
    checkpoint: str
    allow_random_weights: bool
    device: str
    precision: str
    channels_last: bool
    compile_model: bool
    cuda_graphs: bool
    device_preprocess: bool
    publish_confidence: bool
    stereo_backend: str
    stereo_options: Dict[str, Any]
    sync_queue_size: int
    sync_slop_s: float
    stamp_reset_s: float
    tf_timeout_s: float
    tf_fallback: Optional[np.ndarray]  # 4x4 T_grid_from_camera, or None
    markers_enabled: bool
    markers_max_rate_hz: float
    markers_downsample: int
    markers_crop_min: Tuple[float, float, float]
    markers_crop_max: Tuple[float, float, float]
    markers_alpha: float
    diagnostics: DiagnosticLimits = field(default_factory=DiagnosticLimits)


def _check_value(spec: ParamSpec, value: Any) -> Optional[str]:
    py = {"string": str, "bool": bool, "integer": int, "double": (int, float), "double_array": (list, tuple)}[spec.type]
    if not isinstance(value, py) or (spec.type in ("integer", "double") and isinstance(value, bool)):
        return f"{spec.name}: expected {spec.type}, got {value!r}"
    if spec.type == "double_array":
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) for v in value):
            return f"{spec.name}: expected finite numbers, got {list(value)}"
        if spec.length and len(value) != spec.length:
            return f"{spec.name}: expected {spec.length} values, got {len(value)}"
    if spec.type in ("integer", "double"):
        if (spec.minimum is not None and value < spec.minimum) or (spec.maximum is not None and value > spec.maximum):
            return f"{spec.name}: {value} is outside [{spec.minimum}, {spec.maximum}]"
    if spec.choices and value not in spec.choices:
        return f"{spec.name}: {value!r} is not one of {list(spec.choices)}"
    return None


def config_from_values(values: Mapping[str, Any]) -> NodeConfig:
    """Validate parameter values (dotted names) and build the config.

    Raises:
        ValueError: listing every missing, unknown-typed or out-of-range parameter and every inconsistency
            (preset vs variant, empty checkpoint without ``allow_random_weights``, bad device or stereo options).
        FileNotFoundError: the checkpoint file does not exist.
    """
    problems: List[str] = []
    v: Dict[str, Any] = {}
    for spec in PARAMS:
        value = values.get(spec.name, spec.default)
        if value is REQUIRED or value is None:
            where = "config/l2cocc_node.param.yaml" if spec.file == "node" else "config/common.param.yaml"
            problems.append(f"{spec.name}: required parameter is not set ({where})")
            continue
        err = _check_value(spec, value)
        if err:
            problems.append(err)
        v[spec.name] = value
    if not problems:
        problems += _check_consistency(v)
    if problems:
        raise ValueError("invalid l2cocc_node parameters:\n  " + "\n  ".join(problems))
    v["variant"], v["preset"] = _model_identity(v)
    fallback = None
    if v["tf.use_fallback"]:
        from l2cocc_ros.core.transforms import make_transform

        fallback = make_transform(v["tf.fallback_translation"], v["tf.fallback_rotation"])
    diag = DiagnosticLimits(**{k.split(".", 1)[1]: float(v[k]) for k in v if k.startswith("diagnostics.")})
    return NodeConfig(
        grid_frame=v["grid_frame"], variant=v["variant"], preset=v["preset"], checkpoint=v["checkpoint"],
        allow_random_weights=v["allow_random_weights"], device=v["device"], precision=v["precision"],
        channels_last=v["fast.channels_last"], compile_model=v["fast.compile"], cuda_graphs=v["fast.cuda_graphs"],
        device_preprocess=v["fast.device_preprocess"], publish_confidence=v["publish_confidence"],
        stereo_backend=v["stereo.backend"],
        stereo_options=_stereo_options(v),
        sync_queue_size=int(v["sync.queue_size"]), sync_slop_s=float(v["sync.slop_s"]),
        stamp_reset_s=float(v["stamp_reset_s"]), tf_timeout_s=float(v["tf.timeout_s"]), tf_fallback=fallback,
        markers_enabled=v["markers.enabled"], markers_max_rate_hz=float(v["markers.max_rate_hz"]),
        markers_downsample=int(v["markers.downsample"]),
        markers_crop_min=tuple(float(x) for x in v["markers.crop_min"]),
        markers_crop_max=tuple(float(x) for x in v["markers.crop_max"]),
        markers_alpha=float(v["markers.alpha"]), diagnostics=diag,
    )


def _stereo_options(v: Mapping[str, Any]) -> Dict[str, Any]:
    """The keyword options of ``get_stereo_backend(v["stereo.backend"], ...)``."""
    if v["stereo.backend"].startswith("msnet"):  # the network follows the node's precision on CUDA
        return {"weights": v["stereo.weights"], "precision": v["precision"]}
    return {"num_disparities": int(v["stereo.num_disparities"]), "block_size": int(v["stereo.block_size"]),
            "downscale": int(v["stereo.downscale"])}


def _check_stereo(v: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with the stereo parameters (None if nothing); learned backends' weights are checked, not
    loaded (the node loads them once)."""
    from l2cocc_ros.core.stereo import get_stereo_backend
    from l2cocc_ros.core.stereo.msnet.backend import WEIGHTS_SOURCE

    name, weights = v["stereo.backend"], v["stereo.weights"]
    if name.startswith("msnet"):
        if not weights:
            return f"stereo.weights: empty, but stereo.backend {name} needs its weights file; {WEIGHTS_SOURCE}"
        if not os.path.isfile(weights):
            return f"stereo.weights: file not found: {weights}; {WEIGHTS_SOURCE}"
        return None
    try:
        get_stereo_backend(name, **_stereo_options(v))
    except ValueError as exc:
        return f"stereo: {exc}"
    return None


def _model_identity(v: Dict[str, Any]) -> Tuple[str, str]:
    """(variant, preset) of the model to run; an empty ``checkpoint`` becomes the shipped camera model.

    Raises:
        FileNotFoundError: the checkpoint file does not exist.
        ValueError: a configured variant / preset that contradicts the checkpoint (both named), or none where
            the file records none.
    """
    from l2cocc_ros.core.checkpoint import SHIPPED_CAMERA_CHECKPOINT, model_identity
    from l2cocc_ros.core.config import get_preset

    if not v["checkpoint"] and not v["allow_random_weights"]:
        v["checkpoint"] = str(SHIPPED_CAMERA_CHECKPOINT)
    if v["checkpoint"]:
        if not os.path.isfile(v["checkpoint"]):
            raise FileNotFoundError(f"checkpoint: file not found: {v['checkpoint']}")
        try:
            return model_identity(v["checkpoint"], v["variant"], v["preset"])
        except ValueError as exc:
            raise ValueError(f"invalid l2cocc_node parameters:\n  checkpoint: {exc}") from None
    problem = "preset: empty; random weights (allow_random_weights) need the preset to build"
    if v["preset"]:
        try:
            pv = get_preset(v["preset"]).model.variant
            if not v["variant"] or pv == v["variant"]:
                return pv, v["preset"]
            problem = f"preset: {v['preset']!r} is variant {pv!r}, but variant is {v['variant']!r}"
        except ValueError as exc:
            problem = f"preset: {exc}"
    raise ValueError("invalid l2cocc_node parameters:\n  " + problem)


def _check_consistency(v: Dict[str, Any]) -> List[str]:
    from l2cocc_ros.core.engine import resolve_device

    out = []
    try:
        resolve_device(v["device"])
    except ValueError as exc:
        out.append(f"device: {exc}")
    if v["variant"] != "l":
        problem = _check_stereo(v)
        if problem:
            out.append(problem)
    if any(not lo < hi for lo, hi in zip(v["markers.crop_min"], v["markers.crop_max"])):
        out.append(f"markers.crop_min {list(v['markers.crop_min'])} must be below markers.crop_max "
                   f"{list(v['markers.crop_max'])} on every axis")
    if v["tf.use_fallback"] and not np.linalg.norm(v["tf.fallback_rotation"]) > 1e-6:
        out.append("tf.fallback_rotation: quaternion must not be zero")
    return out


def declare_parameters(node) -> None:
    """Declare every parameter of :data:`PARAMS` on ``node`` (read-only, typed, with ranges).

    Raises:
        ValueError: an override has the wrong type or is out of range (rclpy's reason is included).
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter

    types = {"string": Parameter.Type.STRING, "bool": Parameter.Type.BOOL, "integer": Parameter.Type.INTEGER,
             "double": Parameter.Type.DOUBLE, "double_array": Parameter.Type.DOUBLE_ARRAY}
    problems = []
    for spec in PARAMS:
        desc = ParameterDescriptor(description=spec.description, read_only=True,
                                   additional_constraints=f"one of {list(spec.choices)}" if spec.choices else "")
        if spec.type == "integer" and spec.minimum is not None:
            desc.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
        elif spec.type == "double" and spec.minimum is not None:
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum),
                                                            to_value=float(spec.maximum), step=0.0)]
        value = types[spec.type] if spec.default is REQUIRED else spec.default
        try:
            node.declare_parameter(spec.name, value, desc)
        except (ParameterException, TypeError) as exc:
            problems.append(f"{spec.name}: {exc}")
    if problems:
        raise ValueError("invalid l2cocc_node parameters:\n  " + "\n  ".join(problems))


def read_parameters(node) -> NodeConfig:
    """Read the declared parameters of ``node`` and validate them (see :func:`config_from_values`)."""
    from rclpy.exceptions import ParameterUninitializedException

    values = {}
    for spec in PARAMS:
        try:
            values[spec.name] = node.get_parameter(spec.name).value
        except ParameterUninitializedException:
            values[spec.name] = REQUIRED
    return config_from_values(values)


def _schema_entry(spec: ParamSpec) -> Dict[str, Any]:
    kinds = {"string": "string", "bool": "boolean", "integer": "integer", "double": "number", "double_array": "array"}
    entry: Dict[str, Any] = {"type": kinds[spec.type], "description": spec.description}
    if spec.type == "double_array":
        entry["items"] = {"type": "number"}
        if spec.length:
            entry["minItems"] = entry["maxItems"] = spec.length
    if spec.minimum is not None:
        entry["minimum"], entry["maximum"] = spec.minimum, spec.maximum
    if spec.choices:
        entry["enum"] = list(spec.choices)
    if spec.default is not REQUIRED:
        entry["default"] = spec.default
    return entry


def json_schema(file: str) -> Dict[str, Any]:
    """JSON schema (draft-07) of one param file ("node" or "common"), Autoware layout (``/**: ros__parameters``).

    Every parameter of the file is listed as required: the shipped YAML sets them all.
    """
    tree: Dict[str, Any] = {}
    for spec in (p for p in PARAMS if p.file == file):
        *parents, leaf = spec.name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _schema_entry(spec)

    def as_object(d: Dict[str, Any]) -> Dict[str, Any]:
        props = {k: (v if "type" in v and isinstance(v["type"], str) else as_object(v)) for k, v in d.items()}
        return {"type": "object", "properties": props, "required": sorted(props), "additionalProperties": False}

    title = {"node": "l2cocc_node runtime parameters", "common": "l2cocc_node diagnostics parameters"}[file]
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": title,
        "type": "object",
        "definitions": {"params": as_object(tree)},
        "properties": {"/**": {"type": "object", "properties": {"ros__parameters": {"$ref": "#/definitions/params"}},
                               "required": ["ros__parameters"]}},
        "required": ["/**"],
    }


def load_param_file(path: str) -> Dict[str, Any]:
    """Flatten a ROS 2 param YAML (``<node or /**>: ros__parameters: {...}``) into dotted names.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no ``ros__parameters`` section.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"param file not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    out: Dict[str, Any] = {}

    def walk(prefix: str, d: Mapping[str, Any]) -> None:
        for k, val in d.items():
            name = f"{prefix}{k}"
            if isinstance(val, dict):
                walk(name + ".", val)
            else:
                out[name] = val

    found = False
    for section in doc.values():
        if isinstance(section, dict) and "ros__parameters" in section:
            walk("", section["ros__parameters"])
            found = True
    if not found:
        raise ValueError(f"{path}: no '<node>: ros__parameters:' section")
    return out


def declared_names(file: Optional[str] = None) -> Sequence[str]:
    """Names of the declared parameters (of one file, or all)."""
    return [p.name for p in PARAMS if file is None or p.file == file]
