"""
The threaded C{Client} (the original's API), with optional automatic
reconnection and a bounded queue of messages sent while disconnected.

Thread: every public method may be called from any thread.
"""

from __future__ import annotations

import collections
import socket
import threading
from functools import partial
from threading import get_ident
from typing import Any

from twisted.internet.interfaces import IReactorSocket
from twisted.logger import Logger

from twcomms.client import CLIENT_SECTIONS, CommsClientFactory
from twcomms.connection import CloseReason, CommsProtocol, PauseReason
from twcomms.errors import (
    ConnectionClosedError,
    NotConnectedError,
    QueueFullError,
    ReactorThreadError,
)
from twcomms.options import (
    ConnectionOptions,
    FlowControl,
    Options,
    ReconnectOptions,
)
from twcomms.threaded.base import Endpoint, given_options
from twcomms.threaded.callbacks import Inbox
from twcomms.threaded.dispatch import Outbox, SerialQueue, WorkerPool
from twcomms.threaded.eventloop import EventLoop
from twcomms.threaded.extended import ClientRequests
from twcomms.threaded.flow import DrainTracker, ReceiveWindow, SendWindow
from twcomms.wire.framing import check_size

__all__ = ["Client"]

#: The option sections a threaded Client takes.
SECTIONS = (*CLIENT_SECTIONS, FlowControl)

_log = Logger()


