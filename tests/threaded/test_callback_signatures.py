"""
Callbacks written as the original's README documents them, or as its code
called them: connect and close callbacks with the client or with no
argument, message callbacks with the sender or without; decided once,
from the signature, when registered; an impossible signature refused
then, with a message that says which forms work. Over real connections.
"""

from __future__ import annotations

import functools
import queue
from collections.abc import Callable
from typing import Any

import pytest

from twcomms import Client, ConnectedClient

from .raw import get


class Recorder:
    """
    Callables of every shape, each putting what it got on one queue.
    """

    def __init__(self) -> None:
        self.got: queue.Queue[tuple[str, tuple[Any, ...]]] = queue.Queue()

    def none(self, name: str) -> Callable[[], None]:
        def f() -> None:
            self.got.put((name, ()))

        return f

    def one(self, name: str) -> Callable[[Any], None]:
        def f(a: Any) -> None:
            self.got.put((name, (a,)))

        return f

    def two(self, name: str) -> Callable[[Any, Any], None]:
        def f(a: Any, b: Any) -> None:
            self.got.put((name, (a, b)))

        return f

    def bound(self, a: Any) -> None:
        self.got.put(("bound", (a,)))

    def partial_target(self, name: str, a: Any) -> None:
        self.got.put((name, (a,)))

    def events(self, count: int) -> dict[str, tuple[Any, ...]]:
        out = dict(get(self.got, "a callback") for _ in range(count))
        assert len(out) == count, out
        return out


def test_server_connect_and_close_callbacks_with_and_without_the_client(
    make_server, make_client
):
    server = make_server()
    rec = Recorder()
    server.add_onconnect_callback(rec.none("connect()"))
    server.add_onconnect_callback(rec.one("connect(client)"))
    server.add_onclose_callback(rec.none("close()"))
    server.add_onclose_callback(rec.one("close(client)"))
    client = make_client(server.port)
    connected = rec.events(2)
    assert connected["connect()"] == ()
    (handle,) = connected["connect(client)"]
    assert isinstance(handle, ConnectedClient)
    client.close()
    closed = rec.events(2)
    assert closed["close()"] == ()
    assert closed["close(client)"] == (handle,)


def test_client_connect_and_close_callbacks_with_and_without_the_client(
    make_server, make_client
):
    server = make_server()
    rec = Recorder()
    client = make_client(server.port, connect=False)
    client.add_onconnect_callback(rec.none("connect()"))
    client.add_onconnect_callback(rec.one("connect(client)"))
    client.add_onclose_callback(rec.none("close()"))
    client.add_onclose_callback(rec.one("close(client)"))
    client.connect()
    assert rec.events(2) == {"connect()": (), "connect(client)": (client,)}
    client.close()
    assert rec.events(2) == {"close()": (), "close(client)": (client,)}


def test_message_callbacks_with_and_without_the_sender(make_server, make_client):
    server = make_server()
    rec = Recorder()
    server.add_onmessage_callback(rec.one("plain(message)"))
    server.add_onmessage_callback(rec.two("sender(sender, message)"), with_sender=True)
    server.add_onmessage_callback(rec.one("sender(message)"), with_sender=True)
    client = make_client(server.port)
    client_got = Recorder()
    client.add_onmessage_callback(client_got.two("client(sender, message)"), True)
    client.add_onmessage_callback(client_got.one("client(message)"))
    client.send({"n": 1})
    got = rec.events(3)
    assert got["plain(message)"] == ({"n": 1},)
    assert got["sender(message)"] == ({"n": 1},)
    sender, message = got["sender(sender, message)"]
    assert isinstance(sender, ConnectedClient) and message == {"n": 1}
    server.broadcast({"b": 2})
    assert client_got.events(2) == {
        "client(sender, message)": (client, {"b": 2}),
        "client(message)": ({"b": 2},),
    }


class CallableObject:
    def __init__(self, got: queue.Queue[Any]) -> None:
        self.got = got

    def __call__(self, client: Any) -> None:
        self.got.put(("object", (client,)))


def test_bound_methods_partials_defaults_and_callable_objects(make_server, make_client):
    server = make_server()
    rec = Recorder()
    server.add_onconnect_callback(rec.bound)
    server.add_onconnect_callback(functools.partial(rec.partial_target, "partial"))
    # A default argument: it can take the client, so it gets it.
    server.add_onconnect_callback(lambda c=None: rec.got.put(("default", (c,))))
    server.add_onconnect_callback(CallableObject(rec.got))
    # A partial that already has every argument it needs: called with none.
    server.add_onconnect_callback(functools.partial(rec.partial_target, "full", 7))
    make_client(server.port)
    got = rec.events(5)
    (handle,) = got["bound"]
    assert isinstance(handle, ConnectedClient)
    assert got["partial"] == got["default"] == got["object"] == (handle,)
    assert got["full"] == (7,)


def test_a_callable_whose_signature_cannot_be_read_gets_the_original_call(
    make_server, make_client
):
    server = make_server()
    got: queue.Queue[Any] = queue.Queue()
    # A builtin bound method: no signature to read; called as f(client).
    server.add_onconnect_callback(got.put)
    make_client(server.port)
    assert isinstance(get(got, "the client"), ConnectedClient)


@pytest.mark.parametrize(
    ("register", "forms"),
    [
        (
            lambda s: s.add_onconnect_callback(lambda a, b: None),
            "f(client) or f()",
        ),
        (lambda s: s.add_onclose_callback(lambda a, b, c: None), "f(client) or f()"),
        (
            lambda s: s.add_onmessage_callback(lambda: None, with_sender=True),
            "f(sender, message) or f(message)",
        ),
        (
            lambda s: s.add_onmessage_callback(lambda: None),
            "f(message)",
        ),
    ],
)
def test_an_impossible_signature_is_refused_when_registered(
    make_server, register, forms
):
    server = make_server(start=False)
    with pytest.raises(TypeError) as caught:
        register(server)
    assert f"called as {forms}" in str(caught.value)
    with pytest.raises(TypeError, match="called as"):
        register(Client("127.0.0.1", 1))


def test_a_two_argument_message_callback_without_with_sender_says_how(make_server):
    server = make_server(start=False)
    with pytest.raises(TypeError, match="add it with with_sender=True"):
        server.add_onmessage_callback(lambda sender, message: None)
