"""
User callbacks of the threaded API: one event's callbacks (L{Callbacks})
and one connection's received messages on their way to them (L{Inbox}).

Thread: each method says which thread calls it.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from twcomms.errors import RemoteError
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

    An event passes a reference (the client, or the sender of a message)
    and a payload (nothing, or the message). A callback may take the
    reference or leave it out -- C{on_connect(client)} as the original's
    code called it, or C{on_connect()} as its README shows -- decided once,
    from its signature, when it is added: a signature no call can fit is
    refused then, with a C{TypeError} that names the forms that work, not
    discovered later on a worker thread.
    """

    def __init__(
        self, event: str, reference: str, payload: tuple[str, ...] = ()
    ) -> None:
        """
        @param event: the event's name, for messages (C{"onconnect"}).
        @param reference: what the reference is (C{"client"}, C{"sender"}).
        @param payload: the names of the arguments after it (C{("message",)}).
        """
        self.event = event
        self.reference = reference
        self.payload = payload
        self._lock = threading.Lock()
        # Replaced, never mutated, so fire() reads it without a lock.
        self._entries: tuple[tuple[Callable[..., object], bool], ...] = ()

    def add(self, f: Callable[..., object], with_sender: bool = True) -> None:
        """
        Add C{f}. With C{with_sender} (events with a payload), it may take
        the reference first; without, it takes the payload only.

        @raise TypeError: C{f} is not callable, or takes arguments no call
            of this event can give.
        """
        if not callable(f):
            raise TypeError(f"{self.event} callback must be callable, not {f!r}")
        passes_reference = self._convention(f, with_sender)
        with self._lock:
            self._entries = (*self._entries, (f, passes_reference))

    def _convention(self, f: Callable[..., object], reference_allowed: bool) -> bool:
        """
        Whether C{f} is called with the reference first.
        """
        count = len(self.payload)
        try:
            signature = inspect.signature(f)
        except (TypeError, ValueError):
            # Unreadable (some builtins): the call the original made.
            return reference_allowed
        if reference_allowed and _accepts(signature, count + 1):
            return True
        if _accepts(signature, count):
            return False
        forms = [_form(self.payload)]
        if reference_allowed:
            forms.insert(0, _form((self.reference, *self.payload)))
        hint = ""
        if not reference_allowed and _accepts(signature, count + 1):
            hint = f"; to get the {self.reference} too, add it with with_sender=True"
        raise TypeError(
            f"{self.event} callback {f!r} takes {signature}, but it is called "
            f"as {' or '.join(forms)}{hint}"
        )

    def remove(self, f: Callable[..., object] | None, index: int) -> bool:
        with self._lock:
            entries = list(self._entries)
            removed = remove_callback(entries, f, index)
            self._entries = tuple(entries)
            return removed

    def fire(self, reference: Any, *payload: Any) -> None:
        """
        Call every callback: C{f(reference, *payload)}, or C{f(*payload)}
        for those that leave the reference out. Worker thread.
        """
        entries = self._entries
        for f, passes_reference in entries:
            try:
                if passes_reference:
                    f(reference, *payload)
                else:
                    f(*payload)
            except Exception:
                _log.failure(
                    "{event} callback {callback!r} raised",
                    event=self.event,
                    callback=f,
                )

    def answer(self, reference: Any, *payload: Any) -> Any:
        """
        Ask the callbacks in order for an answer (a request's reply): the
        first that returns something other than L{None} gives it; L{None}
        if none does. One that raises ends the asking: its exception is
        the answer's. Worker thread.

        @raise RemoteError: no callbacks (C{NoHandler}).
        """
        entries = self._entries
        if not entries:
            raise RemoteError("NoHandler", "this peer answers no requests")
        for f, passes_reference in entries:
            result = f(reference, *payload) if passes_reference else f(*payload)
            if result is not None:
                return result
        return None


def _accepts(signature: inspect.Signature, count: int) -> bool:
    """
    Whether a call with C{count} positional arguments fits C{signature}.
    """
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _form(names: tuple[str, ...]) -> str:
    return f"f({', '.join(names)})"


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
