"""The L2COcc model family: camera model (-C), LiDAR teacher (-L) and the distilled camera model (-D).

Paper: L2COcc (arXiv 2503.12369, IROS 2025), Fig. 2;
authors' code: github.com/StudyingFuFu/L2COcc (``core/models/{camera,lidar}_segmentor.py``). The three
variants are compositions of the blocks in this package, received as constructor arguments; attribute
names equal the authors' state_dict keys (without ``model.``), so released checkpoints load strictly.

Input / output contract: ``docs/interfaces.md`` ("Model contract"). Batch size 1, one camera.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Sequence

import torch
from torch import Tensor, nn

from l2cocc_ros.core.config import ModelConfig
from l2cocc_ros.core.model.depth_net import GeometryDepthNet, get_mlp_input
from l2cocc_ros.core.model.evt import VoxFormerHead_Tiny
from l2cocc_ros.core.model.geometry import PC_RANGE
from l2cocc_ros.core.model.image_encoder import SECONDFPN, EfficientNet
from l2cocc_ros.core.model.lidar_encoder import LidarEncoder, lidar_preprocess
from l2cocc_ros.core.model.lift_splat import ViewTransformerLSS
from l2cocc_ros.core.model.occ_head import OccHead
from l2cocc_ros.core.model.tpv import TPVAggregator, TPVGenerator
from l2cocc_ros.core.model.voxel_backbone import CustomResNet3D, GeneralizedLSSFPN
from l2cocc_ros.core.model.voxel_proposal import VoxelProposalLayer

__all__ = ["CameraSegmentor", "LidarSegmentor", "DistillSegmentor", "CAMERA_KEYS", "build_model"]

logger = logging.getLogger(__name__)

#: Camera tensors of the inputs dict, in the order the geometry blocks take them.
CAMERA_KEYS = ("rot", "tran", "intrin", "post_rot", "post_tran", "bda")


def _require(inputs: Mapping[str, Any], keys, who: str) -> None:
    missing = [k for k in keys if k not in inputs]
    if missing:
        raise ValueError(f"{who}: inputs lack {', '.join(missing)}")


class _OccupancyTrunk(nn.Module):
    """3D backbone + 3D FPN -> TPV generator -> TPV aggregator -> occupancy head (shared by -C and -L)."""

    #: attributes of the blocks whose tensor shapes depend on the config only (never on the data), in forward
    #: order: each traces as one graph with static shapes (``torch.compile(fullgraph=True, dynamic=False)``),
    #: so it can be recorded once as a CUDA graph and replayed. The blocks in between select points or
    #: voxels with data-dependent ``nonzero`` (LiDAR tokenizer; LSS splat, voxel proposal, EVT) and run eagerly.
    static_shape_stages = ("voxel_backbone", "voxel_neck", "tpv_generator", "tpv_aggregator", "pts_bbox_head")

    def _add_trunk(self, *, voxel_backbone: nn.Module, voxel_neck: nn.Module, tpv_generator: nn.Module,
                   tpv_aggregator: nn.Module, pts_bbox_head: nn.Module) -> None:
        """Register the trunk's blocks (the one place for -C and -L; called after the variant's own blocks, so
        the state_dict keeps the authors' order)."""
        self.voxel_backbone = voxel_backbone
        self.voxel_neck = voxel_neck
        self.tpv_generator = tpv_generator
        self.tpv_aggregator = tpv_aggregator
        self.pts_bbox_head = pts_bbox_head

    def _trunk(self, volume: Tensor) -> Dict[str, Any]:
        """(1, C, X, Y, Z) voxel features -> output dict (``logits``, ``tpv_weights``, ``feats``)."""
        feats3d = self.voxel_neck(self.voxel_backbone(volume))[0]  # (1, C, X, Y, Z)
        tpv_planes, tpv_feats = self.tpv_generator(feats3d)  # 3 broadcastable planes; backbone/neck maps
        aggregated, tpv_weights = self.tpv_aggregator(tpv_planes, feats3d)  # (1, C, X, Y, Z), (1, 4, X, Y, Z)
        logits = self.pts_bbox_head(aggregated)  # (1, n_cls, 2X, 2Y, 2Z)
        feats = {"tpv_backbone": tpv_feats["tpv_backbone"], "tpv_neck": tpv_feats["tpv_neck"],
                 "feats3d_view_transformer": feats3d, "feats3d_aggregator": aggregated}
        return {"logits": logits, "tpv_weights": tpv_weights, "feats": feats}


