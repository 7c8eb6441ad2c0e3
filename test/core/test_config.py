"""Presets (paper values of docs/model.md §2.1 / §2.5 / §6), YAML round trips, errors; no per-preset param files."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from l2cocc_ros.core.config import (ExperimentConfig, dump_config, from_dict, get_preset, load_config,
                                    preset_names, to_dict, with_overrides)

ROOT = Path(__file__).resolve().parents[2]
NAMES = [f"{d}_l2cocc_{v}" for d in ("semantickitti", "kitti360", "tiny", "micro") for v in ("c", "l", "d")]


def test_names():
    assert sorted(preset_names()) == sorted(NAMES)
    with pytest.raises(ValueError, match="valid presets: semantickitti_l2cocc_c, .*tiny_l2cocc_d"):
        get_preset("semantickitti_l2cocc_x")


def test_paper_values():
    c, lid, d = (get_preset(f"semantickitti_l2cocc_{v}") for v in "cld")
    assert (c.model.image_size, c.model.num_classes, c.model.voxel_backbone.layer_nums) == ((384, 1280), 20, (1, 1, 1))
    assert lid.model.voxel_backbone.layer_nums == (2, 2, 2) and lid.train.lr == 3e-4 and c.train.lr == 2e-4
    assert (c.loss.ce_weight, c.loss.sem_scal_weight, c.loss.geo_scal_weight, c.train.pct_start) == (3, 1, 1, 0.05)
    assert (d.loss.ce_weight, d.loss.sem_scal_weight, d.loss.geo_scal_weight, d.train.pct_start) == (3, 0.5, 1.5, 0.1)
    assert d.loss.distill and not c.loss.distill and lid.loss.depth_weight == 0 and c.loss.depth_weight == 1e-4
    assert (d.loss.ratio_logit_kl, d.loss.ratio_aggregator_weights, d.loss.ratio_feats_numeric,
            d.loss.ratio_feats_relation) == (70, 10, 4, 5)
    assert d.model.teacher == dataclasses.replace(lid.model, name=d.model.name)
    assert d.model.teacher_mode == "train" and d.loss.depth_loss_target == "original"
    assert (c.train.weight_decay, c.train.steps, c.train.div_factor, c.train.final_div_factor) == (0.01, 25000, 25, 1e4)
    assert c.model.depth_net.dbound == (2.0, 58.0, 0.5) and c.model.evt.ffn_channels == 256
    assert c.model.tpv.swin_depths == (2, 2, 6, 2) and c.model.tpv.swin_num_heads == (3, 6, 12, 24)
    k_c, k_d = get_preset("kitti360_l2cocc_c"), get_preset("kitti360_l2cocc_d")
    assert (k_c.model.image_size, k_c.model.num_classes, k_c.model.dataset, k_c.train.steps) == (
        (384, 1408), 19, "kitti360", 27000)
    assert (k_d.loss.sem_scal_weight, k_d.loss.geo_scal_weight, k_d.train.pct_start) == (1.0, 1.0, 0.05)
    assert k_d.model.teacher.num_classes == 19


def test_tiny_keeps_the_output_grid():
    for v in "cld":
        m = get_preset(f"tiny_l2cocc_{v}").model
        assert m.grid.dims == (256, 256, 32) and m.grid.voxel_size == 0.2 and m.internal_grid.dims == (128, 128, 16)
        assert m.embed_dims < 128 and m.variant == v


@pytest.mark.parametrize("name", NAMES)
def test_yaml_round_trip(tmp_path, name):
    cfg = get_preset(name)
    path = tmp_path / "cfg.yaml"
    dump_config(cfg, path)
    assert load_config(path) == cfg
    assert from_dict(ExperimentConfig, yaml.safe_load(path.read_text())) == cfg


def test_preset_plus_overrides(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text("preset: tiny_l2cocc_d\ntrain: {lr: 0.01, steps: 7}\nmodel: {teacher_mode: eval}\n")
    cfg = load_config(path)
    assert (cfg.train.lr, cfg.train.steps, cfg.model.teacher_mode) == (0.01, 7, "eval")
    assert cfg.model.evt == get_preset("tiny_l2cocc_d").model.evt
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("over, message", [
    ({"model": {"evt": {"num_head": 4}}}, r"model\.evt\.num_head"),
    ({"train": {"steps": "many"}}, r"train\.steps.*int"),
    ({"model": {"image_size": [384]}}, r"model\.image_size.*2 values"),
    ({"model": {"num_classes": 19}}, r"num_classes=19.*20 classes"),
    ({"model": {"variant": "x"}}, r"variant"),
    ({"model": {"teacher_mode": "frozen"}}, r"teacher_mode"),
    ({"model": {"depth_net": {"in_channels": 641}}}, r"depth_net\.in_channels"),
    ({"loss": {"depth_loss_target": "fixed"}}, r"depth_loss_target"),
    ({"train": {"lr": True}}, r"train\.lr"),
])
def test_bad_values_are_named(over, message):
    with pytest.raises(ValueError, match=message):
        with_overrides(get_preset("semantickitti_l2cocc_c"), over)


def test_frozen_and_teacher_rules():
    cfg = get_preset("tiny_l2cocc_c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.embed_dims = 8
    with pytest.raises(ValueError, match="teacher"):
        dataclasses.replace(cfg.model, variant="d")
    with pytest.raises(ValueError, match="teacher.variant"):
        dataclasses.replace(cfg.model, variant="d", teacher=cfg.model)


def test_no_per_preset_param_files():
    """Model values live in one place: the presets here and the config each checkpoint records."""
    assert not list((ROOT / "config").glob("*_l2cocc_*.param.yaml"))
