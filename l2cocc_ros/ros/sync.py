"""Approximate-time synchronization of N input topics (message_filters semantics, ROS-independent core).

:class:`ApproximateTimeSynchronizer` keeps, per input, a bounded queue keyed by the header stamp (the oldest
is dropped past ``queue_size``). Each arriving message looks for one queued message per other input with
``|stamp - its stamp| <= slop``, closest first; the first combination whose overall spread is within ``slop``
is emitted and removed, as message_filters' ApproximateTimeSynchronizer does. Unlike message_filters, once
a set is emitted every older queued message is discarded (it can only ever form an older set: the node
wants the newest frame), and every discarded message is counted.

:func:`make_synchronizer` wires rclpy subscriptions to it, or uses the real ``message_filters`` when that
package is installed (behind :class:`MessageFiltersSynchronizer`: the same ``reset()``, ``queued()`` and
``stats``).
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from l2cocc_ros.core.stamps import stamp_to_ns

__all__ = ["ApproximateTimeSynchronizer", "MessageFiltersSynchronizer", "SyncStats", "make_synchronizer",
           "HAVE_MESSAGE_FILTERS"]

try:  # the real one (vehicle); ours otherwise
    import message_filters as _message_filters

    HAVE_MESSAGE_FILTERS = True
except ImportError:  # pragma: no cover - depends on the machine
    _message_filters = None
    HAVE_MESSAGE_FILTERS = False


@dataclass
class SyncStats:
    """Counters of a synchronizer (messages, not sets).

    Attributes:
        received: messages added, per input.
        emitted: synchronized sets emitted.
        dropped_overflow: messages evicted because their input queue was full.
        dropped_stale: messages discarded because a newer set was emitted first.
    """

    received: List[int]
    emitted: int = 0
    dropped_overflow: int = 0
    dropped_stale: int = 0


class ApproximateTimeSynchronizer:
    """Match messages of ``num_inputs`` streams whose stamps lie within ``slop`` seconds.

    Args:
        num_inputs: number of input streams (>= 2).
        queue_size: messages kept per input (>= 1); the oldest is dropped first.
        slop: largest allowed spread of the stamps within a set [s] (>= 0).
        callback: called as ``callback(*msgs)`` (input order) outside the internal lock.
        stamp_of: returns the stamp [ns] of a message; default ``msg.header.stamp``.

    Raises:
        ValueError: invalid sizes or slop.
    """

    def __init__(
        self,
        num_inputs: int,
        queue_size: int,
        slop: float,
        callback: Callable[..., Any],
        *,
        stamp_of: Optional[Callable[[Any], int]] = None,
    ) -> None:
        if num_inputs < 2:
            raise ValueError(f"num_inputs must be >= 2, got {num_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not slop >= 0.0:
            raise ValueError(f"slop must be >= 0 s, got {slop}")
        self._queues: List[Dict[int, Any]] = [{} for _ in range(num_inputs)]
        self._queue_size = int(queue_size)
        self._slop_ns = int(round(slop * 1e9))
        self._callback = callback
        self._stamp_of = stamp_of or (lambda m: stamp_to_ns(m.header.stamp))
        self._lock = threading.Lock()
        self.stats = SyncStats(received=[0] * num_inputs)

    def add(self, index: int, msg: Any) -> bool:
        """Add one message of input ``index``; emits a set through the callback when one completes.

        Returns:
            True if a set was emitted.
        """
        stamp = self._stamp_of(msg)
        with self._lock:
            self.stats.received[index] += 1
            queue = self._queues[index]
            queue[stamp] = msg
            while len(queue) > self._queue_size:
                del queue[min(queue)]
                self.stats.dropped_overflow += 1
            stamps = self._match(index, stamp)
            if stamps is None:
                return False
            msgs = tuple(q.pop(s) for q, s in zip(self._queues, stamps))
            for q, s in zip(self._queues, stamps):
                for old in [k for k in q if k < s]:
                    del q[old]
                    self.stats.dropped_stale += 1
            self.stats.emitted += 1
        self._callback(*msgs)
        return True

    def _match(self, index: int, stamp: int) -> Optional[Tuple[int, ...]]:
        candidates: List[List[int]] = []
        for j, q in enumerate(self._queues):
            if j == index:
                candidates.append([stamp])
                continue
            near = sorted((s for s in q if abs(s - stamp) <= self._slop_ns), key=lambda s: abs(s - stamp))
            if not near:
                return None
            candidates.append(near)
        for combo in itertools.product(*candidates):
            if max(combo) - min(combo) <= self._slop_ns:
                return combo
        return None

    def reset(self) -> None:
        """Forget every queued message (e.g. after the clock jumped back); counters are kept."""
        with self._lock:
            for q in self._queues:
                q.clear()

    def queued(self) -> int:
        """Number of messages waiting in all queues."""
        with self._lock:
            return sum(len(q) for q in self._queues)


class MessageFiltersSynchronizer:
    """``message_filters.ApproximateTimeSynchronizer`` behind the interface of ours: ``reset()``, ``queued()``
    and ``stats``, so the node resets and reports the synchronizer whichever backend runs.

    message_filters drops a queued message only when its queue overflows or its set is emitted, so
    ``dropped_overflow = received - inputs * emitted - queued - cleared by reset`` and ``dropped_stale`` is 0.

    Args:
        node: the rclpy node.
        inputs: (message type, topic, QoS profile) per input, in callback order.
        queue_size, slop: as :class:`ApproximateTimeSynchronizer`.
        callback: called as ``callback(*msgs)`` (input order).
        event_callbacks: per input, the subscription's event callbacks (e.g. message_lost), or None.
        module: the ``message_filters`` module (default the installed one).
    """

    def __init__(self, node, inputs: Sequence[Tuple[type, str, Any]], queue_size: int, slop: float,
                 callback: Callable[..., Any], *, event_callbacks: Optional[Sequence[Any]] = None,
                 module=None) -> None:
        mf = module if module is not None else _message_filters
        events = list(event_callbacks) if event_callbacks is not None else [None] * len(inputs)
        self.subscribers = [mf.Subscriber(node, t, topic, qos_profile=qos, event_callbacks=ev)
                            for (t, topic, qos), ev in zip(inputs, events)]
        self._sync = mf.ApproximateTimeSynchronizer(self.subscribers, queue_size, slop)
        self._callback = callback
        self._lock = threading.Lock()
        self._received = [0] * len(self.subscribers)
        self._emitted = self._cleared = 0
        for i, sub in enumerate(self.subscribers):  # after the synchronizer's own callbacks: counts what it took
            sub.registerCallback(self._count, i)
        self._sync.registerCallback(self._emit)

    def _count(self, _msg: Any, index: int) -> None:
        with self._lock:
            self._received[index] += 1

    def _emit(self, *msgs: Any) -> None:
        with self._lock:
            self._emitted += 1
        self._callback(*msgs)

    @property
    def stats(self) -> SyncStats:
        """The counters (a snapshot)."""
        queued = self.queued()
        with self._lock:
            received, emitted, cleared = list(self._received), self._emitted, self._cleared
        lost = sum(received) - len(received) * emitted - queued - cleared
        return SyncStats(received=received, emitted=emitted, dropped_overflow=max(0, lost), dropped_stale=0)

    def reset(self) -> None:
        """Forget every queued message (counters are kept)."""
        with self._sync.lock:
            cleared = sum(len(q) for q in self._sync.queues)
            for q in self._sync.queues:
                q.clear()
        with self._lock:
            self._cleared += cleared

    def queued(self) -> int:
        """Number of messages waiting in all queues."""
        with self._sync.lock:
            return sum(len(q) for q in self._sync.queues)


def make_synchronizer(
    node,
    inputs: Mapping[str, Tuple[type, str, Any]],
    queue_size: int,
    slop: float,
    callback: Callable[[Dict[str, Any]], Any],
    *,
    callback_group=None,
    on_lost: Optional[Callable[[str, int], None]] = None,
) -> Tuple[Union[ApproximateTimeSynchronizer, MessageFiltersSynchronizer], list]:
    """Subscribe to ``inputs`` and call ``callback(named)`` with approximately synchronized sets.

    Args:
        node: the rclpy node.
        inputs: input name -> (message type, topic, QoS profile).
        queue_size: per-input queue length.
        slop: largest stamp spread within a set [s].
        callback: receives one set as ``{input name: message}`` (never by position).
        callback_group: group of the subscriptions (ours only).
        on_lost: ``on_lost(input_name, count)`` when the middleware reports ``count`` samples of an input lost
            before they reached us (the subscription's message_lost event, where the RMW supports it).

    Returns:
        (the synchronizer: message_filters' behind :class:`MessageFiltersSynchronizer` when installed, else
        ours; both have ``reset()``, ``queued()`` and ``stats``), the list of subscriptions).
    """
    from rclpy.event_handler import SubscriptionEventCallbacks

    names = list(inputs)

    def emit(*msgs) -> None:
        callback(dict(zip(names, msgs)))

    def events(name: str) -> Optional[SubscriptionEventCallbacks]:
        if on_lost is None:
            return None
        return SubscriptionEventCallbacks(message_lost=lambda info: on_lost(name, int(info.total_count_change)))

    if _message_filters is not None:  # pragma: no cover - depends on the machine
        sync = MessageFiltersSynchronizer(node, list(inputs.values()), queue_size, slop, emit,
                                          event_callbacks=[events(name) for name in names])
        return sync, list(sync.subscribers)
    sync = ApproximateTimeSynchronizer(len(names), queue_size, slop, emit)
    subs = [
        node.create_subscription(t, topic, (lambda m, i=i: sync.add(i, m)), qos, callback_group=callback_group,
                                 event_callbacks=events(name))
        for i, (name, (t, topic, qos)) in enumerate(inputs.items())
    ]
    return sync, subs
