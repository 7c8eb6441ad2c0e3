"""SSC label preprocessing: learning map + invalid mask, LMSCNet downsampling."""
import numpy as np
import pytest

from l2cocc_ros.core.classes import semantic_kitti
from l2cocc_ros.core.data import labels as L


def _reference_downsample(lab, f=2):
    """Direct per-block transcription of the rule in docs/model.md (§7.1), as a slow oracle."""
    x, y, z = (d // f for d in lab.shape)
    out = np.zeros((x, y, z), dtype=np.uint8)
    for i in range(x):
        for j in range(y):
            for k in range(z):
                b = lab[i * f:(i + 1) * f, j * f:(j + 1) * f, k * f:(k + 1) * f].reshape(-1)
                n0, n255 = int((b == 0).sum()), int((b == 255).sum())
                if n0 + n255 > 0.95 * f ** 3:
                    out[i, j, k] = 0 if n0 > n255 else 255
                else:
                    vals = b[(b > 0) & (b < 255)]
                    out[i, j, k] = np.argmax(np.bincount(vals))
    return out


def test_downsample_hand_made_blocks():
    lab = np.zeros((8, 2, 2), dtype=np.uint8)
    lab[0:2] = 0                                                 # all empty -> 0
    lab[2:4] = 255                                               # all ignored -> 255
    lab[4:6] = np.array([0, 0, 0, 0, 255, 255, 255, 255]).reshape(2, 2, 2)  # tie 4/4 -> 255
    lab[6:8] = np.array([0, 0, 0, 0, 0, 0, 0, 9]).reshape(2, 2, 2)          # 7 free < 7.6 -> label 9
    out = L.downsample_labels(lab, 2)
    assert out.shape == (4, 1, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out.reshape(-1), [0, 255, 255, 9])
    # most frequent wins; ties go to the smaller label; 0/255 never vote
    blk = np.array([3, 3, 5, 5, 5, 0, 0, 255]).reshape(2, 2, 2)
    assert L.downsample_labels(blk)[0, 0, 0] == 5
    blk = np.array([7, 7, 4, 4, 0, 0, 0, 255]).reshape(2, 2, 2)
    assert L.downsample_labels(blk)[0, 0, 0] == 4


@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_matches_reference_on_random_volumes(factor):
    rng = np.random.default_rng(factor)
    vals = np.array([0] * 12 + [255] * 4 + list(range(1, 20)), dtype=np.uint8)
    lab = vals[rng.integers(0, len(vals), size=(16, 16, 8))]
    lab[:8, :8] = 0  # large empty region
    lab[8:, :4] = 255
    np.testing.assert_array_equal(L.downsample_labels(lab, factor), _reference_downsample(lab, factor))


def test_downsample_errors():
    with pytest.raises(ValueError, match="divisible"):
        L.downsample_labels(np.zeros((3, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="3-D"):
        L.downsample_labels(np.zeros((4, 4), dtype=np.uint8))


def test_raw_to_target_and_invalid():
    dims = (4, 4, 2)
    raw = np.zeros(32, dtype=np.uint16)
    raw[1] = 10          # car -> 1
    raw[2] = 40          # road -> 9
    raw[3] = 52          # other-structure -> ignored
    raw[4] = 1           # outlier -> ignored
    raw[5] = 99          # other-object -> ignored
    raw[6] = 252         # moving-car -> car
    raw[7] = 81          # traffic-sign -> 19
    invalid = np.zeros(32, dtype=bool)
    invalid[1] = True
    t = L.ssc_target_from_raw(raw, invalid, dims=dims)
    assert t.shape == dims and t.dtype == np.uint8
    np.testing.assert_array_equal(t.reshape(-1)[:8], [0, 255, 9, 255, 255, 255, 1, 19])
    assert (t.reshape(-1)[8:] == 0).all()
    with pytest.raises(ValueError, match="expected 32"):
        L.ssc_target_from_raw(raw[:10], dims=dims)
    with pytest.raises(ValueError, match="invalid mask"):
        L.ssc_target_from_raw(raw, invalid[:5], dims=dims)


def test_make_targets_full_size_consistent():
    rng = np.random.default_rng(0)
    table = semantic_kitti()
    raw_ids = np.array([0, 0, 0, 0, 10, 40, 48, 50, 70, 72, 52])
    raw = raw_ids[rng.integers(0, len(raw_ids), size=256 * 256 * 32)].astype(np.uint16)
    invalid = rng.random(256 * 256 * 32) < 0.1
    t11, t12 = L.make_targets(raw, invalid, table)
    assert t11.shape == (256, 256, 32) and t12.shape == (128, 128, 16)
    assert set(np.unique(t11)) <= {0, 1, 9, 11, 13, 15, 17, 255}
    # a slice of the full volume against the oracle
    np.testing.assert_array_equal(t12[:4, :4], _reference_downsample(t11[:8, :8]))
