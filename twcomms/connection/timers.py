"""
Timers of a connection (idle timeout, TLS handshake timeout) and the
reactor they run on.

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Timeout", "cancel_call", "default_reactor"]


def cancel_call(call: IDelayedCall | None) -> None:
    """
    Cancel C{call} (a timer) if it is still pending; nothing if it is
    L{None}, has run, or was cancelled.
    """
    if call is not None and call.active():
        call.cancel()


def default_reactor() -> Any:
    """
    The global reactor, imported only when first needed (importing twcomms
    must not install a reactor: twistd and tests choose their own).
    """
    from twisted.internet import reactor

    return reactor


class Timeout:
    """
    Calls C{expired()} once C{seconds} pass without a L{reset}; started and
    stopped at will. A connection has one per timeout it enforces.
    """

    __slots__ = ("_call", "_clock", "_expired", "seconds")

    def __init__(
        self, seconds: float, expired: Callable[[], object], clock: IReactorTime
    ) -> None:
        self.seconds = seconds
        self._expired = expired
        self._clock = clock
        self._call: IDelayedCall | None = None

    @property
    def running(self) -> bool:
        return self._call is not None

    def start(self) -> None:
        """
        Start counting (nothing if already counting).
        """
        if self._call is None:
            self._call = self._clock.callLater(self.seconds, self._fire)

    def reset(self) -> None:
        """
        Start counting again from now, if counting.
        """
        call = self._call
        if call is not None:
            call.reset(self.seconds)

    def stop(self) -> None:
        """
        Stop counting.
        """
        cancel_call(self._call)
        self._call = None

    def _fire(self) -> None:
        self._call = None
        self._expired()