class CameraSegmentor(_OccupancyTrunk):
    """L2COcc-C: stereo-camera semantic scene completion.

    image -> EfficientNet -> SECONDFPN -> depth net (mono + stereo fusion; context, depth P) -> LSS splat ->
    voxel proposal (stereo depth) -> EVT -> 3D ResNet + FPN -> TPV -> aggregator -> occupancy head.

    Args:
        img_backbone: image encoder, (1, 3, H, W) -> list of maps.
        img_neck: SECONDFPN, list -> (1, C_img, H/8, W/8).
        depth_net: GeometryDepth_Net, -> (context (1, 1, C, H/8, W/8), depth_prob (1, D, H/8, W/8)).
        img_view_transformer: ViewTransformerLSS.
        proposal_layer: VoxelProposalLayer.
        VoxFormer_head: the EVT (VoxFormerHead_Tiny).
        **trunk: ``voxel_backbone``, ``voxel_neck``, ``tpv_generator``, ``tpv_aggregator``, ``pts_bbox_head``: the
            shared 3D trunk (``_OccupancyTrunk._add_trunk``).
    """

    static_shape_stages = ("img_backbone", "img_neck", "depth_net") + _OccupancyTrunk.static_shape_stages

    def __init__(self, *, img_backbone: nn.Module, img_neck: nn.Module, depth_net: nn.Module,
                 img_view_transformer: nn.Module, proposal_layer: nn.Module, VoxFormer_head: nn.Module,
                 **trunk: nn.Module) -> None:
        super().__init__()
        # image branch
        self.img_backbone = img_backbone
        self.img_neck = img_neck
        self.depth_net = depth_net
        # 2D -> 3D
        self.img_view_transformer = img_view_transformer
        self.proposal_layer = proposal_layer
        self.VoxFormer_head = VoxFormer_head
        self._add_trunk(**trunk)  # 3D trunk

    def forward(self, inputs: Mapping[str, Any]) -> Dict[str, Any]:
        """Run the camera model.

        Args:
            inputs: ``img`` (1, 1, 3, H, W), camera tensors (``rot`` ... ``bda``), ``stereo_depth`` (1, 1, H, W).

        Returns:
            ``logits`` (1, n_cls, 256, 256, 32), ``depth_prob`` (1, D, H/8, W/8), ``tpv_weights``
            (1, 4, 128, 128, 16), ``feats`` (see docs/interfaces.md).
        """
        _require(inputs, ("img", "stereo_depth") + CAMERA_KEYS, "CameraSegmentor")
        img = inputs["img"]
        if img.dim() != 5 or img.shape[:2] != (1, 1):
            raise ValueError(f"img: expected (1, 1, 3, H, W), got {tuple(img.shape)}")
        cam = [inputs[k] for k in CAMERA_KEYS]
        stereo_depth = inputs["stereo_depth"]
        x = self.img_neck(self.img_backbone(img.flatten(0, 1)))  # (1, C_img, H/8, W/8)
        context, depth_prob = self.depth_net(x, get_mlp_input(*cam), stereo_depth)  # (1, C, h, w), (1, D, h, w)
        lss = self.img_view_transformer(context, depth_prob, *cam)  # (1, C, X, Y, Z)
        proposal = self.proposal_layer(stereo_depth, *cam)  # (1, 1, X, Y, Z)
        volume = self.VoxFormer_head(context, depth_prob, proposal, lss, *cam)
        out = self._trunk(volume)
        out["depth_prob"] = depth_prob
        return out


