"""``l2cocc synth-benchmark``: layout, manifest, held-out worlds apart from training worlds, resumability."""
from __future__ import annotations

import json

import numpy as np

from l2cocc_ros.core.data import kitti_io
from l2cocc_ros.tools import cli
from l2cocc_ros.tools.synth_benchmark import generate_benchmark

SMALL = dict(train_worlds=2, train_frames=2, heldout_worlds=1, heldout_frames=1, stride=3, width=160, height=48,
             progress=False)


def test_benchmark_layout_and_manifest(tmp_path):
    manifest = generate_benchmark(tmp_path, **SMALL, command=["l2cocc", "synth-benchmark"])
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    train, held = manifest["splits"]["train"], manifest["splits"]["heldout"]
    assert train["sequences"] == ["00", "01"] and held["sequences"] == ["20"]
    assert train["frames"] == 4 and held["frames"] == 1 and train["frame_ids"] == ["000000", "000003"]
    assert not set(train["seeds"].values()) & set(held["seeds"].values())  # held-out worlds are other streets
    assert manifest["image_size"] == [160, 48] and manifest["versions"]["numpy"] == np.__version__
    for seq, ids in (("00", train["frame_ids"]), ("01", train["frame_ids"]), ("20", held["frame_ids"])):
        for fid in ids:
            assert (tmp_path / "labels" / seq / f"{fid}_1_1.npy").is_file()
            assert (tmp_path / "labels" / seq / f"{fid}_1_2.npy").is_file()
            depth = np.load(tmp_path / "stereo" / "sequences" / seq / f"{fid}.npy")
            assert depth.shape == (48, 160) and (depth > 0).any()
        # poses / times cover the frame ids up to the last one kept
        assert len(kitti_io.read_poses(tmp_path / "data" / "sequences" / seq / "poses.txt")) == int(ids[-1]) + 1
    hist = manifest["class_histogram"]["train"]
    counted = sum(np.load(p)[np.load(p) != 255].size for p in (tmp_path / "labels").glob("0[01]/*_1_1.npy"))
    assert sum(hist["voxels"].values()) == counted
    assert abs(sum(hist["occupied_share"].values()) - 1.0) < 1e-3
    # a second run skips the finished frames and writes the same labels
    before = (tmp_path / "labels" / "01" / "000003_1_1.npy").read_bytes()
    again = generate_benchmark(tmp_path, **SMALL)
    assert again["class_histogram"] == manifest["class_histogram"]
    assert (tmp_path / "labels" / "01" / "000003_1_1.npy").read_bytes() == before


def test_cli_refuses_bad_counts(tmp_path, capsys):
    assert cli.main(["synth-benchmark", "--out", str(tmp_path), "--train-worlds", "0"]) == 2
    assert "train_worlds must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
