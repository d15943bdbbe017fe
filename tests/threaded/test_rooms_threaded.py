"""
Rooms on the threaded API, over real connections: join and leave from
any thread (callbacks included), room broadcasts reach members only, in
order with sends made before and after them, and a client leaves every
room when it disconnects.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from twcomms import ClientGoneError, ConnectedClient, InvalidRoomError

from .raw import WAIT, assert_empty, get


def _clients(make_server, make_client, count: int):
    server = make_server()
    handles: queue.Queue[ConnectedClient] = queue.Queue()
    server.add_onconnect_callback(handles.put)
    peers = []
    for _ in range(count):
        inbox: queue.Queue[Any] = queue.Queue()
        client = make_client(server.port)
        client.add_onmessage_callback(inbox.put)
        peers.append((get(handles, "a connection"), inbox, client))
    return server, peers


def test_room_broadcasts_reach_members_only(make_server, make_client):
    server, [(a, a_in, _), (b, b_in, _), (c, c_in, _)] = _clients(
        make_server, make_client, 3
    )
    assert server.join(a, "lab") is True
    assert server.join(a.id, "lab") is False  # already in it
    assert b.join("lab") is True
    assert server.members("lab") == [a, b]
    assert a.rooms == frozenset({"lab"}) and server.rooms() == ["lab"]
    server.broadcast({"n": 1}, room="lab")
    server.broadcast({"n": 2}, room="lab", exclude=b)
    server.broadcast({"all": 3})
    assert [get(a_in, "a's"), get(a_in, "a's"), get(a_in, "a's")] == [
        {"n": 1},
        {"n": 2},
        {"all": 3},
    ]
    assert [get(b_in, "b's"), get(b_in, "b's")] == [{"n": 1}, {"all": 3}]
    assert get(c_in, "c's") == {"all": 3}
    assert_empty(c_in, "room message to a non-member")
    assert server.leave(b, "lab") is True
    assert server.members("lab") == [a]


def test_rooms_and_sends_keep_the_order_they_were_made_in(make_server, make_client):
    server, [(a, a_in, _), (b, b_in, _)] = _clients(make_server, make_client, 2)
    a.join("x")
    a.join("y")
    b.join("y")
    server.broadcast({"m": 1}, room="x")
    a.send({"m": 2})
    server.broadcast({"m": 3}, room="y")
    server.sendTo({"m": 4}, a)
    server.broadcast({"m": 5})
    a.leave("x")
    server.broadcast({"m": 6}, room="x")  # a has left: nobody
    server.broadcast({"m": 7}, room="y")
    assert [get(a_in, "a's") for _ in range(5)] == [
        {"m": n} for n in (1, 2, 3, 4, 5)
    ] and get(a_in, "a's") == {"m": 7}
    assert [get(b_in, "b's") for _ in range(3)] == [{"m": 3}, {"m": 5}, {"m": 7}]
    assert_empty(a_in, "a message after the last")


def test_a_client_leaves_every_room_when_it_disconnects(make_server, make_client):
    server, [(a, _, a_client), (b, _, _)] = _clients(make_server, make_client, 2)
    closed: queue.Queue[Any] = queue.Queue()
    server.add_onclose_callback(closed.put)
    a.join("x")
    a.join("y")
    b.join("y")
    a_client.close(timeout=WAIT)
    assert get(closed, "a's close") is a
    assert server.rooms_of(a) == frozenset()
    assert server.rooms() == ["y"] and server.members("y") == [b]
    with pytest.raises(ClientGoneError):
        a.join("z")
    with pytest.raises(ClientGoneError):
        server.join("no such id", "z")


def test_room_names_are_checked_at_once(make_server, make_client):
    server, [(a, _, _)] = _clients(make_server, make_client, 1)
    for bad in ("", "two words", "x" * 200):
        with pytest.raises(InvalidRoomError):
            a.join(bad)
        with pytest.raises(InvalidRoomError):
            server.broadcast({"n": 1}, room=bad)
    assert server.rooms() == []


def test_joining_from_callbacks_and_many_threads(make_server, make_client):
    server = make_server()
    joined: queue.Queue[ConnectedClient] = queue.Queue()

    def on_message(client: ConnectedClient, message: Any) -> None:
        # A callback joins its client to the room it asks for.
        client.join(message["join"])
        client.send({"joined": message["join"]})
        joined.put(client)

    server.add_onmessage_callback(on_message, with_sender=True)
    peers = []
    for i in range(4):
        inbox: queue.Queue[Any] = queue.Queue()
        client = make_client(server.port)
        client.add_onmessage_callback(inbox.put)
        client.send({"join": f"r{i % 2}"})
        assert get(inbox, "the join's answer") == {"joined": f"r{i % 2}"}
        peers.append(get(joined, "a joined client"))

    # Eight threads each put every client in its own room and take it out
    # of half of them: the view stays consistent.
    def churn(t: int) -> None:
        for client in peers:
            server.join(client, f"t{t}")
            if t % 2:
                server.leave(client, f"t{t}")

    threads = [threading.Thread(target=churn, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(server.rooms()) == ["r0", "r1", "t0", "t2", "t4", "t6"]
    for t in (0, 2, 4, 6):
        assert server.members(f"t{t}") == peers
    assert [p.rooms for p in peers] == [
        frozenset({f"r{i % 2}", "t0", "t2", "t4", "t6"}) for i in range(4)
    ]
