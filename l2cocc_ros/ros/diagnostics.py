"""Health of the node for ``/diagnostics``: counters of frames, drops and rejected inputs, TF state, timing.

:class:`NodeStatus` is thread-safe (callbacks, the inference worker and the diagnostics timer all touch
it). Levels (style rule 9, Autoware's defaults): WARN when the last frame took longer than
``max_processing_time_warn_ms`` or an input was rejected within ``rejection_window_s``; ERROR when input
keeps arriving but no grid was published for ``max_consecutive_delay_error_ms``, or when the camera ->
grid transform is currently missing.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from l2cocc_ros.ros.params import DiagnosticLimits

__all__ = ["NodeStatus", "REJECTION_KINDS", "LogThrottle", "clip_text", "MAX_TEXT_CHARS"]

#: every kind of rejected input the node reports
REJECTION_KINDS = ("encoding", "size_mismatch", "image_size", "camera_info", "pointcloud", "stamp", "stamp_jump_back",
                   "tf", "inference")

#: the longest free text (a rejection reason, a TF detail, one diagnostic value) the node logs or publishes:
#: with ~40 key-values a /diagnostics message stays far below 64 KB and a log line below 4 KB
MAX_TEXT_CHARS = 1000


def clip_text(text: object, limit: int = MAX_TEXT_CHARS) -> str:
    """``str(text)`` cut to at most ``limit`` characters, saying how much was cut (input can be hostile)."""
    text = str(text)
    if len(text) <= limit:
        return text
    note = f"... [{len(text) - limit} more characters]"
    return text[: max(limit - len(note), 0)] + note[: limit]


class LogThrottle:
    """At most one log line per ``period_s``; remembers how many were held back in between (thread-safe).

    Args:
        period_s: the shortest time between two lines [s].
        clock: monotonic time source [s] (tests pass their own).
    """

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: Optional[float] = None
        self._held = 0

    def due(self) -> Optional[int]:
        """None when a line now would be too soon (it is counted), else how many were held back before it."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self.period_s:
                self._held += 1
                return None
            held, self._last, self._held = self._held, now, 0
            return held


