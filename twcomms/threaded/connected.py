"""
L{ConnectedClient}: a client connected to a threaded C{Server}, as the
server's callbacks see it.

Thread: any thread may use it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from threading import get_ident
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.logger import Logger

from twcomms.connection import CloseReason, PauseReason
from twcomms.errors import ClientGoneError, ConnectionClosedError
from twcomms.options import FlowControl
from twcomms.server import ClientHandle
from twcomms.threaded.callbacks import Inbox
from twcomms.threaded.dispatch import Outbox, SerialQueue, WorkerPool
from twcomms.threaded.eventloop import EventLoop
from twcomms.threaded.flow import DrainTracker, ReceiveWindow, SendWindow

if TYPE_CHECKING:
    from twcomms.threaded.server import Server

__all__ = ["ConnectedClient", "Peer"]

_log = Logger()


class Peer(NamedTuple):
    """
    Who is authenticating (given to a threaded C{Server}'s C{authenticate}):
    the connection's id, and the peer's address and port.
    """

    id: str
    address: str
    port: int


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
    @ivar handle: the server's L{ClientHandle} for it (reactor thread only).
    @ivar events: the serial queue its callbacks run on.
    """

    def __init__(
        self,
        handle: ClientHandle,
        server: Server,
        *,
        flow: FlowControl,
        loop: EventLoop,
        pool: WorkerPool,
        encode: Callable[[Any], bytes],
        outbox: Outbox,
        on_message: Callable[..., None],
    ) -> None:
        """
        Made by a L{Server} (reactor thread) for each client: C{server} is
        it; C{flow}, the C{loop} and the C{pool} are its, C{encode} its encoder,
        C{outbox} carries sends to the reactor, C{on_message(client,
        message)} fires its message callbacks.
        """
        self.id = handle.id
        self.address = handle.address
        self.port = handle.port
        self.connected_at = handle.connected_at
        self.close_reason: CloseReason | None = None
        self.handle = handle
        self.server = server
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
        proto = handle.protocol
        assert proto is not None
        self._proto = proto
        # Reading pauses, for this reason, while its callbacks fall behind.
        self._receive.attach(
            partial(proto.pauseReading, PauseReason.RECEIVE_WINDOW),
            partial(proto.resumeReading, PauseReason.RECEIVE_WINDOW),
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

    @property
    def send_pending(self) -> int:
        """
        Bytes accepted by C{send()}, C{sendTo} and C{broadcast()} for this
        client and not yet on their way to it (its send window; see
        L{FlowControl}).
        """
        return self._window.pending

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

    @property
    def extended(self) -> bool:
        """
        Whether this client agreed the extended protocol (it answers
        requests, and may join rooms itself).
        """
        return self.handle.extended

    @property
    def identity(self) -> str | None:
        """
        Who this client authenticated as (L{None}: it did not).
        """
        return self.handle.identity

    def request(self, message: Any, timeout: float | None = -1.0) -> Any:
        """
        Send C{message} to this client as a request and return its reply
        (see L{Server.request}).
        """
        return self.server.request(self, message, timeout)

    @property
    def behind(self) -> bool:
        """
        Whether its send window is over its high-water mark (and has not
        drained to the low-water mark since): a broadcast waits for it.
        """
        return self._window.blocked

    def wait_until_caught_up(self, deadline: float | None) -> None:
        """
        Wait while it is L{behind} (returns at once if it is gone). Not on
        the reactor thread.

        @raise SendTimeoutError: still behind at C{deadline}.
        """
        self._window.wait_unblocked(deadline, self._describe)

    def join(self, room: str) -> bool:
        """
        Put this client in C{room} (see L{Server.join}).
        """
        return self.server.join(self, room)

    def leave(self, room: str) -> bool:
        """
        Take this client out of C{room} (see L{Server.leave}).
        """
        return self.server.leave(self, room)

    @property
    def rooms(self) -> frozenset[str]:
        """
        The rooms this client is in.
        """
        return self.server.rooms_of(self)

    def _describe(self) -> str:
        return f"client {self.id} ({self.address}:{self.port})"

    # -- the reactor side, called by its Server --------------------------------

    def write_now(self, payload: bytes | None) -> bool:
        """
        Write one queued send (L{None}: the close this client asked for);
        C{True} if it went to the connection (its window is then released
        once the batch is done, L{sent}). Reactor thread.
        """
        handle = self.handle
        if payload is None:
            handle.close()
            return False
        if not handle.connected or handle.protocol is None:
            self._window.release(len(payload) + 4)
            _log.warn(
                "a message to client {id} was not sent: it disconnected "
                "({reason}) before the message could be written",
                id=handle.id,
                reason=handle.close_reason,
            )
            return False
        try:
            self._drain.write(handle.protocol, payload)
        except Exception:
            self._window.release(len(payload) + 4)
            _log.failure("sending to client {id} failed", id=handle.id)
            return False
        return True

    def broadcast_written(self, size: int) -> bool:
        """
        Broadcasts of C{size} bytes in all went to its connection: they
        count in its send window (shared with C{send}) until they are on
        their way. C{True} if they are released with the batch (L{sent}).
        Reactor thread.
        """
        proto = self.handle.protocol
        if proto is None or not self.handle.connected:
            return False
        self._window.add(size)
        self._drain.track(proto, size)
        return True

    def sent(self) -> None:
        """
        A batch of sends to it is written. Reactor thread.
        """
        self._drain.flushed()

    def received(self, message: Any) -> None:
        """
        A message from it, for its callbacks. Reactor thread.
        """
        received = self._proto.bytesReceived
        self._inbox.add(message, received - self._received_bytes)
        self._received_bytes = received

    def disconnected(self, reason: CloseReason) -> None:
        """
        Its connection closed: its last messages go to its callbacks before
        the close event, and senders waiting on it wake (and raise).
        Reactor thread.
        """
        self._inbox.flush()
        self._closed = True
        self.close_reason = reason
        self._window.close(f"disconnected ({reason})")
