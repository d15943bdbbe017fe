"""
What the threaded C{Server} and C{Client} share: their options, the event
loop and worker pool they use, the original's callback methods, encoding
on the caller's thread, and closing with a time bound.

Thread: every public method may be called from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from twcomms.options import Options
from twcomms.options.readback import ConnectionReadback
from twcomms.threaded.callbacks import Callbacks
from twcomms.threaded.dispatch import SerialQueue, WorkerPool, default_pool
from twcomms.threaded.eventloop import EventLoop, get_event_loop
from twcomms.wire.framing import check_size

__all__ = ["Endpoint", "given_options"]


def given_options(keywords: dict[str, Any], **positional: Any) -> None:
    """
    Add the original's positional options that were given (not L{None})
    to C{keywords}, so an C{options=} object is not overridden by the
    positional defaults.
    """
    for name, value in positional.items():
        if value is not None:
            keywords[name] = value


_log = Logger()


class Endpoint(ConnectionReadback):
    """
    The base of L{twcomms.threaded.Server} and L{twcomms.threaded.Client}.

    @ivar options: the L{Options} in force.
    """

    def __init__(
        self,
        door: str,
        sections: tuple[type, ...],
        options: Options | None,
        keywords: dict[str, Any],
        event_loop: EventLoop | None,
        pool: WorkerPool | None,
        keep_process_alive: bool,
    ) -> None:
        built = Options.build(options, door=door, sections=sections, **keywords)
        connection, flow = built.connection, built.flow
        if connection.outbound_limit is None:
            # The send window bounds what waits for a peer; the outbound
            # limit is the bound of last resort behind it, so by default it
            # leaves room for a full window and one largest message.
            window = flow.send_high_water + connection.max_message_size + 4
            if window > connection.effective_outbound_limit:
                built = Options.build(built, outbound_limit=window)
        self.options = built
        self._flow = self.options.flow
        # Read on every send (the per-message path): kept at hand.
        self._codec_encode = built.connection.codec.encode
        self._max_size = built.connection.max_message_size
        self._loop = event_loop if event_loop is not None else get_event_loop()
        self._pool = pool if pool is not None else default_pool()
        self._keep_alive = keep_process_alive
        self._connect_callbacks = Callbacks("onconnect", "client")
        self._close_callbacks = Callbacks("onclose", "client")
        self._message_callbacks = Callbacks("onmessage", "sender", ("message",))
        self._request_callbacks = Callbacks("onrequest", "sender", ("message",))
        # Set while stopped/closed (wait() waits for it).
        self._done = threading.Event()
        self._done.set()

    # -- the original's callback methods ------------------------------------

    def add_onconnect_callback(self, func: Callable[..., object]) -> None:
        """
        Call C{func(client)} -- or C{func()}, if it takes no argument (as
        the original's README shows it) -- on each connection: on a Server,
        C{client} is the L{ConnectedClient} that connected; on a Client, the
        Client itself (on every reconnection too).

        @raise TypeError: C{func} can be called neither way (e.g. it needs
            two arguments).
        """
        self._connect_callbacks.add(func)

    def add_onclose_callback(self, func: Callable[..., object]) -> None:
        """
        Call C{func(client)}, or C{func()}, when a connection closes (same
        C{client} as for connections); a L{ConnectedClient}'s
        C{close_reason} says why.

        @raise TypeError: C{func} can be called neither way.
        """
        self._close_callbacks.add(func)

    def add_onmessage_callback(
        self, func: Callable[..., object], with_sender: bool = False
    ) -> None:
        """
        Call C{func(message)} for every message, or, with
        C{with_sender=True}, C{func(sender, message)} (on a Server the
        sender is the L{ConnectedClient}; the original had no way to know
        it) -- or C{func(message)} if C{func} takes one argument.

        @raise TypeError: C{func} cannot be called with the message (the
            message says which forms work).
        """
        self._message_callbacks.add(func, with_sender)

    def remove_onconnect_callback(self, func: Any = None, index: int = 0) -> bool:
        """
        Remove a connect callback by function, or by index if C{func} is
        None; C{True} if one was removed.
        """
        return self._connect_callbacks.remove(func, index)

    def remove_onclose_callback(self, func: Any = None, index: int = 0) -> bool:
        """
        Remove a close callback (as L{remove_onconnect_callback}).
        """
        return self._close_callbacks.remove(func, index)

    def remove_onmessage_callback(self, func: Any = None, index: int = 0) -> bool:
        """
        Remove a message callback (as L{remove_onconnect_callback}).
        """
        return self._message_callbacks.remove(func, index)

    # -- shared machinery ---------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """
        Block until stopped (a Server) or closed (a Client), by another
        thread or a callback; C{False} if C{timeout} passed first.
        """
        return self._done.wait(timeout)

    def _encode(self, message: Any) -> bytes:
        """
        Encode C{message} on the caller's thread (a bad value raises there).

        @raise EncodeError: it cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        """
        payload = self._codec_encode(message)
        if len(payload) > self._max_size:
            check_size(len(payload), self._max_size)  # raises, with the message
        return payload

    def _finish(
        self,
        close: Callable[[], Any],
        abort: Callable[[], Any],
        timeout: float | None,
        what: str,
        stragglers: str,
    ) -> None:
        """
        Run C{close} on the reactor thread and wait up to C{timeout} for
        what it returns; past that, log that C{stragglers} did not take what
        was sent, and run C{abort}.
        """
        try:
            self._loop.call(close, timeout=timeout, what=what)
        except TimeoutError:
            _log.warn(
                "{what}: {stragglers} did not take what was sent within "
                "{timeout} seconds; aborting (the rest is discarded)",
                what=what,
                stragglers=stragglers,
                timeout=timeout,
            )
            self._loop.call(abort, timeout=5.0, what=what)

    def _release(self) -> None:
        """
        Stopped/closed: stop holding the process for this object, and let
        idle callback threads end if nothing is open any more.
        """
        self._loop.release(self)
        if not self._loop.open_objects():
            self._pool.retire_idle()

    def _release_after(self, queues: list[SerialQueue]) -> None:
        """
        L{_release} once the callbacks queued so far on C{queues} (the close
        events among them) have run: a script whose main part has ended
        would otherwise exit with them undelivered.
        """
        if not queues:
            self._release()
            return
        remaining = len(queues)
        lock = threading.Lock()

        def one_done() -> None:
            nonlocal remaining
            with lock:
                remaining -= 1
                last = remaining == 0
            if last:
                self._release()

        for events in queues:
            events.put(one_done)
