"""SSCMetrics against the official semantic-kitti-api evaluator (PyPI package) and a hand case."""
import numpy as np
import pytest
import torch

from auxiliary.np_ioueval import iouEval  # semantic-kitti-api (PyPI)

from l2cocc_ros.core.metrics import SSCMetrics

EPS32 = np.finfo(np.float32).eps


def _official(frames, n_classes):
    """The computation of semantic-kitti-api's evaluate_completion.py over a list of (pred, target)."""
    ev = iouEval(n_classes, [])
    for pred, target in frames:
        mask = target != 255
        ev.addBatch(pred[mask].astype(np.int64), target[mask].astype(np.int64))
    _, class_iou = ev.getIoU()
    conf = ev.get_confusion()
    return {
        "miou": class_iou[1:].mean(),
        "iou_per_class": class_iou,
        "precision": np.sum(conf[1:, 1:]) / (np.sum(conf[1:, :]) + EPS32),
        "recall": np.sum(conf[1:, 1:]) / (np.sum(conf[:, 1:]) + EPS32),
        "iou": np.sum(conf[1:, 1:]) / (np.sum(conf) - conf[0, 0]),
    }


@pytest.mark.parametrize("n_classes", [20, 19])
def test_matches_semantic_kitti_api_on_random_volumes(n_classes):
    rng = np.random.default_rng(n_classes)
    frames = []
    for _ in range(3):
        shape = (32, 32, 8)
        target = rng.integers(0, n_classes, shape)
        target[rng.random(shape) < 0.5] = 0                  # plenty of empty voxels
        target[rng.random(shape) < 0.2] = 255                # ignored / invalid
        pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, n_classes, shape))
        pred[pred == 255] = 0
        pred[..., 0] = np.where(target[..., 0] == 3, 3, pred[..., 0])
        frames.append((pred.astype(np.uint8), target.astype(np.uint8)))
    # one class never occurs in pred nor GT: IoU 0 for it, as the official code
    frames = [(np.where(p == 7, 0, p), np.where(t == 7, 0, t)) for p, t in frames]
    ours = SSCMetrics(n_classes)
    for i, (pred, target) in enumerate(frames):
        ours.update(torch.from_numpy(pred) if i == 0 else pred, target)   # torch or numpy
    got, ref = ours.compute(), _official(frames, n_classes)
    for key in ("miou", "precision", "recall", "iou"):
        assert got[key] == pytest.approx(float(ref[key]), abs=1e-6), key
    np.testing.assert_allclose(got["iou_per_class"], ref["iou_per_class"], atol=1e-6)
    assert got["iou_per_class"][7] == 0.0
    assert ours.n_frames == 3


def test_hand_case_and_merge():
    target = np.array([0, 0, 1, 1, 2, 255, 2])
    pred = np.array([0, 1, 1, 2, 2, 1, 0])
    m = SSCMetrics(3)
    m.update(pred, target)
    s = m.compute()
    # occupied: GT {2,3,4,6}, pred {1,2,3,4} over non-ignored -> TP 3 (idx 2,3,4), FP 1, FN 1
    assert s["iou"] == pytest.approx(3 / 5)
    assert s["precision"] == pytest.approx(3 / 4, rel=1e-6)
    assert s["recall"] == pytest.approx(3 / 4, rel=1e-6)
    # class 1: TP 1 (idx 2), FP 1 (idx 1), FN 1 (idx 3) -> 1/3; class 2: TP 1, FP 1 (idx 3), FN 1 (idx 6) -> 1/3
    assert s["miou"] == pytest.approx(1 / 3)
    other = SSCMetrics(3)
    other.update(pred, target)
    m.merge(other)
    assert m.confusion.sum() == 12 and m.compute()["miou"] == pytest.approx(1 / 3)
    assert "completion IoU 60.00" in m.table(["empty", "a", "b"])


def test_bad_input_is_refused_with_a_clear_message():
    m = SSCMetrics(3)
    with pytest.raises(ValueError, match="pred has 2 voxels"):
        m.update(np.zeros(2, int), np.zeros(3, int))
    with pytest.raises(ValueError, match="target labels"):
        m.update(np.zeros(2, int), np.array([0, 7]))
    with pytest.raises(ValueError, match="pred labels"):
        m.update(np.array([0, 3]), np.array([0, 1]))
