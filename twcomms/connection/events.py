"""
Event callbacks of the Twisted API: plain lists of callables, each call
logged with its traceback if it raises (nothing else stops).

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twcomms.errors import RemoteError

__all__ = ["call_each", "callback_list", "first_answer", "when_fired"]

_log = Logger()


def callback_list(value: Any) -> list[Any]:
    """
    A callable, or an iterable of callables, as a new list.
    """
    if callable(value):
        return [value]
    return list(value)


def call_each(callbacks: list[Callable[..., object]], event: str, *args: Any) -> None:
    """
    Call each of C{callbacks} with C{args}; one that raises is logged (with
    the event's name) and the rest still run.
    """
    for f in callbacks:
        try:
            f(*args)
        except Exception:
            _log.failure(
                "{event} callback {callback!r} raised", event=event, callback=f
            )


def first_answer(handlers: list[Callable[..., Any]], *args: Any) -> Any:
    """
    The answer to a request: C{handlers} are asked in order with C{args},
    and the first to return something other than L{None} (or a Deferred
    firing with it) answers; if none does, the answer is L{None}. The
    answer is a value, or a L{Deferred} once a handler returned one; a
    handler's exception propagates.

    @raise RemoteError: there are no handlers (C{NoHandler}).
    """
    if not handlers:
        raise RemoteError("NoHandler", "this peer answers no requests")
    for index, handler in enumerate(handlers):
        result = handler(*args)
        if isinstance(result, Deferred):
            rest = handlers[index + 1 :]
            if rest:
                result.addCallback(_or_next, rest, args)
            return result
        if result is not None:
            return result
    return None


def _or_next(result: Any, rest: list[Callable[..., Any]], args: tuple[Any, ...]) -> Any:
    # A handler's Deferred fired: its answer, or the next handlers'.
    return first_answer(rest, *args) if result is None else result


def when_fired(d: Deferred[Any]) -> Deferred[None]:
    """
    A new Deferred that fires (with None) when C{d} does, leaving C{d}'s
    own result to its other callbacks.
    """
    after: Deferred[None] = Deferred()

    def fired(result: object) -> object:
        after.callback(None)
        return result

    d.addBoth(fired)
    return after
