"""
L{Received}: what a client or server receives over real sockets, waited
for with a bound.

Thread: the reactor thread.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredQueue

__all__ = ["Received"]


class Received:
    """
    The messages a client or a server receives, for tests over real
    sockets: give it as the C{on_message} callable, then wait for each
    message with a bound.

        received = Received()
        client = CommsClientFactory(on_message=received)
        ...
        message = yield received.next()          # or: await received.next()

    Thread: the reactor thread (it is an event callable of the Twisted API).

    @ivar senders: who sent each message so far (the client factory, or
        the server's C{ClientHandle}), in order.
    """

    def __init__(self, clock: Any = None) -> None:
        """
        @param clock: the clock for timeouts; default the global reactor.
        """
        self._clock = clock
        self._queue: DeferredQueue[Any] = DeferredQueue()
        self.senders: list[Any] = []

    def __call__(self, sender: Any, message: Any) -> None:
        self.senders.append(sender)
        self._queue.put(message)

    @property
    def waiting(self) -> int:
        """
        Messages received and not yet taken by L{next}.
        """
        return len(self._queue.pending)

    def next(self, timeout: float = 5.0) -> Deferred[Any]:
        """
        A L{Deferred} firing with the next message, or failing with
        C{twisted.internet.defer.TimeoutError} if none arrives within
        C{timeout} seconds (a test fails instead of hanging).
        """
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor as clock
        return self._queue.get().addTimeout(timeout, clock)
