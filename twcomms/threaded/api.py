"""
The threaded API: the original "Python Comms" C{Server} and C{Client},
kept and made true.

    from twcomms import Server

    server = Server("0.0.0.0", 6000)
    server.add_onmessage_callback(print)
    server.start()

A seed user changes one import line. Underneath, every C{Server} and
C{Client} in the process shares one reactor thread (started on first use,
never stopped by them) and wraps the Twisted API
(L{twcomms.server.CommsServerFactory}, L{twcomms.client.CommsClientFactory}):
the framing, bookkeeping and protection are theirs.

Threads:
  - Every public method may be called from any thread, including from
    inside a callback.
  - Callbacks never run on the reactor thread. Each connection's callbacks
    run in order, one at a time, on a pool of worker threads; a callback
    that blocks (the original's example calls C{input()} in one) holds up
    only its own connection.
  - Methods that wait (C{start}, C{stop}, C{connect}, C{close}) raise
    L{ReactorThreadError} when called on the reactor thread, where they
    would deadlock. C{send} and C{broadcast} never wait for the reactor.
  - A callback that raises is logged with its traceback (stdlib
    C{logging}, logger C{twcomms...}); nothing else stops.

Lifetime: while a Server is started or a Client is open, the process stays
alive (the original's scripts end after C{start()}/C{connect()} and rely on
it); it exits once all are stopped/closed. Ctrl-C then closes them cleanly.
"""

from __future__ import annotations

import collections
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from threading import get_ident
from typing import Any

from twisted.internet.interfaces import IReactorSocket
from twisted.logger import Logger

from twcomms.client.factory import CommsClientFactory
from twcomms.connection.protocol import CloseReason, CommsProtocol, ConnectionOptions
from twcomms.errors import (
    ClientGoneError,
    ConnectionClosedError,
    NotConnectedError,
)
from twcomms.server.factory import ClientHandle, CommsServerFactory
from twcomms.threaded.dispatch import Outbox, SerialQueue, WorkerPool
from twcomms.threaded.eventloop import EventLoop, ReactorThreadError, get_event_loop
from twcomms.threaded.flow import (
    DrainTracker,
    QueueFullError,
    ReceiveWindow,
    SendTimeoutError,
    SendWindow,
)
from twcomms.wire.framing import DEFAULT_MAX_MESSAGE_SIZE, check_size

__all__ = [
    "Client",
    "ConnectedClient",
    "FlowControl",
    "QueueFullError",
    "ReactorThreadError",
    "SendTimeoutError",
    "Server",
]

_MiB = 1024 * 1024


@dataclass(frozen=True)
class FlowControl:
    """
    Flow-control limits of the threaded API, per connection. Memory stays
    bounded however fast senders, slow callbacks and slow readers are.

    @ivar send_high_water: bytes accepted by C{send()} and not yet taken by
        a peer that keeps up. Above this, C{send()} blocks until they drain
        to C{send_low_water}. Default 8 MiB.
    @ivar send_low_water: see C{send_high_water}. Default 2 MiB.
    @ivar send_timeout: seconds a blocked C{send()} waits before raising
        L{SendTimeoutError}; L{None}: forever. Default 30.
    @ivar receive_high_count: messages received and not yet handled by the
        callbacks. Above this (or C{receive_high_bytes}), twcomms stops
        reading from that connection until a quarter of it is left; TCP
        then slows the sender. Nothing is dropped. Default 10,000.
    @ivar receive_high_bytes: the same, in payload bytes. Default 16 MiB.
    @ivar offline_max_count: with C{autoReconnect}, messages that may wait
        for the next connection. When full, C{send()} raises
        L{QueueFullError}. Default 10,000.
    @ivar offline_max_bytes: the same, in payload bytes. Default 16 MiB.
    """

    send_high_water: int = 8 * _MiB
    send_low_water: int = 2 * _MiB
    send_timeout: float | None = 30.0
    receive_high_count: int = 10_000
    receive_high_bytes: int = 16 * _MiB
    offline_max_count: int = 10_000
    offline_max_bytes: int = 16 * _MiB

    def send_window(self) -> SendWindow:
        return SendWindow(self.send_high_water, self.send_low_water, self.send_timeout)


