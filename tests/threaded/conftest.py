"""
Fixtures for the threaded API tests.

These tests call the threaded API's blocking methods, which raise on the
reactor thread, where pytest-twisted runs every test. Every test here is
marked C{blocking} (see the root conftest.py): it runs on a worker thread
while pytest-twisted's reactor runs, which the threaded API then uses.
Without pytest-twisted (C{python -m pytest -p no:twisted tests/threaded})
they run as plain tests and the library starts its own reactor thread.

The reactor is process-wide and cannot be restarted: nothing here stops it.
Every Server and Client a test makes is stopped/closed by a finalizer, and
a guard fails any test that leaves one holding the process open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from twcomms.threaded import Client, Server
from twcomms.threaded.eventloop import get_event_loop

from .raw import WAIT, RawServer


@pytest.fixture(autouse=True)
def no_open_objects() -> Iterator[None]:
    """
    After each test (and its finalizers), nothing may still hold the
    process open: a leak would make this pytest process hang at exit.
    """
    yield
    loop = get_event_loop()
    # A client closed by its peer is released once its queued callbacks
    # have run, on a callback thread: give that its moment.
    left = [obj for obj in loop.open_objects() if not loop.wait_released(obj, WAIT)]
    for obj in left:
        try:
            obj._at_exit()
        except Exception:
            logging.getLogger(__name__).exception("cleaning up %r", obj)
        loop.release(obj)
    assert not left, f"left open after the test: {left}"


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    """
    C{make_server(*args, start=True, **kwargs)}: a L{Server} on
    127.0.0.1:0 by default, stopped after the test.
    """
    made: list[Server] = []

    def make(
        address: str = "127.0.0.1",
        port: int = 0,
        *args: Any,
        start: bool = True,
        **kwargs: Any,
    ) -> Server:
        server = Server(address, port, *args, **kwargs)
        made.append(server)
        if start:
            server.start(timeout=WAIT)
        return server

    yield make
    for server in reversed(made):
        server.stop(timeout=WAIT)


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    """
    C{make_client(port, *args, connect=True, **kwargs)}: a L{Client} to
    127.0.0.1:port, closed after the test.
    """
    made: list[Client] = []

    def make(port: int, *args: Any, connect: bool = True, **kwargs: Any) -> Client:
        client = Client("127.0.0.1", port, *args, **kwargs)
        made.append(client)
        if connect:
            client.connect(timeout=WAIT)
        return client

    yield make
    for client in reversed(made):
        client.close(timeout=WAIT)


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()
