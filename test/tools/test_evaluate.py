"""``l2cocc eval``: official-layout predictions scored like semantic-kitti-api's evaluate_completion."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "data"))
from fake_kitti import write_fake_sequence  # noqa: E402

from l2cocc_ros.core.classes import semantic_kitti  # noqa: E402
from l2cocc_ros.core.data import predictions  # noqa: E402
from l2cocc_ros.tools import evaluate  # noqa: E402

YAML = Path(__file__).resolve().parents[2] / "l2cocc_ros" / "core" / "semantic-kitti.yaml"


def _official_scores(dataset, predictions, frames):
    """evaluate_completion.py's pipeline, with the PyPI package's iouEval doing the counting."""
    from auxiliary.np_ioueval import iouEval

    cfg = yaml.safe_load(YAML.read_text())
    remap = cfg["learning_map"]
    lut = np.zeros(max(remap) + 100, dtype=np.int32)
    lut[list(remap.keys())] = list(remap.values())
    lut[lut == 0] = 255
    lut[0] = 0
    ev = iouEval(len(cfg["learning_map_inv"]), [])
    for seq, fid in frames:
        vox = Path(dataset) / "sequences" / seq / "voxels"
        target = lut[np.fromfile(vox / f"{fid}.label", dtype=np.uint16)]
        packed = np.fromfile(vox / f"{fid}.invalid", dtype=np.uint8)
        invalid = np.unpackbits(packed)
        pred = lut[np.fromfile(Path(predictions) / "sequences" / seq / "predictions" / f"{fid}.label", dtype=np.uint16)]
        mask = (target != 255) & (invalid != 1)
        ev.addBatch(pred[mask], target[mask])
    _, jac = ev.getIoU()
    conf = ev.get_confusion()
    eps = np.finfo(np.float32).eps
    return {"miou": jac[1:].mean(), "per_class": jac, "iou": conf[1:, 1:].sum() / (conf.sum() - conf[0, 0]),
            "precision": conf[1:, 1:].sum() / (conf[1:, :].sum() + eps), "recall": conf[1:, 1:].sum() / (conf[:, 1:].sum() + eps)}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("sk")
    info = write_fake_sequence(root, "08", n_frames=2)
    pred_root = tmp_path_factory.mktemp("pred")
    rng = np.random.default_rng(5)
    table = semantic_kitti()
    for fid, raw in zip(info["frame_ids"], info["raw"]):
        gt = table.to_training_ids(raw).reshape(256, 256, 32)
        pred = np.where(gt == 255, 0, gt).astype(np.uint8)
        flip = rng.random(pred.shape) < 0.3
        pred[flip] = rng.integers(0, 20, size=int(flip.sum()))
        predictions.write_prediction(pred_root, "08", fid, pred)
    info.update(root=root, pred=pred_root)
    return info


def test_prediction_file_round_trip(tmp_path):
    table = semantic_kitti()
    pred = np.random.default_rng(0).integers(0, 20, size=(256, 256, 32)).astype(np.uint8)
    path = predictions.write_prediction(tmp_path, "08", "000010", pred)
    assert path == tmp_path / "sequences" / "08" / "predictions" / "000010.label"
    raw = np.fromfile(path, dtype=np.uint16)
    assert set(np.unique(raw)) <= set(table.learning_map_inv.tolist())
    np.testing.assert_array_equal(predictions.read_prediction(path), pred)
    with pytest.raises(ValueError, match="0..19"):
        predictions.write_prediction(tmp_path, "08", "000011", np.full((256, 256, 32), 20, np.uint8))


def test_scores_match_official_pipeline(fake, capsys):
    frames = predictions.gt_frames(fake["root"], ["8"])
    assert frames == [("08", "000000"), ("08", "000005")]
    ref = _official_scores(fake["root"], fake["pred"], frames)
    capsys.readouterr()  # iouEval prints its settings
    m = evaluate.score_predictions(fake["root"], fake["pred"], ["08"], progress=False)
    s = m.compute()
    assert m.n_frames == 2
    for k in ("miou", "iou", "precision", "recall"):
        assert s[k] == pytest.approx(ref[k], abs=1e-12), k
    np.testing.assert_allclose(s["iou_per_class"], ref["per_class"], atol=1e-12)
    assert 0.2 < s["miou"] < 0.95  # noisy but far from trivial
    assert evaluate.main(["-d", str(fake["root"]), "-p", str(fake["pred"]), "-s", "08", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["miou"] == pytest.approx(ref["miou"]) and out["n_frames"] == 2
    assert out["iou_per_class"]["car"] == pytest.approx(ref["per_class"][1])
    assert evaluate.main(["-d", str(fake["root"]), "-p", str(fake["pred"]), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "traffic-sign" in text and "mIoU" in text and f"{100 * ref['miou']:.2f}" in text


def test_missing_predictions_listed(fake, tmp_path, capsys):
    assert evaluate.main(["-d", str(fake["root"]), "-p", str(tmp_path), "-s", "08", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "2 prediction file(s) missing" in err and "sequences/08/predictions/000005.label" in err
    assert evaluate.main(["-d", str(fake["root"]), "-p", str(tmp_path), "-s", "11", "--no-progress"]) == 2
    assert "sequences/11/voxels" in capsys.readouterr().err


def test_checkpoint_mode_writes_what_it_scores(fake, tmp_path, capsys):
    import torch

    from l2cocc_ros.core.checkpoint import save_checkpoint
    from l2cocc_ros.core.config import get_preset
    from l2cocc_ros.core.model.l2cocc import build_model

    torch.manual_seed(0)
    cfg = get_preset("tiny_l2cocc_l")
    ckpt = tmp_path / "tiny_l.pt"
    save_checkpoint(ckpt, build_model(cfg.model), cfg)
    out = tmp_path / "written"
    rc = evaluate.main(["-d", str(fake["root"]), "--checkpoint", str(ckpt), "-s", "08", "--limit", "1",
                        "--write-predictions", str(out), "--json", "--no-progress"])
    assert rc == 0
    live = json.loads(capsys.readouterr().out)
    assert live["n_frames"] == 1
    files = sorted((out / "sequences" / "08" / "predictions").glob("*.label"))
    assert [f.name for f in files] == ["000000.label"]
    # scoring the written file with the official-layout path reproduces the numbers
    gt = predictions.load_ground_truth(fake["root"], "08", "000000")
    from l2cocc_ros.core.metrics import SSCMetrics

    m = SSCMetrics(20)
    m.update(predictions.read_prediction(files[0]), gt)
    assert m.compute()["miou"] == pytest.approx(live["miou"]) and m.compute()["iou"] == pytest.approx(live["iou"])
