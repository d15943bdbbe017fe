"""
The extended protocol through the threaded API, over real connections:
request/reply both ways (from any thread, inside callbacks, many at once),
authentication, rooms joined by the client, and what a plain peer or a
server without extensions gets.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from twcomms import (
    AuthenticationError,
    ConnectedClient,
    ExtensionsRefusedError,
    NotNegotiatedError,
    ReactorThreadError,
    RemoteError,
    RequestTimeoutError,
)
from twcomms.threaded import Peer
from twcomms.threaded.eventloop import get_event_loop

from .raw import WAIT, get


def _pair(make_server, make_client, **server_kw: Any):
    server = make_server(**server_kw)
    connected: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(connected.put)
    return server, connected


def test_requests_both_ways(make_server, make_client):
    server, connected = _pair(make_server, make_client)
    server.add_onrequest_callback(lambda client, m: {"sum": sum(m), "from": client.id})
    client = make_client(server.port, extensions=True)
    client.add_onrequest_callback(lambda m: m * 2)
    handle = get(connected, "the connection")
    assert client.extended and handle.extended
    assert client.request([1, 2, 3]) == {"sum": 6, "from": handle.id}
    assert handle.request(21) == 42
    assert server.request(handle.id, ["ab"]) == ["ab", "ab"]


def test_a_request_inside_a_message_callback_does_not_deadlock(
    make_server, make_client
):
    """
    The reply goes straight to the waiting thread, not through the
    connection's callback queue (which that thread is blocking).
    """
    server, connected = _pair(make_server, make_client)
    server.add_onrequest_callback(lambda m: m + 1)
    client = make_client(server.port, extensions=True)
    answers: queue.Queue[Any] = queue.Queue()
    # Each message's callback blocks on a request while the next messages
    # queue behind it on the same connection.
    client.add_onmessage_callback(lambda m: answers.put(client.request(m)))
    handle = get(connected, "the connection")
    for n in range(5):
        handle.send(n)
    assert [get(answers, "an answer") for _ in range(5)] == [1, 2, 3, 4, 5]


def test_many_requests_in_flight_from_many_threads(make_server, make_client):
    server, connected = _pair(make_server, make_client)
    release = threading.Event()

    def slow_echo(m: Any) -> Any:
        # Every handler waits until all requests are in flight: the
        # replies are matched by id, not by order.
        release.wait(WAIT)
        return m

    server.add_onrequest_callback(slow_echo)
    client = make_client(server.port, extensions=True)
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        try:
            results[n] = client.request({"n": n})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    # All 40 handlers are running at once on worker threads (none is queued
    # behind another): then let them answer.
    release.set()
    for t in threads:
        t.join(WAIT)
    assert not errors
    assert results == {n: {"n": n} for n in range(40)}


def test_handler_errors_and_timeouts(make_server, make_client):
    server, connected = _pair(make_server, make_client)
    never = threading.Event()

    def handler(m: Any) -> Any:
        if m == {"op": "boom"}:
            raise KeyError("no such thing")
        if m == {"op": "slow"}:
            never.wait(WAIT)
        return None  # not mine: the next callback answers

    server.add_onrequest_callback(handler)
    server.add_onrequest_callback(lambda m: ["second", m])
    client = make_client(server.port, extensions=True)
    with pytest.raises(RemoteError) as raised:
        client.request({"op": "boom"})
    assert raised.value.type == "KeyError"
    assert "no such thing" in raised.value.remote_message
    assert "Traceback" not in str(raised.value)
    assert client.request({"op": "other"}) == ["second", {"op": "other"}]
    with pytest.raises(RequestTimeoutError):
        client.request({"op": "slow"}, timeout=0.2)
    never.set()
    # The connection is fine afterwards.
    assert client.request(1) == ["second", 1]


def test_plain_peers_and_the_reactor_thread_get_clear_errors(make_server, make_client):
    server, connected = _pair(make_server, make_client)
    plain = make_client(server.port)
    handle = get(connected, "the plain connection")
    assert not plain.extended and not handle.extended
    with pytest.raises(NotNegotiatedError, match="plain connection"):
        plain.request(1)
    with pytest.raises(NotNegotiatedError):
        server.request(handle, 1)
    with pytest.raises(NotNegotiatedError):
        plain.join("lab")
    extended = make_client(server.port, extensions=True)
    outcome: queue.Queue[BaseException] = queue.Queue()

    def on_reactor() -> None:
        try:
            extended.request(1)
        except BaseException as e:
            outcome.put(e)

    get_event_loop().call_soon(on_reactor)
    assert isinstance(get(outcome, "the reactor-thread call"), ReactorThreadError)


def test_authentication(make_server, make_client):
    seen: queue.Queue[Peer] = queue.Queue()
    reactor_thread = get_event_loop().reactor_ident
    threads: list[int] = []

    def authenticate(credentials: Any, peer: Peer) -> str | None:
        threads.append(threading.get_ident())
        seen.put(peer)
        return credentials["user"] if credentials.get("pw") == "s3cret" else None

    server, connected = _pair(
        make_server, make_client, authenticate=authenticate, require_auth=True
    )
    good = make_client(
        server.port, extensions=True, credentials={"user": "ann", "pw": "s3cret"}
    )
    assert good.identity == "ann"
    handle = get(connected, "the authenticated connection")
    assert handle.identity == "ann"
    peer = get(seen, "authenticate's call")
    assert peer.id == handle.id and peer.port == handle.port
    assert reactor_thread not in threads  # run off the reactor thread
    with pytest.raises(AuthenticationError, match="credentials refused"):
        make_client(
            server.port, extensions=True, credentials={"user": "eve", "pw": "guess"}
        )
    # The refused one never became a client.
    assert [c.identity for c in server.clients] == ["ann"]


def test_client_joined_rooms_follow_the_policy(make_server, make_client):
    calls: list[tuple[str, bool]] = []

    def policy(client: ConnectedClient, room: str, joining: bool) -> bool:
        calls.append((room, joining))
        return not room.startswith("staff")

    server, connected = _pair(make_server, make_client, room_policy=policy)
    client = make_client(server.port, extensions=True)
    inbox: queue.Queue[Any] = queue.Queue()
    client.add_onmessage_callback(inbox.put)
    handle = get(connected, "the connection")
    assert client.join("lab") is True
    assert client.join("lab") is False
    assert server.rooms_of(handle) == frozenset({"lab"})
    assert server.members("lab") == [handle]
    server.broadcast({"to": "the lab"}, room="lab")
    assert get(inbox, "the room broadcast") == {"to": "the lab"}
    with pytest.raises(RemoteError) as refused:
        client.join("staff-only")
    assert refused.value.type == "RoomRefused"
    assert client.leave("lab") is True
    assert server.rooms_of(handle) == frozenset()
    assert calls == [
        ("lab", True),
        ("lab", True),
        ("staff-only", True),
        ("lab", False),
    ]


def test_extensions_against_a_server_without_them(make_server, make_client):
    server, connected = _pair(make_server, make_client, accept_extensions=False)
    with pytest.raises(
        ExtensionsRefusedError, match="does not speak twcomms extensions"
    ):
        make_client(server.port, extensions=True, extension_timeout=0.3)
    preferring = make_client(
        server.port, extensions="prefer", extension_timeout=0.3, autoReconnect=True
    )
    inbox: queue.Queue[Any] = queue.Queue()
    preferring.add_onmessage_callback(inbox.put)
    assert preferring.connected and not preferring.extended
    server.broadcast({"plain": True})
    assert get(inbox, "a broadcast on the plain fallback") == {"plain": True}


def test_a_request_in_a_callback_gets_its_reply_while_the_receive_window_is_full(
    make_server, make_client
):
    """
    The client's callbacks fall behind (its receive window is full, so
    reading pauses) and the callback running blocks in request(): the reply
    still reaches it -- it is read past the pause, and the messages read
    with it wait their turn -- so nothing deadlocks and nothing is lost.
    """
    server, connected = _pair(make_server, make_client)
    server.add_onrequest_callback(lambda m: {"answer": m})
    client = make_client(server.port, extensions=True, receive_high_count=4)
    handle = get(connected, "the connection")
    answers: queue.Queue[Any] = queue.Queue()
    seen: list[Any] = []
    all_seen = threading.Event()

    def on_message(m: Any) -> None:
        seen.append(m)
        if len(seen) == 51:
            all_seen.set()
        if m == [0]:
            # By the time this runs, 50 more are on their way: the window
            # (4) is full and reading paused.
            answers.put(client.request(["from a callback"], timeout=5.0))

    client.add_onmessage_callback(on_message)
    for n in range(51):
        handle.send([n])
    assert get(answers, "the reply") == {"answer": ["from a callback"]}
    assert all_seen.wait(WAIT)
    assert seen == [[n] for n in range(51)]
