"""
The threaded C{Server}: the original's API, with rooms.

Thread: every public method may be called from any thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from threading import get_ident
from typing import Any

from twisted.logger import Logger

from twcomms.backplane import make_backplane
from twcomms.connection import CloseReason
from twcomms.errors import ClientGoneError
from twcomms.options import ClusterOptions, FlowControl, Options
from twcomms.server import (
    SERVER_SECTIONS,
    ClientHandle,
    CommsServerFactory,
    check_room,
)
from twcomms.threaded.base import Endpoint, given_options
from twcomms.threaded.connected import ConnectedClient, Peer
from twcomms.threaded.dispatch import Outbox, SerialQueue, WorkerPool
from twcomms.threaded.eventloop import EventLoop
from twcomms.threaded.extended import ServerRequests, any_room
from twcomms.threaded.flow import SendWindow
from twcomms.threaded.rooms import Rooms

__all__ = ["Server"]

#: The option sections a threaded Server takes.
SECTIONS = (*SERVER_SECTIONS, FlowControl, ClusterOptions)

_log = Logger()


class Server(ServerRequests, Endpoint):
    """
    A TCP server for json, string or binary messages, with broadcast and
    connect/close/message events; the original's API.

    Thread: any thread may call any method; see L{twcomms.threaded}.

    @ivar address: the address given.
    @ivar port: the port given; after L{start}, the port listened on (so
        port 0 tells the chosen port).
    @ivar web_port: after L{start} with C{web=}, the port browsers
        connect to (C{ws://host:web_port/ws}); L{None} without one.
    """

    web_port: int | None = None

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
        authenticate: Callable[[Any, Peer], Any] | None = None,
        room_policy: Callable[[ConnectedClient, str, bool], Any] | None = None,
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
            see C{docs/options.md}. C{broadcast} waits for clients that
            are behind (see L{broadcast}); one that stops reading is closed
            after C{stall_timeout}.
        @param keep_process_alive: while started, keep the process alive
            after the main script ends (the original's behaviour; default).
        @param authenticate: C{authenticate(credentials, peer)} for extended
            clients that send credentials: return an identity (a C{str},
            then C{client.identity}), or L{None} to refuse (the client's
            connection closes with reason C{auth failed}); raising refuses
            too. C{peer} is a L{Peer}. Runs on a worker thread. With the
            C{require_auth} option, a connection is a client (callbacks,
            broadcasts) only once authenticated.
        @param room_policy: C{room_policy(client, room, joining)}: whether an
            extended client may join (C{joining}) or leave C{room} itself
            (C{Client.join}); default: any room. Runs on a worker thread.
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
            # backplane="redis://..." (ClusterOptions): one hub of several.
            registry=make_backplane(self.options.cluster, server=self.options.server),
            on_connect=self._on_connect,
            on_close=self._on_close,
            on_message=self._on_message,
            on_request=self._on_request,
            authenticate=(
                None if authenticate is None else partial(self._off, authenticate)
            ),
            room_policy=partial(self._policy, room_policy or any_room),
        )
        self._lock = threading.Lock()
        self._clients: dict[str, ConnectedClient] = {}
        # While stop() runs: the event queues of the clients it closed.
        self._stopping_queues: list[SerialQueue] | None = None
        # One outbox for the whole server keeps each thread's sends and
        # broadcasts in the order they were made.
        self._touched: set[ConnectedClient] = set()
        self._outbox = Outbox(self._loop.call_soon, self._write, self._flushed)
        self._rooms = Rooms(self._room_change)
        # Broadcasts on their way to the reactor (bounded like a window),
        # and, per reactor batch, what they add to the clients' windows.
        self._in_flight = SendWindow.for_flow(self._flow)
        self._in_flight_batch = 0
        self._to_all = 0
        self._to_some: dict[str, int] = {}
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
            for web in self._factory.web_ports:
                self.web_port = getattr(web.getHost(), "port", None)
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
        *,
        room: str | None = None,
    ) -> None:
        """
        Send C{message} to every connected client, or to every member of
        C{room}, except C{exclude}. It is encoded once, now (a bad value
        raises here), and goes out in order with what this thread sent,
        joined and left before it.

        A broadcasting loop goes at the pace of the clients that keep up:
        the message takes room in each recipient's send window (the one
        C{sendTo} uses; see L{FlowControl}), so while a recipient has more
        than C{send_high_water} bytes waiting, this waits until it is under
        C{send_low_water}. A recipient that has stopped reading is closed
        once its queue has made no progress for C{stall_timeout} seconds
        (reason C{slow consumer}), and the loop goes on without it. On the
        reactor thread it never waits. Inside a message callback it blocks
        that connection's callbacks only; if every worker thread is blocked
        so, messages wait in the receive windows (reading pauses) until
        the slow clients are dropped.

        @raise SendTimeoutError: a recipient did not catch up within
            C{send_timeout}; nobody got this message (it is all or nothing).
        @raise InvalidRoomError: C{room} is not a valid room name.
        """
        if room is not None:
            check_room(room)
        frame = self._factory.encode(message)
        if isinstance(exclude, (ConnectedClient, str)):
            exclude = (exclude,)
        ids = frozenset(c.id if isinstance(c, ConnectedClient) else c for c in exclude)
        size = frame.size
        if get_ident() != self._loop.reactor_ident:
            recipients = self.clients if room is None else self._rooms.members(room)
            timeout = self._flow.send_timeout
            deadline = None if timeout is None else time.monotonic() + timeout
            for client in recipients:
                # Wait while a recipient's window (shared with sendTo) is
                # over high water; a stalled one is closed meanwhile. A
                # lock-free read per recipient: the common case costs that.
                if client.behind and client.id not in ids:
                    client.wait_until_caught_up(deadline)
            # Broadcasts on their way to the reactor, bounded too.
            self._in_flight.acquire(size, self._describe_in_flight)
        else:
            self._in_flight.add(size)
        self._outbox.put(((ids, room), frame))

    # -- rooms ------------------------------------------------------------

    def join(self, client: ConnectedClient | str, room: str) -> bool:
        """
        Put a client (or the client with this id) in C{room}: a room is
        made by its first member and gone when its last leaves, and a client
        leaves every room when it disconnects. C{True} if it was not in it
        already. Takes effect in order with this thread's sends and
        broadcasts.

        @raise ClientGoneError: that client is not connected.
        @raise InvalidRoomError: C{room} is not a valid room name.
        """
        return self._rooms.join(self._client(client), room)

    def leave(self, client: ConnectedClient | str, room: str) -> bool:
        """
        Take a client out of C{room}; C{True} if it was in it.
        """
        return self._rooms.leave(self._client(client), room)

    def rooms_of(self, client: ConnectedClient | str) -> frozenset[str]:
        """
        The rooms a client is in.
        """
        return self._rooms.rooms_of(self._client(client))

    def members(self, room: str) -> list[ConnectedClient]:
        """
        The clients in C{room}, in the order they joined.
        """
        return self._rooms.members(room)

    def rooms(self) -> list[str]:
        """
        The rooms that have members.
        """
        return self._rooms.rooms()

    def _client(self, client: ConnectedClient | str) -> ConnectedClient:
        if isinstance(client, ConnectedClient):
            return client
        with self._lock:
            found = self._clients.get(client)
        if found is None:
            raise ClientGoneError(client)
        return found

    def _room_change(self, change: str, client: ConnectedClient, room: str) -> None:
        # Any thread: carried to the reactor in order with sends.
        self._outbox.put((change, (client, room)))

    def sendTo(self, message: Any, client: ConnectedClient | str | int = 0) -> None:
        """
        Send C{message} to one client: a L{ConnectedClient}, its C{id}, or
        an C{int} index in connection order (the original's meaning; fragile,
        as indices shift when clients leave).

        With a backplane, an id may be a client's on another node: the
        message goes there (this waits until it is on its way).

        @raise ClientGoneError: that client is not connected (on any node).
        @raise IndexError: no client at that index.
        """
        if isinstance(client, bool):
            raise TypeError("sendTo takes a client, its id, or an index")
        if (
            isinstance(client, str)
            and hasattr(self._factory.clients, "send_to")
            and self._clients.get(client) is None
        ):
            self._loop.call(
                self._factory.send_to, client, message, timeout=None, what="sendTo()"
            )
            return
        if isinstance(client, int):
            clients = self.clients
            if not 0 <= client < len(clients):
                raise IndexError(
                    f"sendTo index {client}, but {len(clients)} clients are connected"
                )
            target = clients[client]
        else:
            target = self._client(client)
        target.send(message)

    def _flushed(self) -> None:
        # Reactor thread: a batch of sends and broadcasts is written. The
        # broadcasts count in each recipient's window, once per batch.
        to_all, self._to_all = self._to_all, 0
        to_some, self._to_some = self._to_some, {}
        if to_all or to_some:
            touched = self._touched
            for client_id, client in self._clients.items():
                size = to_all + to_some.get(client_id, 0)
                if size and client.broadcast_written(size):
                    touched.add(client)
        in_flight, self._in_flight_batch = self._in_flight_batch, 0
        if in_flight:
            self._in_flight.release(in_flight)
        touched, self._touched = self._touched, set()
        for client in touched:
            client.sent()

    def _describe_in_flight(self) -> str:
        return f"the server on port {self.port} (broadcasts waiting for its reactor)"

    def _write(self, item: tuple[Any, Any]) -> None:
        # Reactor thread: one queued send or close (to a client), broadcast
        # (to (ids, room)) or room change ("join"/"leave", (client, room)).
        target, payload = item
        if type(target) is not ConnectedClient:
            self._write_other(target, payload)
            return
        if target.write_now(payload):
            self._touched.add(target)

    def _write_other(self, target: Any, payload: Any) -> None:
        if isinstance(target, tuple):
            ids, room = target
            size = payload.size
            self._in_flight_batch += size
            if room is None:
                self._factory.clients.broadcast(payload, ids)
                if not ids:
                    # Counted into every window once per batch (_flushed).
                    self._to_all += size
                    return
                handles: Iterable[ClientHandle] = self._factory.clients
            else:
                self._factory.clients.broadcast(payload, ids, room)
                handles = self._factory.members(room)
            extra = self._to_some
            for handle in handles:
                if handle.id not in ids:
                    extra[handle.id] = extra.get(handle.id, 0) + size
            return
        client, room = payload
        try:
            if target == "join":
                self._factory.join(client.handle, room)
            else:
                self._factory.leave(client.handle, room)
        except ClientGoneError:
            pass  # it disconnected meanwhile: in no room now

    # -- Twisted-level events (reactor thread) --------------------------------

    def _on_connect(self, handle: ClientHandle) -> None:
        client = ConnectedClient(
            handle,
            self,
            flow=self._flow,
            loop=self._loop,
            pool=self._pool,
            encode=self._encode,
            outbox=self._outbox,
            on_message=self._message_callbacks.fire,
        )
        with self._lock:
            self._clients[handle.id] = client
        client.events.put(self._connect_callbacks.fire, client)

    def _on_message(self, handle: ClientHandle, message: Any) -> None:
        client = self._clients.get(handle.id)
        if client is not None:
            client.received(message)

    def _on_close(self, handle: ClientHandle, reason: CloseReason) -> None:
        with self._lock:
            client = self._clients.pop(handle.id, None)
        if client is None:
            return
        client.disconnected(reason)
        self._rooms.forget(client)
        client.events.put(self._close_callbacks.fire, client)
        with self._lock:
            if self._stopping_queues is not None:
                self._stopping_queues.append(client.events)
