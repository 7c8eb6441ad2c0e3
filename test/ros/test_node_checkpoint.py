"""The node takes its model identity from the checkpoint: ``checkpoint:=FILE`` alone is enough for every shipped
file, ``variant`` / ``preset`` that contradict the file are refused naming both, the authors' kind of file (no
recorded preset) needs ``preset``, an empty ``checkpoint`` means the shipped camera model, and ``l2cocc node`` without
arguments starts with the shipped files and names them in its first log line."""
import pytest
import rclpy
import torch

from l2cocc_ros.core.checkpoint import SHIPPED_CAMERA_CHECKPOINT, model_identity, read_state_dict
from l2cocc_ros.ros.params import config_from_values

from node_helpers import REPO, param_values, parameters

SHIPPED = sorted((REPO / "l2cocc_ros" / "checkpoints").glob("*.pt"))
FROM_FILE = dict(variant="", preset="", allow_random_weights=False)


def recorded(path):
    _, kind, obj = read_state_dict(path)
    assert kind == "ours"
    return obj["meta"]["variant"], obj["meta"]["preset"]


def test_there_is_a_shipped_camera_model_and_a_lidar_model():
    assert SHIPPED_CAMERA_CHECKPOINT in SHIPPED and len(SHIPPED) >= 2
    assert recorded(SHIPPED_CAMERA_CHECKPOINT)[0] in ("c", "d")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_node_starts_from_checkpoint_alone(path):
    from l2cocc_ros.ros.node import L2COccNode

    variant, preset = recorded(path)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = None
    try:
        node = L2COccNode(context=ctx, parameter_overrides=parameters(checkpoint=str(path), **FROM_FILE))
        assert (node.config.variant, node.config.preset) == (variant, preset)
        assert node.engine.cfg.name == preset
        assert node.engine.needs_points == (variant == "l")
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_contradicting_preset_or_variant_is_refused_naming_both(path):
    variant, preset = recorded(path)
    other = "semantickitti_l2cocc_d" if preset != "semantickitti_l2cocc_d" else "tiny_l2cocc_c"
    with pytest.raises(ValueError) as err:
        config_from_values(param_values(checkpoint=str(path), **{**FROM_FILE, "preset": other}))
    assert repr(preset) in str(err.value) and repr(other) in str(err.value)
    wrong = "l" if variant != "l" else "c"
    with pytest.raises(ValueError) as err:
        config_from_values(param_values(checkpoint=str(path), **{**FROM_FILE, "variant": wrong}))
    assert repr(variant) in str(err.value) and repr(wrong) in str(err.value)
    # agreeing values are accepted
    cfg = config_from_values(param_values(checkpoint=str(path), **{**FROM_FILE, "variant": variant, "preset": preset}))
    assert (cfg.variant, cfg.preset) == (variant, preset)


def test_empty_checkpoint_is_the_shipped_camera_model():
    cfg = config_from_values(param_values(checkpoint="", **FROM_FILE))
    assert cfg.checkpoint == str(SHIPPED_CAMERA_CHECKPOINT)
    assert (cfg.variant, cfg.preset) == recorded(SHIPPED_CAMERA_CHECKPOINT)


def test_a_file_without_recorded_preset_needs_one(tmp_path):
    state_dict, _, _ = read_state_dict(SHIPPED_CAMERA_CHECKPOINT)
    plain = tmp_path / "authors.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state_dict.items()}}, plain)
    with pytest.raises(ValueError, match="records no preset"):
        config_from_values(param_values(checkpoint=str(plain), **FROM_FILE))
    _, preset = recorded(SHIPPED_CAMERA_CHECKPOINT)
    assert model_identity(plain, "", preset)[1] == preset
    with pytest.raises(ValueError, match="variant 'l' was configured"):
        model_identity(plain, "l", preset)


def test_node_without_arguments_uses_the_shipped_files_and_says_so_first():
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="OFF", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-P", "-m", "l2cocc_ros.ros.node"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("ready:" in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    logged = [line for line in lines if line.startswith("[INFO]")]
    assert logged, "".join(lines)
    first = logged[0]
    assert str(SHIPPED_CAMERA_CHECKPOINT) in first and "the shipped camera model" in first, first
    assert "l2cocc_node.param.yaml" in first and "common.param.yaml" in first, first
    assert any("ready:" in line for line in lines), "".join(lines)
