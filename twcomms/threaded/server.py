"""
The threaded C{Server} (the original's API) and the L{ConnectedClient}
its callbacks get.

Thread: every public method may be called from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from functools import partial
from threading import get_ident
from typing import Any

from twisted.logger import Logger

from twcomms.connection import CloseReason, PauseReason
from twcomms.errors import ClientGoneError, ConnectionClosedError
from twcomms.options import ConnectionOptions, FlowControl, Options, ServerOptions
from twcomms.server import ClientHandle, CommsServerFactory
from twcomms.threaded.base import Endpoint, given_options
from twcomms.threaded.callbacks import Inbox
from twcomms.threaded.dispatch import Outbox, SerialQueue, WorkerPool
from twcomms.threaded.eventloop import EventLoop
from twcomms.threaded.flow import DrainTracker, ReceiveWindow, SendWindow

__all__ = ["ConnectedClient", "Server"]

#: The option sections a threaded Server takes.
SECTIONS = (ConnectionOptions, ServerOptions, FlowControl)

_log = Logger()


class ConnectedClient:
    """
    A client connected to a threaded L{Server}, as the server's callbacks
    see it (the original passed a C{Client}; its examples read C{address}
    and C{port} and call C{send()}).

    Thread: any thread may use it.

    @ivar id: a string, unique for this connection.
    @ivar address: the peer's host.
    @ivar port: the peer's port.
    @ivar close_reason: why it closed, once it has (a L{CloseReason}).
    """

    def __init__(
        self,
        handle: ClientHandle,
        *,
        flow: FlowControl,
        loop: EventLoop,
        pool: WorkerPool,
        encode: Callable[[Any], bytes],
        outbox: Outbox,
        on_message: Callable[..., None],
    ) -> None:
        """
        Made by a L{Server} (reactor thread) for each client: C{flow}, the
        C{loop} and the C{pool} are the server's, C{encode} its encoder,
        C{outbox} carries sends to the reactor, C{on_message(client,
        message)} fires its message callbacks.
        """
        self.id = handle.id
        self.address = handle.address
        self.port = handle.port
        self.connected_at = handle.connected_at
        self.close_reason: CloseReason | None = None
        self._handle = handle  # reactor thread only
        self._loop = loop
        self._encode = encode
        self._outbox = outbox
        self._closed = False
        self._received_bytes = 0
        self.events = SerialQueue(pool)
        self._window = SendWindow.for_flow(flow)
        self._drain = DrainTracker(self._window)
        self._receive = ReceiveWindow(
            flow.receive_high_count, flow.receive_high_bytes, loop.call_soon
        )
        self._inbox = Inbox(
            self.events,
            self._receive,
            lambda message: on_message(self, message),
            loop.reactor.callLater,
        )

    def __repr__(self) -> str:
        state = "connected" if self.connected else f"closed: {self.close_reason}"
        return f"<ConnectedClient {self.id} {self.address}:{self.port} {state}>"

    @property
    def connected(self) -> bool:
        """
        Whether this client is still connected.
        """
        return not self._closed

    def send(self, message: Any) -> None:
        """
        Send one message to this client. It is encoded now (so a bad value
        raises here) and written by the reactor thread. It returns at once
        unless this client is not reading and over the send high-water mark
        (see L{FlowControl}); then it waits for it to catch up.

        @raise ClientGoneError: the client has disconnected.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        @raise SendTimeoutError: it did not catch up within the send timeout.
        """
        if self._closed:
            raise ClientGoneError(self.id)
        payload = self._encode(message)
        try:
            if get_ident() == self._loop.reactor_ident:
                # Never wait on the reactor thread: it drains the window.
                self._window.add(len(payload) + 4)
            else:
                self._window.acquire(len(payload) + 4, self._describe)
        except ConnectionClosedError:
            raise ClientGoneError(self.id) from None
        self._outbox.put((self, payload))

    def close(self) -> None:
        """
        Close this client's connection after what was sent to it is
        written. Does not wait.
        """
        self._outbox.put((self, None))

    def _describe(self) -> str:
        return f"client {self.id} ({self.address}:{self.port})"


class Server(Endpoint):
    """
    A TCP server for json, string or binary messages, with broadcast and
    connect/close/message events; the original's API.

    Thread: any thread may call any method; see L{twcomms.threaded}.

    @ivar address: the address given.
    @ivar port: the port given; after L{start}, the port listened on (so
        port 0 tells the chosen port).
    """

    def __init__(
        self,
        address: str,
        port: int,
        messageDataType: str | None = None,
        byteOrder: str | None = None,
        sendMostRecent: bool = True,
        *,
        listen: str | None = None,
        options: Options | None = None,
        keep_process_alive: bool = True,
        event_loop: EventLoop | None = None,
        pool: WorkerPool | None = None,
        **keywords: Any,
    ) -> None:
        """
        @param address: the interface to listen on (C{"0.0.0.0"}: all IPv4;
            C{"::"}: all IPv6; C{"127.0.0.1"}: this machine only).
        @param port: the TCP port; 0 picks a free one.
        @param messageDataType: C{"json"} (default), C{"string"} or
            C{"binary"}: how received messages are decoded (see
            C{docs/protocol.md}). L{None}: as C{options} says (C{"json"}).
        @param byteOrder: C{"little"} (default) or C{"big"}; both ends must
            agree. L{None}: as C{options} says (C{"little"}).
        @param sendMostRecent: accepted for compatibility; it has no effect
            (it had none in the original).
        @param listen: a Twisted endpoint description to listen on instead
            of C{address}/C{port} (C{"tcp:6000:interface=::"},
            C{"ssl:6001:privateKey=key.pem:certKey=cert.pem"},
            C{"unix:/run/comms.sock"}).
        @param options: an L{Options} to start from.
        @param keywords: any option of L{ConnectionOptions},
            L{ServerOptions} or L{FlowControl} (C{max_message_size},
            C{max_clients}, C{idle_timeout}, C{outbound_limit},
            C{send_timeout}, ...), or a whole section (C{flow=FlowControl(...)});
            see C{docs/options.md}. C{broadcast} never blocks for a slow
            client; C{outbound_limit} closes it.
        @param keep_process_alive: while started, keep the process alive
            after the main script ends (the original's behaviour; default).
        """
        given_options(keywords, messageDataType=messageDataType, byteOrder=byteOrder)
        super().__init__(
            "Server", SECTIONS, options, keywords, event_loop, pool, keep_process_alive
        )
        self.address = address
        self.port = port
        self.sendMostRecent = sendMostRecent
        self._listen = listen
        self._factory = CommsServerFactory(
            options=self.options,
            on_connect=self._on_connect,
            on_close=self._on_close,
            on_message=self._on_message,
        )
        self._lock = threading.Lock()
        self._clients: dict[str, ConnectedClient] = {}
        # While stop() runs: the event queues of the clients it closed.
        self._stopping_queues: list[SerialQueue] | None = None
        # One outbox for the whole server keeps each thread's sends and
        # broadcasts in the order they were made.
        self._touched: set[ConnectedClient] = set()
        self._outbox = Outbox(self._loop.call_soon, self._write, self._flushed)
        self._started = False
        self._loop.register(self)

    def __repr__(self) -> str:
        state = "started" if self._started else "stopped"
        return f"<Server {self.address}:{self.port} {state}>"

    @property
    def started(self) -> bool:
        """
        Whether the server is listening.
        """
        return self._started

    # -- lifecycle --------------------------------------------------------

    def start(self, timeout: float | None = 10.0) -> None:
        """
        Start listening. Returns once listening.

        @raise twisted.internet.error.CannotListenError: the address cannot
            be listened on (e.g. the port is in use); the original retried
            forever, this says so at once.
        @raise ReactorThreadError: called on the reactor thread.
        """
        with self._lock:
            if self._started:
                return
        reactor = self._loop.start()
        self._loop.check_not_reactor_thread("Server.start()")
        self._factory.reactor = reactor
        where: Any = (
            self._listen if self._listen is not None else (self.address, self.port)
        )
        port = self._loop.call(
            self._factory.listen, where, timeout=timeout, what="Server.start()"
        )
        with self._lock:
            self._started = True
            self._done.clear()
            host = port.getHost()
            if hasattr(host, "port"):
                self.port = host.port
        if self._keep_alive:
            self._loop.hold(self)

    def stop(self, timeout: float | None = 10.0) -> None:
        """
        Stop listening and close every client, after what was sent before
        this call is written. Returns once they are closed; a client that
        has not taken it all within C{timeout} seconds is aborted (the rest
        is discarded, with a warning). Stopping twice does nothing.

        @raise ReactorThreadError: called on the reactor thread.
        """
        self._loop.check_not_reactor_thread("Server.stop()")
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopping_queues = []
        try:
            self._finish(
                self._stop_in_reactor,
                partial(self._factory.abort_all, CloseReason.SERVER_STOPPING),
                timeout,
                "Server.stop()",
                "clients",
            )
        finally:
            self._done.set()
            with self._lock:
                queues, self._stopping_queues = self._stopping_queues, None
            # Hold the process until the close events the stop queued (one
            # per client, each on its client's queue) have run.
            self._release_after(queues or [])

    def _stop_in_reactor(self) -> Any:
        self._outbox.flush()
        return self._factory.stop()

    def _at_exit(self) -> None:
        if self._started and not self._loop.in_reactor_thread():
            self.stop(timeout=2.0)

    def serve_forever(self) -> None:
        """
        Start (if needed) and block until stopped. Ctrl-C stops the server
        cleanly and returns.
        """
        self.start()
        try:
            while not self._done.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.stop()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sending ----------------------------------------------------------

    @property
    def clients(self) -> list[ConnectedClient]:
        """
        The connected clients, in the order they connected.
        """
        with self._lock:
            return list(self._clients.values())

    def broadcast(
        self,
        message: Any,
        exclude: Iterable[ConnectedClient | str] | ConnectedClient | str = (),
    ) -> None:
        """
        Send C{message} to every connected client (except C{exclude}). It is
        encoded once, now (a bad value raises here); never waits.
        """
        frame = self._factory.encode(message)
        if isinstance(exclude, (ConnectedClient, str)):
            exclude = (exclude,)
        ids = frozenset(c.id if isinstance(c, ConnectedClient) else c for c in exclude)
        self._outbox.put((ids, frame))

    def sendTo(self, message: Any, client: ConnectedClient | str | int = 0) -> None:
        """
        Send C{message} to one client: a L{ConnectedClient}, its C{id}, or
        an C{int} index in connection order (the original's meaning; fragile,
        as indices shift when clients leave).

        @raise ClientGoneError: that client is not connected.
        @raise IndexError: no client at that index.
        """
        if isinstance(client, bool):
            raise TypeError("sendTo takes a client, its id, or an index")
        if isinstance(client, int):
            clients = self.clients
            if not 0 <= client < len(clients):
                raise IndexError(
                    f"sendTo index {client}, but {len(clients)} clients are connected"
                )
            target = clients[client]
        elif isinstance(client, str):
            with self._lock:
                found = self._clients.get(client)
            if found is None:
                raise ClientGoneError(client)
            target = found
        else:
            target = client
        target.send(message)

    def _flushed(self) -> None:
        # Reactor thread: a batch of sends is written.
        touched, self._touched = self._touched, set()
        for client in touched:
            client._drain.flushed()

    def _write(self, item: tuple[Any, Any]) -> None:
        # Reactor thread: one queued send, broadcast or close.
        target, payload = item
        if isinstance(target, frozenset):
            self._factory.clients.broadcast(payload, target)
            return
        client: ConnectedClient = target
        handle = client._handle
        if payload is None:
            handle.close()
            return
        if not handle.connected or handle.protocol is None:
            client._window.release(len(payload) + 4)
            _log.warn(
                "a message to client {id} was not sent: it disconnected "
                "({reason}) before the message could be written",
                id=handle.id,
                reason=handle.close_reason,
            )
            return
        try:
            client._drain.write(handle.protocol, payload)
            self._touched.add(client)
        except Exception:
            client._window.release(len(payload) + 4)
            _log.failure("sending to client {id} failed", id=handle.id)

    # -- Twisted-level events (reactor thread) --------------------------------

    def _on_connect(self, handle: ClientHandle) -> None:
        client = ConnectedClient(
            handle,
            flow=self._flow,
            loop=self._loop,
            pool=self._pool,
            encode=self._encode,
            outbox=self._outbox,
            on_message=self._message_callbacks.fire,
        )
        proto = handle.protocol
        assert proto is not None
        client._receive.attach(
            partial(proto.pauseReading, PauseReason.RECEIVE_WINDOW),
            partial(proto.resumeReading, PauseReason.RECEIVE_WINDOW),
        )
        with self._lock:
            self._clients[handle.id] = client
        client.events.put(self._connect_callbacks.fire, client)

    def _on_message(self, handle: ClientHandle, message: Any) -> None:
        client = self._clients.get(handle.id)
        if client is not None:
            received = handle.bytes_in
            client._inbox.add(message, received - client._received_bytes)
            client._received_bytes = received

    def _on_close(self, handle: ClientHandle, reason: CloseReason) -> None:
        with self._lock:
            client = self._clients.pop(handle.id, None)
        if client is None:
            return
        client._inbox.flush()  # its last messages before its close event
        client._closed = True
        client.close_reason = reason
        client._window.close(f"disconnected ({reason})")
        client.events.put(self._close_callbacks.fire, client)
        with self._lock:
            if self._stopping_queues is not None:
                self._stopping_queues.append(client.events)