_log = Logger()

_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def _default_pool() -> WorkerPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = WorkerPool()
        return _pool


def _release(loop: EventLoop, pool: WorkerPool, obj: object) -> None:
    """
    C{obj} is stopped/closed: stop holding the process for it, and let idle
    callback threads end if nothing is open any more.
    """
    loop.release(obj)
    if not loop.open_objects():
        pool.retire_idle()


def _remove_callback(callbacks: list[Any], func: Any, index: int) -> bool:
    """
    The original's removal rule: by function if given, else by index.
    """
    if func is not None:
        for i, entry in enumerate(callbacks):
            if entry[0] == func:
                del callbacks[i]
                return True
        return False
    if 0 <= index < len(callbacks):
        del callbacks[index]
        return True
    return False


class _Callbacks:
    """
    One event's user callbacks. Thread: any.
    """

    def __init__(self, event: str) -> None:
        self.event = event
        self._lock = threading.Lock()
        # Replaced, never mutated, so fire() reads it without a lock.
        self._entries: tuple[tuple[Callable[..., object], bool], ...] = ()

    def add(self, f: Callable[..., object], with_sender: bool = False) -> None:
        if not callable(f):
            raise TypeError(f"{self.event} callback must be callable, not {f!r}")
        with self._lock:
            self._entries = (*self._entries, (f, with_sender))

    def remove(self, f: Callable[..., object] | None, index: int) -> bool:
        with self._lock:
            entries = list(self._entries)
            removed = _remove_callback(entries, f, index)
            self._entries = tuple(entries)
            return removed

    def fire(self, sender: Any, *args: Any) -> None:
        """
        Call every callback: C{f(*args)}, or C{f(sender, *args)} for those
        added C{with_sender}. Worker thread.
        """
        entries = self._entries
        for f, with_sender in entries:
            try:
                if with_sender:
                    f(sender, *args)
                else:
                    f(*args)
            except Exception:
                _log.failure(
                    "{event} callback {callback!r} raised",
                    event=self.event,
                    callback=f,
                )


