"""
The Twisted API, server side: a factory that tracks its clients.

    from twisted.internet import reactor
    from twcomms.server.factory import CommsServerFactory

    def on_message(client, message):
        client.send({"echo": message})

    factory = CommsServerFactory("json", on_message=on_message)
    factory.listen("tcp:6000")
    reactor.run()

Each connected client is a L{ClientHandle} with a string C{id}. The
factory's clients live in a L{ClientRegistry}; L{CommsServerFactory.broadcast}
goes through it, so a registry that spans processes can replace the local one
without touching anything else.

Events are plain lists of callables on the factory (C{on_connect},
C{on_close}, C{on_message}, C{on_decode_error}); append to them or pass them
to the constructor. A callable that raises is logged with its traceback and
nothing else stops.

Thread: the reactor thread only. Nothing here blocks or starts a thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Protocol

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from twcomms.connection.protocol import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    CloseReason,
    CommsProtocol,
    ConnectionOptions,
    SlowConsumerPolicy,
    default_reactor,
)
from twcomms.errors import ClientGoneError, DecodeError, NotConnectedError
from twcomms.wire.codecs import Codec
from twcomms.wire.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Frame,
    check_size,
    struct_format,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "ClientHandle",
    "ClientRegistry",
    "CommsServerFactory",
    "LocalClientRegistry",
    "server_endpoint",
]

#: The listening backlog used unless an endpoint description gives one.
#: Twisted's default (50) makes a burst of connects wait seconds on SYN
#: retries.
DEFAULT_BACKLOG = 1024

_log = Logger()

# Endpoint types whose descriptions take a backlog= argument.
_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "ssl", "tls", "unix"})

ConnectCallback = Callable[["ClientHandle"], object]
CloseCallback = Callable[["ClientHandle", CloseReason], object]
MessageCallback = Callable[["ClientHandle", Any], object]
DecodeErrorCallback = Callable[["ClientHandle", DecodeError], object]


class ClientHandle:
    """
    The server's handle for one connected client.

    It is the L{twcomms.connection.protocol.MessageReceiver} of that client's
    connection: the protocol hands it messages and it passes them to the
    factory's callbacks.

    Thread: the reactor thread only.

    @ivar id: a string, unique and stable for this connection.
    @ivar address: the peer's host (a UNIX socket's path, or C{""}).
    @ivar port: the peer's port (0 for a UNIX socket).
    @ivar connected_at: when the connection was made (the factory's clock,
        seconds since the epoch).
    @ivar close_reason: why it closed, once it has.
    @ivar close_failure: what Twisted gave C{connectionLost}, once closed.
    @ivar protocol: the connection's L{CommsProtocol}.
    """

    def __init__(self, factory: CommsServerFactory, client_id: str) -> None:
        self.factory = factory
        self.id = client_id
        self.address = ""
        self.port = 0
        self.connected_at = 0.0
        self.close_reason: CloseReason | None = None
        self.close_failure: Failure | None = None
        self.protocol: CommsProtocol | None = None
        self._registered = False
        # when_closed() waiters; a list only while someone waits.
        self._lost: list[Deferred[None]] | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else f"closed: {self.close_reason}"
        return f"<ClientHandle {self.id} {self.address}:{self.port} {state}>"

    @property
    def connected(self) -> bool:
        """
        Whether the client is connected and accepting messages.
        """
        return self._registered and self.close_reason is None

    @property
    def messages_in(self) -> int:
        """
        Messages received from this client (decoded or not).
        """
        return self.protocol.messagesReceived if self.protocol else 0

    @property
    def bytes_in(self) -> int:
        """
        Payload bytes received from this client.
        """
        return self.protocol.bytesReceived if self.protocol else 0

    @property
    def messages_out(self) -> int:
        """
        Messages sent to this client.
        """
        return self.protocol.messagesSent if self.protocol else 0

    @property
    def bytes_out(self) -> int:
        """
        Payload bytes sent to this client.
        """
        return self.protocol.bytesSent if self.protocol else 0

    def send(self, message: Any) -> None:
        """
        Encode and send one message to this client.

        @raise ClientGoneError: the client has disconnected.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        @raise SlowConsumerError: the client's outbound limit would be
            exceeded.
        """
        proto = self._connectedProtocol()
        proto.sendMessage(message)

    def write_frame(self, frame: Frame) -> None:
        """
        Write an already-encoded L{Frame} (see L{CommsServerFactory.encode}).

        @raise ClientGoneError: the client has disconnected.
        @raise SlowConsumerError: the client's outbound limit would be
            exceeded.
        """
        self._connectedProtocol().writeFrame(frame)

    def close(self) -> None:
        """
        Close the connection once what was sent to it has been written.
        """
        if self.protocol is not None:
            self.protocol.close(CloseReason.CLOSED)

    def when_closed(self) -> Deferred[None]:
        """
        A L{Deferred} that fires (with L{None}) once the connection has
        closed and the close callbacks have run.
        """
        if self.close_failure is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        if self._lost is None:
            self._lost = []
        self._lost.append(d)
        return d

    def _connectedProtocol(self) -> CommsProtocol:
        proto = self.protocol
        if proto is None or not self.connected or proto._closing:
            raise ClientGoneError(self.id)
        return proto

    # -- MessageReceiver ------------------------------------------------------

    def startReceivingMessages(self, sender: CommsProtocol) -> None:
        self.protocol = sender
        peer = sender.transport.getPeer()
        if isinstance(peer, (IPv4Address, IPv6Address)):
            self.address, self.port = peer.host, peer.port
        elif isinstance(peer, UNIXAddress):
            self.address = peer.name.decode() if peer.name else ""
        else:
            self.address = str(peer)
        self.connected_at = self.factory.clock.seconds()
        self.factory._clientConnected(self)

    def messageReceived(self, message: Any) -> None:
        if not self._registered:
            return
        for f in self.factory.on_message:
            try:
                f(self, message)
            except Exception:
                _log.failure(
                    "on_message callback {callback!r} raised for a message from {id}",
                    callback=f,
                    id=self.id,
                )

    def messageDecodeFailed(self, error: DecodeError) -> None:
        self.factory._decodeFailed(self, error)

    def stopReceivingMessages(self, reason: CloseReason, failure: Failure) -> None:
        self.close_reason = reason
        self.close_failure = failure
        self.factory._clientDisconnected(self, reason, failure)
        waiters, self._lost = self._lost, None
        for d in waiters or ():
            d.callback(None)


class ClientRegistry(Protocol):
    """
    Where a server's connected clients are kept, and how a broadcast reaches
    them. L{LocalClientRegistry} keeps them in this process; a registry that
    also relays broadcasts to other server processes implements the same
    methods.

    Every method is called on the reactor thread.
    """

    def add(self, client: ClientHandle) -> None:
        """
        A client connected.
        """

    def remove(self, client: ClientHandle) -> None:
        """
        A client disconnected.
        """

    def get(self, client_id: str) -> ClientHandle | None:
        """
        The connected client with this id, or L{None}.
        """

    def __len__(self) -> int:
        """
        How many clients are connected (here).
        """

    def __iter__(self) -> Iterator[ClientHandle]:
        """
        The connected clients, in the order they connected.
        """

    def broadcast(self, frame: Frame, exclude: Collection[str]) -> int:
        """
        Send C{frame} to every client whose id is not in C{exclude}, in order
        with everything else sent to each; return how many clients it is
        for. It may be written when the current reactor turn ends rather
        than now (as L{LocalClientRegistry} batches). A client that cannot
        take it (gone, or a slow consumer) is skipped and logged; the others
        are unaffected.
        """


class LocalClientRegistry:
    """
    The clients connected to this process, in connection order.

    Small broadcasts are batched per reactor turn: each one is framed once
    and appended to the turn's batch, and when the turn ends (or before
    anything else is written to one of these clients, or a client comes or
    goes) the batch is joined once and written to each client in one
    C{write}. A server that broadcasts many small messages in one turn thus
    costs one write per client per turn, not one per client per message,
    and every client still sees its messages in the order they were sent.

    Thread: the reactor thread only.
    """

    def __init__(self) -> None:
        self._clients: dict[str, ClientHandle] = {}
        # This turn's small broadcasts (whole frames), for every client.
        self._batch: list[bytes] | None = None
        self._batchPayloadBytes = 0
        # One bound method for every protocol's _beforeWrite hook.
        self._flush = self.flush

    def add(self, client: ClientHandle) -> None:
        # A broadcast made before this client was registered is not its.
        self.flush()
        self._clients[client.id] = client
        if client.protocol is not None:
            client.protocol._beforeWrite = self._flush

    def remove(self, client: ClientHandle) -> None:
        self.flush()
        self._clients.pop(client.id, None)

    def get(self, client_id: str) -> ClientHandle | None:
        return self._clients.get(client_id)

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[ClientHandle]:
        return iter(list(self._clients.values()))

    def broadcast(self, frame: Frame, exclude: Collection[str]) -> int:
        parts = frame.parts
        if exclude or len(parts) != 1:
            # Larger payloads (written as header and payload) and broadcasts
            # that skip someone are written now, after this turn's batch.
            self.flush()
            return self._writeEach(frame, exclude)
        recipients = 0
        recipient: CommsProtocol | None = None
        for client in self._clients.values():
            proto = client.protocol
            if proto is None or proto._closing:
                continue
            if proto.writePaused:
                # Its outbound limit applies frame by frame: write now.
                self.flush()
                return self._writeEach(frame, exclude)
            recipients += 1
            recipient = proto
        if recipient is not None:
            batch = self._batch
            if batch is None:
                batch = self._batch = []
                # The connections' clock: the reactor, or a test's Clock.
                clock = recipient._clock or default_reactor()
                clock.callLater(0, self.flush)
            batch.append(parts[0])
            self._batchPayloadBytes += len(frame.payload)
        return recipients

    def flush(self) -> None:
        """
        Write this turn's batched broadcasts to every client now. Called
        when the turn ends, and before anything else is written to one of
        these clients (so each client's messages stay in order).
        """
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        count = len(batch)
        payloadBytes, self._batchPayloadBytes = self._batchPayloadBytes, 0
        data = batch[0] if count == 1 else b"".join(batch)
        del batch
        for client in list(self._clients.values()):
            proto = client.protocol
            if proto is None or proto._closing:
                continue
            try:
                proto.writeFrames(data, count, payloadBytes)
            except ConnectionError as e:
                _log.warn("broadcast skipped {client}: {error}", client=client, error=e)

    def _writeEach(self, frame: Frame, exclude: Collection[str]) -> int:
        sent = 0
        for client in list(self._clients.values()):
            if client.id in exclude:
                continue
            proto = client.protocol
            if proto is None:
                continue
            try:
                proto.writeFrame(frame)
            except NotConnectedError:
                continue
            except ConnectionError as e:
                _log.warn("broadcast skipped {client}: {error}", client=client, error=e)
                continue
            sent += 1
        return sent


class CommsServerFactory(ServerFactory, ConnectionOptions):
    """
    Builds a L{CommsProtocol} per connection and tracks the connected
    clients as L{ClientHandle}s.

    Thread: the reactor thread only.

    @ivar on_connect: callables C{f(client)}, called when a client connects.
    @ivar on_close: callables C{f(client, reason)}, called when it closes;
        C{client.close_failure} holds Twisted's failure.
    @ivar on_message: callables C{f(client, message)}, called for each
        decoded message, in order per client.
    @ivar on_decode_error: callables C{f(client, error)}, called for each
        frame that did not decode (L{DecodeError}; C{error.payload} holds
        the raw bytes). The connection stays up.
    @ivar clients: the L{ClientRegistry}.
    @ivar ports: the listening ports opened by L{listen}.
    """

    # Connections are logged by twcomms itself, with the peer's address.
    noisy = False

    def __init__(
        self,
        messageDataType: str | Codec = "json",
        byteOrder: str = "little",
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_clients: int | None = None,
        idle_timeout: float | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        outbound_limit: int | None = None,
        slow_consumer_policy: SlowConsumerPolicy | str = SlowConsumerPolicy.CLOSE,
        registry: ClientRegistry | None = None,
        reactor: Any = None,
        on_connect: Iterable[ConnectCallback] | ConnectCallback = (),
        on_close: Iterable[CloseCallback] | CloseCallback = (),
        on_message: Iterable[MessageCallback] | MessageCallback = (),
        on_decode_error: Iterable[DecodeErrorCallback] | DecodeErrorCallback = (),
    ) -> None:
        """
        @param messageDataType: C{"json"} (default), C{"string"}, C{"binary"},
            or a L{Codec}.
        @param byteOrder: C{"little"} (default) or C{"big"}.
        @param max_message_size: largest payload accepted or sent (64 MiB).
        @param max_clients: connections beyond this many are closed at once,
            with a logged reason. L{None} (default): no limit.
        @param idle_timeout: close clients that send nothing for this many
            seconds. L{None} (default): never.
        @param handshake_timeout: over TLS, abort a connection whose
            handshake has not completed after this many seconds (close
            reason C{handshake timeout}); L{None}: never. Default 10.
        @param outbound_limit: bytes that may be queued to a client that is
            not reading (while its transport asks us to pause); at least
            C{max_message_size + 4}. Default: C{max_message_size} + 1 MiB.
        @param slow_consumer_policy: what happens when a client would exceed
            it: C{"close"} (default; close it, reason C{slow consumer}) or
            C{"raise"} (keep it; sends to it raise L{SlowConsumerError}).
        @param registry: where clients are kept; default a new
            L{LocalClientRegistry}.
        @param reactor: the reactor to listen with and the clock for
            timestamps and idle timeouts; default the global reactor.
        @param on_connect: a callable or callables for L{on_connect}.
        @param on_close: a callable or callables for L{on_close}.
        @param on_message: a callable or callables for L{on_message}.
        @param on_decode_error: a callable or callables for L{on_decode_error}.
        """
        self._setConnectionOptions(
            messageDataType,
            byteOrder,
            max_message_size,
            idle_timeout,
            outbound_limit,
            slow_consumer_policy,
            handshake_timeout,
        )
        self._structFormat = struct_format(byteOrder)
        if max_clients is not None and (
            isinstance(max_clients, bool)
            or not isinstance(max_clients, int)
            or max_clients < 0
        ):
            raise ValueError(
                f"max_clients must be an int >= 0 or None, not {max_clients!r}"
            )
        self.max_clients = max_clients
        self.clients: ClientRegistry = (
            registry if registry is not None else LocalClientRegistry()
        )
        self._reactor = reactor
        self.on_connect: list[ConnectCallback] = _callbacks(on_connect)
        self.on_close: list[CloseCallback] = _callbacks(on_close)
        self.on_message: list[MessageCallback] = _callbacks(on_message)
        self.on_decode_error: list[DecodeErrorCallback] = _callbacks(on_decode_error)
        self.ports: list[IListeningPort] = []
        self.rejected = 0
        self._closedTotals = [0, 0, 0, 0]
        # Every connection until it is lost, clients or not (yet).
        self._connections: set[CommsProtocol] = set()
        self._stopping = False

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

    def buildProtocol(self, addr: Any) -> CommsProtocol:
        # 128 random bits as 32 hex digits, unique across processes (as
        # uuid4().hex, without building a UUID object per connection).
        handle = ClientHandle(self, os.urandom(16).hex())
        proto = self._buildCommsProtocol(handle, self.clock)
        proto.factory = self
        handle.protocol = proto
        self._connections.add(proto)
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
        d: Deferred[IListeningPort] = endpoint.listen(self)

        def listening(port: IListeningPort) -> IListeningPort:
            self.ports.append(port)
            _log.info("twcomms server listening on {address}", address=port.getHost())
            return port

        d.addCallback(listening)
        return d

    def stop_listening(self) -> Deferred[Any]:
        """
        Stop accepting connections; connected clients stay.
        """
        ports, self.ports = self.ports, []
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
        for proto in list(self._connections):
            handle: ClientHandle = proto.receiver  # type: ignore[assignment]
            closing.append(handle.when_closed())
            if handle._registered:
                proto.close(CloseReason.SERVER_STOPPING)
            else:
                # Not a client yet (a TLS handshake in progress): nothing of
                # ours to flush.
                proto.abort(CloseReason.SERVER_STOPPING)
        d = gatherResults([stopped, *closing], consumeErrors=True)
        if timeout is not None and closing:

            def abort_stragglers() -> None:
                left = list(self._connections)
                if left:
                    _log.warn(
                        "stopping: {count} connections did not close within "
                        "{timeout} seconds (peers not reading); aborting them",
                        count=len(left),
                        timeout=timeout,
                    )
                for proto in left:
                    proto.abort(CloseReason.SERVER_STOPPING)

            call = self.clock.callLater(timeout, abort_stragglers)

            def cancel(result: object) -> object:
                if call.active():
                    call.cancel()
                return result

            d.addBoth(cancel)
        return d.addCallback(lambda _: None)

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
        codec = self.codec
        payload = codec.encode_value(message) if as_value else codec.encode(message)
        check_size(len(payload), self.max_message_size)
        return Frame(payload, self._structFormat)

    def broadcast(
        self,
        message: Any,
        exclude: Iterable[ClientHandle | str] | ClientHandle | str = (),
        *,
        as_value: bool = False,
    ) -> int:
        """
        Send C{message} to every connected client except C{exclude}. It is
        encoded once. A client that cannot take it (a slow consumer) is
        skipped and logged; the others still get it.

        @param exclude: a client, an id, or several.
        @param as_value: see L{encode}.
        @return: how many clients it is sent to (small broadcasts are
            written when the reactor turn ends, one write per client for
            the turn's broadcasts; see L{LocalClientRegistry}).
        @raise EncodeError: the message cannot be encoded (nothing sent).
        @raise MessageTooLargeError: it is over the maximum message size.
        """
        frame = self.encode(message, as_value=as_value)
        if isinstance(exclude, (ClientHandle, str)):
            exclude = (exclude,)
        ids = {c.id if isinstance(c, ClientHandle) else c for c in exclude}
        return self.clients.broadcast(frame, ids)

    def send(self, client: ClientHandle | str, message: Any) -> None:
        """
        Send C{message} to one client, by handle or id.

        @raise ClientGoneError: that client is not connected.
        """
        client_id = client.id if isinstance(client, ClientHandle) else client
        handle = self.clients.get(client_id)
        if handle is None:
            raise ClientGoneError(client_id)
        handle.send(message)

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

    def _clientConnected(self, client: ClientHandle) -> None:
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
        client._registered = True
        self.clients.add(client)
        _log.info(
            "client {id} connected from {peer}",
            id=client.id,
            peer=client.protocol.peer,
        )
        for f in self.on_connect:
            _call(f, "on_connect", client)

    def _decodeFailed(self, client: ClientHandle, error: DecodeError) -> None:
        if not client._registered:
            return
        for f in self.on_decode_error:
            _call(f, "on_decode_error", client, error)

    def _clientDisconnected(
        self, client: ClientHandle, reason: CloseReason, failure: Failure
    ) -> None:
        if client.protocol is not None:
            self._connections.discard(client.protocol)
        if not client._registered:
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
        for f in self.on_close:
            _call(f, "on_close", client, reason)


def server_endpoint(
    reactor: Any, where: str | int | tuple[str, int] | IStreamServerEndpoint
) -> IStreamServerEndpoint:
    """
    Make a server endpoint from a description, a port, an C{(address,
    port)} pair, or an endpoint (returned as is). TCP gets a backlog of
    L{DEFAULT_BACKLOG} unless the description sets one.
    """
    if IStreamServerEndpoint.providedBy(where):
        return where
    if isinstance(where, bool):
        raise TypeError("a port must be an int")
    if isinstance(where, int):
        return TCP4ServerEndpoint(reactor, where, backlog=DEFAULT_BACKLOG)
    if isinstance(where, tuple):
        address, port = where
        if ":" in address:
            return TCP6ServerEndpoint(
                reactor, port, backlog=DEFAULT_BACKLOG, interface=address
            )
        return TCP4ServerEndpoint(
            reactor, port, backlog=DEFAULT_BACKLOG, interface=address
        )
    if isinstance(where, str):
        description = where
        if description.isdigit():
            description = f"tcp:{description}"
        kind = description.split(":", 1)[0]
        if kind in _BACKLOG_KINDS and "backlog=" not in description:
            description += f":backlog={DEFAULT_BACKLOG}"
        return serverFromString(reactor, description)  # type: ignore[no-any-return]
    raise TypeError(f"cannot listen on {where!r}")


def _callbacks(value: Any) -> list[Any]:
    if callable(value):
        return [value]
    return list(value)


def _call(f: Callable[..., object], event: str, *args: Any) -> None:
    try:
        f(*args)
    except Exception:
        _log.failure("{event} callback {callback!r} raised", event=event, callback=f)
