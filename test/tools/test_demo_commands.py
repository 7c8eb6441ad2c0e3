"""The demo's replay waits for a subscriber on every input its node subscribes to (no lost first set)."""
from pathlib import Path

import pytest

from l2cocc_ros.tools.demo import _node_and_replay_commands


@pytest.mark.parametrize("variant, n_inputs", [("c", 4), ("l", 5)])
def test_replay_waits_for_every_node_input(variant, n_inputs):
    node_cmd, replay_cmd = _node_and_replay_commands(Path("m.pt"), {"variant": variant, "preset": "p"},
                                                     Path("bag"), 0.1)
    remapped = {arg.split(":=")[1] for prev, arg in zip(node_cmd, node_cmd[1:])
                if prev == "-r" and arg.startswith("~/input/")}
    start = replay_cmd.index("--wait-for") + 1
    waited = replay_cmd[start:replay_cmd.index("--wait-timeout")]
    assert len(remapped) == n_inputs and set(waited) == remapped
    assert ("/kitti/velodyne_points" in waited) == (variant == "l")
