"""
A Twisted producer that paces itself to its clients: it broadcasts 1 MiB
binary "frames" (video, point clouds) as fast as the clients that keep up
take them, in bounded memory. A client that stops reading is dropped
after C{stall_timeout} seconds and the producer goes on without it.

    python examples/paced_broadcast.py --port 6000 --frames 1000

Try it with a reader (C{twcomms listen 127.0.0.1:6000 --type binary}) and
a client that never reads (C{nc 127.0.0.1 6000 > /dev/null &} then
C{kill -STOP} it): the listener keeps receiving; the stopped one is
closed as a slow consumer.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import defer, task

from twcomms import CommsServerFactory


@defer.inlineCallbacks
def main(reactor, *argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=6000)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1, help="wait for this many")
    args = parser.parse_args(list(argv))
    server = CommsServerFactory("binary", stall_timeout=5)
    arrived = defer.Deferred()
    server.on_connect.append(
        lambda client: (
            len(server.clients) >= args.clients
            and not arrived.called
            and arrived.callback(None)
        )
    )
    port = yield server.listen(f"tcp:{args.port}:interface=127.0.0.1")
    print(f"listening on {port.getHost().port}; waiting for {args.clients} clients")
    if args.clients > 0:
        yield arrived
    body = b"." * (1024 * 1024 - 4)
    for i in range(args.frames):
        server.broadcast(i.to_bytes(4, "little") + body)
        # Returns at once while every client keeps up; else waits until
        # they are under the low-water mark, or dropped as stalled.
        yield server.whenDrained()
    print(f"sent {args.frames} frames to {len(server.clients)} clients")
    yield server.stop()


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
