"""
Event callbacks of the Twisted API: plain lists of callables, each call
logged with its traceback if it raises (nothing else stops).

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

__all__ = ["call_each", "callback_list"]

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
