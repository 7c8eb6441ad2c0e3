"""L2COcc configurations as data: frozen dataclasses, the named presets, and YAML round trips.

One :class:`ExperimentConfig` bundles a :class:`ModelConfig` (what ``build_model`` builds; tied to the
weights), a :class:`LossConfig` and a :class:`TrainConfig`. Presets carry the authors' config names
(``semantickitti_l2cocc_{c,l,d}``, ``kitti360_l2cocc_{c,l,d}``; values from docs/model.md §2.1 / §2.5 / §6) plus
``tiny_l2cocc_{c,l,d}``: the same architecture with shrunken channels and image, the
standard 256x256x32 output grid, small enough to train on a CPU.

YAML files hold ``to_dict(cfg)``; :func:`from_dict` rebuilds a config and names any unknown or mistyped
field, so a user can override single values (``with_overrides(cfg, {"train": {"lr": 1e-4}})``).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import yaml

from l2cocc_ros.core.classes import CLASS_WEIGHT_RULES, class_table
from l2cocc_ros.core.grid import SEMANTIC_KITTI_GRID, GridSpec

__all__ = [
    "ImageBackboneConfig", "ImageNeckConfig", "DepthNetConfig", "ViewTransformerConfig", "EVTConfig",
    "LidarEncoderConfig", "VoxelBackboneConfig", "VoxelNeckConfig", "TPVConfig", "HeadConfig",
    "ModelConfig", "LossConfig", "TrainConfig", "ExperimentConfig",
    "get_preset", "preset_names", "to_dict", "from_dict", "with_overrides", "load_config", "dump_config",
]

VARIANTS = ("c", "l", "d")


# ----------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ImageBackboneConfig:
    """EfficientNet (mmcls layout). ``arch`` names the base (B0) stage table; width/depth multipliers scale it."""

    arch: str = "b7"
    width_mult: float = 2.0
    depth_mult: float = 3.1
    out_indices: Tuple[int, ...] = (2, 3, 4, 5, 6)
    drop_path_rate: float = 0.2


@dataclass(frozen=True)
class ImageNeckConfig:
    """SECONDFPN: every level to ``out_channels`` at stride 8, concatenated."""

    in_channels: Tuple[int, ...] = (48, 80, 224, 640, 2560)
    out_channels: Tuple[int, ...] = (128, 128, 128, 128, 128)
    upsample_strides: Tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 4.0)


@dataclass(frozen=True)
class DepthNetConfig:
    """GeometryDepth_Net (mono depth + context, stereo encoder, NA + 3D U-Net aggregation)."""

    in_channels: int = 640
    mid_channels: int = 640
    context_channels: int = 128
    cam_channels: int = 33
    dbound: Tuple[float, float, float] = (2.0, 58.0, 0.5)
    aggregation_channels: int = 32
    na_kernel: int = 5


@dataclass(frozen=True)
class ViewTransformerConfig:
    """LSS lift-splat: image stride ``downsample``; internal grid = output grid / ``grid_downsample``."""

    downsample: int = 8
    grid_downsample: int = 2


@dataclass(frozen=True)
class EVTConfig:
    """VoxFormerHead_Tiny: DFA3D cross-attention layers on the proposed voxels, MLP prior elsewhere."""

    embed_dims: int = 128
    num_layers: int = 3
    num_heads: int = 8
    num_points: int = 8
    ffn_channels: int = 256
    dropout: float = 0.1


@dataclass(frozen=True)
class LidarEncoderConfig:
    """Point MLP + scatter-max (the -L tokenizer); points are cropped and featurised first (6-d)."""

    in_channels: int = 6
    hidden_channels: Tuple[int, ...] = (64, 128, 256)
    out_channels: int = 128


@dataclass(frozen=True)
class VoxelBackboneConfig:
    """CustomResNet3D."""

    layer_nums: Tuple[int, ...] = (1, 1, 1)
    channels: Tuple[int, ...] = (128, 128, 128)
    strides: Tuple[int, ...] = (1, 2, 2)


@dataclass(frozen=True)
class VoxelNeckConfig:
    """GeneralizedLSSFPN (3D)."""

    out_channels: int = 128
    norm_groups: int = 32


@dataclass(frozen=True)
class TPVConfig:
    """TPVGenerator (weighted pooling, shared Swin-T, 2D FPN) + TPVAggregator."""

    swin_embed_dims: int = 96
    swin_depths: Tuple[int, ...] = (2, 2, 6, 2)
    swin_num_heads: Tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: int = 4
    drop_path_rate: float = 0.2
    out_indices: Tuple[int, ...] = (1, 2, 3)


@dataclass(frozen=True)
class HeadConfig:
    """OccHead: conv3 (C -> C/2) -> GN -> ReLU -> conv1 -> trilinear x2."""

    norm_groups: int = 32


@dataclass(frozen=True)
class ModelConfig:
    """Everything ``build_model`` needs; tied to the weights.

    Attributes:
        name: preset name the model was built from.
        variant: "c" (camera), "l" (LiDAR), "d" (camera student + frozen LiDAR teacher).
        dataset: class-table name ("semantic_kitti" or "kitti360").
        num_classes: output classes (must equal the class table's size).
        grid: the output grid (256x256x32 of 0.2 m for every preset).
        image_size: network input (H, W); unused by "l".
        embed_dims: channel width of the 3D / TPV trunk (128 in the paper).
        teacher: the LiDAR teacher's config ("d" only).
        teacher_mode: "train" = as the original (teacher BN/DropPath in train mode, docs/model.md §2.4);
            "eval" = corrected (teacher kept in eval mode).
    """

    name: str = "semantickitti_l2cocc_c"
    variant: str = "c"
    dataset: str = "semantic_kitti"
    num_classes: int = 20
    grid: GridSpec = SEMANTIC_KITTI_GRID
    image_size: Tuple[int, int] = (384, 1280)
    embed_dims: int = 128
    image_backbone: ImageBackboneConfig = ImageBackboneConfig()
    image_neck: ImageNeckConfig = ImageNeckConfig()
    depth_net: DepthNetConfig = DepthNetConfig()
    view_transformer: ViewTransformerConfig = ViewTransformerConfig()
    evt: EVTConfig = EVTConfig()
    lidar_encoder: LidarEncoderConfig = LidarEncoderConfig()
    voxel_backbone: VoxelBackboneConfig = VoxelBackboneConfig()
    voxel_neck: VoxelNeckConfig = VoxelNeckConfig()
    tpv: TPVConfig = TPVConfig()
    head: HeadConfig = HeadConfig()
    teacher: Optional["ModelConfig"] = None
    teacher_mode: str = "train"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"model.variant must be one of {VARIANTS}, got {self.variant!r}")
        n = class_table(self.dataset).num_classes
        if self.num_classes != n:
            raise ValueError(f"model.num_classes={self.num_classes} but dataset {self.dataset!r} has {n} classes")
        if self.teacher_mode not in ("train", "eval"):
            raise ValueError(f"model.teacher_mode must be 'train' or 'eval', got {self.teacher_mode!r}")
        if (self.variant == "d") != (self.teacher is not None):
            raise ValueError(f"model.teacher must be set for variant 'd' only (variant {self.variant!r})")
        if self.teacher is not None and self.teacher.variant != "l":
            raise ValueError(f"model.teacher.variant must be 'l', got {self.teacher.variant!r}")
        if self.variant != "l" and sum(self.image_neck.out_channels) != self.depth_net.in_channels:
            raise ValueError(f"model.depth_net.in_channels={self.depth_net.in_channels} must equal the sum of "
                             f"model.image_neck.out_channels {self.image_neck.out_channels}")

    def student(self) -> "ModelConfig":
        """The camera model actually deployed: a -D config without its teacher (variant "c"); else self."""
        if self.variant != "d":
            return self
        return dataclasses.replace(self, variant="c", teacher=None)

    @property
    def internal_grid(self) -> GridSpec:
        """The 3D working grid (128x128x16 of 0.4 m for the paper)."""
        return self.grid.downsampled(self.view_transformer.grid_downsample)


# ------------------------------------------------------------------------------------------ loss/train
@dataclass(frozen=True)
class LossConfig:
    """Task and distillation loss weights (docs/model.md §4, §5) and the quirk switches.

    ``depth_loss_target``: "original" keeps the inherited Gaussian centred at 2*depth (std 1 bin-unit),
    "corrected" centres it at the depth with std 0.5 m. ``class_weighting``: the CE class weights, "paper"
    (nearly flat) or "enet" (:meth:`~l2cocc_ros.core.classes.ClassTable.class_weights`);
    ``class_weight_exponent`` raises them to a power (1 keeps them, 0 makes them flat; 0.75 tempers ENet's
    weights, whose full strength over-predicts occupancy). ``distill`` turns the -D losses on.
    """

    dataset: str = "semantic_kitti"
    ce_weight: float = 3.0
    sem_scal_weight: float = 1.0
    geo_scal_weight: float = 1.0
    depth_weight: float = 1e-4
    depth_loss_target: str = "original"
    class_weighting: str = "paper"
    class_weight_exponent: float = 1.0
    distill: bool = False
    ratio_logit_kl: float = 70.0
    ratio_aggregator_weights: float = 10.0
    ratio_feats_numeric: float = 4.0
    ratio_feats_relation: float = 5.0

    def __post_init__(self) -> None:
        class_table(self.dataset)
        if self.class_weighting not in CLASS_WEIGHT_RULES:
            raise ValueError(f"loss.class_weighting must be one of {', '.join(CLASS_WEIGHT_RULES)}, "
                             f"got {self.class_weighting!r}")
        if not 0.0 <= self.class_weight_exponent <= 1.0:
            raise ValueError(f"loss.class_weight_exponent must be in [0, 1], got {self.class_weight_exponent!r}")
        if self.depth_loss_target not in ("original", "corrected"):
            raise ValueError(f"loss.depth_loss_target must be 'original' or 'corrected', "
                             f"got {self.depth_loss_target!r}")

    def ce_class_weights(self):
        """The CE class weights these settings give: ``class_weighting``'s rule ^ ``class_weight_exponent``
        ((C,) float32 numpy array)."""
        return class_table(self.dataset).class_weights(self.class_weighting) ** self.class_weight_exponent


@dataclass(frozen=True)
class TrainConfig:
    """AdamW + OneCycle (cosine) schedule of the original (docs/model.md §6)."""

    lr: float = 2e-4
    weight_decay: float = 0.01
    pct_start: float = 0.05
    steps: int = 25000
    extra_scheduler_steps: int = 10
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    seed: int = 7240
    batch_size: int = 1


@dataclass(frozen=True)
class ExperimentConfig:
    """A named preset: model + losses + training schedule."""

    name: str
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig


# ---------------------------------------------------------------------------------------------- presets
def _paper(dataset: str, variant: str) -> ExperimentConfig:
    prefix = {"semantic_kitti": "semantickitti", "kitti360": "kitti360"}[dataset]
    name = f"{prefix}_l2cocc_{variant}"
    sk = dataset == "semantic_kitti"
    common = dict(dataset=dataset, num_classes=class_table(dataset).num_classes,
                  image_size=(384, 1280) if sk else (384, 1408))
    lidar = ModelConfig(name=name, variant="l", voxel_backbone=VoxelBackboneConfig(layer_nums=(2, 2, 2)),
                        **common)
    if variant == "l":
        model = lidar
    else:
        model = ModelConfig(name=name, variant=variant, teacher=lidar if variant == "d" else None, **common)
    sem, geo, pct = (0.5, 1.5, 0.10) if (variant == "d" and sk) else (1.0, 1.0, 0.05)
    loss = LossConfig(dataset=dataset, sem_scal_weight=sem, geo_scal_weight=geo,
                      depth_weight=0.0 if variant == "l" else 1e-4, distill=variant == "d")
    train = TrainConfig(lr=3e-4 if variant == "l" else 2e-4, pct_start=pct, steps=25000 if sk else 27000)
    return ExperimentConfig(name, model, loss, train)


def _tiny(variant: str) -> ExperimentConfig:
    """Paper SemanticKITTI architecture, shrunken: image 96x320, EfficientNet at width 0.25 / depth 0.3."""
    name = f"tiny_l2cocc_{variant}"
    width = 16
    trunk = dict(
        dataset="semantic_kitti", num_classes=20, image_size=(96, 320), embed_dims=width,
        evt=EVTConfig(embed_dims=width, num_heads=2, num_points=4, ffn_channels=2 * width),
        lidar_encoder=LidarEncoderConfig(hidden_channels=(8, 16, 16), out_channels=width),
        voxel_neck=VoxelNeckConfig(out_channels=width, norm_groups=4),
        tpv=TPVConfig(swin_embed_dims=16, swin_depths=(1, 1, 1, 1), swin_num_heads=(1, 1, 2, 2)),
        head=HeadConfig(norm_groups=4),
    )
    camera = dict(
        image_backbone=ImageBackboneConfig(arch="b0", width_mult=0.25, depth_mult=0.3),
        image_neck=ImageNeckConfig(in_channels=(8, 16, 32, 80, 320), out_channels=(8, 8, 8, 8, 8)),
        depth_net=DepthNetConfig(in_channels=40, mid_channels=32, context_channels=width, aggregation_channels=8),
    )
    lidar = ModelConfig(name=name, variant="l", voxel_backbone=VoxelBackboneConfig(
        layer_nums=(2, 2, 2), channels=(width,) * 3), **trunk)
    if variant == "l":
        model = lidar
    else:
        model = ModelConfig(name=name, variant=variant, teacher=lidar if variant == "d" else None,
                            voxel_backbone=VoxelBackboneConfig(channels=(width,) * 3), **trunk, **camera)
    loss = LossConfig(depth_weight=0.0 if variant == "l" else 1e-4, distill=variant == "d")
    train = TrainConfig(lr=1e-3, pct_start=0.1, steps=200)
    return ExperimentConfig(name, model, loss, train)


def _micro(variant: str) -> ExperimentConfig:
    """``tiny`` made cheap enough to train on one CPU thread: 28 depth bins of 2 m (tiny's 112 bins of 0.5 m hold
    ~80 % of its camera parameters: the stereo-volume U-Net grows with D squared) and a half-width TPV Swin (8..64
    channels, for the -L teacher as well: -D aligns the Swin outputs channel by channel), the corrected depth
    target (the original's peaks at twice the depth) with weight 1.0, ENet class weights, and ``tiny`` otherwise. Same architecture
    and 256x256x32 grid; a -C/-D student is 0.92 M parameters (1.8 MB in fp16), the -L 0.21 M."""
    tiny = _tiny(variant)
    name = f"micro_l2cocc_{variant}"
    tpv = dataclasses.replace(tiny.model.tpv, swin_embed_dims=8)

    def shrink(m: ModelConfig) -> ModelConfig:
        changes: Dict[str, Any] = dict(name=name, tpv=tpv)
        if m.variant != "l":
            changes["depth_net"] = dataclasses.replace(m.depth_net, dbound=(2.0, 58.0, 2.0))
        if m.teacher is not None:
            changes["teacher"] = shrink(m.teacher)
        return dataclasses.replace(m, **changes)

    # depth supervision that counts: at tiny's weight 1e-4 the depth KL (~2 nats per patch) is ~1e-5 of the CE
    # term, the depth net learns depth only through the occupancy losses and the model predicts all-empty for
    # its first hundreds of steps (README "Training the camera model")
    # and CE weights that let the classes separate: with the paper's nearly flat weights "empty" (94 % of the
    # voxels) outweighs all occupied classes together and the argmax stays "empty" for hundreds of steps even
    # where p(empty) is already low (micro -L: 0 % held-out IoU at step 300; with ENet weights 34 % at step 100)
    loss = dataclasses.replace(tiny.loss, depth_loss_target="corrected", class_weighting="enet",
                               depth_weight=0.0 if variant == "l" else 1.0)
    return ExperimentConfig(name, shrink(tiny.model), loss, tiny.train)


_PRESETS = {
    **{f"semantickitti_l2cocc_{v}": (lambda v=v: _paper("semantic_kitti", v)) for v in VARIANTS},
    **{f"kitti360_l2cocc_{v}": (lambda v=v: _paper("kitti360", v)) for v in VARIANTS},
    **{f"tiny_l2cocc_{v}": (lambda v=v: _tiny(v)) for v in VARIANTS},
    **{f"micro_l2cocc_{v}": (lambda v=v: _micro(v)) for v in VARIANTS},
}


def preset_names() -> Tuple[str, ...]:
    """All preset names, paper presets first."""
    return tuple(_PRESETS)


def get_preset(name: str) -> ExperimentConfig:
    """The preset called ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown config preset {name!r}; valid presets: {', '.join(_PRESETS)}")
    return _PRESETS[name]()


# ------------------------------------------------------------------------------------------ dict / YAML
def to_dict(cfg: Any) -> Any:
    """A config dataclass as plain dicts / lists / scalars (YAML-safe)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    return cfg


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"config field {where!r} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, _where=where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config field {where!r} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise ValueError(f"config field {where!r} needs {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config field {where!r} must be a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool) and not (isinstance(value, tp) and (tp is bool or not isinstance(value, bool))):
        raise ValueError(f"config field {where!r} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: Mapping[str, Any], _where: str = "") -> Any:
    """Rebuild a config dataclass from :func:`to_dict` output; missing fields keep their defaults.

    Raises:
        ValueError: unknown field or wrong type (the message names the dotted field).
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{_where}." if _where else ""
        raise ValueError(f"unknown config field(s) {', '.join(prefix + u for u in unknown)}; "
                         f"valid: {', '.join(sorted(names))}")
    kwargs = {k: _convert(hints[k], v, f"{_where}.{k}" if _where else k) for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: Dict[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def with_overrides(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """``cfg`` with the nested ``overrides`` applied (validated like :func:`from_dict`)."""
    return from_dict(type(cfg), _merge(to_dict(cfg), overrides))


def load_config(path: Union[str, Path]) -> ExperimentConfig:
    """Read an experiment config from YAML.

    The file holds either a full :func:`to_dict` dump, or ``preset: NAME`` plus any overrides.

    Raises:
        FileNotFoundError: no such file.
        ValueError: bad content (the message names the field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping")
    preset = data.pop("preset", None)
    if preset is not None:
        return with_overrides(get_preset(preset), data)
    return from_dict(ExperimentConfig, data)


def dump_config(cfg: ExperimentConfig, path: Union[str, Path]) -> None:
    """Write ``cfg`` as YAML (readable by :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
