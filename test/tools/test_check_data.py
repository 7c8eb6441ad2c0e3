"""check-data and train's start-up check: a short velodyne file, a wrong-size label and a truncated PNG are
each named in one line before any training step; a file that only fails when decoded still ends the run with
one line and exit code 1."""
from pathlib import Path

import pytest

from l2cocc_ros.core.data.synth import SynthConfig, write_sequence
from l2cocc_ros.tools import check_data, train

SMALL = SynthConfig(width=330, height=100, lidar_azimuth_steps=512)


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_sequence(root, "00", frames=3, seed=3, config=SMALL)
    return root


def _copy(root, tmp_path):
    import shutil

    return Path(shutil.copytree(root, tmp_path / "data"))


def _errors(text):
    """The tool's own error lines (its log lines and, under pytest, logging's complaints about a stream an
    earlier test's capture closed are not ours)."""
    return [line for line in text.splitlines() if line.startswith("l2cocc ") and "error" in line]


def test_each_bad_file_is_named_before_the_first_step(clean_root, tmp_path, capsys):
    root = _copy(clean_root, tmp_path)
    seq = root / "sequences" / "00"
    ids = sorted(p.stem for p in (seq / "voxels").glob("*.bin"))
    velo, label, png = seq / "velodyne" / f"{ids[1]}.bin", seq / "voxels" / f"{ids[2]}.label", seq / "image_2" / f"{ids[0]}.png"
    velo.write_bytes(velo.read_bytes()[:-6])
    label.write_bytes(label.read_bytes()[:-2])
    png.write_bytes(png.read_bytes()[:-40])
    common = ["--data", str(root), "--no-progress"]
    assert check_data.main(["--config", "tiny_l2cocc_l", "--sequences", "00", *common]) == 1
    out = capsys.readouterr().out
    assert f"{velo}: truncated velodyne scan" in out and f"{label}: truncated" in out and str(png) not in out  # -L reads no image
    assert check_data.main(["--config", "tiny_l2cocc_c", "--sequences", "00", *common]) == 1
    out = capsys.readouterr().out
    assert f"{png}: truncated PNG" in out and f"{label}: truncated" in out
    run = tmp_path / "run"
    rc = train.main(["--config", "tiny_l2cocc_l", "--data", str(root), "--sequences-train", "00",
                     "--sequences-val", "--out", str(run), "--max-steps", "1", "--num-workers", "0", "--no-progress"])
    err = _errors(capsys.readouterr().err)
    assert rc == 1 and len(err) == 1 and str(velo) in err[0] and "1 more" in err[0]
    assert not (run / "checkpoints").exists()


def test_a_file_that_fails_only_when_decoded_ends_training_in_one_line(clean_root, tmp_path, capsys):
    root = _copy(clean_root, tmp_path)
    pngs = sorted((root / "sequences" / "00" / "image_2").glob("*.png"))
    for png in pngs:  # every frame, so that the first batch meets one whatever the shuffle
        data = bytearray(png.read_bytes())
        data[60:400] = bytes(340)  # the structure (signature, IEND) is intact, the pixel data is not
        png.write_bytes(bytes(data))
    assert check_data.main(["--config", "tiny_l2cocc_c", "--data", str(root), "--sequences", "00",
                            "--no-progress"]) == 0
    assert check_data.main(["--config", "tiny_l2cocc_c", "--data", str(root), "--sequences", "00",
                            "--no-progress", "--full"]) == 1
    out = capsys.readouterr().out
    assert all(f"{png}: PNG does not decode" in out for png in pngs)
    rc = train.main(["--config", "tiny_l2cocc_c", "--data", str(root), "--sequences-train", "00",
                     "--sequences-val", "--out", str(tmp_path / "run"), "--max-steps", "1", "--num-workers", "0",
                     "--no-progress"])
    err = _errors(capsys.readouterr().err)
    assert rc == 1 and len(err) == 1 and any(str(png) in err[0] for png in pngs)


def test_check_file_by_role(tmp_path):
    import numpy as np

    from l2cocc_ros.core.data.check import check_file

    dims = (8, 8, 4)
    good = tmp_path / "a_1_1.npy"
    np.save(good, np.zeros(dims, np.uint8))
    assert check_file(good, "label_1_1", dims=dims) is None
    half = tmp_path / "a_1_2.npy"
    np.save(half, np.zeros(dims, np.uint8))  # full size where half size belongs
    assert "expected (4, 4, 2)" in check_file(half, "label_1_2", dims=dims)
    cut = tmp_path / "cut.npy"
    cut.write_bytes(good.read_bytes()[:-10])
    assert check_file(cut, "label_1_1", dims=dims).startswith("truncated .npy")
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"hello")
    assert "not a valid .npy" in check_file(junk, "stereo")
    inv = tmp_path / "x.invalid"
    inv.write_bytes(bytes(8 * 8 * 4 // 8 + 1))
    assert check_file(inv, "invalid", dims=dims).startswith("wrong size")
    assert check_file(tmp_path / "absent.bin", "velodyne") == "missing"
    assert check_file(tmp_path, "velodyne") == "not a file"
    empty = tmp_path / "e.bin"
    empty.write_bytes(b"")
    assert "not a positive multiple of 16" in check_file(empty, "velodyne")
