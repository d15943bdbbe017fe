"""
Event callbacks of the Twisted API: plain lists of callables, each call
logged with its traceback if it raises (nothing else stops).

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from twcomms.errors import RemoteError

__all__ = ["call_each", "callback_list", "first_answer"]

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


def first_answer(handlers: list[Callable[..., Any]], *args: Any) -> Deferred[Any]:
    """
    The answer to a request: C{handlers} are asked in order with C{args},
    and the first to return something other than L{None} (or a Deferred
    firing with it) answers; if none does, the answer is L{None}. With no
    handlers at all, it fails with L{RemoteError} C{NoHandler}.
    """
    handlers = list(handlers)
    if not handlers:
        d: Deferred[Any] = Deferred()
        d.errback(RemoteError("NoHandler", "this peer answers no requests"))
        return d

    def ask(index: int) -> Deferred[Any]:
        answer = maybeDeferred(handlers[index], *args)
        if index + 1 < len(handlers):
            answer.addCallback(lambda r: ask(index + 1) if r is None else r)
        return answer

    return ask(0)
