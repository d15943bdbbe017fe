"""
The original "Python Comms" chat clients, running on twcomms.

Two clients join the server of Example_Server.py. Client 1 asks you what to
say whenever it connects or hears something (it calls input() inside a
callback, which blocks only its own connection); client 2 prints what it
hears. Typing "quit" closes both.

    python examples/Example_Clients.py [PORT]    (default 12345)
"""

import sys

from twcomms import Client

port = int(sys.argv[1]) if len(sys.argv) > 1 else 12345


def requestResponse(message):
    """Client 1's callback, for connecting and for each message."""
    if message != "quit":
        res = input("CL1, What do you have to say? > ")
        myClient1.send(res)
        if res == "quit":
            myClient1.close()


def echo(message):
    """Client 2's callback."""
    print(f"CL2: {message}", flush=True)
    if message == "quit":
        myClient2.close()


def onclose(client):
    print(f"Connection to {client.address}:{client.port} closed", flush=True)


myClient1 = Client(
    address="127.0.0.1", port=port, messageDataType="string", autoReconnect=False
)
myClient2 = Client(address="127.0.0.1", port=port, messageDataType="string")

myClient1.add_onmessage_callback(requestResponse)
myClient2.add_onmessage_callback(echo)
myClient1.add_onclose_callback(onclose)
myClient2.add_onclose_callback(onclose)

myClient1.add_onconnect_callback(requestResponse)  # to get the ball rolling

myClient2.connect()
myClient1.connect()
