"""
Rooms in hub mode: an C{--app} for C{twcomms serve} / C{twistd comms}.

    twcomms serve --port 6000 --mode sink --app examples.rooms_app:install

(from the repository root, so C{examples} can be imported). Clients say
which room they join with C{{"join": "lab"}} (answered with
C{{"joined": "lab"}}) and leave with C{{"leave": "lab"}}; any other
message, C{{"room": "lab", ...}}, goes to the other members of that room.
C{--mode sink} turns the hub's own relay to everyone off; the app relays.

(Clients that ask for rooms themselves, without an app, come with the
negotiated extensions; plain clients cannot ask, so an app decides.)
"""

from __future__ import annotations

from typing import Any

from twcomms import ClientHandle, CommsServerFactory, InvalidRoomError


def install(server: CommsServerFactory) -> None:
    """
    Attach the room protocol to the hub's server (reactor thread).
    """

    def on_message(client: ClientHandle, message: Any) -> None:
        if not isinstance(message, dict):
            return
        try:
            if "join" in message:
                server.join(client, message["join"])
                client.send({"joined": message["join"]})
            elif "leave" in message:
                server.leave(client, message["leave"])
            elif "room" in message and message["room"] in server.rooms_of(client):
                server.broadcast(message, room=message["room"], exclude=client)
        except InvalidRoomError as e:
            client.send({"error": str(e)})

    server.on_message.append(on_message)
