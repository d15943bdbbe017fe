"""
The extended protocol in the threaded API: answering requests
(L{Requests}), a client's requests and rooms (L{ClientRequests}), a
server's requests and the callables it runs for extended clients
(L{ServerRequests}). Mixed into C{Client} and C{Server}.

Thread: every public method may be called from any thread; the user's
callables (request callbacks, C{authenticate}, C{room_policy}) run on
worker threads, never on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from twcomms.client import CommsClientFactory
from twcomms.errors import ClientGoneError
from twcomms.options import Options
from twcomms.server import ClientHandle, CommsServerFactory
from twcomms.threaded.callbacks import Callbacks
from twcomms.threaded.connected import ConnectedClient, Peer
from twcomms.threaded.dispatch import WorkerPool, in_pool
from twcomms.threaded.eventloop import EventLoop

if TYPE_CHECKING:
    from twcomms.threaded.rooms import Rooms

__all__ = ["ClientRequests", "Requests", "ServerRequests", "any_room"]


class Requests:
    """
    Request callbacks, for a C{Client} or a C{Server}.
    """

    options: Options
    _loop: EventLoop
    _pool: WorkerPool
    _request_callbacks: Callbacks

    def add_onrequest_callback(
        self, func: Callable[..., object], with_sender: bool = True
    ) -> None:
        """
        Answer an extended peer's requests (C{request()} on its side) with
        C{func(sender, message)} -- or C{func(message)} -- returning the
        reply. Callbacks are asked in order; the first that returns
        something other than L{None} answers. One that raises sends the
        peer an error reply (its exception's type name and message, never
        a traceback; the peer's C{request()} raises C{RemoteError}).

        Requests are answered on worker threads, beside the connection's
        message callbacks (not queued behind them), so a callback blocked
        on its own C{request()} does not hold up an answer.

        @raise TypeError: C{func} can be called neither way.
        """
        self._request_callbacks.add(func, with_sender)

    def remove_onrequest_callback(self, func: Any = None, index: int = 0) -> bool:
        """
        Remove a request callback (as L{remove_onconnect_callback}).
        """
        return self._request_callbacks.remove(func, index)

    def _answer(self, sender: Any, message: Any) -> Deferred[Any]:
        """
        A request from C{sender}: its answer, worked out on a worker thread.
        Reactor thread.
        """
        return in_pool(
            self._pool,
            self._loop.reactor.callFromThread,
            self._request_callbacks.answer,
            sender,
            message,
        )

    def _request_timeout(self, timeout: float | None) -> float | None:
        if timeout is not None and timeout < 0:
            return self.options.extended.request_timeout
        return timeout


class ClientRequests(Requests):
    """
    A C{Client}'s side of the extended protocol.
    """

    _factory: CommsClientFactory

    @property
    def extended(self) -> bool:
        """
        Whether the connection agreed the extended protocol
        (C{extensions=True}, and a twcomms server that answered).
        """
        proto = self._factory.connection
        return proto is not None and proto.extended

    @property
    def identity(self) -> str | None:
        """
        Who the server says we are, once authenticated (L{None}: not).
        """
        return self._factory.identity

    def request(self, message: Any, timeout: float | None = -1.0) -> Any:
        """
        Send C{message} to the server as a request and return its reply
        (decoded as a message). Replies are matched by id and delivered
        ahead of the message callbacks and the receive window, so calling
        this inside a callback does not deadlock.

        @param timeout: seconds to wait for the reply; default the
            C{request_timeout} option (30 s); L{None}: no limit.
        @raise RequestTimeoutError: no reply in time.
        @raise RemoteError: the server's handler raised (its type name and
            message).
        @raise NotNegotiatedError: a plain connection (no C{extensions=True},
            or a server that does not speak them).
        @raise NotConnectedError: not connected.
        @raise ReactorThreadError: called on the reactor thread.
        """
        return self._loop.call(
            self._factory.request,
            message,
            self._request_timeout(timeout),
            timeout=None,
            what="Client.request()",
        )

    def join(self, room: str, timeout: float | None = -1.0) -> bool:
        """
        Ask the server to put this client in C{room} (the server's
        C{room_policy} decides); C{True} if it was not in it.

        @raise RemoteError: refused (type C{RoomRefused}) or an invalid
            name (C{InvalidRoomError}).
        @raise NotNegotiatedError: a plain connection.
        @raise ReactorThreadError: called on the reactor thread.
        """
        return bool(
            self._loop.call(
                self._factory.join,
                room,
                self._request_timeout(timeout),
                timeout=None,
                what="Client.join()",
            )
        )

    def leave(self, room: str, timeout: float | None = -1.0) -> bool:
        """
        Ask the server to take this client out of C{room} (as L{join}).
        """
        return bool(
            self._loop.call(
                self._factory.leave,
                room,
                self._request_timeout(timeout),
                timeout=None,
                what="Client.leave()",
            )
        )


class ServerRequests(Requests):
    """
    A C{Server}'s side of the extended protocol.
    """

    _factory: CommsServerFactory
    _clients: dict[str, ConnectedClient]
    _rooms: Rooms

    def request(
        self,
        client: ConnectedClient | str,
        message: Any,
        timeout: float | None = -1.0,
    ) -> Any:
        """
        Send C{message} as a request to an extended client and return its
        reply (see C{Client.request}).

        @raise ClientGoneError: that client is not connected.
        @raise NotNegotiatedError: it is a plain client (the original's, a
            Unity client, or one without C{extensions=True}).
        @raise RequestTimeoutError: no reply in time.
        @raise RemoteError: its handler raised.
        @raise ReactorThreadError: called on the reactor thread.
        """
        target = client.id if isinstance(client, ConnectedClient) else client
        return self._loop.call(
            self._factory.request,
            target,
            message,
            self._request_timeout(timeout),
            timeout=None,
            what="Server.request()",
        )

    def _on_request(self, handle: ClientHandle, message: Any) -> Any:
        client = self._clients.get(handle.id)
        if client is None:
            raise ClientGoneError(handle.id)
        return self._answer(client, message)

    def _off(
        self, f: Callable[..., Any], credentials: Any, handle: ClientHandle
    ) -> Any:
        peer = Peer(handle.id, handle.address, handle.port)
        return in_pool(
            self._pool, self._loop.reactor.callFromThread, f, credentials, peer
        )

    def _policy(
        self, f: Callable[..., Any], handle: ClientHandle, room: str, joining: bool
    ) -> Any:
        client = self._clients.get(handle.id)
        if client is None:
            raise ClientGoneError(handle.id)

        def decide() -> bool:
            # A worker thread: the user's policy, then this server's view of
            # the rooms (what rooms_of() and members() read) follows.
            allowed = bool(f(client, room, joining))
            if allowed:
                # (The registry is changed by the reactor, once this returns.)
                if joining:
                    self._rooms.join(client, room, carry=False)
                else:
                    self._rooms.leave(client, room, carry=False)
            return allowed

        return in_pool(self._pool, self._loop.reactor.callFromThread, decide)


def any_room(client: ConnectedClient, room: str, joining: bool) -> bool:
    return True