class _Inbox:
    """
    One connection's received messages, handed to its callbacks' serial
    queue in batches: one batch per reactor turn, however many messages the
    socket read held, so the per-message cost is an append.

    Thread: the reactor thread, except L{_deliver} (a worker).
    """

    __slots__ = ("_batch", "_call_later", "_events", "_fire", "_size", "window")

    def __init__(
        self,
        events: SerialQueue,
        window: ReceiveWindow,
        fire: Callable[[Any], None],
        call_later: Callable[..., Any],
    ) -> None:
        self._events = events
        self.window = window
        self._fire = fire
        self._call_later = call_later
        self._batch: list[Any] | None = None
        self._size = 0

    def add(self, message: Any, size: int) -> None:
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            self._call_later(0, self.flush)
        batch.append(message)
        self._size += size

    def flush(self) -> None:
        """
        Queue the batch now (also before a close event, to keep the order).
        """
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        size, self._size = self._size, 0
        cumulative = self.window.queued(size, len(batch))
        self._events.put(self._deliver, batch, cumulative)

    def _deliver(self, batch: list[Any], cumulative: int) -> None:
        fire = self._fire
        try:
            for message in batch:
                fire(message)
        finally:
            self.window.handled(cumulative, len(batch))


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

    def __init__(self, server: Server, handle: ClientHandle) -> None:
        self.id = handle.id
        self.address = handle.address
        self.port = handle.port
        self.connected_at = handle.connected_at
        self.close_reason: CloseReason | None = None
        self._server = server
        self._handle = handle  # reactor thread only
        self._closed = False
        self._received_bytes = 0
        self.events = SerialQueue(server._pool)
        self._window = server._flow.send_window()
        self._drain = DrainTracker(self._window)
        self._receive = ReceiveWindow(
            server._flow.receive_high_count,
            server._flow.receive_high_bytes,
            server._loop.call_soon,
        )
        fire = server._message_callbacks.fire
        self._inbox = _Inbox(
            self.events,
            self._receive,
            lambda message: fire(self, message),
            server._loop.reactor.callLater,
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
        server = self._server
        factory = server._factory
        payload = factory.codec.encode(message)
        size = len(payload)
        if size > factory.max_message_size:
            check_size(size, factory.max_message_size)  # raises, with the message
        try:
            if get_ident() == server._loop._reactor_ident:
                # Never wait on the reactor thread: it drains the window.
                self._window.add(size + 4)
            else:
                self._window.acquire(size + 4, self._describe)
        except ConnectionClosedError:
            raise ClientGoneError(self.id) from None
        server._outbox.put((self, payload))

    def close(self) -> None:
        """
        Close this client's connection after what was sent to it is
        written. Does not wait.
        """
        self._server._outbox.put((self, None))

    def _describe(self) -> str:
        return f"client {self.id} ({self.address}:{self.port})"


class _Endpoint:
    """
    What Server and Client share: the original's callback methods and the
    settings read back from the Twisted-level factory.
    """

    _factory: ConnectionOptions

    def _init_callbacks(self) -> None:
        self._connect_callbacks = _Callbacks("onconnect")
        self._close_callbacks = _Callbacks("onclose")
        self._message_callbacks = _Callbacks("onmessage")

    @property
    def messageDataType(self) -> str:
        return self._factory.codec.name

    @property
    def byteOrder(self) -> str:
        return self._factory.byteOrder

    @property
    def max_message_size(self) -> int:
        return self._factory.max_message_size

    def add_onconnect_callback(self, func: Callable[[Any], object]) -> None:
        """
        Call C{func(client)} on each connection: on a Server, C{client} is
        the L{ConnectedClient} that connected; on a Client, the Client
        itself (on every reconnection too).
        """
        self._connect_callbacks.add(func)

    def add_onclose_callback(self, func: Callable[[Any], object]) -> None:
        """
        Call C{func(client)} when a connection closes (same C{client} as for
        connections); a L{ConnectedClient}'s C{close_reason} says why.
        """
        self._close_callbacks.add(func)

    def add_onmessage_callback(
        self, func: Callable[..., object], with_sender: bool = False
    ) -> None:
        """
        Call C{func(message)} for every message, or C{func(sender, message)}
        with C{with_sender=True} (on a Server the sender is the
        L{ConnectedClient}; the original had no way to know it).
        """
        self._message_callbacks.add(func, with_sender)

    def remove_onconnect_callback(self, func: Any = None, index: int = 0) -> bool:
        """
        Remove a connect callback by function, or by index if C{func} is
        None; C{True} if one was removed.
        """
        return self._connect_callbacks.remove(func, index)

    def remove_onclose_callback(self, func: Any = None, index: int = 0) -> bool:
        """
        Remove a close callback (as L{remove_onconnect_callback}).
        """
        return self._close_callbacks.remove(func, index)

    def remove_onmessage_callback(self, func: Any = None, index: int = 0) -> bool:
        """
        Remove a message callback (as L{remove_onconnect_callback}).
        """
        return self._message_callbacks.remove(func, index)


class Server(_Endpoint):
    """
    A TCP server for json, string or binary messages, with broadcast and
    connect/close/message events; the original's API.

    Thread: any thread may call any method; see the module docstring.

    @ivar address: the address given.
    @ivar port: the port given; after L{start}, the port listened on (so
        port 0 tells the chosen port).
    """

    _factory: CommsServerFactory

    def __init__(
        self,
        address: str,
        port: int,
        messageDataType: str = "json",
        byteOrder: str = "little",
        sendMostRecent: bool = True,
        *,
        listen: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_clients: int | None = None,
        idle_timeout: float | None = None,
        outbound_limit: int | None = None,
        flow: FlowControl | None = None,
        keep_process_alive: bool = True,
        event_loop: EventLoop | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        """
        @param address: the interface to listen on (C{"0.0.0.0"}: all IPv4;
            C{"::"}: all IPv6; C{"127.0.0.1"}: this machine only).
        @param port: the TCP port; 0 picks a free one.
        @param messageDataType: C{"json"} (default), C{"string"} or
            C{"binary"}: how received messages are decoded (see
            C{docs/protocol.md}).
        @param byteOrder: C{"little"} (default) or C{"big"}; both ends must
            agree.
        @param sendMostRecent: accepted for compatibility; it has no effect
            (it had none in the original).
        @param listen: a Twisted endpoint description to listen on instead
            of C{address}/C{port} (C{"tcp:6000:interface=::"},
            C{"ssl:6001:privateKey=key.pem:certKey=cert.pem"},
            C{"unix:/run/comms.sock"}).
        @param max_message_size: largest message accepted or sent (64 MiB).
        @param max_clients: further connections are closed at once.
        @param idle_timeout: close clients silent for this many seconds.
        @param outbound_limit: bytes that may queue to a client that does
            not read before it is closed (default: max_message_size + 1 MiB).
            C{broadcast} never blocks for a slow client; this limit closes it.
        @param flow: flow-control limits (L{FlowControl}; its defaults).
        @param keep_process_alive: while started, keep the process alive
            after the main script ends (the original's behaviour; default).
        """
        self.address = address
        self.port = port
        self.sendMostRecent = sendMostRecent
        self._listen = listen
        self._keep_alive = keep_process_alive
        self._flow = flow if flow is not None else FlowControl()
        self._loop = event_loop if event_loop is not None else get_event_loop()
        self._pool = pool if pool is not None else _default_pool()
        self._factory = CommsServerFactory(
            messageDataType,
            byteOrder,
            max_message_size=max_message_size,
            max_clients=max_clients,
            idle_timeout=idle_timeout,
            outbound_limit=outbound_limit,
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
        self._init_callbacks()
        self._started = False
        self._stopped = threading.Event()
        self._listening_port: Any = None
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
        self._factory._stopping = False
        where: Any = (
            self._listen if self._listen is not None else (self.address, self.port)
        )
        port = self._loop.call(
            self._factory.listen, where, timeout=timeout, what="Server.start()"
        )
        with self._lock:
            self._listening_port = port
            self._started = True
            self._stopped.clear()
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
            try:
                self._loop.call(
                    self._stop_in_reactor, timeout=timeout, what="Server.stop()"
                )
            except TimeoutError:
                _log.warn(
                    "Server.stop(): clients did not take what was sent to them "
                    "within {timeout} seconds; aborting their connections (the "
                    "rest is discarded)",
                    timeout=timeout,
                )
                self._loop.call(
                    self._abort_in_reactor, timeout=5.0, what="Server.stop()"
                )
        finally:
            self._stopped.set()
            with self._lock:
                queues, self._stopping_queues = self._stopping_queues, None
            self._release_after(queues or [])

    def _release_after(self, queues: list[SerialQueue]) -> None:
        # Hold the process until the close events the stop queued (one per
        # client, each on its client's queue) have run: a script whose main
        # part ends with stop() would otherwise exit with them undelivered.
        if not queues:
            _release(self._loop, self._pool, self)
            return
        remaining = len(queues)
        lock = threading.Lock()

        def one_done() -> None:
            nonlocal remaining
            with lock:
                remaining -= 1
                last = remaining == 0
            if last:
                _release(self._loop, self._pool, self)

        for events in queues:
            events.put(one_done)

    def _stop_in_reactor(self) -> Any:
        self._outbox.flush()
        return self._factory.stop()

    def _abort_in_reactor(self) -> None:
        for proto in list(self._factory._connections):
            proto.abort(CloseReason.SERVER_STOPPING)

    def _at_exit(self) -> None:
        if self._started and not self._loop.in_reactor_thread():
            self.stop(timeout=2.0)

    def wait(self, timeout: float | None = None) -> bool:
        """
        Block until the server is stopped (by another thread or a callback);
        C{False} if C{timeout} passed first.
        """
        return self._stopped.wait(timeout)

    def serve_forever(self) -> None:
        """
        Start (if needed) and block until stopped. Ctrl-C stops the server
        cleanly and returns.
        """
        self.start()
        try:
            while not self._stopped.wait(0.5):
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
        client = ConnectedClient(self, handle)
        proto = handle.protocol
        assert proto is not None
        client._receive.attach(proto.pauseProducing, proto.resumeProducing)
        with self._lock:
            self._clients[handle.id] = client
        client.events.put(self._connect_callbacks.fire, client, client)

    def _on_message(self, handle: ClientHandle, message: Any) -> None:
        client = self._clients.get(handle.id)
        if client is not None:
            inbox = client._inbox
            proto = handle.protocol
            received = proto.bytesReceived  # type: ignore[union-attr]
            inbox.add(message, received - client._received_bytes)
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
        client.events.put(self._close_callbacks.fire, client, client)
        with self._lock:
            if self._stopping_queues is not None:
                self._stopping_queues.append(client.events)


class Client(_Endpoint):
    """
    A TCP client for json, string or binary messages, with optional
    automatic reconnection; the original's API.

    Thread: any thread may call any method; see the module docstring.

    @ivar address: the server's address.
    @ivar port: the server's port.
    """

    _factory: CommsClientFactory

    def __init__(
        self,
        address: str,
        port: int,
        controlledByServer: bool = False,
        connection: socket.socket | None = None,
        messageDataType: str = "json",
        byteOrder: str = "little",
        sendMostRecent: bool = False,
        autoReconnect: bool = False,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        initial_delay: float = 1.0,
        max_delay: float = 30.0,
        max_retries: int | None = None,
        tls: bool = False,
        trust_root: Any = None,
        tls_hostname: str | None = None,
        unix_socket: str | None = None,
        flow: FlowControl | None = None,
        keep_process_alive: bool = True,
        event_loop: EventLoop | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        """
        @param address: the server's host name or address.
        @param port: the server's port.
        @param controlledByServer: with C{connection}: adopt that
            already-connected socket instead of connecting.
        @param connection: an already-connected socket to adopt (the
            original used this inside its server).
        @param messageDataType: C{"json"} (default), C{"string"} or
            C{"binary"}.
        @param byteOrder: C{"little"} (default) or C{"big"}.
        @param sendMostRecent: accepted for compatibility; no effect.
        @param autoReconnect: reconnect (with back-off) whenever the
            connection fails or is lost, until L{close}.
        @param initial_delay: first reconnection delay, seconds (1.0).
        @param max_delay: longest reconnection delay, seconds (30.0).
        @param max_retries: give up after this many failed attempts.
        @param tls: connect over TLS, verifying the server's certificate.
        @param trust_root: CA certificate(s) to trust (a PEM path or a
            Twisted certificate); default the platform's.
        @param tls_hostname: the name the certificate must carry (default
            C{address}).
        @param unix_socket: connect to this UNIX socket path instead.
        @param flow: flow-control limits (L{FlowControl}; its defaults).
            With C{autoReconnect}, messages sent while disconnected wait
            (in order, bounded by C{offline_max_count}/C{offline_max_bytes})
            and go out once after reconnecting.
        @param keep_process_alive: while open, keep the process alive after
            the main script ends (the original's behaviour; default).
        """
        if controlledByServer and connection is None:
            raise ValueError(
                "controlledByServer=True needs connection=<a connected socket>"
            )
        self.address = address
        self.port = port
        self.sendMostRecent = sendMostRecent
        self.autoReconnect = autoReconnect
        self._connection = connection
        self._tls = tls
        self._trust_root = trust_root
        self._tls_hostname = tls_hostname
        self._unix_socket = unix_socket
        self._keep_alive = keep_process_alive
        self._flow = flow if flow is not None else FlowControl()
        self._loop = event_loop if event_loop is not None else get_event_loop()
        self._pool = pool if pool is not None else _default_pool()
        self._factory = CommsClientFactory(
            messageDataType,
            byteOrder,
            autoReconnect=autoReconnect and connection is None,
            max_message_size=max_message_size,
            initial_delay=initial_delay,
            max_delay=max(max_delay, initial_delay),
            max_retries=max_retries,
            on_connect=self._on_connect,
            on_close=self._on_close,
            on_message=self._on_message,
        )
        self._events = SerialQueue(self._pool)
        self._window = self._flow.send_window()
        self._drain = DrainTracker(self._window)
        self._outbox = Outbox(
            self._loop.call_soon, self._write, self._drain.flushed, batch=True
        )
        self._receive = ReceiveWindow(
            self._flow.receive_high_count,
            self._flow.receive_high_bytes,
            self._loop.call_soon,
        )
        self._inbox: _Inbox | None = None  # made once the reactor is known
        # Reactor thread only: messages waiting for the next connection.
        self._offline: collections.deque[bytes] = collections.deque()
        self._offline_bytes = 0
        self._received_bytes = 0
        self._init_callbacks()
        self._lock = threading.Lock()
        self._open = False
        self._closed_why = "closed"
        self._connected = False
        self._closed_event = threading.Event()
        self._closed_event.set()
        self._loop.register(self)

    def __repr__(self) -> str:
        state = "connected" if self._connected else "not connected"
        return f"<Client {self.address}:{self.port} {state}>"

    @property
    def connected(self) -> bool:
        """
        Whether the client is connected now.
        """
        return self._connected

    # -- lifecycle --------------------------------------------------------

    def connect(self, timeout: float | None = 10.0, wait: bool = True) -> None:
        """
        Connect to the server. With C{wait} (default), return once connected
        or raise; with C{autoReconnect}, keep trying until C{timeout}.

        @param wait: C{False}: start connecting (and, with C{autoReconnect},
            keep trying) in the background and return at once.
        @raise ConnectionError: the connection failed (refused, TLS
            rejected, ...); nothing keeps trying.
        @raise TimeoutError: not connected within C{timeout}; nothing keeps
            trying.
        @raise ReactorThreadError: called on the reactor thread with C{wait}.
        """
        if wait:
            self._loop.check_not_reactor_thread("Client.connect()")
        with self._lock:
            already = self._open
            self._open = True
            self._closed_why = "closed"
            self._closed_event.clear()
        if already:
            if wait and not self._connected:
                self._loop.call(
                    self._factory.whenConnected,
                    timeout=timeout,
                    what="Client.connect()",
                )
            return
        reactor = self._loop.start()
        self._factory.reactor = reactor
        if self._inbox is None:
            fire = self._message_callbacks.fire
            self._inbox = _Inbox(
                self._events,
                self._receive,
                lambda message: fire(self, message),
                reactor.callLater,
            )
        if self._keep_alive:
            self._loop.hold(self)
        if not wait:
            self._loop.call_soon(self._begin)
            return

        def begin_and_wait() -> Any:
            self._begin()
            return self._factory.whenConnected()

        try:
            self._loop.call(begin_and_wait, timeout=timeout, what="Client.connect()")
        except BaseException:
            self._give_up()
            raise

    def _begin(self) -> None:
        # Reactor thread.
        factory = self._factory
        if self._connection is not None:
            sock, self._connection = self._connection, None
            reactor = factory.reactor
            if not IReactorSocket.providedBy(reactor):
                raise NotImplementedError(
                    "this reactor cannot adopt a connected socket; pass the "
                    "server's address and port and let Client connect"
                )
            reactor.adoptStreamConnection(sock.fileno(), sock.family, factory)  # type: ignore[arg-type]
            sock.close()
        elif self._unix_socket is not None:
            factory.connectUNIX(self._unix_socket)
        elif self._tls:
            factory.connectSSL(
                self.address,
                self.port,
                trust_root=self._trust_root,
                hostname=self._tls_hostname,
            )
        else:
            factory.connectTCP(self.address, self.port)
        # Gave up (refused without autoReconnect, max_retries used up, TLS
        # rejected): the client is closed for good, even if it never
        # connected. (Asked after connecting, which re-arms the factory.)
        factory.whenStopped().addCallback(
            lambda _: self._closed_for_good("the client stopped trying to connect")
        )

    def _give_up(self) -> None:
        with self._lock:
            self._open = False
        try:
            self._loop.call(self._factory.stop, timeout=5.0, what="Client.close()")
        except ReactorThreadError:
            self._loop.call_soon(self._factory.stop)
        finally:
            self._closed_event.set()
            self._release_after_callbacks()

    def close(self, timeout: float | None = 10.0) -> None:
        """
        Stop reconnecting and close the connection after what was sent
        before this call is written. Returns once closed; if the server has
        not taken it all within C{timeout} seconds, the connection is
        aborted (the rest is discarded, with a warning). Sending afterwards
        raises L{ConnectionClosedError}. Closing twice does nothing.

        @raise ReactorThreadError: called on the reactor thread.
        """
        self._loop.check_not_reactor_thread("Client.close()")
        with self._lock:
            if not self._open:
                return
            self._open = False
            self._closed_why = "closed"
        self._window.close("the client was closed")
        try:
            try:
                self._loop.call(
                    self._close_in_reactor, timeout=timeout, what="Client.close()"
                )
            except TimeoutError:
                _log.warn(
                    "Client.close(): {where} did not take what was sent within "
                    "{timeout} seconds; aborting the connection (the rest is "
                    "discarded)",
                    where=self._where(),
                    timeout=timeout,
                )
                self._loop.call(
                    self._abort_in_reactor, timeout=5.0, what="Client.close()"
                )
        finally:
            self._closed_event.set()
            self._release_after_callbacks()

    def _release_after_callbacks(self) -> None:
        # Hold the process until the callbacks queued so far (the close
        # event among them) have run: a script whose main part has ended
        # would otherwise exit with them undelivered.
        self._events.put(_release, self._loop, self._pool, self)

    def _close_in_reactor(self) -> Any:
        self._outbox.flush()
        if self._offline:
            _log.warn(
                "closing the client to {where} with {count} messages that "
                "never found a connection; they were not sent",
                where=self._where(),
                count=len(self._offline),
            )
            self._offline.clear()
        return self._factory.stop()

    def _abort_in_reactor(self) -> Any:
        proto = self._factory.connection
        if proto is not None:
            proto.abort(CloseReason.CLOSED)
        return self._factory.whenStopped()

    def _at_exit(self) -> None:
        if self._open and not self._loop.in_reactor_thread():
            self.close(timeout=2.0)

    def wait(self, timeout: float | None = None) -> bool:
        """
        Block until the client is closed; C{False} if C{timeout} passed
        first.
        """
        return self._closed_event.wait(timeout)

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ----------------------------------------------------------

    def send(self, message: Any) -> None:
        """
        Send one message. It is encoded now (a bad value raises here) and
        written by the reactor thread, in order with this thread's other
        sends. It returns at once unless the server is not reading and the
        send high-water mark is passed (see L{FlowControl}); then it waits
        for the server to catch up.

        With C{autoReconnect}, a message sent while disconnected waits for
        the next connection (bounded; see L{FlowControl}). Messages already
        written to a connection that then breaks may be lost: the wire
        format has no acknowledgements.

        @raise ConnectionClosedError: the client was closed.
        @raise NotConnectedError: not connected (and not reconnecting).
        @raise QueueFullError: disconnected, and the offline queue is full.
        @raise SendTimeoutError: the server did not catch up in time.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        """
        if not self._open:
            raise ConnectionClosedError(
                f"client to {self._where()}: {self._closed_why}; nothing was sent"
            )
        factory = self._factory
        payload = factory.codec.encode(message)
        size = len(payload)
        if size > factory.max_message_size:
            check_size(size, factory.max_message_size)  # raises, with the message
        size += 4
        # (EventLoop.in_reactor_thread, inlined: this is the per-message path.)
        if get_ident() == self._loop._reactor_ident:
            # Never wait on the reactor thread: it is what drains the window.
            self._window.add(size)
        elif self._connected:
            self._window.acquire(size, self._where)
        elif self.autoReconnect:
            flow = self._flow
            waiting = len(self._offline) + self._outbox.pending
            if (
                waiting >= flow.offline_max_count
                or self._window.pending + size > flow.offline_max_bytes
            ):
                raise QueueFullError(
                    f"client to {self._where()} is disconnected and "
                    f"{waiting} messages ({self._window.pending} bytes) are "
                    f"already waiting for the next connection (limits: "
                    f"{flow.offline_max_count} messages, "
                    f"{flow.offline_max_bytes} bytes); nothing was queued"
                )
            self._window.add(size)
        else:
            raise NotConnectedError(
                f"client to {self._where()} is not connected; nothing was sent"
            )
        self._outbox.put(payload)

    def _where(self) -> str:
        if self._unix_socket is not None:
            return self._unix_socket
        return f"{self.address}:{self.port}"

    def _write(self, payloads: list[bytes]) -> None:
        # Reactor thread: a batch of sends, in order.
        proto = self._factory.connection
        if proto is None or proto._closing:
            if self.autoReconnect and self._factory.continueTrying:
                self._offline.extend(payloads)
                return
            self._window.release(sum(len(p) for p in payloads) + 4 * len(payloads))
            _log.warn(
                "{count} messages to {where} were not sent: the connection "
                "closed before they could be written",
                count=len(payloads),
                where=self._where(),
            )
            return
        self._send_now(proto, payloads)

    def _send_now(self, proto: CommsProtocol, payloads: list[bytes]) -> None:
        try:
            self._drain.write_many(proto, payloads)
        except Exception:
            self._window.release(sum(len(p) for p in payloads) + 4 * len(payloads))
            _log.failure(
                "sending {count} messages to {where} failed",
                count=len(payloads),
                where=self._where(),
            )

    # -- Twisted-level events (reactor thread) --------------------------------

    def _on_connect(self, factory: CommsClientFactory) -> None:
        proto = factory.connection
        assert proto is not None
        self._received_bytes = 0
        self._receive.attach(proto.pauseProducing, proto.resumeProducing)
        self._window.reopen()
        self._connected = True
        offline, self._offline = self._offline, collections.deque()
        if offline:
            self._send_now(proto, list(offline))
        self._drain.flushed()
        self._outbox.flush()
        self._events.put(self._connect_callbacks.fire, self, self)

    def _on_message(self, factory: CommsClientFactory, message: Any) -> None:
        proto = factory.connection
        size = proto.bytesReceived - self._received_bytes if proto else 0
        self._received_bytes += size
        self._inbox.add(message, size)  # type: ignore[union-attr]

    def _on_close(self, factory: CommsClientFactory, reason: CloseReason) -> None:
        if self._inbox is not None:
            self._inbox.flush()  # the last messages before the close event
        self._connected = False
        self._events.put(self._close_callbacks.fire, self, self)
        if not factory.continueTrying:
            self._closed_for_good(f"the connection closed ({reason})")

    def _closed_for_good(self, why: str) -> None:
        # Reactor thread: not reconnecting any more.
        with self._lock:
            was_open, self._open = self._open, False
            if was_open:
                self._closed_why = why
        if was_open:
            self._window.close(why)
            self._closed_event.set()
            self._release_after_callbacks()
