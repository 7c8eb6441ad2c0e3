"""TF: a transform buffer and listener over ``/tf_static`` + ``/tf`` (tf2_ros when it is installed).

:class:`TransformBuffer` keeps the frame tree (one parent per child): static links forever, dynamic links as
a time-ordered history of ``cache_time`` seconds. ``lookup_transform(target, source, stamp_ns, timeout)``
returns the 4x4 ``T_target_from_source`` (maps points in ``source`` coordinates into ``target``), as
tf2's ``lookup_transform(target_frame, source_frame, time)``: dynamic links are interpolated (linear
translation, slerp rotation), stamp 0 means "latest", and a lookup waits up to ``timeout`` for data.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from l2cocc_ros.core.stamps import stamp_to_ns
from l2cocc_ros.core.transforms import make_transform, quaternion_from_matrix
from l2cocc_ros.ros.diagnostics import LogThrottle, clip_text

__all__ = [
    "TransformUnavailable",
    "StaticLinkConflict",
    "TransformBuffer",
    "TransformListener",
    "TfLookup",
    "matrix_from_transform_msg",
    "transform_msg_from_matrix",
    "HAVE_TF2_ROS",
]

logger = logging.getLogger(__name__)

try:  # the real tf2 (vehicle); ours otherwise
    import tf2_ros as _tf2_ros

    HAVE_TF2_ROS = True
except ImportError:  # pragma: no cover - depends on the machine
    _tf2_ros = None
    HAVE_TF2_ROS = False


class TransformUnavailable(LookupError):
    """A transform could not be found (unknown frame, no connection, or no data at that time)."""


def matrix_from_transform_msg(transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 float64."""
    t, q = transform.translation, transform.rotation
    return make_transform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def transform_msg_from_matrix(matrix: np.ndarray, parent: str, child: str, stamp=None):
    """4x4 ``T_parent_from_child`` -> geometry_msgs/TransformStamped."""
    from geometry_msgs.msg import TransformStamped

    m = np.asarray(matrix, dtype=np.float64)
    ts = TransformStamped()
    if stamp is not None:
        ts.header.stamp = stamp
    ts.header.frame_id, ts.child_frame_id = parent, child
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = (float(v) for v in m[:3, 3])
    q = quaternion_from_matrix(m[:3, :3])
    r = ts.transform.rotation
    r.x, r.y, r.z, r.w = q
    return ts


