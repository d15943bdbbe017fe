"""
The C{--app} the browser tests give C{twcomms serve}
(C{--app tests.browser.hub_app:install}): besides the hub's own mode
(C{broadcast} relays each message to the other clients), it

  - answers every request with C{{"echo": message}};
  - on C{{"ask": question}} from a client, asks that client back
    (C{factory.request}) and sends it C{{"answer": reply}}, or
    C{{"answer_error": [type, message]}} if the request failed;
  - on C{{"to_room": room, "message": m}}, broadcasts C{m} to the members of
    C{room} only;
  - authenticates C{{"user": name, "password": "secret"}} as C{name}
    (offered to extended clients; required with C{--require-auth yes}).

It runs in the hub process, on the reactor thread.
"""

from __future__ import annotations

from typing import Any

from twcomms.errors import RemoteError
from twcomms.server import CommsServerFactory
from twcomms.server.handle import ClientHandle


def authenticate(credentials: Any, client: ClientHandle) -> str | None:
    if isinstance(credentials, dict) and credentials.get("password") == "secret":
        return str(credentials.get("user"))
    return None


def install(factory: CommsServerFactory) -> None:
    factory.on_request.append(lambda client, message: {"echo": message})
    factory.access.authenticate = authenticate

    def on_message(client: ClientHandle, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if "ask" in message:
            asked = factory.request(client, message["ask"], timeout=5)

            def answered(reply: Any) -> None:
                factory.send(client, {"answer": reply})

            def failed(failure: Any) -> None:
                error = failure.value
                if isinstance(error, RemoteError):
                    detail = [error.type, error.remote_message]
                else:
                    detail = [type(error).__name__, str(error)]
                factory.send(client, {"answer_error": detail})

            asked.addCallbacks(answered, failed)
        elif "to_room" in message:
            factory.broadcast(message.get("message"), room=message["to_room"])

    factory.on_message.append(on_message)
