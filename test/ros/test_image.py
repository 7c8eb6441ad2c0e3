"""Image / CameraInfo <-> numpy: every supported encoding, padding, endianness, and the refusals."""
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from l2cocc_ros.ros.image import (
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    projection_from_camera_info,
    stereo_calibration,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "encoding, array",
    [
        ("rgb8", RGB),
        ("bgr8", RGB[..., ::-1].copy()),
        ("rgba8", np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)),
        ("bgra8", np.concatenate([RGB[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2)),
    ],
)
def test_colour_encodings_give_the_same_rgb(encoding, array):
    msg = numpy_to_image(array, encoding)
    np.testing.assert_array_equal(image_to_numpy(msg), array)
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_mono_encodings():
    mono = RGB[..., 0]
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(mono, "mono8")), np.repeat(mono[..., None], 3, 2))
    mono16 = mono.astype(np.uint16) * 256 + 7
    msg = numpy_to_image(mono16, "mono16")
    np.testing.assert_array_equal(image_to_numpy(msg), mono16)
    np.testing.assert_array_equal(image_to_rgb(msg)[..., 1], mono)


def test_big_endian_mono16_and_row_padding():
    mono16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    msg = Image(height=3, width=4, encoding="mono16", is_bigendian=True, step=10)
    rows = [np.concatenate([r.astype(">u2").view(np.uint8), [0xAA, 0xBB]]) for r in mono16]
    msg.data = np.concatenate(rows).astype(np.uint8).tobytes()
    np.testing.assert_array_equal(image_to_numpy(msg), mono16)


def test_rgb_with_row_padding():
    padded = np.zeros((5, 7 * 3 + 3), np.uint8)
    padded[:, :21] = RGB.reshape(5, 21)
    msg = Image(height=5, width=7, encoding="rgb8", step=24)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize(
    "msg, phrase",
    [
        (Image(height=2, width=2, encoding="yuv422", step=4), "not supported"),
        (Image(height=0, width=2, encoding="rgb8", step=6), "zero size"),
        (Image(height=2, width=2, encoding="rgb8", step=5), "step"),
        (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(7)), "data has 7 bytes"),
    ],
)
def test_bad_images_are_refused(msg, phrase):
    with pytest.raises(ValueError, match=phrase):
        image_to_rgb(msg)


def _info(p):
    info = CameraInfo(height=5, width=7)
    info.p = [float(v) for v in p]
    return info


P_LEFT = [700.0, 0, 600, 0, 0, 700, 180, 0, 0, 0, 1, 0]
P_RIGHT = [700.0, 0, 600, -700 * 0.54, 0, 700, 180, 0, 0, 0, 1, 0]


def test_stereo_calibration_gives_the_baseline():
    p_l, p_r, b = stereo_calibration(_info(P_LEFT), _info(P_RIGHT), left_size=(5, 7))
    assert b == pytest.approx(0.54)
    np.testing.assert_array_equal(p_l, np.reshape(P_LEFT, (3, 4)))
    np.testing.assert_array_equal(p_r, np.reshape(P_RIGHT, (3, 4)))
    # KITTI form: both P carry a Tx relative to cam0
    kl, kr = list(P_LEFT), list(P_RIGHT)
    kl[3], kr[3] = 44.0, 44.0 - 700 * 0.54
    assert stereo_calibration(_info(kl), _info(kr))[2] == pytest.approx(0.54)


@pytest.mark.parametrize(
    "left, right, phrase",
    [
        ([0.0] + P_LEFT[1:], P_RIGHT, "focal length"),
        (P_LEFT, P_LEFT, "baseline is missing"),
        (P_RIGHT, P_LEFT, "expected > 0"),
        (P_LEFT, P_RIGHT[:11] + [float("nan")], "12 finite"),
    ],
)
def test_bad_camera_infos_are_refused(left, right, phrase):
    with pytest.raises(ValueError, match=phrase):
        stereo_calibration(_info(left), _info(right))


def test_camera_info_size_must_match_the_image():
    with pytest.raises(ValueError, match="differs from the image"):
        stereo_calibration(_info(P_LEFT), _info(P_RIGHT), left_size=(6, 7))
    with pytest.raises(ValueError, match="non-positive focal length"):
        projection_from_camera_info(CameraInfo())  # all-zero p, as an unset CameraInfo
