"""
Two hubs on one Redis act as one: a client of each, a broadcast from one
hub reaching both, and a message sent by client id across hubs.

    pip install 'twcomms[redis]'
    redis-server &                                    # or any Redis you have
    python examples/two_hubs.py redis://127.0.0.1:6379/0

In production each hub is its own process on its own machine:
    twcomms serve --port 6000 --backplane redis://10.0.0.5:6379/0 --hub lab
"""

from __future__ import annotations

import queue
import sys
from typing import Any

from twcomms import Client, ConnectedClient, Server


def main(url: str) -> int:
    hubs = [
        Server("127.0.0.1", 0, backplane=url, hub="example", keep_process_alive=False)
        for _ in range(2)
    ]
    clients: list[Client] = []
    try:
        for hub in hubs:
            hub.start()
        joined: queue.Queue[ConnectedClient] = queue.Queue()
        hubs[1].add_onconnect_callback(joined.put)
        inboxes = []
        for hub in hubs:
            inbox: queue.Queue[Any] = queue.Queue()
            client = Client("127.0.0.1", hub.port, keep_process_alive=False)
            client.add_onmessage_callback(inbox.put)
            client.connect()
            clients.append(client)
            inboxes.append(inbox)
        on_second = joined.get(timeout=5)

        hubs[0].broadcast({"hello": "everyone"})
        for name, inbox in zip(("first", "second"), inboxes, strict=True):
            print(f"{name} hub's client got:", inbox.get(timeout=5), flush=True)

        # By id, from the first hub, to a client of the second.
        hubs[0].sendTo({"just": "you"}, on_second.id)
        print("second hub's client got:", inboxes[1].get(timeout=5), flush=True)
    finally:
        for client in clients:
            client.close()
        for hub in hubs:
            hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"))
