"""
A client's side of the extended protocol: the hello it opens with
(L{client_hello}) and the requests it makes once agreed (L{ask_room}).

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail

from twcomms.connection import CommsProtocol
from twcomms.connection.negotiation import ClientHello
from twcomms.errors import NotConnectedError, NotNegotiatedError
from twcomms.options import Options
from twcomms.wire.extended import Kind, check_room

__all__ = ["ask_room", "client_hello"]


def client_hello(options: Options, credentials: bytes | None) -> ClientHello:
    """
    The negotiation of a client that asks for every feature it knows (auth
    only with C{credentials}, the payload it sends), with its heartbeat
    options as its ask.
    """
    extended = options.extended
    features: dict[str, dict[str, Any]] = {"request": {}, "rooms": {}}
    if extended.heartbeat_interval is not None:
        features["heartbeat"] = {
            "interval": extended.heartbeat_interval,
            "timeout": extended.heartbeat_timeout,
        }
    if credentials is not None:
        features["auth"] = {}
    return ClientHello(
        features, options.hello.extension_timeout, credentials, options.extended
    )


def ask_room(
    proto: CommsProtocol | None, room: str, joining: bool, timeout: float | None
) -> Deferred[bool]:
    """
    Ask the server to put this client in C{room} (or take it out): a
    L{Deferred} firing with whether that changed anything, or failing with
    C{RemoteError} (C{RoomRefused}: the server's policy said no).
    """
    try:
        check_room(room)
        if proto is None or proto.closing:
            raise NotConnectedError("not connected; wait for whenConnected()")
        channel = proto.channel
        if channel is None or "rooms" not in channel.features:
            raise NotNegotiatedError(
                f"{proto.peer} did not agree client-side rooms (a plain "
                f"connection, or the server declined them)"
            )
        kind = Kind.JOIN if joining else Kind.LEAVE
        d = channel.ask(kind, room.encode("utf-8"), timeout)
    except Exception:
        return fail()
    return d.addCallback(lambda body: body == b"\x01")
