"""
The original "Python Comms" chat server, running on twcomms.

Only the import line differs from a script written for the original: every
message a client sends is broadcast to every client, and connections are
printed. Press Enter to stop.

    python examples/Example_Server.py [PORT]     (default 12345)
"""

import sys

from twcomms import Server

port = int(sys.argv[1]) if len(sys.argv) > 1 else 12345
myServer = Server(address="127.0.0.1", port=port, messageDataType="string")


def broadcast(message):
    """The server's message callback: relay to everyone."""
    myServer.broadcast(message)
    print(f"<server broadcast message: '{message}'>", flush=True)


def onConnection(client):
    print(f"{client.address}:{client.port} Connected", flush=True)


def onDisconnection(client):
    print(f"{client.address}:{client.port} Disconnected", flush=True)


myServer.add_onmessage_callback(broadcast)
myServer.add_onconnect_callback(onConnection)
myServer.add_onclose_callback(onDisconnection)
myServer.start()
print(f"listening on {myServer.address}:{myServer.port}", flush=True)

input("\tPRESS ENTER TO EXIT\n")
myServer.stop()
