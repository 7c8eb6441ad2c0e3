"""Multi-process training (Lightning DDP) on CPU: gloo without SyncBN, an unpadded validation split, and a
real two-process ``l2cocc train`` run."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler

from l2cocc_ros.core.checkpoint import load_checkpoint
from l2cocc_ros.core.classes import IGNORE
from l2cocc_ros.core.config import get_preset
from l2cocc_ros.core.data.synth import SynthConfig, write_sequence
from l2cocc_ros.core.training import L2COccDataModule, build_trainer
from l2cocc_ros.core.training.trainer import uses_gpu
from l2cocc_ros.core.data.training_sets import make_dataset

REPO = Path(__file__).resolve().parents[2]
SMALL = SynthConfig(width=330, height=100, lidar_azimuth_steps=512)


class _Frames(torch.utils.data.Dataset):
    """n minimal samples whose ``meta`` names their index."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"inputs": {"bda": torch.eye(4)}, "target": torch.zeros(2, 2, 1), "meta": {"index": i}}


def _visited(loader):
    return [int(batch["meta"]["index"]) for batch in loader]


def test_gpu_accelerators_are_told_apart_from_cpu():
    assert uses_gpu("gpu") and uses_gpu("cuda") and not uses_gpu("cpu")
    assert uses_gpu("auto") == torch.cuda.is_available()
    with pytest.raises(ValueError, match="'tpu'"):
        uses_gpu("tpu")


def test_cpu_ddp_trainer_keeps_one_batchnorm_per_process(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="l2cocc_ros.core.training.trainer"):
        trainer = build_trainer(tmp_path, max_steps=2, devices=2, accelerator="cpu", progress_bar=False)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2
    assert trainer.strategy._layer_sync is None            # no SyncBatchNorm conversion
    assert trainer.strategy._get_process_group_backend() == "gloo"
    assert "BatchNorm layers are NOT synchronised" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="l2cocc_ros.core.training.trainer"):
        single = build_trainer(tmp_path, max_steps=2, devices=1, accelerator="cpu", progress_bar=False)
    assert not isinstance(single.strategy, DDPStrategy) and caplog.text == ""


def test_val_loader_splits_frames_over_two_processes_without_repeats():
    data = L2COccDataModule(_Frames(3), _Frames(3))
    assert _visited(data.val_dataloader()) == [0, 1, 2]     # no trainer: one process
    shares = []
    for rank in (0, 1):
        data.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        loader = data.val_dataloader()
        assert isinstance(loader.sampler, DistributedSampler)   # Lightning leaves such a loader alone
        shares.append(_visited(loader))
    assert shares == [[0, 2], [1]]
    train = data.train_dataloader()                           # training keeps Lightning's default
    assert isinstance(train.sampler, RandomSampler) and train.drop_last
    data.trainer = SimpleNamespace(world_size=1, global_rank=0)
    assert isinstance(data.val_dataloader().sampler, SequentialSampler)
    small = L2COccDataModule(_Frames(3), _Frames(1))
    small.trainer = SimpleNamespace(world_size=2, global_rank=1)
    with pytest.raises(ValueError, match="1 frames, fewer than the 2 DDP processes"):
        small.val_dataloader()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_cpu_training_validates_each_frame_once(tmp_path, ros_child_env):
    root = tmp_path / "synth"
    write_sequence(root, "00", frames=3, seed=3, config=SMALL)
    cfg = get_preset("tiny_l2cocc_l")
    val_set = make_dataset(cfg, str(root), ["00"], labels=None, stereo=None, stereo_backend="sgbm", train=False)
    per_frame = [int((torch.as_tensor(val_set[i]["target"]) != IGNORE).sum()) for i in range(len(val_set))]
    assert len(per_frame) == 3 and min(per_frame) > 0   # so a repeated frame would change the total

    out = tmp_path / "run"
    env = dict(ros_child_env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), GLOO_SOCKET_IFNAME="lo",
               OMP_NUM_THREADS="1")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK"):
        env.pop(key, None)
    cmd = [sys.executable, "-P", "-m", "l2cocc_ros.tools.cli", "train", "--config", "tiny_l2cocc_l",
           "--data", str(root), "--sequences-train", "00", "--sequences-val", "00", "--devices", "2",
           "--accelerator", "cpu", "--max-steps", "2", "--num-workers", "0", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    log = proc.stdout
    assert proc.returncode == 0, log[-4000:]
    assert "terminate called" not in log  # the process group is torn down before the interpreter exits

    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log, log[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert "BatchNorm layers are NOT synchronised" in log
    # rank 0 prints the table of the confusion matrix summed over both processes: every frame once
    assert [int(n) for n in re.findall(r"\((\d+) voxels\)", log)] == [sum(per_frame)], log[-4000:]
    assert "DDP: the weights of all 2 processes agree" in log
    assert "finished at step 2" in log

    for name in ("best.pt", "last.pt"):
        ck = load_checkpoint(out / name)                     # strict load into a fresh model
        assert ck.extra["global_step"] == 2 and "val/mIoU" in ck.extra["metrics"], name
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert len(list((out / "checkpoints").glob("best-step2-*.ckpt"))) == 1
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1   # only rank 0 logs
