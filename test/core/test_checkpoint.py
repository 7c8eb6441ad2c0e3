"""Checkpoints: our round trip, the authors' Lightning layout, mismatch reports, unsafe files, ckpt-check."""
from __future__ import annotations

import pytest
import torch

from l2cocc_ros.core.checkpoint import (FORMAT, CheckpointError, CheckpointMismatchError, LoadReport,
                                        compare_state_dict, is_derived_key, load_checkpoint, load_model, load_released,
                                        read_state_dict, save_checkpoint, state_dict_sha256)
from l2cocc_ros.core.config import dump_config, get_preset
from l2cocc_ros.core.model.l2cocc import CameraSegmentor, DistillSegmentor, LidarSegmentor, build_model
from l2cocc_ros.tools import ckpt_check


class Payload:
    """A custom object; unpickling it would create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _perturbed(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not is_derived_key(name):  # the frozen frustum/dx/bx/nx are functions of the config
                p.copy_(torch.randn(p.shape, generator=g))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def tiny_d():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny_l2cocc_d").model)
    _perturbed(model, 1)
    return model


def test_own_round_trip(tmp_path):
    cfg = get_preset("tiny_l2cocc_c")
    model = build_model(cfg.model)
    _perturbed(model, 2)
    path = tmp_path / "c.pt"
    digest = save_checkpoint(path, model, cfg, extra={"epoch": 3, "metrics": {"mIoU": 0.25}})
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, CameraSegmentor) and _same(loaded.model, model)
    assert loaded.config == cfg
    assert loaded.meta["variant"] == "c" and loaded.meta["dataset"] == "semantic_kitti"
    assert loaded.meta["class_names"][:2] == ["empty", "car"] and len(loaded.meta["class_names"]) == 20
    learned = {k: v for k, v in model.state_dict().items() if not is_derived_key(k)}
    assert loaded.meta["state_dict_sha256"] == digest == state_dict_sha256(learned)
    stored, kind, _ = read_state_dict(path)  # config-derived constants are not stored, and come back on load
    assert kind == "ours" and set(stored) == set(learned) and len(learned) < len(model.state_dict())
    assert loaded.extra == {"epoch": 3, "metrics": {"mIoU": 0.25}}
    assert loaded.report.ok and loaded.report.num_params == sum(p.numel() for p in model.parameters()
                                                                if p.requires_grad)
    other = build_model(cfg.model)
    assert not _same(other, model)
    load_checkpoint(path, other)
    assert _same(other, model)


def test_extra_must_be_plain(tmp_path):
    cfg = get_preset("tiny_l2cocc_l")
    with pytest.raises(TypeError, match=r"extra.meta.obj"):
        save_checkpoint(tmp_path / "x.pt", build_model(cfg.model), cfg, extra={"meta": {"obj": Payload("m")}})


def test_own_file_with_edited_weights_is_refused(tmp_path):
    cfg = get_preset("tiny_l2cocc_l")
    model = build_model(cfg.model)
    path = tmp_path / "l.pt"
    save_checkpoint(path, model, cfg)
    obj = torch.load(path, weights_only=True)
    key = next(iter(obj["state_dict"]))
    obj["state_dict"][key] = obj["state_dict"][key] + 1
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="hash"):
        load_checkpoint(path)


def test_released_lightning_layout(tmp_path, tiny_d):
    path = tmp_path / "released.ckpt"
    ckpt = {"state_dict": {"model." + k: v for k, v in tiny_d.state_dict().items()}, "epoch": 1,
            "global_step": 25000, "pytorch-lightning_version": "1.7.0",
            "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.18), "monitor": "val/mIoU"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]}]}
    torch.save(ckpt, path)
    sd, kind, _ = read_state_dict(path)
    assert kind == "lightning" and not any(k.startswith("model.") for k in sd)
    distill = build_model(get_preset("tiny_l2cocc_d").model)
    report = load_released(path, distill)
    assert report.ok and not report.dropped and _same(distill, tiny_d)
    camera = build_model(get_preset("tiny_l2cocc_c").model)
    report = load_released(path, camera)
    n_teacher = sum(1 for k in tiny_d.state_dict() if k.startswith("teacher."))
    assert len(report.dropped) == n_teacher > 0 and all(k.startswith("teacher.") for k in report.dropped)
    assert "teacher.voxel_backbone" in report.format()
    assert all(torch.equal(v, tiny_d.state_dict()[k]) for k, v in camera.state_dict().items())
    teacher = build_model(get_preset("tiny_l2cocc_l").model)  # an -L file feeds the -D teacher the same way
    torch.save({"state_dict": {"model." + k: v for k, v in tiny_d.teacher.state_dict().items()}}, path)
    assert load_released(path, teacher).ok and _same(teacher, tiny_d.teacher)
    with pytest.raises(CheckpointError, match="load_released"):
        load_checkpoint(path)


def test_distilled_checkpoint_deploys_as_student(tmp_path, tiny_d):
    cfg = get_preset("tiny_l2cocc_d")
    path = tmp_path / "d.pt"
    save_checkpoint(path, tiny_d, cfg)
    student = build_model(cfg.model.student())
    assert type(student) is CameraSegmentor and cfg.model.student().teacher is None
    loaded = load_checkpoint(path, student)
    assert len(loaded.report.dropped) == sum(1 for k in tiny_d.state_dict()
                                             if k.startswith("teacher.") and not is_derived_key(k))
    assert all(torch.equal(v, tiny_d.state_dict()[k]) for k, v in student.state_dict().items())
    assert loaded.config == cfg and loaded.meta["variant"] == "d"
    model, exp = load_model(path)  # what the engine and the tools run: the student
    assert type(model) is CameraSegmentor and exp == cfg
    assert all(torch.equal(v, tiny_d.state_dict()[k]) for k, v in model.state_dict().items())
    # a shipped -D file leaves the teacher out; it loads strictly all the same
    save_checkpoint(tmp_path / "student.pt", student, cfg)
    again, _ = load_model(tmp_path / "student.pt", "tiny_l2cocc_d")
    assert type(again) is CameraSegmentor and _same(again, student)


def test_mismatch_report(tmp_path, tiny_d):
    camera = build_model(get_preset("tiny_l2cocc_c").model)
    sd = {k: v for k, v in camera.state_dict().items()}
    del sd["img_neck.deblocks.0.1.weight"], sd["pts_bbox_head.occ_convs.0.1.bias"]
    sd["depth_net.extra.weight"] = torch.zeros(3)
    sd["tpv_aggregator.combine_coeff.weight"] = torch.zeros(5, 16, 1, 1, 1)
    report = compare_state_dict(camera, sd)
    assert not report.ok
    assert report.missing == ["img_neck.deblocks.0.1.weight", "pts_bbox_head.occ_convs.0.1.bias"]
    assert report.unexpected == ["depth_net.extra.weight"]
    assert report.wrong_shape == [("tpv_aggregator.combine_coeff.weight", (5, 16, 1, 1, 1), (4, 16, 1, 1, 1))]
    text = report.format()
    assert "missing in checkpoint: 2 key(s)" in text and "  img_neck: 1" in text and "  pts_bbox_head: 1" in text
    assert "unexpected in checkpoint: 1 key(s)" in text and "depth_net.extra.weight" in text
    assert "checkpoint [5, 16, 1, 1, 1], model [4, 16, 1, 1, 1]" in text
    before = {k: v.clone() for k, v in camera.state_dict().items()}
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in sd.items()}}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_released(path, camera)
    assert err.value.report.missing == report.missing
    assert all(torch.equal(before[k], v) for k, v in camera.state_dict().items())  # nothing half-loaded
    many = LoadReport(missing=[f"voxel_backbone.k{i}" for i in range(7)])
    assert "(+4)" in many.format(examples=3)


def test_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.a": torch.zeros(2)}, "hyper_parameters": Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to unpickle objects") as err:
        read_state_dict(path)
    assert "not a plain tensor checkpoint" in str(err.value) and "weights_only=False" in str(err.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_released(path, torch.nn.Linear(1, 1))


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        read_state_dict(tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        read_state_dict(junk)


def test_teacher_is_frozen_and_typed(tiny_d):
    assert isinstance(tiny_d, DistillSegmentor) and isinstance(tiny_d.teacher, LidarSegmentor)
    assert not any(p.requires_grad for p in tiny_d.teacher.parameters())


def test_ckpt_check_cli(tmp_path, capsys):
    cfg = get_preset("tiny_l2cocc_c")
    model = build_model(cfg.model)
    good = tmp_path / "c.pt"
    save_checkpoint(good, model, cfg)
    assert ckpt_check.main([str(good), "--config", "tiny_l2cocc_c"]) == 0
    out = capsys.readouterr().out
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert out.startswith("OK ") and f"{n:,} trainable parameters" in out
    assert ckpt_check.main([str(good), "--config", "tiny_l2cocc_l"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("MISMATCH") and "missing in checkpoint" in out and "lidar_tokenizer" in out
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload(str(tmp_path / "m"))}, evil)
    assert ckpt_check.main([str(evil), "--config", "tiny_l2cocc_c"]) == 2
    assert "refusing to unpickle" in capsys.readouterr().err
    assert ckpt_check.main([str(tmp_path / "absent.ckpt"), "--config", "tiny_l2cocc_c"]) == 2
    assert "absent.ckpt" in capsys.readouterr().err
    assert ckpt_check.main([str(good), "--config", "no_such_preset"]) == 2
    assert "valid presets" in capsys.readouterr().err
    yaml_cfg = tmp_path / "cfg.yaml"
    dump_config(cfg, yaml_cfg)
    assert ckpt_check.main([str(good), "-c", str(yaml_cfg)]) == 0
    assert ckpt_check.main([str(good), "-c", str(tmp_path / "none.yaml")]) == 2


def test_load_model_entry_point(tmp_path):
    cfg = get_preset("tiny_l2cocc_l")
    model = build_model(cfg.model)
    _perturbed(model, 4)
    ours = tmp_path / "l.pt"
    save_checkpoint(ours, model, cfg)
    loaded, exp = load_model(ours)
    assert exp == cfg and _same(loaded, model) and not loaded.training
    assert _same(load_model(ours, "tiny_l2cocc_l")[0], model)
    with pytest.raises(ValueError, match="holds preset 'tiny_l2cocc_l'"):
        load_model(ours, "tiny_l2cocc_c")
    released = tmp_path / "released.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()}, "epoch": 1}, released)
    with pytest.raises(ValueError, match="without a config"):
        load_model(released)
    assert _same(load_model(released, "tiny_l2cocc_l")[0], model)
    with pytest.raises(FileNotFoundError, match="absent"):
        load_model(tmp_path / "absent.pt")


def test_half_precision_storage(tmp_path):
    cfg = get_preset("tiny_l2cocc_l")
    model = build_model(cfg.model)
    _perturbed(model, 5)
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_checkpoint(full, model, cfg)
    save_checkpoint(half, model, cfg, weights_dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    stored, _, _ = read_state_dict(half)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    loaded = load_checkpoint(half).model
    for k, v in loaded.state_dict().items():
        ref = model.state_dict()[k]
        assert v.dtype == ref.dtype
        expected = ref.to(torch.float16).to(ref.dtype) if ref.is_floating_point() and not is_derived_key(k) else ref
        assert torch.equal(v, expected), k


def test_ckpt_check_says_what_is_wrong_with_the_file(tmp_path, capsys):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert ckpt_check.main([str(empty), "--config", "tiny_l2cocc_c"]) == 2
    err = capsys.readouterr().err
    assert "empty.ckpt is empty (0 bytes)" in err and len(err.strip().splitlines()) == 1
    folder = tmp_path / "run.ckpt"
    folder.mkdir()
    assert ckpt_check.main([str(folder), "--config", "tiny_l2cocc_c"]) == 2
    assert "run.ckpt is a directory" in capsys.readouterr().err
    cfg = get_preset("tiny_l2cocc_c")
    good = tmp_path / "c.pt"
    save_checkpoint(good, build_model(cfg.model), cfg)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:1000])
    assert ckpt_check.main([str(cut), "--config", "tiny_l2cocc_c"]) == 2
    err = capsys.readouterr().err
    assert "cut.pt is not a readable torch checkpoint" in err and "1,000 bytes" in err
    lidar = get_preset("tiny_l2cocc_l")
    l_ckpt = tmp_path / "l.pt"
    save_checkpoint(l_ckpt, build_model(lidar.model), lidar)
    assert ckpt_check.main([str(l_ckpt), "--config", "tiny_l2cocc_c"]) == 1
    out = capsys.readouterr().out
    assert "this is an -L checkpoint; the model is -C" in out and "missing in checkpoint" in out
    assert ckpt_check.main([str(good), "--config", "tiny_l2cocc_d"]) == 1
    assert "this is an -C checkpoint; the model is -D" in capsys.readouterr().out
