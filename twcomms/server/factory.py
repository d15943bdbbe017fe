"""
The Twisted API, server side: a factory that tracks its clients (see the
README's "The Twisted API" for an example).

Each connected client is a L{ClientHandle} with a string C{id}. The
factory's clients live in a L{ClientRegistry}; L{CommsServerFactory.broadcast}
goes through it, so a registry that spans processes can replace the local one
without touching anything else.

Events are plain lists of callables on the factory (C{on_connect},
C{on_close}, C{on_message}, C{on_decode_error}); append to them or pass them
to the constructor. A callable that raises is logged with its traceback and
nothing else stops.

Thread: the reactor thread only. Nothing here blocks or starts a thread.

(Over 500 lines: one class -- its lifecycle, sending, rooms, requests,
registration (after authentication, when required) and events; what each
does at length is in its parts: L{twcomms.server.handle},
L{twcomms.server.registry}, L{twcomms.server.access} and
L{twcomms.server.endpoints}.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import (
    Deferred,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from twcomms.connection import CloseReason, CommsProtocol
from twcomms.connection.events import call_each, callback_list
from twcomms.connection.negotiation import ServerHello
from twcomms.connection.timers import Timeout, cancel_call, default_reactor
from twcomms.errors import ClientGoneError, DecodeError
from twcomms.options import (
    AccessOptions,
    ConnectionOptions,
    ExtensionOptions,
    Options,
    ServerOptions,
    WebOptions,
)
from twcomms.options.readback import ConnectionReadback
from twcomms.server.access import Access, Authenticator, RoomPolicy
from twcomms.server.endpoints import server_endpoint
from twcomms.server.handle import ClientHandle
from twcomms.server.pacing import when_drained
from twcomms.server.registry import ClientRegistry, LocalClientRegistry, check_room
from twcomms.web import Monitor, SharedPortFactory, make_site
from twcomms.wire.codecs import Codec
from twcomms.wire.framing import Frame, check_size

__all__ = ["SERVER_SECTIONS", "CommsServerFactory"]

_log = Logger()

#: The option sections a server uses.
SERVER_SECTIONS = (
    ConnectionOptions,
    ServerOptions,
    ExtensionOptions,
    AccessOptions,
    WebOptions,
)

ConnectCallback = Callable[[ClientHandle], object]
CloseCallback = Callable[[ClientHandle, CloseReason], object]
MessageCallback = Callable[[ClientHandle, Any], object]
DecodeErrorCallback = Callable[[ClientHandle, DecodeError], object]
RequestHandler = Callable[[ClientHandle, Any], Any]
RequestDoneCallback = Callable[[ClientHandle, float, bool], object]


class CommsServerFactory(ConnectionReadback, ServerFactory):
    """
    Builds a L{CommsProtocol} per connection and tracks the connected
    clients as L{ClientHandle}s.

    Thread: the reactor thread only.

    @ivar options: the L{Options} in force (its C{connection} and C{server}
        sections apply).
    @ivar on_connect: callables C{f(client)}, called when a client connects.
    @ivar on_close: callables C{f(client, reason)}, called when it closes;
        C{client.close_failure} holds Twisted's failure.
    @ivar on_message: callables C{f(client, message)}, called for each
        decoded message, in order per client.
    @ivar on_decode_error: callables C{f(client, error)}, called for each
        frame that did not decode (L{DecodeError}; C{error.payload} holds
        the raw bytes). The connection stays up.
    @ivar on_request: callables C{f(client, message)} answering an extended
        client's requests, in order: the first to return something other
        than L{None} (or a Deferred firing with it) is the reply; one that
        raises sends an error reply (its type name and message).
    @ivar on_request_done: callables C{f(client, seconds, failed)}, called
        once a request of C{client} is answered (the dashboard's and
        metrics' request figures).
    @ivar access: what extended clients are granted (L{Access}).
    @ivar clients: the L{ClientRegistry}.
    @ivar ports: the listening ports opened by L{listen} (and
        L{listen_web}).
    @ivar web_ports: those of them that serve browsers only.
    @ivar connections: every connection until it is lost, clients or not
        yet (a TLS handshake in progress).
    """

    # Connections are logged by twcomms itself, with the peer's address.
    noisy = False

    def __init__(
        self,
        messageDataType: str | Codec | None = None,
        byteOrder: str | None = None,
        *,
        options: Options | None = None,
        registry: ClientRegistry | None = None,
        backplane: ClientRegistry | None = None,
        reactor: Any = None,
        on_connect: Iterable[ConnectCallback] | ConnectCallback = (),
        on_close: Iterable[CloseCallback] | CloseCallback = (),
        on_message: Iterable[MessageCallback] | MessageCallback = (),
        on_decode_error: Iterable[DecodeErrorCallback] | DecodeErrorCallback = (),
        on_request: Iterable[RequestHandler] | RequestHandler = (),
        authenticate: Authenticator | None = None,
        room_policy: RoomPolicy | None = None,
        **keywords: Any,
    ) -> None:
        """
        @param messageDataType: C{"json"} (default), C{"string"}, C{"binary"},
            or a L{Codec}.
        @param byteOrder: C{"little"} (default) or C{"big"}.
        @param options: an L{Options} to start from (default: defaults).
        @param keywords: any option of L{ConnectionOptions} or
            L{ServerOptions} (C{max_message_size}, C{max_clients},
            C{idle_timeout}, C{handshake_timeout}, C{outbound_limit},
            C{slow_consumer_policy}, ...), or a whole section
            (C{connection=}, C{server=}); see C{docs/options.md}.
        @param registry: where clients are kept; default a new
            L{LocalClientRegistry}.
        @param backplane: the same, by the name a backplane goes by:
            C{backplane=RedisBackplane(url, hub="lab")} makes this server
            one node of several (L{twcomms.backplane}).
        @param reactor: the reactor to listen with and the clock for
            timestamps and idle timeouts; default the global reactor.
        @param on_connect: a callable or callables for L{on_connect}.
        @param on_close: a callable or callables for L{on_close}.
        @param on_message: a callable or callables for L{on_message}.
        @param on_decode_error: a callable or callables for L{on_decode_error}.
        @param on_request: a callable or callables for L{on_request}.
        @param authenticate: C{authenticate(credentials, client)} for
            extended clients: an identity (a C{str}, set as
            C{client.identity}) or L{None} to refuse; it may raise or
            return a Deferred. Without it, authentication is not offered.
        @param room_policy: C{room_policy(client, room, joining)}: whether
            an extended client may join (or leave) C{room}; may return a
            Deferred. Default: any room.
        @raise TypeError: an unknown option (the message suggests the
            closest one).
        @raise ValueError: an option out of range.
        """
        if messageDataType is not None:
            keywords["messageDataType"] = messageDataType
        if byteOrder is not None:
            keywords["byteOrder"] = byteOrder
        self.options = Options.build(
            options, door="CommsServerFactory", sections=SERVER_SECTIONS, **keywords
        )
        if backplane is not None:
            if isinstance(backplane, str):
                raise TypeError(
                    "CommsServerFactory takes backplane=RedisBackplane(url, "
                    "hub=...) (from twcomms.backplane); a URL is a "
                    "ClusterOptions option, which CommsServerFactory does not "
                    "use (the threaded Server and twistd comms take it)"
                )
            if registry is not None:
                raise TypeError("give registry= or backplane=, not both")
            registry = backplane
        self.clients: ClientRegistry = (
            registry if registry is not None else LocalClientRegistry()
        )
        self._reactor = reactor
        self.on_connect: list[ConnectCallback] = callback_list(on_connect)
        self.on_close: list[CloseCallback] = callback_list(on_close)
        self.on_message: list[MessageCallback] = callback_list(on_message)
        self.on_decode_error: list[DecodeErrorCallback] = callback_list(on_decode_error)
        self.on_request: list[RequestHandler] = callback_list(on_request)
        self.on_request_done: list[RequestDoneCallback] = []
        self.ports: list[IListeningPort] = []
        self.rejected = 0
        self._closedTotals = [0, 0, 0, 0]
        self.connections: set[CommsProtocol] = set()
        self._site: Any = None
        self._webSite: Any = None
        self._monitor: Monitor | None = None
        self.web_ports: list[IListeningPort] = []
        self._shared: SharedPortFactory | None = None
        self._webListening = False
        self._stopping = False
        self._registryRunning = False
        self.access = Access(self, authenticate, room_policy)
        # One for every connection (it keeps no state per connection).
        self._hello = (
            ServerHello(self.access.grant, self.options.extended)
            if self.options.access.accept_extensions
            else None
        )

    @property
    def max_clients(self) -> int | None:
        return self.options.server.max_clients

    @property
    def reactor(self) -> Any:
        """
        The reactor this factory uses (the global one unless one was given).
        """
        if self._reactor is None:
            self._reactor = default_reactor()
        return self._reactor

    @reactor.setter
    def reactor(self, reactor: Any) -> None:
        self._reactor = reactor

    @property
    def clock(self) -> IReactorTime:
        """
        The clock for timestamps and idle timeouts (the reactor).
        """
        return self.reactor  # type: ignore[no-any-return]

    # -- building connections ---------------------------------------------

    def buildProtocol(
        self, addr: Any, options: ConnectionOptions | None = None
    ) -> CommsProtocol:
        """
        A connection for a client at C{addr}, with these connection options
        (default: the server's; the WebSocket gateway's are little-endian).
        """
        # 128 random bits as 32 hex digits, unique across processes (as
        # uuid4().hex, without building a UUID object per connection).
        handle = ClientHandle(self, os.urandom(16).hex())
        proto = CommsProtocol(
            handle,
            options=options if options is not None else self.options.connection,
            clock=self.clock,
            negotiation=self._hello,
        )
        proto.factory = self
        handle.protocol = proto
        self.connections.add(proto)
        return proto

    # -- listening --------------------------------------------------------

    def listen(
        self, where: str | int | tuple[str, int] | IStreamServerEndpoint
    ) -> Deferred[IListeningPort]:
        """
        Start listening.

        @param where: a Twisted endpoint description (C{"tcp:6000"},
            C{"tcp:6000:interface=127.0.0.1"},
            C{"ssl:6001:privateKey=key.pem:certKey=cert.pem"},
            C{"unix:/tmp/comms.sock"}), a port number (all interfaces), an
            C{(address, port)} pair, or an endpoint. TCP listens with a
            backlog of L{DEFAULT_BACKLOG} unless the description sets one.
        @return: a L{Deferred} firing with the L{IListeningPort} (whose
            C{getHost().port} tells the port when 0 was asked for), or
            failing (e.g. C{CannotListenError} for a port in use).
        """
        endpoint = server_endpoint(self.reactor, where)
        self._stopping = False
        try:
            serving = self.listening_factory()
        except (ImportError, ValueError):
            return fail()
        web = self.options.gateway.web
        if web is not None and not self._webListening:
            self._webListening = True
            return self.listen_web(web).addCallback(lambda _: self.listen(where))

        def listening(port: IListeningPort) -> IListeningPort:
            self.ports.append(port)
            _log.info(
                "twcomms server listening on {address}{web}",
                address=port.getHost(),
                web=" (TCP clients and browsers)" if serving is not self else "",
            )
            return port

        # The registry is ready (a broker connected, say) before the first
        # client can arrive.
        started = self._startRegistry()
        d: Deferred[IListeningPort] = started.addCallback(
            lambda _: endpoint.listen(serving)
        )
        return d.addCallback(listening)

    def listen_web(
        self, where: str | int | tuple[str, int] | IStreamServerEndpoint
    ) -> Deferred[IListeningPort]:
        """
        Listen for browsers only (the gateway at C{/ws}, the JavaScript
        client at C{/twcomms.js}): what C{web=} does on the first
        L{listen}. Needs C{twcomms[web]}.
        """
        endpoint = server_endpoint(self.reactor, where)
        try:
            site = self.web_site
        except (ImportError, ValueError, OSError):
            return fail()

        def listening(port: IListeningPort) -> IListeningPort:
            self.ports.append(port)
            self.web_ports.append(port)
            _log.info(
                "twcomms server listening for browsers on {address} "
                "(ws://.../ws, /twcomms.js)",
                address=port.getHost(),
            )
            return port

        started = self._startRegistry()
        d: Deferred[IListeningPort] = started.addCallback(
            lambda _: endpoint.listen(site)
        )
        return d.addCallback(listening)

    @property
    def site(self) -> Any:
        """
        The C{twisted.web} site a shared port's browsers get: the gateway
        and the script (made once; see L{twcomms.web.make_site}).

        @raise ImportError: C{twcomms[web]} is not installed.
        """
        if self._site is None:
            self._site = make_site(self)
        return self._site

    @property
    def web_site(self) -> Any:
        """
        The site a browsers-only listener (C{web=}, L{listen_web}) serves:
        L{site}'s, and the dashboard and C{/metrics} when the options ask
        for them.

        @raise ImportError: C{twcomms[web]} is not installed.
        """
        if self._webSite is None:
            self._webSite = make_site(self, monitoring=True)
        return self._webSite

    @property
    def monitor(self) -> Monitor:
        """
        What the dashboard and metrics show that the factory does not count
        itself (close reasons, requests, rates): a L{Monitor}, made once.
        """
        if self._monitor is None:
            self._monitor = Monitor(self)
        return self._monitor

    def listening_factory(self) -> Any:
        """
        What a port of this server serves: this factory, or with
        C{web_shared} a L{SharedPortFactory} (TCP clients and browsers).
        C{twistd comms} listens with it.

        @raise ValueError: the port cannot be shared (see
            L{twcomms.web.check_unambiguous}).
        @raise ImportError: C{twcomms[web]} is not installed.
        """
        if not self.options.gateway.web_shared:
            return self
        if self._shared is None:
            self._shared = SharedPortFactory(self, self.site)
        return self._shared

    def _startRegistry(self) -> Deferred[None]:
        try:
            self.access.check()
        except ValueError:
            return fail()
        if self._registryRunning:
            return succeed(None)
        self._registryRunning = True
        return maybeDeferred(self.clients.start)

    def startFactory(self) -> None:
        """
        Twisted starts the factory when a port starts listening through an
        endpoint or service rather than L{listen} (C{twistd}): start the
        registry then, if it is not running.
        """
        if not self._registryRunning:
            self._startRegistry().addErrback(
                lambda f: _log.failure("the client registry failed to start", f)
            )

    def stop_listening(self) -> Deferred[Any]:
        """
        Stop accepting connections; connected clients stay.
        """
        ports, self.ports = self.ports, []
        self.web_ports = []
        return gatherResults([d for p in ports if (d := p.stopListening()) is not None])

    def stop(self, timeout: float | None = 10.0) -> Deferred[Any]:
        """
        Stop listening and close every client (reason C{server stopping})
        after what was sent to it is written. Connections still open after
        C{timeout} seconds (a client that does not read what is queued to
        it) are aborted, with a warning. The L{Deferred} fires (with
        L{None}) once all are closed.
        """
        self._stopping = True
        stopped = self.stop_listening()
        closing = []
        for proto in list(self.connections):
            handle: ClientHandle = proto.receiver  # type: ignore[assignment]
            closing.append(handle.when_closed())
            if handle.registered:
                proto.close(CloseReason.SERVER_STOPPING)
            else:
                # Not a client yet (a TLS handshake in progress): nothing of
                # ours to flush.
                proto.abort(CloseReason.SERVER_STOPPING)
        d = gatherResults([stopped, *closing], consumeErrors=True)
        d.addCallback(lambda _: self._stopRegistry())
        if timeout is not None and closing:

            def abort_stragglers() -> None:
                if self.connections:
                    _log.warn(
                        "stopping: {count} connections did not close within "
                        "{timeout} seconds (peers not reading); aborting them",
                        count=len(self.connections),
                        timeout=timeout,
                    )
                self.abort_all(CloseReason.SERVER_STOPPING)

            call = self.clock.callLater(timeout, abort_stragglers)

            def cancel(result: object) -> object:
                cancel_call(call)
                return result

            d.addBoth(cancel)
        return d.addCallback(lambda _: None)

    def _stopRegistry(self) -> Deferred[None]:
        if not self._registryRunning:
            return succeed(None)
        self._registryRunning = False
        return maybeDeferred(self.clients.stop)

    def abort_all(self, reason: CloseReason = CloseReason.SERVER_STOPPING) -> None:
        """
        Abort every connection now (what is not yet written is discarded).
        """
        for proto in list(self.connections):
            proto.abort(reason)

    # -- sending ----------------------------------------------------------

    def encode(self, message: Any, *, as_value: bool = False) -> Frame:
        """
        Encode C{message} once into a L{Frame} that can be written to any
        number of this factory's clients (see L{ClientHandle.write_frame}).

        @param as_value: C{message} is a decoded value to pass on (a relay,
            an echo): in json mode a C{str} is then a JSON string, not JSON
            text (see L{Codec.encode_value}).
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        """
        connection = self.options.connection
        codec = connection.codec
        payload = codec.encode_value(message) if as_value else codec.encode(message)
        check_size(len(payload), connection.max_message_size)
        return Frame(payload, connection.structFormat)

    def broadcast(
        self,
        message: Any,
        exclude: Iterable[ClientHandle | str] | ClientHandle | str = (),
        *,
        room: str | None = None,
        as_value: bool = False,
    ) -> int:
        """
        Send C{message} to every connected client (or every member of
        C{room}) except C{exclude}. It is encoded once. A client that cannot
        take it (a slow consumer) is skipped and logged; the others still
        get it.

        @param exclude: a client, an id, or several.
        @param room: only the members of this room (none: nobody).
        @param as_value: see L{encode}.
        @return: how many clients it is sent to (small broadcasts are
            written when the reactor turn ends, one write per client for
            the turn's broadcasts; see L{LocalClientRegistry}).
        @raise EncodeError: the message cannot be encoded (nothing sent).
        @raise MessageTooLargeError: it is over the maximum message size.
        @raise InvalidRoomError: C{room} is not a valid room name.
        """
        if room is not None:
            check_room(room)
        frame = self.encode(message, as_value=as_value)
        if isinstance(exclude, (ClientHandle, str)):
            exclude = (exclude,)
        ids = {c.id if isinstance(c, ClientHandle) else c for c in exclude}
        if room is None:
            # (Registries written before rooms take two arguments.)
            return self.clients.broadcast(frame, ids)
        return self.clients.broadcast(frame, ids, room)

    def whenDrained(self, room: str | None = None) -> Deferred[None]:
        """
        Pace a broadcasting loop to its healthy clients: a L{Deferred} that
        fires at once if no client (of C{room}) has more than the
        C{drain_high_water} option's bytes waiting for it, else once every
        one is under C{drain_low_water} or was dropped (a client that stops
        reading is closed after C{stall_timeout}: see
        L{twcomms.server.pacing}).

            for frame in frames:
                server.broadcast(frame)
                yield server.whenDrained()
        """
        handles = self.clients if room is None else self.clients.members(room)
        writers = [
            h.protocol.writer
            for h in handles
            if h.protocol is not None and h.protocol.writer is not None
        ]
        marks = self.options.server
        return when_drained(writers, marks.drain_high_water, marks.drain_low_water)

    # -- rooms ------------------------------------------------------------

    def join(self, client: ClientHandle | str, room: str) -> bool:
        """
        Put a connected client (a handle or its id) in C{room}; a room is
        made by its first member and gone when its last leaves. C{True} if
        the client was not in it already (joining again does nothing).

        @raise ClientGoneError: that client is not connected.
        @raise InvalidRoomError: C{room} is not a valid room name.
        """
        check_room(room)
        return self.clients.join(self._connected(client), room)

    def leave(self, client: ClientHandle | str, room: str) -> bool:
        """
        Take a client out of C{room}; C{True} if it was in it. A client
        leaves every room when it disconnects.
        """
        handle = self.clients.get(_id(client))
        return handle is not None and self.clients.leave(handle, room)

    def rooms_of(self, client: ClientHandle | str) -> frozenset[str]:
        """
        The rooms a client is in (none once it has disconnected).
        """
        handle = self.clients.get(_id(client))
        return frozenset() if handle is None else self.clients.rooms_of(handle)

    def members(self, room: str) -> list[ClientHandle]:
        """
        The clients in C{room}, in the order they joined.
        """
        return self.clients.members(room)

    def rooms(self) -> list[str]:
        """
        The rooms that have members.
        """
        return self.clients.rooms()

    def _connected(self, client: ClientHandle | str) -> ClientHandle:
        client_id = _id(client)
        handle = self.clients.get(client_id)
        if handle is None:
            raise ClientGoneError(client_id)
        return handle

    def send(self, client: ClientHandle | str, message: Any) -> None:
        """
        Send C{message} to one client, by handle or id.

        @raise ClientGoneError: that client is not connected.
        """
        self._connected(client).send(message)

    def send_to(self, client_id: str, message: Any) -> Deferred[None]:
        """
        Send C{message} to the client with this id on any node: here, or,
        with a backplane registry, on whichever node holds it. A
        L{Deferred} firing once it is on its way, or failing with
        L{ClientGoneError} when no node holds that client.
        """
        try:
            frame = self.encode(message)
            route = getattr(self.clients, "send_to", None)
            if route is not None:
                return route(client_id, frame)  # type: ignore[no-any-return]
            self._connected(client_id).write_frame(frame)
        except Exception:
            return fail()
        return succeed(None)

    def request(
        self, client: ClientHandle | str, message: Any, timeout: float | None = -1.0
    ) -> Deferred[Any]:
        """
        Send C{message} as a request to an extended client; a L{Deferred}
        for its reply (see L{CommsProtocol.request}; default timeout: the
        C{request_timeout} option). It fails with L{ClientGoneError} if
        that client is not connected, and C{NotNegotiatedError} for a plain
        client.
        """
        try:
            proto = self._connected(client).protocol
            assert proto is not None
            return proto.request(message, timeout)
        except Exception:
            return fail()

    def totals(self) -> tuple[int, int, int, int]:
        """
        Messages in, bytes in, messages out, bytes out, over every client
        this factory has had (for stats; counted per connection, summed
        here, so nothing is added per message).
        """
        m_in, b_in, m_out, b_out = self._closedTotals
        for c in self.clients:
            m_in += c.messages_in
            b_in += c.bytes_in
            m_out += c.messages_out
            b_out += c.bytes_out
        return m_in, b_in, m_out, b_out

    # -- events from the handles ----------------------------------------

    def clientConnected(self, client: ClientHandle) -> None:
        """
        C{client}'s connection is made: register it, or refuse it (server
        stopping, C{max_clients}); with C{require_auth}, only once it has
        authenticated (L{clientAuthenticated}). Called by the handle.
        """
        access = self.options.access
        if access.require_auth and not self._stopping:
            proto = client.protocol
            assert proto is not None
            client.auth_timer = Timeout(
                access.auth_timeout, lambda: self._authTimedOut(client), self.clock
            )
            client.auth_timer.start()
            return
        self._register(client)

    def _authTimedOut(self, client: ClientHandle) -> None:
        if client.protocol is not None and not client.registered:
            _log.warn(
                "closing connection from {peer}: it did not authenticate "
                "within {timeout} seconds (auth timeout)",
                peer=client.protocol.peer,
                timeout=self.options.access.auth_timeout,
            )
            client.protocol.abort(CloseReason.AUTH_TIMEOUT)

    def clientAuthenticated(self, client: ClientHandle, identity: str) -> None:
        """
        C{client} authenticated as C{identity}: with C{require_auth}, it
        becomes a client now. Called by L{Access}.
        """
        assert client.protocol is not None
        client.protocol.identity = identity
        _log.info(
            "client {id} authenticated as {identity}", id=client.id, identity=identity
        )
        if client.auth_timer is not None:
            client.auth_timer.stop()
            client.auth_timer = None
        if not client.registered and not client.protocol.closing:
            # (An authenticate() that answered after the connection closed
            # -- auth timeout, client gone -- registers nobody.)
            self._register(client)

    def _register(self, client: ClientHandle) -> None:
        assert client.protocol is not None
        if self._stopping:
            _log.info(
                "closing connection from {peer}: the server is stopping",
                peer=client.protocol.peer,
            )
            client.protocol.close(CloseReason.SERVER_STOPPING)
            return
        if self.max_clients is not None and len(self.clients) >= self.max_clients:
            self.rejected += 1
            _log.warn(
                "closing connection from {peer}: the server already has its "
                "maximum of {max_clients} clients",
                peer=client.protocol.peer,
                max_clients=self.max_clients,
            )
            client.protocol.close(CloseReason.MAX_CLIENTS)
            return
        client.registered = True
        self.clients.add(client)
        _log.info(
            "client {id} connected from {peer}",
            id=client.id,
            peer=client.protocol.peer,
        )
        call_each(self.on_connect, "on_connect", client)

    def clientDecodeFailed(self, client: ClientHandle, error: DecodeError) -> None:
        """
        A frame from C{client} did not decode. Called by the handle.
        """
        if client.registered:
            call_each(self.on_decode_error, "on_decode_error", client, error)

    def clientDisconnected(
        self, client: ClientHandle, reason: CloseReason, failure: Failure
    ) -> None:
        """
        C{client}'s connection is lost. Called by the handle.
        """
        if client.protocol is not None:
            self.connections.discard(client.protocol)
        if client.auth_timer is not None:
            client.auth_timer.stop()
        if not client.registered:
            return
        self.clients.remove(client)
        totals = self._closedTotals
        totals[0] += client.messages_in
        totals[1] += client.bytes_in
        totals[2] += client.messages_out
        totals[3] += client.bytes_out
        _log.info(
            "client {id} ({address}:{port}) disconnected: {reason}",
            id=client.id,
            address=client.address,
            port=client.port,
            reason=reason,
        )
        call_each(self.on_close, "on_close", client, reason)


def _id(client: ClientHandle | str) -> str:
    return client.id if isinstance(client, ClientHandle) else client
