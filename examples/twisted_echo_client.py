"""
Connect to a twcomms server, send a few json messages, print the replies,
then stop.

    python examples/twisted_server.py --echo &
    python examples/twisted_echo_client.py --port 6000

It expects a server that sends each message back (C{--echo} above). It
exits with status 1 if it cannot connect or the replies do not all arrive
within C{--timeout} seconds.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import defer, task

from twcomms.client import CommsClientFactory, GaveUpError

MESSAGES = [
    {"n": 1, "text": "hello"},
    {"n": 2, "values": [1, 2.5, None, True]},
    {"n": 3, "text": "bye"},
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6000)
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

    client = CommsClientFactory("json", on_message=on_message)
    client.connectTCP(args.host, args.port, timeout=args.timeout)
    try:
        yield client.whenConnected()
    except GaveUpError as e:
        print(f"could not connect: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"connected to {args.host}:{args.port}")
    try:
        for message in MESSAGES:
            print(f"sent: {message!r}")
            client.send(message)
        yield all_replies.addTimeout(args.timeout, reactor)
    finally:
        yield client.stop()
    print("done")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # print lines as they happen
    task.react(main, sys.argv[1:])
