"""
User callbacks of the threaded API: one event's callbacks (L{Callbacks})
and one connection's received messages on their way to them (L{Inbox}).

Thread: each method says which thread calls it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from twcomms.threaded.dispatch import SerialQueue
from twcomms.threaded.flow import ReceiveWindow

__all__ = ["Callbacks", "Inbox", "remove_callback"]

_log = Logger()


def remove_callback(callbacks: list[Any], func: Any, index: int) -> bool:
    """
    The original's removal rule: by function if given, else by index.
    """
    if func is not None:
        for i, entry in enumerate(callbacks):
            if entry[0] == func:
                del callbacks[i]
                return True
        return False
    if 0 <= index < len(callbacks):
        del callbacks[index]
        return True
    return False


class Callbacks:
    """
    One event's user callbacks. Thread: any.
    """

    def __init__(self, event: str) -> None:
        self.event = event
        self._lock = threading.Lock()
        # Replaced, never mutated, so fire() reads it without a lock.
        self._entries: tuple[tuple[Callable[..., object], bool], ...] = ()

    def add(self, f: Callable[..., object], with_sender: bool = False) -> None:
        if not callable(f):
            raise TypeError(f"{self.event} callback must be callable, not {f!r}")
        with self._lock:
            self._entries = (*self._entries, (f, with_sender))

    def remove(self, f: Callable[..., object] | None, index: int) -> bool:
        with self._lock:
            entries = list(self._entries)
            removed = remove_callback(entries, f, index)
            self._entries = tuple(entries)
            return removed

    def fire(self, sender: Any, *args: Any) -> None:
        """
        Call every callback: C{f(*args)}, or C{f(sender, *args)} for those
        added C{with_sender}. Worker thread.
        """
        entries = self._entries
        for f, with_sender in entries:
            try:
                if with_sender:
                    f(sender, *args)
                else:
                    f(*args)
            except Exception:
                _log.failure(
                    "{event} callback {callback!r} raised",
                    event=self.event,
                    callback=f,
                )


class Inbox:
    """
    One connection's received messages, handed to its callbacks' serial
    queue in batches: one batch per reactor turn, however many messages the
    socket read held, so the per-message cost is an append.

    Thread: the reactor thread, except L{_deliver} (a worker).
    """

    __slots__ = ("_batch", "_call_later", "_events", "_fire", "_size", "window")

    def __init__(
        self,
        events: SerialQueue,
        window: ReceiveWindow,
        fire: Callable[[Any], None],
        call_later: Callable[..., Any],
    ) -> None:
        self._events = events
        self.window = window
        self._fire = fire
        self._call_later = call_later
        self._batch: list[Any] | None = None
        self._size = 0

    def add(self, message: Any, size: int) -> None:
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            self._call_later(0, self.flush)
        batch.append(message)
        self._size += size

    def flush(self) -> None:
        """
        Queue the batch now (also before a close event, to keep the order).
        """
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        size, self._size = self._size, 0
        cumulative = self.window.queued(size, len(batch))
        self._events.put(self._deliver, batch, cumulative)

    def _deliver(self, batch: list[Any], cumulative: int) -> None:
        fire = self._fire
        try:
            for message in batch:
                fire(message)
        finally:
            self.window.handled(cumulative, len(batch))