class NodeStatus:
    """Counters and state of the perception node.

    Args:
        limits: WARN / ERROR thresholds.
        clock: monotonic time source [s] (tests pass their own).
    """

    def __init__(self, limits: DiagnosticLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.rejected: Counter = Counter()
        self.last_rejection: Tuple[str, str] = ("", "")
        self._last_rejection_t: Optional[float] = None
        self._last_log_t: Dict[str, float] = {}
        self.last_processing_ms = 0.0
        self.max_latency_ms = 0.0
        self.last_latency_ms = 0.0
        self._first_input_t: Optional[float] = None
        self._last_input_t: Optional[float] = None
        self._last_output_t: Optional[float] = None
        self.tf_ok: Optional[bool] = None
        self.tf_detail = "no lookup yet"
        self.resets = 0
        self.lost: Counter = Counter()

    def input_arrived(self) -> None:
        """A synchronized input set arrived."""
        with self._lock:
            now = self._clock()
            self.frames_in += 1
            self._last_input_t = now
            if self._first_input_t is None:
                self._first_input_t = now

    def dropped(self, n: int = 1) -> None:
        """``n`` synchronized sets were replaced by newer ones before inference (newest frame wins)."""
        with self._lock:
            self.frames_dropped += n

    def samples_lost(self, source: str, n: int) -> None:
        """The middleware reports ``n`` samples of input ``source`` lost before they reached the node."""
        with self._lock:
            self.lost[source] += n

    def rejected_input(self, kind: str, reason: str) -> bool:
        """Count a rejected input; returns True when a log line is due (throttled per kind).

        Raises:
            ValueError: unknown kind (a programming error).
        """
        if kind not in REJECTION_KINDS:
            raise ValueError(f"unknown rejection kind {kind!r}; expected one of {REJECTION_KINDS}")
        with self._lock:
            now = self._clock()
            self.rejected[kind] += 1
            self.last_rejection = (kind, clip_text(reason))
            self._last_rejection_t = now
            last = self._last_log_t.get(kind)
            if last is None or now - last >= self.limits.log_throttle_s:
                self._last_log_t[kind] = now
                return True
            return False

    def frame_published(self, processing_ms: float, latency_ms: float) -> None:
        """A grid was published after ``processing_ms``; ``latency_ms`` = publish time - image stamp."""
        with self._lock:
            self.frames_processed += 1
            self.last_processing_ms = processing_ms
            self.last_latency_ms = latency_ms
            self.max_latency_ms = max(self.max_latency_ms, latency_ms)
            self._last_output_t = self._clock()

    def tf_state(self, ok: bool, detail: str) -> None:
        """Result of the last camera -> grid lookup."""
        with self._lock:
            self.tf_ok, self.tf_detail = ok, clip_text(detail)

    def snapshot(self) -> Dict[str, object]:
        """All counters as a plain dict (for tests and the diagnostic key-values)."""
        with self._lock:
            return {
                "frames_in": self.frames_in,
                "frames_processed": self.frames_processed,
                "frames_dropped": self.frames_dropped,
                "rejected_total": sum(self.rejected.values()),
                **{f"rejected.{k}": self.rejected[k] for k in REJECTION_KINDS},
                "last_rejection": ": ".join(self.last_rejection) if self.last_rejection[0] else "",
                "last_processing_time_ms": round(self.last_processing_ms, 3),
                "last_pipeline_latency_ms": round(self.last_latency_ms, 3),
                "max_pipeline_latency_ms": round(self.max_latency_ms, 3),
                "tf": "ok" if self.tf_ok else ("missing" if self.tf_ok is False else "unknown"),
                "tf_detail": self.tf_detail,
                "resets": self.resets,
                "lost_total": sum(self.lost.values()),
                **{f"lost.{k}": v for k, v in sorted(self.lost.items())},
            }

    def level(self) -> Tuple[int, str]:
        """(DiagnosticStatus level byte as int, message)."""
        lim = self.limits
        with self._lock:
            now = self._clock()
            errors: List[str] = []
            warns: List[str] = []
            if self.tf_ok is False:
                errors.append(f"no camera -> grid transform ({self.tf_detail})")
            since_out = now - (self._last_output_t if self._last_output_t is not None else (self._first_input_t or now))
            input_recent = self._last_input_t is not None and now - self._last_input_t < lim.rejection_window_s
            if input_recent and since_out * 1e3 > lim.max_consecutive_delay_error_ms:
                errors.append(f"no grid published for {since_out * 1e3:.0f} ms while input arrives")
            if self.last_processing_ms > lim.max_processing_time_warn_ms:
                warns.append(f"processing took {self.last_processing_ms:.0f} ms "
                             f"(> {lim.max_processing_time_warn_ms:.0f} ms)")
            if self._last_rejection_t is not None and now - self._last_rejection_t < lim.rejection_window_s:
                warns.append(f"rejected input ({self.last_rejection[0]}: {self.last_rejection[1]})")
        if errors:
            return int.from_bytes(DiagnosticStatus.ERROR, "little"), "; ".join(errors + warns)
        if warns:
            return int.from_bytes(DiagnosticStatus.WARN, "little"), "; ".join(warns)
        return int.from_bytes(DiagnosticStatus.OK, "little"), "ok"

    def to_msg(self, stamp, name: str, hardware_id: str, extra: Optional[Dict[str, object]] = None) -> DiagnosticArray:
        """The DiagnosticArray to publish (one status with every counter as a key-value)."""
        level, message = self.level()
        values = {**self.snapshot(), **(extra or {})}
        status = DiagnosticStatus(level=bytes([level]), name=name, message=clip_text(message, 2 * MAX_TEXT_CHARS),
                                  hardware_id=hardware_id,
                                  values=[KeyValue(key=clip_text(k, 100), value=clip_text(v))
                                          for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = stamp
        return arr
