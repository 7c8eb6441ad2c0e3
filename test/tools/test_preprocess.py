"""``l2cocc preprocess``: label and stereo files, resumability, errors."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "data"))
from fake_kitti import BASELINE, DISPARITY, FX, write_fake_sequence  # noqa: E402

from l2cocc_ros.core.data import kitti_io, labels  # noqa: E402
from l2cocc_ros.core.data.semantic_kitti import SemanticKITTIDataset  # noqa: E402
from l2cocc_ros.core.data import prepare  # noqa: E402
from l2cocc_ros.tools import preprocess  # noqa: E402


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("sk")
    info = write_fake_sequence(root, "08", n_frames=2)
    info["root"] = root
    return info


def test_labels_written_resumed_and_recovered(fake, tmp_path, monkeypatch, capsys):
    root, out = fake["root"], tmp_path / "labels"
    # a run killed during the second frame leaves the first complete and nothing partial
    real = labels.make_targets
    calls = []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(labels, "make_targets", dying)
    with pytest.raises(KeyboardInterrupt):
        preprocess.main(["labels", "--dataset", str(root), "--out", str(out), "--sequences", "08", "--no-progress"])
    monkeypatch.setattr(labels, "make_targets", real)
    assert sorted(p.name for p in (out / "08").iterdir()) == ["000000_1_1.npy", "000000_1_2.npy"]

    assert preprocess.main(["labels", "-d", str(root), "-o", str(out), "-s", "08", "--no-progress"]) == 0
    assert "wrote 1 frame(s), skipped 1" in capsys.readouterr().out
    for i, fid in enumerate(fake["frame_ids"]):
        t11, t12 = labels.make_targets(fake["raw"][i], fake["invalid"][i])
        np.testing.assert_array_equal(np.load(out / "08" / f"{fid}_1_1.npy"), t11)
        np.testing.assert_array_equal(np.load(out / "08" / f"{fid}_1_2.npy"), t12)
    # a truncated output is detected and recomputed; complete ones are skipped
    p = out / "08" / "000005_1_2.npy"
    p.write_bytes(p.read_bytes()[:1000])
    s = prepare.preprocess_labels(root, out, ["08"], progress=False)
    assert s.written == ["08/000005"] and s.skipped == ["08/000000"]
    assert sorted(x.name for x in (out / "08").iterdir()) == [
        "000000_1_1.npy", "000000_1_2.npy", "000005_1_1.npy", "000005_1_2.npy"]
    # the dataset reads them
    ds = SemanticKITTIDataset(root, ["08"], modalities="lidar", labels_root=out)
    np.testing.assert_array_equal(ds[1]["target"].numpy(), labels.make_targets(fake["raw"][1], fake["invalid"][1])[0])


def test_stereo_depth_files(fake, tmp_path, capsys):
    root, out = fake["root"], tmp_path / "depth"
    args = ["stereo", "-d", str(root), "-o", str(out), "--num-disparities", "32", "--no-progress"]
    assert preprocess.main(args) == 0
    assert "wrote 2 frame(s), skipped 0" in capsys.readouterr().out
    d = kitti_io.read_label_npy(out / "sequences" / "08" / "000005.npy", (40, 124))
    assert d.dtype == np.float32
    valid = d > 0
    truth = FX * BASELINE / DISPARITY
    assert valid.mean() > 0.3 and np.median(np.abs(d[valid] - truth) / truth) < 0.05
    assert preprocess.main(args) == 0
    assert "wrote 0 frame(s), skipped 2" in capsys.readouterr().out


def test_kitti360_labels_from_sscbench(tmp_path):
    src = tmp_path / "sscbench" / "2013_05_28_drive_0000_sync"
    t11 = np.random.default_rng(0).integers(0, 19, size=(256, 256, 32)).astype(np.float32)
    kitti_io.write_npy(src / "000010_1_1.npy", t11)
    out = tmp_path / "labels"
    rc = preprocess.main(["labels", "--kitti360", "--from-labels", str(tmp_path / "sscbench"), "-o", str(out),
                          "--no-progress"])
    assert rc == 0
    seq = out / "2013_05_28_drive_0000_sync"
    np.testing.assert_array_equal(np.load(seq / "000010_1_1.npy"), t11.astype(np.uint8))
    np.testing.assert_array_equal(np.load(seq / "000010_1_2.npy"), labels.downsample_labels(t11.astype(np.uint8)))


def test_errors(tmp_path, capsys):
    assert preprocess.main(["labels", "-d", str(tmp_path / "nothing"), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "no sequences folder" in capsys.readouterr().err
    assert preprocess.main(["stereo", "-d", str(tmp_path), "-o", str(tmp_path / "o"), "-s", "42", "--no-progress"]) == 2
    assert "sequences/42/voxels" in capsys.readouterr().err


def test_kitti360_stereo_uses_fixed_calibration(tmp_path):
    import cv2
    from PIL import Image

    from fake_kitti import texture

    seq = "2013_05_28_drive_0000_sync"
    d2 = tmp_path / "k360" / "data_2d_raw" / seq
    h, w, disp = 376, 1408, 16.0
    left = texture(h, w, np.random.default_rng(2))
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    right = cv2.remap(left, xs + disp, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    for cam_dir, img in (("image_00", left), ("image_01", right)):
        (d2 / cam_dir / "data_rect").mkdir(parents=True)
        Image.fromarray(img).save(d2 / cam_dir / "data_rect" / "000003.png")
    (d2 / "voxels").mkdir()  # no voxel frames: --all-frames takes the images
    out = tmp_path / "depth"
    assert preprocess.main(["stereo", "--kitti360", "-d", str(tmp_path / "k360"), "-o", str(out), "--all-frames",
                            "--num-disparities", "32", "--no-progress"]) == 0
    depth = np.load(out / "sequences" / seq / "000003.npy")
    assert depth.shape == (h, w)
    valid = depth > 0
    assert valid.mean() > 0.8
    np.testing.assert_allclose(np.median(depth[valid]), 328.318735 / disp, rtol=0.01)
    # the original's f*b for KITTI-360 maps, on request
    assert preprocess.main(["stereo", "--kitti360", "-d", str(tmp_path / "k360"), "-o", str(tmp_path / "fb"),
                            "--all-frames", "--num-disparities", "32", "--focal-baseline", "331.532557",
                            "--no-progress"]) == 0
    depth2 = np.load(tmp_path / "fb" / "sequences" / seq / "000003.npy")
    np.testing.assert_allclose(depth2[valid], depth[valid] * 331.532557 / 328.318735, rtol=1e-5)


def test_msnet3d_depth_files_in_the_layout_the_readers_take(tmp_path, capsys):
    """``--backend msnet3d --weights F`` on a synthetic sequence: float32 depth of the image size under
    sequences/<seq>/<id>.npy, 0.54 m * fx / disp, read back by the training/eval dataset (weights: the
    deterministic reference rule written in the official checkpoint layout; not a depth estimator)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from msnet_refutil import weight_rule_state_dict

    from l2cocc_ros.core.config import get_preset
    from l2cocc_ros.core.data.semantic_kitti import read_rgb
    from l2cocc_ros.core.data.synth import SynthConfig, write_sequence
    from l2cocc_ros.core.stereo import get_stereo_backend
    from l2cocc_ros.core.data.training_sets import make_dataset

    root, out, weights = tmp_path / "synth", tmp_path / "depth", tmp_path / "MSNet3D_rule.ckpt"
    seq = write_sequence(root, "08", frames=1, seed=3,
                         config=SynthConfig(width=320, height=96, lidar_azimuth_steps=256, accumulate_offsets=()))
    torch.save({"epoch": 0, "model": {f"module.{k}": v for k, v in weight_rule_state_dict("msnet3d").items()}},
               weights)
    args = ["stereo", "-d", str(root), "-o", str(out), "--backend", "msnet3d", "--no-progress"]
    assert preprocess.main(args) == 2  # no weights: a one-line error that says where the file comes from
    assert "MSNet3D_SF_DS_KITTI2015.ckpt" in capsys.readouterr().err
    assert preprocess.main(args + ["--weights", str(weights)]) == 0
    assert "wrote 1 frame(s)" in capsys.readouterr().out
    depth = np.load(out / "sequences" / "08" / "000000.npy")
    assert depth.dtype == np.float32 and depth.shape == (96, 320) and (depth > 0).all()
    calib = kitti_io.read_calib(seq / "calib.txt", ("P2", "P3"))
    left, right = (read_rgb(seq / d / "000000.png") for d in ("image_2", "image_3"))
    disp = get_stereo_backend("msnet3d", weights=str(weights)).disparity(left, right).numpy()
    np.testing.assert_array_equal(depth, np.float32(0.54 * calib["P2"][0, 0]) / disp)

    cfg = get_preset("tiny_l2cocc_c")
    ds = make_dataset(cfg, str(root), ["08"], labels=None, stereo=str(out), stereo_backend="sgbm", train=False)
    sample = ds[0]
    got = sample["inputs"]["stereo_depth"].numpy().reshape(tuple(cfg.model.image_size))
    assert got.shape == (96, 320) and np.abs(got - depth).max() < 1e-3 * depth.max()