def _interpolate(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """Rigid interpolation between 4x4 a (w=0) and b (w=1): lerp translation, slerp rotation."""
    qa = np.asarray(quaternion_from_matrix(a[:3, :3]))
    qb = np.asarray(quaternion_from_matrix(b[:3, :3]))
    dot = float(np.dot(qa, qb))
    if dot < 0.0:
        qb, dot = -qb, -dot
    if dot > 0.9995:
        q = qa + w * (qb - qa)
    else:
        theta = np.arccos(min(dot, 1.0))
        q = (np.sin((1 - w) * theta) * qa + np.sin(w * theta) * qb) / np.sin(theta)
    return make_transform(a[:3, 3] + w * (b[:3, 3] - a[:3, 3]), q)


class StaticLinkConflict(ValueError):
    """A ``/tf`` sample for a link that ``/tf_static`` holds (ignored: the static link is kept)."""


@dataclass
class _History:
    """The time-ordered samples of one dynamic link."""

    parent: str
    stamps: List[int] = field(default_factory=list)
    mats: List[np.ndarray] = field(default_factory=list)


def _names(frames: List[str], limit: int = 10) -> str:
    """At most ``limit`` frame names (each clipped), then how many more: bounded whatever the tree holds."""
    shown = ", ".join(repr(clip_text(f, 64)) for f in frames[:limit])
    return shown + (f" and {len(frames) - limit} more" if len(frames) > limit else "")


class TransformBuffer:
    """A thread-safe frame tree with static and time-stamped dynamic links, kept apart as tf2 does.

    A static link (``/tf_static``) replaces any dynamic history of its child; a later dynamic sample for that
    child is refused (:class:`StaticLinkConflict`) and the static link stays, so one stray ``/tf`` message
    cannot turn a calibration into a one-sample dynamic link that fails every lookup at another time.

    Args:
        cache_time: seconds of dynamic history kept per link (> 0).

    Raises:
        ValueError: non-positive cache time.
    """

    def __init__(self, cache_time: float = 10.0) -> None:
        if not cache_time > 0.0:
            raise ValueError(f"cache_time must be > 0 s, got {cache_time}")
        self._cache_ns = int(cache_time * 1e9)
        self._static: Dict[str, Tuple[str, np.ndarray]] = {}
        self._dynamic: Dict[str, _History] = {}
        self._cond = threading.Condition()

    def set_transform(self, parent: str, child: str, stamp_ns: int, matrix: np.ndarray, *, static: bool) -> None:
        """Store ``T_parent_from_child`` (a static link, or a dynamic sample at ``stamp_ns``).

        Raises:
            ValueError: empty or equal frame names, or a non-finite matrix.
            StaticLinkConflict: a dynamic sample for a child that a static link holds (nothing is stored).
        """
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"invalid TF link {clip_text(parent, 64)!r} -> {clip_text(child, 64)!r}")
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError(f"TF {clip_text(parent, 64)!r} -> {clip_text(child, 64)!r}: transform must be a "
                             "finite 4x4 matrix")
        with self._cond:
            if static:
                self._static[child] = (parent, m)
                self._dynamic.pop(child, None)
            elif child in self._static:
                raise StaticLinkConflict(
                    f"/tf sample for {clip_text(parent, 64)!r} -> {clip_text(child, 64)!r} ignored: /tf_static "
                    f"holds {clip_text(child, 64)!r} (parent {clip_text(self._static[child][0], 64)!r}); the "
                    "static link is kept")
            else:
                self._add_sample(parent, child, stamp_ns, m)
            self._cond.notify_all()

    def _add_sample(self, parent: str, child: str, stamp_ns: int, m: np.ndarray) -> None:
        link = self._dynamic.get(child)
        if link is None or link.parent != parent:  # a new link, or a re-parented one: its old history is void
            link = self._dynamic[child] = _History(parent)
        stamps, mats = link.stamps, link.mats
        if stamps and stamp_ns < stamps[-1]:
            i = bisect.bisect_left(stamps, stamp_ns)
            if i < len(stamps) and stamps[i] == stamp_ns:
                mats[i] = m
            else:
                stamps.insert(i, stamp_ns)
                mats.insert(i, m)
        elif stamps and stamp_ns == stamps[-1]:
            mats[-1] = m
        else:
            stamps.append(stamp_ns)
            mats.append(m)
        while len(stamps) > 1 and stamps[0] < stamps[-1] - self._cache_ns:
            stamps.pop(0)
            mats.pop(0)

    def set_transform_msg(self, ts, *, static: bool) -> None:
        """Store a geometry_msgs/TransformStamped."""
        self.set_transform(ts.header.frame_id, ts.child_frame_id, stamp_to_ns(ts.header.stamp),
                           matrix_from_transform_msg(ts.transform),
                           static=static)

    def clear_dynamic(self) -> None:
        """Forget the dynamic history (after a jump back in time); static links stay."""
        with self._cond:
            self._dynamic.clear()

    def _parent_of(self, child: str) -> Optional[str]:
        if child in self._static:
            return self._static[child][0]
        link = self._dynamic.get(child)
        return link.parent if link is not None else None

    def _known(self) -> set:
        known = set(self._static) | set(self._dynamic)
        known.update(p for p, _ in self._static.values())
        known.update(link.parent for link in self._dynamic.values())
        return known

    def frames(self) -> List[str]:
        """Every known frame."""
        with self._cond:
            return sorted(self._known())

    def _link(self, child: str, stamp_ns: int) -> np.ndarray:
        if child in self._static:
            return self._static[child][1]
        link = self._dynamic[child]
        stamps, mats = link.stamps, link.mats
        if stamp_ns == 0:
            return mats[-1]
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return mats[i]
        if i == 0 or i == len(stamps):
            raise TransformUnavailable(
                f"no TF {clip_text(link.parent, 64)!r} -> {clip_text(child, 64)!r} at t={stamp_ns * 1e-9:.3f} s "
                f"(have {stamps[0] * 1e-9:.3f} .. {stamps[-1] * 1e-9:.3f} s)"
            )
        w = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
        return _interpolate(mats[i - 1], mats[i], w)

    def _chain(self, frame: str) -> List[str]:
        chain = [frame]
        limit = len(self._static) + len(self._dynamic)
        while len(chain) <= limit:
            parent = self._parent_of(chain[-1])
            if parent is None:
                break
            chain.append(parent)
        return chain

    def _try_lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        if target == source:
            return np.eye(4)
        known = self._known()
        for f in (target, source):
            if f not in known:
                raise TransformUnavailable(f"frame {clip_text(f, 64)!r} does not exist in TF ({len(known)} known: "
                                           f"{_names(sorted(known))})")
        up_s, up_t = self._chain(source), self._chain(target)
        common = next((f for f in up_s if f in up_t), None)
        if common is None:
            raise TransformUnavailable(f"frames {clip_text(target, 64)!r} and {clip_text(source, 64)!r} are not "
                                       "connected in TF")
        root_from_source = np.eye(4)
        for f in up_s[: up_s.index(common)]:
            root_from_source = self._link(f, stamp_ns) @ root_from_source
        root_from_target = np.eye(4)
        for f in up_t[: up_t.index(common)]:
            root_from_target = self._link(f, stamp_ns) @ root_from_target
        return np.linalg.solve(root_from_target, root_from_source)

    def lookup_transform(self, target: str, source: str, stamp_ns: int = 0, timeout: float = 0.0) -> np.ndarray:
        """``T_target_from_source`` (4x4) at ``stamp_ns`` (0 = latest), waiting up to ``timeout`` seconds.

        Raises:
            TransformUnavailable: unknown frame, unconnected frames, or no data at that time after the wait.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while True:
                try:
                    return self._try_lookup(target, source, stamp_ns)
                except TransformUnavailable:
                    left = deadline - time.monotonic()
                    if left <= 0.0:
                        raise
                    self._cond.wait(timeout=left)

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        """Whether :meth:`lookup_transform` would succeed now."""
        try:
            self.lookup_transform(target, source, stamp_ns)
            return True
        except TransformUnavailable:
            return False


class TransformListener:
    """Feeds a :class:`TransformBuffer` from ``/tf`` (volatile) and ``/tf_static`` (transient local).

    Args:
        buffer: the buffer to fill.
        node: the rclpy node that owns the subscriptions.
        callback_group: group for the two subscriptions (default: a new reentrant group).
    """

    def __init__(self, buffer: TransformBuffer, node, *, callback_group=None, warn_period_s: float = 5.0) -> None:
        from rclpy.callback_groups import ReentrantCallbackGroup
        from rclpy.qos import QoSProfile
        from tf2_msgs.msg import TFMessage

        from l2cocc_ros.ros.qos import TF_QOS, TF_STATIC_QOS

        self.buffer = buffer
        self.ignored = 0  # TF samples refused (invalid, or a /tf sample for a static link)
        self._warnings = LogThrottle(warn_period_s)
        group = callback_group or ReentrantCallbackGroup()
        # the reader keeps 100 samples, as tf2_ros's listener: several static broadcasters may each latch one
        static = QoSProfile(history=TF_STATIC_QOS.history, depth=100, reliability=TF_STATIC_QOS.reliability,
                            durability=TF_STATIC_QOS.durability)
        self.subscriptions = [
            node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS, callback_group=group),
            node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), static,
                                     callback_group=group),
        ]

    def _on_tf(self, msg, static: bool) -> None:
        for ts in msg.transforms:
            try:
                self.buffer.set_transform_msg(ts, static=static)
            except ValueError as exc:  # one warning per period at most, with the count of the ones not logged
                self.ignored += 1
                suppressed = self._warnings.due()
                if suppressed is not None:
                    more = f" ({suppressed} more ignored since the last warning)" if suppressed else ""
                    logger.warning("ignoring TF on %s: %s%s", "/tf_static" if static else "/tf", exc, more)


class TfLookup:
    """What the node uses: ``lookup(target, source, stamp_ns, timeout) -> 4x4``, over tf2_ros or ours.

    Args:
        node: the rclpy node (the listener's subscriptions are created on it).
        cache_time: dynamic history [s].
        use_tf2_ros: use tf2_ros when installed (default) or force ours (False).
    """

    def __init__(self, node, *, cache_time: float = 10.0, use_tf2_ros: bool = True) -> None:
        self.backend = "tf2_ros" if (use_tf2_ros and HAVE_TF2_ROS) else "l2cocc"
        if self.backend == "tf2_ros":  # pragma: no cover - depends on the machine
            from rclpy.duration import Duration

            self.buffer = _tf2_ros.Buffer(cache_time=Duration(seconds=cache_time))
            self.listener = _tf2_ros.TransformListener(self.buffer, node)
        else:
            self.buffer = TransformBuffer(cache_time)
            self.listener = TransformListener(self.buffer, node)

    @property
    def ignored(self) -> int:
        """TF samples our listener refused (invalid, or /tf for a static link); tf2_ros does not count them."""
        return self.listener.ignored if self.backend == "l2cocc" else 0

    def lookup(self, target: str, source: str, stamp_ns: int, timeout: float) -> np.ndarray:
        """``T_target_from_source`` at the stamp.

        Raises:
            TransformUnavailable: on any tf failure (tf2's exceptions are translated).
        """
        if self.backend == "l2cocc":
            return self.buffer.lookup_transform(target, source, stamp_ns, timeout)
        from rclpy.duration import Duration  # pragma: no cover - depends on the machine
        from rclpy.time import Time

        try:  # pragma: no cover
            ts = self.buffer.lookup_transform(target, source, Time(nanoseconds=stamp_ns),
                                              timeout=Duration(seconds=timeout))
        except (_tf2_ros.LookupException, _tf2_ros.ConnectivityException, _tf2_ros.ExtrapolationException,
                _tf2_ros.InvalidArgumentException) as exc:  # pragma: no cover
            raise TransformUnavailable(str(exc)) from exc
        return matrix_from_transform_msg(ts.transform)  # pragma: no cover

    def clear_dynamic(self) -> None:
        """Drop dynamic history after a time jump."""
        if self.backend == "l2cocc":
            self.buffer.clear_dynamic()
        else:  # pragma: no cover
            self.buffer.clear()