class LidarSegmentor(_OccupancyTrunk):
    """L2COcc-L: LiDAR semantic scene completion (the teacher of -D).

    points -> range crop + 6-d point features -> LidarEncoder (point MLP + scatter-max into the dense grid)
    -> 3D trunk as -C.

    Args:
        lidar_tokenizer: LidarEncoder, (feats (P, 6), cell index (P, 3)) -> (1, C, X, Y, Z).
        **trunk: the 3D trunk, as for CameraSegmentor.
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) of the output grid [m].
        occ_size: output grid voxels (256, 256, 32).
        coarse_ratio: output voxels per tokenizer cell along each axis (2).
    """

    def __init__(self, *, lidar_tokenizer: nn.Module, pc_range: Sequence[float] = PC_RANGE,
                 occ_size: Sequence[int] = (256, 256, 32), coarse_ratio: int = 2, **trunk: nn.Module) -> None:
        super().__init__()
        self.pc_range = tuple(float(v) for v in pc_range)
        self.occ_size = tuple(int(n) for n in occ_size)
        self.coarse_ratio = int(coarse_ratio)
        self.lidar_tokenizer = lidar_tokenizer
        self._add_trunk(**trunk)

    def forward(self, inputs: Mapping[str, Any]) -> Dict[str, Any]:
        """Run the LiDAR model.

        Args:
            inputs: ``points`` (P, 4) x, y, z, intensity in the grid frame (other keys ignored).

        Returns:
            ``logits``, ``tpv_weights``, ``feats`` (no ``depth_prob``).
        """
        _require(inputs, ("points",), "LidarSegmentor")
        feats, cells = lidar_preprocess(inputs["points"], pc_range=self.pc_range, occ_size=self.occ_size,
                                        coarse_ratio=self.coarse_ratio)  # (P', 6), (P', 3)
        return self._trunk(self.lidar_tokenizer(feats, cells))


class DistillSegmentor(CameraSegmentor):
    """L2COcc-D: a CameraSegmentor trained with a frozen LidarSegmentor ``teacher``.

    The teacher's parameters never require gradients and it runs under ``torch.no_grad``, only in training
    mode (at test time only the student runs). ``teacher_mode="train"`` reproduces the original, where
    Lightning's ``model.train()`` also puts the teacher in train mode (BatchNorm batch statistics, Swin
    DropPath; docs/model.md §2.4); ``"eval"`` keeps the teacher in eval mode (the corrected behaviour).

    Args:
        teacher: the L2COcc-L model.
        teacher_mode: "train" (original) or "eval".
        **blocks: the CameraSegmentor blocks.
    """

    def __init__(self, *, teacher: LidarSegmentor, teacher_mode: str = "train", **blocks: nn.Module) -> None:
        super().__init__(**blocks)
        if teacher_mode not in ("train", "eval"):
            raise ValueError(f"teacher_mode must be 'train' or 'eval', got {teacher_mode!r}")
        if not isinstance(teacher, LidarSegmentor):
            raise TypeError(f"teacher must be a LidarSegmentor, got {type(teacher).__name__}")
        self.teacher = teacher
        self.teacher_mode = teacher_mode
        self.teacher.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> "DistillSegmentor":
        super().train(mode)
        if self.teacher_mode == "eval":
            self.teacher.eval()
        return self

    def forward(self, inputs: Mapping[str, Any]) -> Dict[str, Any]:
        """Student forward; in training also ``teacher`` = the teacher's output dict (needs ``points``)."""
        out = super().forward(inputs)
        if self.training:
            _require(inputs, ("points",), "DistillSegmentor (training)")
            with torch.no_grad():
                out["teacher"] = self.teacher(inputs)
        return out


# ------------------------------------------------------------------------------------------------ build
def _trunk_blocks(cfg: ModelConfig) -> Dict[str, nn.Module]:
    c, vb, tpv = cfg.embed_dims, cfg.voxel_backbone, cfg.tpv
    return dict(
        voxel_backbone=CustomResNet3D(in_channels=c, num_layer=vb.layer_nums, num_channels=vb.channels,
                                      stride=vb.strides),
        voxel_neck=GeneralizedLSSFPN(in_channels=vb.channels, out_channels=cfg.voxel_neck.out_channels, dims=3,
                                     gn_groups=cfg.voxel_neck.norm_groups),
        tpv_generator=TPVGenerator(embed_dims=c, swin_embed_dims=tpv.swin_embed_dims, swin_depths=tpv.swin_depths,
                                   swin_num_heads=tpv.swin_num_heads, window_size=tpv.window_size,
                                   mlp_ratio=tpv.mlp_ratio, drop_path_rate=tpv.drop_path_rate,
                                   out_indices=tpv.out_indices),
        tpv_aggregator=TPVAggregator(embed_dims=c),
        pts_bbox_head=OccHead(in_channels=c, num_classes=cfg.num_classes, out_size=cfg.grid.dims,
                              gn_groups=cfg.head.norm_groups),
    )


