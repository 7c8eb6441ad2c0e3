"""Training engine: collate, optimiser/schedule, a short CPU fit on synthetic frames, kill + resume."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from l2cocc_ros.core.checkpoint import load_checkpoint
from l2cocc_ros.core.config import TrainConfig, get_preset
from l2cocc_ros.core.data.synth import SynthConfig, write_sequence
from l2cocc_ros.core.training import (L2COccDataModule, L2COccSystem, build_optimizer, build_trainer,
                                      collate_single)
from l2cocc_ros.core.data.training_sets import make_dataset

REPO = Path(__file__).resolve().parents[2]
SMALL = SynthConfig(width=330, height=100, lidar_azimuth_steps=512)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_sequence(root, "00", frames=2, seed=3, config=SMALL)
    return root


def _dataset(cfg, root, train=True):
    return make_dataset(cfg, str(root), ["00"], labels=None, stereo=None, stereo_backend="sgbm", train=train)


class _Recorder(L.Callback):
    def __init__(self):
        self.losses, self.start_step = [], None

    def on_train_start(self, trainer, pl_module):
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_collate_single_adds_the_batch_axis_except_points():
    sample = {"inputs": {"img": torch.zeros(1, 3, 8, 16), "bda": torch.eye(4), "points": torch.zeros(5, 4),
                         "stereo_depth": torch.zeros(1, 8, 16)},
              "target": torch.zeros(4, 4, 2, dtype=torch.uint8), "target_1_2": torch.zeros(2, 2, 1),
              "lidar_depth": torch.zeros(1, 8, 16), "meta": {"sequence": "00"}}
    batch = collate_single([sample])
    assert batch["inputs"]["img"].shape == (1, 1, 3, 8, 16)
    assert batch["inputs"]["bda"].shape == (1, 4, 4)
    assert batch["inputs"]["points"].shape == (5, 4)
    assert batch["inputs"]["stereo_depth"].shape == (1, 1, 8, 16)
    assert batch["target"].shape == (1, 4, 4, 2) and batch["target"].dtype == torch.long
    assert batch["lidar_depth"].shape == (1, 1, 8, 16)
    with pytest.raises(ValueError, match="batch size 1"):
        collate_single([sample, sample])


def test_adamw_one_cycle_schedule_as_the_original():
    p = torch.nn.Parameter(torch.zeros(3))
    opt, sched = build_optimizer([p], TrainConfig(lr=2e-4, pct_start=0.05, steps=100))
    assert isinstance(opt, torch.optim.AdamW)
    g = opt.param_groups[0]
    assert g["weight_decay"] == 0.01 and g["betas"] == (0.9, 0.999)
    assert sched.total_steps == 110
    lrs = []
    for _ in range(109):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-4 / 25)
    assert max(lrs) == pytest.approx(2e-4, rel=1e-3) and 4 <= lrs.index(max(lrs)) <= 6
    assert lrs[-1] < 2e-4 / 25 / 10   # cosine anneal towards max_lr / 25 / 1e4


def test_short_fit_lowers_the_loss_and_exports(synth_root, tmp_path):
    cfg = get_preset("tiny_l2cocc_l")
    torch.manual_seed(0)
    system = L2COccSystem(cfg)
    rec = _Recorder()
    trainer = build_trainer(tmp_path, max_steps=6, devices=1, accelerator="cpu", val_every=6, ckpt_every=3,
                            progress_bar=False)
    trainer.callbacks.append(rec)
    data = L2COccDataModule(torch.utils.data.Subset(_dataset(cfg, synth_root), [0]),
                            torch.utils.data.Subset(_dataset(cfg, synth_root, train=False), [1]))
    trainer.fit(system, datamodule=data)
    assert trainer.global_step == 6 and len(rec.losses) == 6
    assert sum(rec.losses[-2:]) / 2 < 0.95 * rec.losses[0] and rec.losses[-1] < min(rec.losses[:3]), rec.losses
    scores = system.last_val_scores
    assert 0.0 <= scores["miou"] <= 1.0 and scores["n_voxels"] > 100000
    assert float(trainer.callback_metrics["val/IoU"]) == pytest.approx(scores["iou"])
    best = load_checkpoint(tmp_path / "best.pt")           # our format, weights_only
    assert best.extra["global_step"] == 6 and "val/mIoU" in best.extra["metrics"]
    ck = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 6 and any(k.startswith("model.pts_bbox_head") for k in ck["state_dict"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("last*")) == ["last.ckpt"]  # no last-v1.ckpt


def test_kill_mid_run_then_resume_continues_from_last_checkpoint(synth_root, tmp_path):
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "l2cocc_ros.tools.train", "--config", "tiny_l2cocc_l", "--data", str(synth_root),
           "--sequences-train", "00", "--sequences-val", "--max-steps", "5", "--ckpt-every", "2",
           "--num-workers", "0", "--accelerator", "cpu", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    saved_step = None
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file():
                try:
                    saved_step = torch.load(last, weights_only=True)["global_step"]
                except Exception:  # being written
                    saved_step = None
                if saved_step:
                    break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert saved_step is not None and 2 <= saved_step < 5, err.decode()[-2000:]
    saved_step = torch.load(last, weights_only=True)["global_step"]   # the file as the kill left it

    cfg = get_preset("tiny_l2cocc_l")
    rec = _Recorder()
    trainer = build_trainer(out, max_steps=5, devices=1, accelerator="cpu", val_every=100, ckpt_every=2,
                            progress_bar=False)
    trainer.callbacks.append(rec)
    trainer.fit(L2COccSystem(cfg), datamodule=L2COccDataModule(_dataset(cfg, synth_root)), ckpt_path=last,
                weights_only=True)
    assert rec.start_step == saved_step
    assert trainer.global_step == 5 and len(rec.losses) == 5 - saved_step
    assert torch.load(last, weights_only=True)["global_step"] == 5


def test_distill_system_loads_the_teacher_and_freezes_it(tmp_path):
    from l2cocc_ros.core.checkpoint import save_checkpoint
    from l2cocc_ros.core.model.l2cocc import build_model

    torch.manual_seed(1)
    l_cfg = get_preset("tiny_l2cocc_l")
    teacher = build_model(l_cfg.model)
    save_checkpoint(tmp_path / "l.pt", teacher, l_cfg)
    system = L2COccSystem(get_preset("tiny_l2cocc_d"), teacher_ckpt=str(tmp_path / "l.pt"))
    for k, v in teacher.state_dict().items():
        assert torch.equal(system.model.teacher.state_dict()[k], v), k
    assert not any(p.requires_grad for p in system.model.teacher.parameters())
    opt = system.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in system.model.teacher.parameters())
    student = [p for n, p in system.model.named_parameters() if not n.startswith("teacher.") and p.requires_grad]
    assert len(student) > 100 and all(id(p) in in_opt for p in student)
    # the original's teacher runs in train mode (PL 1.7 called model.train() on everything, docs/model.md §2.4)
    system.model.eval()
    system.on_train_start()
    assert system.model.training and system.model.teacher.training
    with pytest.raises(ValueError, match="only for variant 'd'"):
        L2COccSystem(l_cfg, teacher_ckpt=str(tmp_path / "l.pt"))


def test_init_from_loads_weights_strictly_and_keeps_the_distillation_teacher(tmp_path):
    from l2cocc_ros.core.checkpoint import CheckpointMismatchError, save_checkpoint
    from l2cocc_ros.core.model.l2cocc import build_model

    torch.manual_seed(2)
    c_cfg, l_cfg = get_preset("tiny_l2cocc_c"), get_preset("tiny_l2cocc_l")
    trained_c, teacher = build_model(c_cfg.model), build_model(l_cfg.model)
    save_checkpoint(tmp_path / "c.pt", trained_c, c_cfg)
    save_checkpoint(tmp_path / "l.pt", teacher, l_cfg)
    expected = trained_c.state_dict()

    system = L2COccSystem(c_cfg, init_ckpt=str(tmp_path / "c.pt"))
    assert all(torch.equal(v, expected[k]) for k, v in system.model.state_dict().items())
    assert system.hparams["init_ckpt"] == str(tmp_path / "c.pt")
    # -D: the -C weights start the student, the teacher is the --teacher one
    system = L2COccSystem(get_preset("tiny_l2cocc_d"), teacher_ckpt=str(tmp_path / "l.pt"),
                          init_ckpt=str(tmp_path / "c.pt"))
    state = system.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert all(torch.equal(state[f"teacher.{k}"], v) for k, v in teacher.state_dict().items())
    with pytest.raises(CheckpointMismatchError):   # weights of another variant are refused, not half-loaded
        L2COccSystem(c_cfg, init_ckpt=str(tmp_path / "l.pt"))


def test_cli_refuses_distillation_without_a_teacher(synth_root, tmp_path, capsys):
    from l2cocc_ros.tools.train import main

    rc = main(["--config", "tiny_l2cocc_d", "--data", str(synth_root), "--out", str(tmp_path)])
    assert rc == 2 and "--teacher" in capsys.readouterr().err
    rc = main(["--config", "tiny_l2cocc_c", "--data", str(tmp_path / "nowhere"), "--sequences-train", "00",
               "--out", str(tmp_path)])
    assert rc == 2 and "voxels folder not found" in capsys.readouterr().err
    rc = main(["--config", "tiny_l2cocc_c", "--data", str(synth_root), "--out", str(tmp_path),
               "--init-from", str(tmp_path / "missing.pt")])
    assert rc == 2 and "--init-from checkpoint not found" in capsys.readouterr().err
    rc = main(["--config", "tiny_l2cocc_c", "--data", str(synth_root), "--out", str(tmp_path),
               "--init-from", str(tmp_path / "missing.pt"), "--resume"])
    assert rc == 2 and "exclude each other" in capsys.readouterr().err
