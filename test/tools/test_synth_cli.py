"""Tests of ``l2cocc synth`` (tools/synth.py) and its registration in the ``l2cocc`` command."""
from __future__ import annotations

import numpy as np

from l2cocc_ros.core.data import kitti_io
from l2cocc_ros.tools import cli
from l2cocc_ros.tools.synth import main

SMALL = ["-W", "160", "-H", "48", "--lidar-azimuth-steps", "256", "--no-progress"]


def test_cli_writes_the_sequence_and_voxel_every(tmp_path, capsys):
    rc = cli.main(["synth", "--out", str(tmp_path), "--sequence", "03", "--frames", "2", "--start", "1",
                   "--seed", "2", "--voxel-every", "2", *SMALL])
    assert rc == 0
    seq = tmp_path / "sequences" / "03"
    assert str(seq) in capsys.readouterr().out
    assert sorted(p.name for p in (seq / "image_2").iterdir()) == ["000001.png", "000002.png"]
    assert sorted(p.name for p in (seq / "voxels").iterdir()) == [
        "000002.bin", "000002.invalid", "000002.label", "000002.occluded"]  # only multiples of --voxel-every
    assert len(kitti_io.read_poses(seq / "poses.txt")) == 3  # poses/times cover frames 0..start+frames-1
    np.testing.assert_allclose(kitti_io.read_times(seq / "times.txt"), [0.0, 0.1, 0.2])
    fx = kitti_io.read_calib(seq / "calib.txt")["P2"][0, 0]
    assert abs(fx - 718.856 * 160 / 1241) < 1e-6


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--sequence", "8", "--frames", "1", *SMALL]) == 2
    assert "sequence" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--frames", "0", *SMALL]) == 2
    assert "--frames" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--width", "0", "--frames", "1"]) == 2
    assert "width" in capsys.readouterr().err
    assert not (tmp_path / "sequences").exists()