def _camera_blocks(cfg: ModelConfig) -> Dict[str, nn.Module]:
    ib, dn, vt, evt = cfg.image_backbone, cfg.depth_net, cfg.view_transformer, cfg.evt
    pc_range, grid = cfg.grid.point_cloud_range(), cfg.internal_grid.dims
    backbone = EfficientNet(arch=ib.arch, width_mult=ib.width_mult, depth_mult=ib.depth_mult,
                            drop_path_rate=ib.drop_path_rate, out_indices=ib.out_indices)
    if tuple(backbone.out_channels) != tuple(cfg.image_neck.in_channels):
        raise ValueError(f"model.image_neck.in_channels={cfg.image_neck.in_channels} but the image backbone "
                         f"outputs {tuple(backbone.out_channels)} channels")
    return dict(
        img_backbone=backbone,
        img_neck=SECONDFPN(in_channels=cfg.image_neck.in_channels, out_channels=cfg.image_neck.out_channels,
                           upsample_strides=cfg.image_neck.upsample_strides),
        depth_net=GeometryDepthNet(in_channels=dn.in_channels, context_channels=dn.context_channels,
                                   dbound=dn.dbound, cam_channels=dn.cam_channels, downsample=vt.downsample,
                                   agg_embed_dims=dn.aggregation_channels, na_kernel_size=dn.na_kernel,
                                   mid_channels=dn.mid_channels),
        img_view_transformer=ViewTransformerLSS(pc_range=pc_range, grid_size=grid, dbound=dn.dbound,
                                                input_size=cfg.image_size, downsample=vt.downsample),
        proposal_layer=VoxelProposalLayer(pc_range=pc_range, grid_size=grid, input_size=cfg.image_size),
        VoxFormer_head=VoxFormerHead_Tiny(pc_range=pc_range, grid_size=grid, input_size=cfg.image_size,
                                          dbound=dn.dbound, embed_dims=evt.embed_dims, num_layers=evt.num_layers,
                                          num_heads=evt.num_heads, num_points=evt.num_points,
                                          feedforward_channels=evt.ffn_channels, dropout=evt.dropout),
        **_trunk_blocks(cfg),
    )


def _lidar_model(cfg: ModelConfig) -> LidarSegmentor:
    le = cfg.lidar_encoder
    tokenizer = LidarEncoder(grid_size=cfg.internal_grid.dims, in_channels=le.in_channels,
                             out_channels=le.out_channels, hidden=le.hidden_channels)
    return LidarSegmentor(lidar_tokenizer=tokenizer, pc_range=cfg.grid.point_cloud_range(), occ_size=cfg.grid.dims,
                          coarse_ratio=cfg.view_transformer.grid_downsample, **_trunk_blocks(cfg))


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build L2COcc-C / -L / -D from a model config (``get_preset(name).model``).

    Returns:
        CameraSegmentor ("c"), LidarSegmentor ("l") or DistillSegmentor ("d", with a frozen ``teacher``).

    Raises:
        TypeError: ``cfg`` is not a ModelConfig.
        ValueError: inconsistent sizes (the message names the field).
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"build_model needs a ModelConfig, got {type(cfg).__name__}")
    if cfg.variant == "l":
        return _lidar_model(cfg)
    if cfg.variant == "c":
        return CameraSegmentor(**_camera_blocks(cfg))
    return DistillSegmentor(teacher=_lidar_model(cfg.teacher), teacher_mode=cfg.teacher_mode, **_camera_blocks(cfg))
