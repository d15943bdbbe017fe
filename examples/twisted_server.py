"""
A chat hub on Twisted: every message a client sends is relayed to every
other client.

    python examples/twisted_server.py --port 6000

Clients connect, then send and receive json messages (see
C{examples/twisted_echo_client.py}). With C{--echo} each message goes back
to its sender instead, which is what the two client examples expect:

    python examples/twisted_server.py --echo &
    python examples/twisted_echo_client.py

C{--port 0} picks a free port; the port is printed. Stop with Ctrl-C: the
server closes its clients (close reason "server stopping") before it exits.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import defer, task

from twcomms.server import ClientHandle, CommsServerFactory


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=6000, help="TCP port (6000)")
    parser.add_argument("--interface", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--echo", action="store_true", help="send each message back to its sender"
    )
    return parser.parse_args(argv)


@defer.inlineCallbacks
def main(reactor, *argv):
    args = parse_args(list(argv))

    def on_connect(client: ClientHandle) -> None:
        print(f"connected: {client.address}:{client.port} (id {client.id})")

    def on_close(client: ClientHandle, reason: object) -> None:
        print(f"closed: {client.address}:{client.port} (id {client.id}): {reason}")

    def on_message(client: ClientHandle, message: object) -> None:
        if args.echo:
            client.send(message)
        else:
            server.broadcast(message, exclude=client)

    server = CommsServerFactory(
        "json", on_connect=on_connect, on_close=on_close, on_message=on_message
    )
    port = yield server.listen(f"tcp:{args.port}:interface={args.interface}")
    host = port.getHost()
    print(f"listening on {host.host}:{host.port}", flush=True)

    # On Ctrl-C (or SIGTERM) the reactor waits for this before it stops.
    reactor.addSystemEventTrigger("before", "shutdown", server.stop)
    yield defer.Deferred()  # serve until the reactor is stopped


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # print lines as they happen
    task.react(main, sys.argv[1:])
