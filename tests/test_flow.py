"""
Tests for L{twcomms.threaded.flow}: send and receive windows.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from twisted.internet.testing import StringTransport

from harness.wire import parse as reference_parse
from twcomms.connection import CommsProtocol
from twcomms.errors import ConnectionClosedError
from twcomms.threaded.flow import (
    DrainTracker,
    ReceiveWindow,
    SendTimeoutError,
    SendWindow,
)

WAIT = 10


def where() -> str:
    return "test peer"


def test_send_window_blocks_over_high_until_low() -> None:
    w = SendWindow(high=100, low=40, timeout=WAIT)
    w.acquire(60, where)
    w.acquire(60, where)  # 120 > 100: the next one waits
    entered = threading.Event()
    done = threading.Event()

    def third() -> None:
        entered.set()
        w.acquire(10, where)
        done.set()

    t = threading.Thread(target=third)
    t.start()
    assert entered.wait(WAIT)
    assert not done.wait(0.1)
    w.release(60)  # 60 left: still over the low-water mark
    assert not done.wait(0.1)
    w.release(30)  # 30 <= 40: drained enough
    assert done.wait(WAIT)
    t.join(WAIT)
    assert w.pending == 40


def test_send_window_times_out_with_a_clear_error() -> None:
    w = SendWindow(high=10, low=0, timeout=0.05)
    w.acquire(20, where)
    with pytest.raises(SendTimeoutError, match="test peer is not reading"):
        w.acquire(1, where)
    assert w.pending == 20  # the refused message was not counted


def test_send_window_close_wakes_waiters() -> None:
    w = SendWindow(high=10, low=0, timeout=WAIT)
    w.acquire(20, where)
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            w.acquire(1, where)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    w.close("disconnected")
    t.join(WAIT)
    assert isinstance(errors[0], ConnectionClosedError)
    with pytest.raises(ConnectionClosedError):
        w.acquire(1, where)
    w.reopen()
    w.acquire(1, where)


def test_send_window_validation() -> None:
    with pytest.raises(ValueError):
        SendWindow(high=10, low=20, timeout=None)


def test_drain_tracker_releases_at_once_or_when_drained() -> None:
    w = SendWindow(high=1000, low=0, timeout=WAIT)
    tracker = DrainTracker(w)

    class Receiver:
        def startReceivingMessages(self, sender: Any) -> None: ...
        def messageReceived(self, message: Any) -> None: ...
        def stopReceivingMessages(self, reason: Any, failure: Any) -> None: ...

    proto = CommsProtocol(Receiver(), "binary")  # type: ignore[arg-type]
    t = StringTransport()
    proto.makeConnection(t)
    w.add(10)
    tracker.write(proto, b"x" * 6)
    assert w.pending == 10  # released per batch, not per message
    tracker.flushed()
    assert w.pending == 0
    t.producer.pauseProducing()  # the socket buffer is full
    w.add(10)
    w.add(10)
    tracker.write(proto, b"y" * 6)
    tracker.write(proto, b"z" * 6)
    assert w.pending == 20
    t.producer.resumeProducing()
    assert w.pending == 0
    assert reference_parse(t.value()) == [b"x" * 6, b"y" * 6, b"z" * 6]


def test_receive_window_pauses_over_high_and_resumes_under_low() -> None:
    scheduled: list[Any] = []
    events: list[str] = []
    r = ReceiveWindow(high_count=8, high_bytes=10_000, call_soon=scheduled.append)
    r.attach(lambda: events.append("pause"), lambda: events.append("resume"))
    marks = [r.queued(10) for _ in range(9)]
    assert events == ["pause"] and r.paused
    for m in marks[:6]:
        r.handled(m)  # 3 left > low (2)
    assert scheduled == []
    r.handled(marks[6])  # 2 left <= 2
    assert len(scheduled) == 1
    r.handled(marks[7])
    assert len(scheduled) == 1  # one resume request only
    scheduled[0]()
    assert events == ["pause", "resume"] and not r.paused


def test_receive_window_by_bytes() -> None:
    events: list[str] = []
    r = ReceiveWindow(high_count=1000, high_bytes=100, call_soon=lambda f: f())
    r.attach(lambda: events.append("pause"), lambda: events.append("resume"))
    m1 = r.queued(60)
    m2 = r.queued(60)
    assert events == ["pause"]
    r.handled(m1)
    assert events == ["pause"]  # 60 bytes left > 25
    r.handled(m2)
    assert events == ["pause", "resume"]


def test_receive_window_pause_race_is_undone() -> None:
    """
    If the worker handled everything before the pause flag was set, the
    reactor side undoes its own pause (nobody else would).
    """
    events: list[str] = []
    r = ReceiveWindow(high_count=2, high_bytes=10_000, call_soon=lambda f: f())

    def pause() -> None:
        events.append("pause")
        # The worker catches up just as the reactor pauses.
        r.handled_count = r.queued_count
        r.handled_bytes = r.queued_bytes

    r.attach(pause, lambda: events.append("resume"))
    for _ in range(3):
        r.queued(1)
    assert events == ["pause", "resume"] and not r.paused
