"""
The twcomms client protocol under Twisted's C{ClientService}: the way a
Twisted program connects through an endpoint and stays connected.

    python examples/twisted_server.py --echo &
    python examples/twisted_client_service.py --port 6000

C{CommsClientFactory} reconnects by itself only through C{connectTCP} /
C{connectSSL} / C{connectUNIX}. Through an endpoint (any
C{clientFromString} description: C{tcp:}, C{tls:}, C{unix:}, ...),
C{ClientService} does the reconnecting and C{client.forEndpoint()} builds
the protocols, with the client's callbacks.
"""

from __future__ import annotations

import argparse
import sys

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString

from twcomms.client import CommsClientFactory

MESSAGES = [{"n": 1, "via": "ClientService"}, {"n": 2, "via": "ClientService"}]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="client endpoint description")
    parser.add_argument("--port", type=int, default=6000)
    parser.add_argument("--attempts", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=10.0)
    return parser.parse_args(argv)


@defer.inlineCallbacks
def main(reactor, *argv):
    args = parse_args(list(argv))
    replies: list[object] = []
    all_replies: defer.Deferred[list[object]] = defer.Deferred()

    def on_message(client: CommsClientFactory, message: object) -> None:
        print(f"reply: {message!r}")
        replies.append(message)
        if len(replies) == len(MESSAGES):
            all_replies.callback(replies)

    client = CommsClientFactory(
        "json",
        on_message=on_message,
        on_connect=lambda client: print("connected"),
        on_close=lambda client, reason: print(f"closed: {reason}"),
    )
    endpoint = clientFromString(reactor, args.endpoint or f"tcp:127.0.0.1:{args.port}")
    service = ClientService(
        endpoint,
        client.forEndpoint(),
        retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=2.0),
    )
    service.startService()
    try:
        # Fails after that many failed attempts instead of waiting forever.
        protocol = yield service.whenConnected(failAfterFailures=args.attempts)
    except Exception as e:
        print(f"could not connect: {e}", file=sys.stderr)
        # This failure is delivered from inside the service's state machine,
        # which refuses a re-entrant stopService(): stop on the next turn.
        yield task.deferLater(reactor, 0, service.stopService)
        raise SystemExit(1) from None
    try:
        for message in MESSAGES:
            print(f"sent: {message!r}")
            protocol.sendMessage(message)
        yield all_replies.addTimeout(args.timeout, reactor)
    finally:
        yield service.stopService()
    print("done")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # print lines as they happen
    task.react(main, sys.argv[1:])