class Client(ClientRequests, Endpoint):
    """
    A TCP client for json, string or binary messages, with optional
    automatic reconnection; the original's API.

    Thread: any thread may call any method; see L{twcomms.threaded}.

    @ivar address: the server's address.
    @ivar port: the server's port.
    """

    def __init__(
        self,
        address: str,
        port: int,
        controlledByServer: bool = False,
        connection: socket.socket | None = None,
        messageDataType: str | None = None,
        byteOrder: str | None = None,
        sendMostRecent: bool = False,
        autoReconnect: bool | None = None,
        *,
        tls: bool = False,
        trust_root: Any = None,
        tls_hostname: str | None = None,
        unix_socket: str | None = None,
        options: Options | None = None,
        keep_process_alive: bool = True,
        event_loop: EventLoop | None = None,
        pool: WorkerPool | None = None,
        credentials: Any = None,
        **keywords: Any,
    ) -> None:
        """
        @param address: the server's host name or address.
        @param port: the server's port.
        @param controlledByServer: with C{connection}: adopt that
            already-connected socket instead of connecting.
        @param connection: an already-connected socket to adopt (the
            original used this inside its server).
        @param messageDataType: C{"json"} (default), C{"string"} or
            C{"binary"}; L{None}: as C{options} says.
        @param byteOrder: C{"little"} (default) or C{"big"}; L{None}: as
            C{options} says.
        @param sendMostRecent: accepted for compatibility; no effect.
        @param autoReconnect: reconnect (with back-off) whenever the
            connection fails or is lost, until L{close} (off by default;
            L{None}: as C{options} says). With it, messages
            sent while disconnected wait (in order, bounded by
            C{offline_max_count}/C{offline_max_bytes}) and go out once after
            reconnecting.
        @param tls: connect over TLS, verifying the server's certificate.
        @param trust_root: CA certificate(s) to trust (a PEM path or a
            Twisted certificate); default the platform's.
        @param tls_hostname: the name the certificate must carry (default
            C{address}).
        @param unix_socket: connect to this UNIX socket path instead.
        @param options: an L{Options} to start from.
        @param keywords: any option of L{ConnectionOptions},
            L{ReconnectOptions} or L{FlowControl} (C{initial_delay},
            C{max_delay}, C{max_retries}, C{idle_timeout},
            C{send_timeout}, ...), or a whole section (C{flow=FlowControl(...)});
            see C{docs/options.md}.
        @param keep_process_alive: while open, keep the process alive after
            the main script ends (the original's behaviour; default).
        @param credentials: with C{extensions=True} (or C{"prefer"}): sent
            to the server, encoded as a message, to authenticate once it has
            answered the hello; C{connect()} returns once they are accepted,
            or raises C{AuthenticationError}. Never logged.
        """
        if controlledByServer and connection is None:
            raise ValueError(
                "controlledByServer=True needs connection=<a connected socket>"
            )
        if isinstance(connection, ConnectionOptions):
            raise TypeError(
                "Client's connection= is the original's already-connected "
                "socket; pass connection options as options=Options(connection=...) "
                "or as keywords"
            )
        given_options(
            keywords,
            messageDataType=messageDataType,
            byteOrder=byteOrder,
            autoReconnect=autoReconnect,
        )
        if "initial_delay" in keywords and "max_delay" not in keywords:
            # A first delay past the default longest one means "at least
            # that long" (as this API has always read it), not an error.
            keywords["max_delay"] = max(
                keywords["initial_delay"], ReconnectOptions.max_delay
            )
        super().__init__(
            "Client", SECTIONS, options, keywords, event_loop, pool, keep_process_alive
        )
        self.address = address
        self.port = port
        self.sendMostRecent = sendMostRecent
        self.autoReconnect = self.options.reconnect.autoReconnect
        self._connection = connection
        self._tls = tls
        self._trust_root = trust_root
        self._tls_hostname = tls_hostname
        self._unix_socket = unix_socket
        factory_options = self.options
        if connection is not None:
            # An adopted socket cannot be reconnected.
            factory_options = Options.build(factory_options, autoReconnect=False)
        self._factory = CommsClientFactory(
            options=factory_options,
            on_connect=self._on_connect,
            on_close=self._on_close,
            on_message=self._on_message,
            on_request=lambda _factory, message: self._answer(self, message),
            credentials=credentials,
        )
        self._events = SerialQueue(self._pool)
        self._window = SendWindow.for_flow(self._flow)
        self._drain = DrainTracker(self._window)
        self._outbox = Outbox(
            self._loop.call_soon, self._write, self._drain.flushed, batch=True
        )
        self._receive = ReceiveWindow(
            self._flow.receive_high_count,
            self._flow.receive_high_bytes,
            self._loop.call_soon,
        )
        self._inbox: Inbox | None = None  # made once the reactor is known
        # Reactor thread only: messages waiting for the next connection.
        self._offline: collections.deque[bytes] = collections.deque()
        self._received_bytes = 0
        self._lock = threading.Lock()
        self._open = False
        self._closed_why = "closed"
        self._connected = False
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
            self._done.clear()
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
            self._inbox = Inbox(
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
            self._done.set()
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
            self._finish(
                self._close_in_reactor,
                self._abort_in_reactor,
                timeout,
                "Client.close()",
                self._where(),
            )
        finally:
            self._done.set()
            self._release_after_callbacks()

    def _release_after_callbacks(self) -> None:
        self._release_after([self._events])

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
        # (Endpoint._encode, inlined: this is the per-message path.)
        payload = self._codec_encode(message)
        size = len(payload)
        if size > self._max_size:
            check_size(size, self._max_size)  # raises, with the message
        size += 4
        # (EventLoop.in_reactor_thread, inlined: this is the per-message path.)
        if get_ident() == self._loop.reactor_ident:
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
        if proto is None or proto.closing:
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
        self._receive.attach(
            partial(proto.pauseReading, PauseReason.RECEIVE_WINDOW),
            partial(proto.resumeReading, PauseReason.RECEIVE_WINDOW),
        )
        self._window.reopen()
        self._connected = True
        offline, self._offline = self._offline, collections.deque()
        if offline:
            self._send_now(proto, list(offline))
        self._drain.flushed()
        self._outbox.flush()
        self._events.put(self._connect_callbacks.fire, self)

    def _on_message(self, factory: CommsClientFactory, message: Any) -> None:
        proto = factory.connection
        size = proto.bytesReceived - self._received_bytes if proto else 0
        self._received_bytes += size
        self._inbox.add(message, size)  # type: ignore[union-attr]

    def _on_close(self, factory: CommsClientFactory, reason: CloseReason) -> None:
        if self._inbox is not None:
            self._inbox.flush()  # the last messages before the close event
        self._connected = False
        self._events.put(self._close_callbacks.fire, self)
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
            self._done.set()
            self._release_after_callbacks()
