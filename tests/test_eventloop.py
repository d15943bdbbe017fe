"""
Tests for L{twcomms.threaded.eventloop}, with a fake reactor, threads and atexit
(as crochet tests its event loop). The real reactor thread is exercised by
tests/threaded.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail

from twcomms.threaded.eventloop import EventLoop, ReactorThreadError


class FakeReactor:
    """
    Runs what is given to C{callFromThread} at once, in the caller's thread.
    """

    def __init__(self, running: bool = False) -> None:
        self.running = running
        self.when_running: list[Any] = []
        self.run_kwargs: dict[str, Any] | None = None

    def callWhenRunning(self, f: Any) -> None:
        self.when_running.append(f)

    def run(self, **kwargs: Any) -> None:
        self.run_kwargs = kwargs
        self.running = True
        for f in self.when_running:
            f()

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


class Threads:
    """
    A thread factory that records what it was asked to start.
    """

    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> threading.Thread:
        self.made.append(kwargs)
        return threading.Thread(**kwargs)


def make(running: bool = False) -> tuple[EventLoop, FakeReactor, Threads, list[Any]]:
    reactor = FakeReactor(running)
    threads = Threads()
    exits: list[Any] = []
    loop = EventLoop(lambda: reactor, threads, exits.append)
    return loop, reactor, threads, exits


def test_starts_one_daemon_thread_once() -> None:
    loop, reactor, threads, exits = make()
    assert loop.start() is reactor
    assert loop.start() is reactor
    assert len(threads.made) == 1
    made = threads.made[0]
    assert made["daemon"] is True and made["name"] == "twcomms-reactor"
    assert reactor.run_kwargs == {"installSignalHandlers": False}
    assert loop.owns_thread
    assert len(exits) == 1


def test_reuses_a_running_reactor_and_starts_no_thread() -> None:
    loop, reactor, threads, _ = make(running=True)
    assert loop.start() is reactor
    assert threads.made == []
    assert not loop.owns_thread


def test_call_returns_results_and_deferred_results() -> None:
    loop, _, _, _ = make()
    assert loop.call(lambda a, b: a + b, 2, 3, timeout=1) == 5
    d: Deferred[int] = Deferred()
    d.callback(7)
    assert loop.call(lambda: d, timeout=1) == 7


def test_call_raises_the_failure() -> None:
    loop, _, _, _ = make()
    with pytest.raises(ZeroDivisionError):
        loop.call(lambda: 1 / 0, timeout=1)
    with pytest.raises(KeyError):
        loop.call(lambda: fail(KeyError("k")), timeout=1)


def test_call_times_out_and_cancels() -> None:
    loop, _, _, _ = make()
    cancelled: list[object] = []
    d: Deferred[None] = Deferred(lambda d: cancelled.append(d))
    with pytest.raises(TimeoutError, match=r"Client.close\(\) did not finish within"):
        loop.call(lambda: d, timeout=0.05, what="Client.close()")
    assert cancelled == [d]


def test_blocking_call_on_the_reactor_thread_raises() -> None:
    reactor = FakeReactor()
    # A thread factory that runs the reactor in the calling thread, so the
    # caller *is* the reactor thread.

    class Inline:
        def __init__(self, target: Any, kwargs: Any, **_: Any) -> None:
            self.target, self.kwargs = target, kwargs

        def start(self) -> None:
            self.target(**self.kwargs)

    loop = EventLoop(lambda: reactor, Inline, lambda f: None)  # type: ignore[arg-type]
    loop.start()
    assert loop.in_reactor_thread()
    with pytest.raises(ReactorThreadError, match="deadlock"):
        loop.call(lambda: None, timeout=1, what="Server.start()")


def test_hold_keeps_a_non_daemon_thread_until_released() -> None:
    loop, _, _, _ = make()
    a, b = object(), object()
    loop.hold(a)
    loop.hold(b)
    keepalive = loop._keepalive
    assert keepalive is not None and keepalive.is_alive() and not keepalive.daemon
    loop.release(a)
    keepalive.join(0.2)
    assert keepalive.is_alive()
    loop.release(b)
    keepalive.join(5)
    assert not keepalive.is_alive()
    assert loop.open_objects() == []


def test_wait_released_returns_when_released_from_another_thread() -> None:
    loop, _, _, _ = make()
    held = object()
    loop.hold(held)
    assert not loop.wait_released(held, 0.01)
    releaser = threading.Timer(0.05, loop.release, args=(held,))
    releaser.start()
    assert loop.wait_released(held, 5)
    releaser.join()
    assert loop.wait_released(object(), 0)  # never held


def test_exit_closes_registered_objects_and_forgets_dead_ones() -> None:
    loop, _, _, exits = make()
    closed: list[str] = []

    class Closable:
        def __init__(self, name: str) -> None:
            self.name = name

        def _at_exit(self) -> None:
            closed.append(self.name)

    kept = Closable("kept")
    loop.register(kept)
    loop.register(Closable("garbage"))  # held weakly: gone at once
    loop.start()
    (at_exit,) = exits
    at_exit()
    assert closed == ["kept"]


def test_a_failing_exit_hook_does_not_stop_the_others() -> None:
    loop, _, _, _ = make()
    closed: list[str] = []

    class Broken:
        def _at_exit(self) -> None:
            raise RuntimeError("boom")

    class Fine:
        def _at_exit(self) -> None:
            closed.append("fine")

    objs = [Broken(), Fine()]
    for o in objs:
        loop.register(o)
    loop.close_all()
    assert closed == ["fine"]


# -- the two private Python/Twisted hooks twcomms relies on, pinned --------------


def _run_fresh(code: str) -> str:
    """
    Run C{code} in a fresh interpreter; its standard output.
    """
    import subprocess
    import sys
    import textwrap

    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_twisted_logging_begun_follows_begin_logging_to() -> None:
    out = _run_fresh(
        """
        from twisted.logger import globalLogBeginner
        from twcomms.threaded.eventloop import twisted_logging_begun
        print(twisted_logging_begun())
        globalLogBeginner.beginLoggingTo([lambda e: None], redirectStandardIO=False)
        print(twisted_logging_begun())
        """
    )
    assert out.split() == ["False", "True"]


def test_hook_runs_before_non_daemon_threads_are_joined() -> None:
    # The keep-alive thread is non-daemon: a hook registered this way must
    # run while it still waits (here it releases it), or the script hangs.
    out = _run_fresh(
        """
        import threading
        from twcomms.threaded.eventloop import _register_before_thread_join

        released = threading.Event()
        worker = threading.Thread(target=released.wait, daemon=False)
        worker.start()

        def hook():
            print("hook ran; worker alive:", worker.is_alive(), flush=True)
            released.set()

        _register_before_thread_join(hook)
        print("script ends", flush=True)
        """
    )
    assert out.splitlines() == ["script ends", "hook ran; worker alive: True"]
