"""
The process-wide reactor thread behind the threaded API (private).

One reactor per process, started lazily and once, never stopped by a
L{twcomms.Server} or L{twcomms.Client} (a reactor cannot be restarted). When
a reactor is already running (a Twisted program), it is used and no thread
is started.

The reactor, the thread factory and C{atexit} are injected so tests can
drive them with fakes, as crochet does.

Thread: every method may be called from any thread unless it says otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEvent,
    globalLogBeginner,
)
from twisted.python import threadable
from twisted.python.failure import Failure
from zope.interface import implementer

from twcomms.errors import ReactorThreadError

__all__ = ["EventLoop", "get_event_loop", "twisted_logging_begun"]

T = TypeVar("T")


class EventLoop:
    """
    Runs the reactor in a daemon thread and lets other threads call into it.

    @ivar reactor: the reactor.
    @ivar reactor_ident: the C{threading.get_ident()} of the thread that
        runs it, once started (compare with it on hot paths; else use
        L{in_reactor_thread}).
    @ivar owns_thread: whether this object started the reactor's thread
        (C{False} when it reuses a reactor that was already running).
    """

    def __init__(
        self,
        reactor_factory: Callable[[], Any] | None = None,
        thread_factory: Callable[..., threading.Thread] = threading.Thread,
        register_atexit: Callable[[Callable[[], None]], object] = atexit.register,
    ) -> None:
        self._reactor_factory = reactor_factory
        self._thread_factory = thread_factory
        self._register_atexit = register_atexit
        self._lock = threading.Lock()
        self._started = False
        self.reactor: Any = None
        self.owns_thread = False
        self._thread: threading.Thread | None = None
        self.reactor_ident: int | None = None
        self._open: set[Any] = set()
        self._open_changed = threading.Condition(self._lock)
        self._keepalive: threading.Thread | None = None
        self._atexit_registered = False
        self._interrupt_hook_registered = False
        self._closables: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- starting ---------------------------------------------------------

    def start(self) -> Any:
        """
        Make sure the reactor runs (starting its thread if needed) and return
        it. Idempotent.
        """
        with self._lock:
            if self._started:
                return self.reactor
            if self._reactor_factory is not None:
                reactor = self._reactor_factory()
            else:
                from twisted.internet import reactor
            self.reactor = reactor
            # Twisted's log events reach stdlib logging, unless the program
            # has begun Twisted logging itself (twistd, a Twisted program).
            _bridge_logging()
            if reactor.running:
                self.owns_thread = False
                self.reactor_ident = threadable.ioThread
            else:
                self.owns_thread = True
                running = threading.Event()

                def started() -> None:
                    self.reactor_ident = threading.get_ident()
                    running.set()

                reactor.callWhenRunning(started)
                thread = self._thread_factory(
                    target=reactor.run,
                    kwargs={"installSignalHandlers": False},
                    name="twcomms-reactor",
                    daemon=True,
                )
                thread.start()
                self._thread = thread
                if not running.wait(30):
                    raise RuntimeError("the twcomms reactor thread did not start")
            self._started = True
            if not self._atexit_registered:
                self._atexit_registered = True
                self._register_atexit(self._at_exit)
            return reactor

    def in_reactor_thread(self) -> bool:
        """
        Whether the caller is the thread that runs the reactor.
        """
        return self._started and threading.get_ident() == self.reactor_ident

    def check_not_reactor_thread(self, what: str) -> None:
        """
        Raise L{ReactorThreadError} if the caller is the reactor thread,
        where C{what} (a blocking call) would deadlock.
        """
        if self.in_reactor_thread():
            raise ReactorThreadError(
                f"{what} blocks until the reactor has done its work, and was "
                f"called on the reactor thread, where it would deadlock. From "
                f"a Twisted program use the Twisted API (CommsServerFactory, "
                f"CommsClientFactory), or call it from another thread "
                f"(twisted.internet.threads.deferToThread)."
            )

    # -- calling into the reactor -----------------------------------------

    def call_soon(self, f: Callable[..., object], *args: Any) -> None:
        """
        Run C{f(*args)} on the reactor thread soon; do not wait.
        """
        self.start().callFromThread(f, *args)

    def call(
        self,
        f: Callable[..., Any],
        *args: Any,
        timeout: float | None,
        what: str = "this call",
    ) -> Any:
        """
        Run C{f(*args)} on the reactor thread and wait for its result (if it
        returns a L{Deferred}, for that Deferred's result).

        @param timeout: seconds to wait; L{None}: forever. On timeout the
            Deferred is cancelled and C{TimeoutError} raised.
        @param what: names the operation in error messages.
        @raise ReactorThreadError: called on the reactor thread (it would
            deadlock).
        """
        reactor = self.start()
        self.check_not_reactor_thread(what)
        results: queue.Queue[Any] = queue.Queue()
        pending: list[Deferred[Any]] = []

        def run() -> None:
            d = maybeDeferred(f, *args)
            pending.append(d)
            d.addBoth(results.put)

        reactor.callFromThread(run)
        try:
            result = results.get(timeout=timeout)
        except queue.Empty:

            def cancel() -> None:
                for d in pending:
                    d.cancel()

            reactor.callFromThread(cancel)
            raise TimeoutError(
                f"{what} did not finish within {timeout} seconds"
            ) from None
        if isinstance(result, Failure):
            result.raiseException()
        return result

    # -- process lifetime -------------------------------------------------

    def hold(self, obj: Any) -> None:
        """
        Keep the process alive while C{obj} is open (the original library's
        scripts end after C{start()}/C{connect()} and rely on that). A
        non-daemon thread waits until every held object is released.
        """
        with self._lock:
            self._open.add(obj)
            if not self._interrupt_hook_registered:
                self._interrupt_hook_registered = True
                _register_before_thread_join(self._close_if_interrupted)
            if self._keepalive is None or not self._keepalive.is_alive():
                self._keepalive = threading.Thread(
                    target=self._keep_alive, name="twcomms-keepalive", daemon=False
                )
                self._keepalive.start()
        _install_sigint_handler(self)

    def release(self, obj: Any) -> None:
        """
        C{obj} is closed: stop keeping the process alive for it.
        """
        with self._lock:
            self._open.discard(obj)
            self._open_changed.notify_all()

    def wait_released(self, obj: Any, timeout: float | None) -> bool:
        """
        Wait until C{obj} is no longer held (see L{release}); C{False} if
        C{timeout} passed first. Any thread.
        """
        with self._lock:
            return self._open_changed.wait_for(lambda: obj not in self._open, timeout)

    def open_objects(self) -> list[Any]:
        """
        The objects held open now.
        """
        with self._lock:
            return list(self._open)

    def _keep_alive(self) -> None:
        with self._lock:
            while self._open:
                self._open_changed.wait()

    def register(self, obj: Any) -> None:
        """
        Call C{obj._at_exit()} at interpreter exit (before the reactor
        thread dies), and on Ctrl-C once the main script has ended. Held
        weakly.
        """
        with self._lock:
            self._closables.add(obj)

    def close_all(self) -> None:
        """
        Every registered Server and Client flushes (with a short timeout)
        and closes.
        """
        with self._lock:
            objs = list(self._closables)
        for obj in objs:
            try:
                obj._at_exit()
            except Exception:
                logging.getLogger("twcomms").exception("closing %r at exit failed", obj)

    def _at_exit(self) -> None:
        self.close_all()

    def _close_if_interrupted(self) -> None:
        # Runs when the main script has ended, before the interpreter waits
        # for non-daemon threads (ours keeps the process alive). If the
        # script ended with Ctrl-C (an uncaught KeyboardInterrupt), close
        # everything instead of waiting for a second Ctrl-C.
        if isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
            self.close_all()


def _register_before_thread_join(hook: Callable[[], None]) -> None:
    """
    Call C{hook} at interpreter shutdown before non-daemon threads are
    joined (C{atexit} runs after them, too late: our keep-alive thread is
    non-daemon).

    Python has no public hook for that moment. C{threading._register_atexit}
    is the one C{concurrent.futures} uses (CPython 3.9 and later); this is
    the only place twcomms calls it, and without it nothing is registered
    (Ctrl-C then needs a second press). C{tests/test_eventloop.py::
    test_hook_runs_before_non_daemon_threads_are_joined} pins the
    behaviour, in a fresh interpreter.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # already shutting down
            register(hook)


def _install_sigint_handler(loop: EventLoop) -> None:
    """
    Make Ctrl-C close open Servers and Clients cleanly when the main script
    has ended and only they keep the process alive. While the main script
    runs, Ctrl-C raises C{KeyboardInterrupt} as usual. Installed only from
    the main thread and only over Python's default handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGINT)
    except (ValueError, AttributeError):  # pragma: no cover - exotic platforms
        return
    if current is not signal.default_int_handler:
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if threading.main_thread().is_alive():
            raise KeyboardInterrupt
        # The script has ended; the interpreter waits for open objects.
        threading.Thread(target=loop.close_all, name="twcomms-sigint").start()

    signal.signal(signal.SIGINT, on_sigint)


_LEVELS = {
    LogLevel.debug: logging.DEBUG,
    LogLevel.info: logging.INFO,
    LogLevel.warn: logging.WARNING,
    LogLevel.error: logging.ERROR,
    LogLevel.critical: logging.CRITICAL,
}


@implementer(ILogObserver)
class _StdlibBridge:
    """
    Sends Twisted log events to the stdlib logger named after the event's
    namespace (C{twcomms.server}, C{twisted.internet...}).
    """

    def __call__(self, event: dict[str, Any]) -> None:
        logger = logging.getLogger(event.get("log_namespace") or "twisted")
        level = _LEVELS.get(event.get("log_level", LogLevel.info), logging.INFO)
        if not logger.isEnabledFor(level):
            return
        failure = event.get("log_failure")
        exc_info = None
        if failure is not None:
            exc_info = (failure.type, failure.value, failure.getTracebackObject())
        logger.log(level, "%s", formatEvent(event), exc_info=exc_info)


def twisted_logging_begun() -> bool:
    """
    Whether the program has begun Twisted logging (C{beginLoggingTo},
    twistd, C{startLogging}).

    Twisted has no public way to ask. Until logging begins, its global log
    beginner buffers events in a temporary observer, and drops it when
    logging begins: that attribute is what this reads, here and nowhere
    else (C{tests/test_eventloop.py}, C{test_twisted_logging_begun_follows_
    begin_logging_to}, pins the behaviour, in a fresh interpreter).
    """
    return getattr(globalLogBeginner, "_temporaryObserver", None) is None


def _bridge_logging() -> None:
    """
    For threaded users: Twisted's log events go to stdlib C{logging}. Done
    only if nobody has begun Twisted logging (a Twisted program that has
    its own keeps it; one that never began logging, like a reactor run by
    pytest-twisted, gets the bridge).
    """
    if twisted_logging_begun():
        return
    globalLogBeginner.beginLoggingTo(
        [_StdlibBridge()], discardBuffer=True, redirectStandardIO=False
    )


_loop: EventLoop | None = None
_loop_lock = threading.Lock()


def get_event_loop() -> EventLoop:
    """
    The process-wide L{EventLoop} (created on first use; not started).
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = EventLoop()
        return _loop
