"""Time stamps: ``builtin_interfaces/Time``-like (sec, nanosec) <-> integer nanoseconds, the one place.

Duck-typed (``.sec`` / ``.nanosec``, ``rclpy.time.Time``, or a (sec, nanosec) pair), so nothing here imports
ROS. Stamps inside the package are int nanoseconds (``StereoFrame.stamp_ns``); messages carry (sec, nanosec).
"""
from __future__ import annotations

from typing import Any, Tuple, Union

import numpy as np

__all__ = ["NS_PER_S", "stamp_to_tuple", "stamp_to_ns", "ns_to_tuple", "seconds_to_ns"]

NS_PER_S = 1_000_000_000


def _sec_nsec(stamp: Any) -> Tuple[int, int]:
    if hasattr(stamp, "to_msg"):  # rclpy.time.Time
        stamp = stamp.to_msg()
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec), int(stamp.nanosec)
    if isinstance(stamp, (tuple, list)) and len(stamp) == 2:
        return int(stamp[0]), int(stamp[1])
    raise TypeError(f"stamp: expected builtin_interfaces/Time, rclpy Time or (sec, nanosec), got {type(stamp).__name__}")


def stamp_to_tuple(stamp: Any) -> Tuple[int, int]:
    """(sec, nanosec) of a ``builtin_interfaces/Time``, an ``rclpy.time.Time`` or a (sec, nanosec) pair, checked.

    Raises:
        TypeError: ``stamp`` is none of these.
        ValueError: negative seconds or nanoseconds outside [0, 1e9).
    """
    sec, nsec = _sec_nsec(stamp)
    if sec < 0 or not 0 <= nsec < NS_PER_S:
        raise ValueError(f"stamp: sec must be >= 0 and nanosec in [0, 1e9), got ({sec}, {nsec})")
    return sec, nsec


def stamp_to_ns(stamp: Any) -> int:
    """Integer nanoseconds of a stamp (as :func:`stamp_to_tuple` takes it). Not range-checked: a negative
    stamp gives a negative number, which the frame refuses (``StereoFrame.stamp_ns``).

    Raises:
        TypeError: not a stamp.
    """
    sec, nsec = _sec_nsec(stamp)
    return sec * NS_PER_S + nsec


def ns_to_tuple(stamp_ns: int) -> Tuple[int, int]:
    """(sec, nanosec) of integer nanoseconds (for a ``builtin_interfaces/Time``)."""
    sec, nsec = divmod(int(stamp_ns), NS_PER_S)
    return sec, nsec


def seconds_to_ns(seconds: Union[float, np.ndarray]) -> Union[int, np.ndarray]:
    """Seconds (a float or an array) -> nanoseconds rounded to the nearest (int, or int64 array)."""
    if np.ndim(seconds) == 0:
        return int(round(float(seconds) * 1e9))
    return np.round(np.asarray(seconds, dtype=np.float64) * 1e9).astype(np.int64)
