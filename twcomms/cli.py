"""
The C{twcomms} command (also C{python -m twcomms}).

C{twcomms serve --port 6000} runs a message hub in the foreground: every
message a client sends is relayed to every other client.

Thread: runs the reactor on the main thread; not for import into programs
that already run one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from twcomms.codecs import DATA_TYPES
from twcomms.errors import DecodeError
from twcomms.framing import DEFAULT_MAX_MESSAGE_SIZE
from twcomms.protocol import CloseReason, CommsProtocol

__all__ = ["main"]


class _Hub(Factory):
    """
    A minimal relay: every message goes to every other connection.
    """

    def __init__(self, data_type: str, byte_order: str, max_size: int) -> None:
        self.options = (data_type, byte_order, max_size)
        self.connections: list[CommsProtocol] = []

    def buildProtocol(self, addr: Any) -> CommsProtocol:
        data_type, byte_order, max_size = self.options
        return CommsProtocol(
            _HubMember(self), data_type, byte_order, max_message_size=max_size
        )


class _HubMember:
    def __init__(self, hub: _Hub) -> None:
        self.hub = hub
        self.proto: CommsProtocol | None = None

    def startReceivingMessages(self, sender: CommsProtocol) -> None:
        self.proto = sender
        self.hub.connections.append(sender)

    def messageReceived(self, message: Any) -> None:
        for other in self.hub.connections:
            if other is not self.proto:
                other.sendMessage(message)

    def messageDecodeFailed(self, error: DecodeError) -> None:
        pass

    def stopReceivingMessages(self, reason: CloseReason, failure: Failure) -> None:
        self.hub.connections.remove(self.proto)  # type: ignore[arg-type]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twcomms", description="json, string and binary messages over TCP"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a message hub in the foreground")
    serve.add_argument("--port", type=int, default=6000, help="TCP port (6000)")
    serve.add_argument(
        "--interface", default="0.0.0.0", help="address to listen on (all)"
    )
    serve.add_argument("--type", choices=DATA_TYPES, default="json")
    serve.add_argument("--byte-order", choices=("little", "big"), default="little")
    serve.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from twisted.internet import reactor as _reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    reactor: Any = _reactor
    hub = _Hub(args.type, args.byte_order, args.max_message_size)
    port = reactor.listenTCP(args.port, hub, backlog=1024, interface=args.interface)
    print(
        f"twcomms hub listening on {port.getHost().host}:{port.getHost().port}",
        file=sys.stderr,
        flush=True,
    )
    reactor.run()
    return 0
