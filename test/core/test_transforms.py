import numpy as np
import pytest

from l2cocc_ros.core.transforms import (invert_transform, make_transform, matrix_from_quaternion,
                                         quaternion_from_matrix)


def test_quaternion_round_trip_random_rotations():
    rng = np.random.default_rng(0)
    for _ in range(500):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        rot = matrix_from_quaternion(q)
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        q2 = quaternion_from_matrix(rot)
        assert q2[3] >= 0
        assert np.allclose(matrix_from_quaternion(q2), rot, atol=1e-12)


def test_known_rotation_about_z():
    q = quaternion_from_matrix(np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]))
    assert np.allclose(q, (0, 0, np.sqrt(0.5), np.sqrt(0.5)))


def test_invert_transform():
    t = make_transform((1.0, -2.0, 0.5), (0.1, 0.2, 0.3, 0.9))
    assert np.allclose(invert_transform(t) @ t, np.eye(4), atol=1e-12)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="rotation"):
        quaternion_from_matrix(np.diag([1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="quaternion"):
        matrix_from_quaternion((0, 0, 0, 0))
