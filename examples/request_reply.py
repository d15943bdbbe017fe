"""
Request/reply with the threaded API over plain messages: the server answers
each request on the connection it came from (the sender handle), and the
client matches replies to requests by id. This works with any peer, the
original library and Unity clients included; between twcomms peers the
built-in request/reply (ids, timeouts, error replies, requests both ways)
does it for you: see examples/extensions.py.

    python examples/request_reply.py            # runs both ends, port 0
"""

from __future__ import annotations

import itertools
import queue
import sys
from typing import Any

from twcomms import Client, Server


def serve() -> Server:
    server = Server("127.0.0.1", 0)

    def answer(client: Any, request: dict[str, Any]) -> None:
        # client is the sender: reply to it only.
        client.send({"id": request["id"], "result": sum(request["numbers"])})

    server.add_onmessage_callback(answer, with_sender=True)
    server.start()
    return server


class Requester:
    """
    Sends requests and waits for the reply with the same id.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ids = itertools.count(1)
        self.replies: dict[int, queue.Queue[Any]] = {}
        client.add_onmessage_callback(self._reply)

    def _reply(self, reply: dict[str, Any]) -> None:
        waiter = self.replies.pop(reply["id"], None)
        if waiter is not None:
            waiter.put(reply["result"])

    def call(self, numbers: list[int], timeout: float = 5.0) -> Any:
        request_id = next(self.ids)
        waiter: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.replies[request_id] = waiter
        self.client.send({"id": request_id, "numbers": numbers})
        return waiter.get(timeout=timeout)


def main() -> int:
    server = serve()
    try:
        with Client("127.0.0.1", server.port) as client:
            requester = Requester(client)
            for numbers in ([1, 2, 3], [10, 20], list(range(100))):
                print(
                    f"sum({numbers[:5]}{'...' if len(numbers) > 5 else ''}) =",
                    requester.call(numbers),
                    flush=True,
                )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
