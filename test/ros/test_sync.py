"""Approximate-time synchronizer: matching, out-of-order and missing messages, bounded queues (no DDS); the
message_filters backend behind the same reset / queued / stats."""
import itertools
import threading
from types import SimpleNamespace

import pytest

from l2cocc_ros.ros.sync import ApproximateTimeSynchronizer, MessageFiltersSynchronizer


def msg(t_ms, tag=""):
    sec, ms = divmod(int(t_ms), 1000)
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=ms * 1_000_000)), tag=tag)


def stamps(out):
    return [tuple(m.header.stamp.sec * 1000 + m.header.stamp.nanosec // 1_000_000 for m in s) for s in out]


def make(n=3, queue=5, slop=0.01):
    out = []
    return ApproximateTimeSynchronizer(n, queue, slop, lambda *m: out.append(m)), out


def test_exact_and_approximate_sets():
    sync, out = make(slop=0.01)
    sync.add(0, msg(1000))
    sync.add(1, msg(1005))
    assert out == []
    assert sync.add(2, msg(996))
    assert stamps(out) == [(1000, 1005, 996)]
    assert sync.queued() == 0


def test_out_of_order_arrival_still_matches():
    sync, out = make(slop=0.005)
    for i, t in [(2, 2000), (1, 2001), (0, 1999), (2, 2100), (0, 2100)]:
        sync.add(i, msg(t))
    assert stamps(out) == [(1999, 2001, 2000)]
    sync.add(1, msg(2099))
    assert stamps(out)[-1] == (2100, 2099, 2100)


def test_every_arrival_order_gives_the_same_sets():
    events = [(0, 100), (1, 101), (2, 100), (0, 200), (1, 200), (2, 202)]
    for order in itertools.permutations(events):
        sync, out = make(queue=10, slop=0.005)
        for i, t in order:
            sync.add(i, msg(t))
        got = sorted(stamps(out))
        # a newer set completed first discards the older partial one: either both sets or only the newer
        assert got in ([(100, 101, 100), (200, 200, 202)], [(200, 200, 202)]), (order, got)
        # every message is accounted for: in an emitted set, discarded as stale, or still queued
        assert 3 * sync.stats.emitted + sync.stats.dropped_stale + sync.queued() == 6


def test_missing_message_never_blocks_the_next_sets():
    sync, out = make(slop=0.005)
    sync.add(0, msg(100))
    sync.add(1, msg(100))  # right image of t=100 never arrives
    for i in range(3):
        sync.add(i, msg(200))
    assert stamps(out) == [(200, 200, 200)]
    assert sync.stats.dropped_stale == 2  # the two orphans of t=100, counted
    assert sync.queued() == 0


def test_slop_is_respected():
    sync, out = make(n=2, slop=0.01)
    sync.add(0, msg(100))
    sync.add(1, msg(111))
    assert out == []
    sync.add(1, msg(109))
    assert stamps(out) == [(100, 109)]


def test_queue_is_bounded_and_drops_the_oldest():
    sync, out = make(n=2, queue=3, slop=0.001)
    for t in range(10):
        sync.add(0, msg(t * 100))
    assert sync.queued() == 3 and sync.stats.dropped_overflow == 7
    sync.add(1, msg(0))  # its partner was evicted
    assert out == []
    sync.add(1, msg(900))
    assert stamps(out) == [(900, 900)]
    assert sync.stats.received == [10, 2]


def test_closest_candidate_wins():
    sync, out = make(n=2, queue=5, slop=0.05)
    sync.add(1, msg(1030))
    sync.add(1, msg(1010))
    sync.add(0, msg(1000))
    assert stamps(out) == [(1000, 1010)]


@pytest.mark.parametrize("args, phrase", [((1, 5, 0.1), "num_inputs"), ((2, 0, 0.1), "queue_size"), ((2, 5, -1.0), "slop")])
def test_bad_arguments(args, phrase):
    with pytest.raises(ValueError, match=phrase):
        ApproximateTimeSynchronizer(*args, callback=print)


class _Filter:
    """message_filters' SimpleFilter contract: ``registerCallback(cb, *args)``, ``signalMessage(*msg)``."""

    def __init__(self):
        self.callbacks = []

    def registerCallback(self, cb, *args):  # noqa: N802 - message_filters' name
        self.callbacks.append((cb, args))

    def signalMessage(self, *msg):  # noqa: N802
        for cb, args in self.callbacks:
            cb(*(msg + args))


class _MessageFilters:
    """The parts of the message_filters module the adapter uses (exact-stamp matching is enough here)."""

    class Subscriber(_Filter):
        def __init__(self, node, msg_type, topic, qos_profile=None, event_callbacks=None):
            super().__init__()

    class ApproximateTimeSynchronizer(_Filter):
        def __init__(self, fs, queue_size, slop):
            super().__init__()
            self.queue_size, self.lock = queue_size, threading.Lock()
            self.queues = [{} for _ in fs]
            for i, f in enumerate(fs):
                f.registerCallback(self.add, self.queues[i], i)

        def add(self, msg, my_queue, my_queue_index=None):
            with self.lock:
                t = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                my_queue[t] = msg
                while len(my_queue) > self.queue_size:
                    del my_queue[min(my_queue)]
                if all(t in q for q in self.queues):
                    msgs = [q.pop(t) for q in self.queues]
                    self.signalMessage(*msgs)


def test_message_filters_backend_has_our_reset_queued_and_stats():
    out = []
    sync = MessageFiltersSynchronizer(None, [(object, "a", None), (object, "b", None)], 2, 0.01,
                                      lambda *m: out.append(m), module=_MessageFilters)
    a, b = sync.subscribers
    for t in (0, 100, 200):  # input a: 3 messages into a queue of 2 -> the oldest is evicted
        a.signalMessage(msg(t, "a"))
    b.signalMessage(msg(200, "b"))  # completes the set at 200
    assert stamps(out) == [(200, 200)] and sync.queued() == 1
    s = sync.stats
    assert (s.received, s.emitted, s.dropped_overflow, s.dropped_stale) == ([3, 1], 1, 1, 0)
    sync.reset()  # forgets the queued message at 100, without counting it as dropped
    assert sync.queued() == 0 and sync.stats.dropped_overflow == 1
    a.signalMessage(msg(300))
    b.signalMessage(msg(300))
    assert stamps(out)[-1] == (300, 300) and sync.stats.emitted == 2
