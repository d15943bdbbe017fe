"""
The extended protocol with the threaded API: a client that authenticates,
asks the server (request/reply), is asked by it, and joins a room the
server's policy allows. Between twcomms peers only: a plain peer (the
original library, a Unity client) keeps the original bytes and gets none
of this.

    python examples/extensions.py            # runs both ends, port 0

Over a network, run the server with TLS (credentials cross the wire).
"""

from __future__ import annotations

import queue
import sys
from typing import Any

from twcomms import Client, RemoteError, Server
from twcomms.threaded import Peer

USERS = {"ann": "correct horse"}  # a real server checks a hashed store


def authenticate(credentials: Any, peer: Peer) -> str | None:
    # A worker thread: may block (a database, an LDAP server).
    if USERS.get(credentials.get("user")) == credentials.get("password"):
        return str(credentials["user"])
    return None  # refused: the client's connect() raises AuthenticationError


def serve() -> Server:
    server = Server(
        "127.0.0.1",
        0,
        authenticate=authenticate,
        require_auth=True,  # no events, no broadcasts before authenticating
        room_policy=lambda client, room, joining: not room.startswith("staff-"),
    )
    server.add_onrequest_callback(
        lambda client, numbers: {"sum": sum(numbers), "for": client.identity}
    )
    server.start()
    return server


def main() -> int:
    server = serve()
    try:
        with Client(
            "127.0.0.1",
            server.port,
            extensions=True,
            credentials={"user": "ann", "password": "correct horse"},
        ) as client:
            print("authenticated as", client.identity, flush=True)
            print("sum:", client.request([1, 2, 3]), flush=True)

            # The server asks too: the client answers on a worker thread.
            client.add_onrequest_callback(lambda question: {"status": "ok"})
            print("client says:", server.clients[0].request({"how": "are you"}))

            inbox: queue.Queue[Any] = queue.Queue()
            client.add_onmessage_callback(inbox.put)
            print("joined lab:", client.join("lab"), flush=True)
            server.broadcast({"to": "the lab"}, room="lab")
            print("room message:", inbox.get(timeout=5), flush=True)
            try:
                client.join("staff-only")
            except RemoteError as e:
                print("refused:", e.type, flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
