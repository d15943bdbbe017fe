"""
Where a server's connected clients are kept, which rooms they are in, and
how a broadcast reaches them: the L{ClientRegistry} interface and
L{LocalClientRegistry}, the clients of this process.

A registry that also relays broadcasts to other server processes (the
Redis backplane) implements the same interface, and passes the same
contract suite (L{twcomms.testing.RegistryContract}).

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twcomms.connection import FrameWriter
from twcomms.errors import NotConnectedError
from twcomms.server.handle import ClientHandle
from twcomms.wire.extended import MAX_ROOM_LENGTH, check_room
from twcomms.wire.framing import Frame

__all__ = [
    "MAX_ROOM_LENGTH",
    "ClientRegistry",
    "LocalClientRegistry",
    "check_room",
]

_log = Logger()


class ClientRegistry(Protocol):
    """
    Where a server's connected clients are kept, which rooms they are in,
    and how a broadcast reaches them.

    Every method is called on the reactor thread. Rooms are created by a
    first C{join} and gone when their last member leaves; a client leaves
    every room when it is removed.
    """

    def start(self) -> Deferred[None]:
        """
        Get ready (connect to a broker, ...); the server listens once this
        fires.
        """

    def stop(self) -> Deferred[None]:
        """
        Release what L{start} took; called when the server has stopped.
        """

    def add(self, client: ClientHandle) -> None:
        """
        A client connected.
        """

    def remove(self, client: ClientHandle) -> None:
        """
        A client disconnected: it leaves every room.
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

    def join(self, client: ClientHandle, room: str) -> bool:
        """
        Put C{client} in C{room} (a name L{check_room} accepts); C{True} if
        it was not in it already.
        """

    def leave(self, client: ClientHandle, room: str) -> bool:
        """
        Take C{client} out of C{room}; C{True} if it was in it.
        """

    def rooms_of(self, client: ClientHandle) -> frozenset[str]:
        """
        The rooms C{client} is in.
        """

    def members(self, room: str) -> list[ClientHandle]:
        """
        The clients in C{room} (here), in the order they joined.
        """

    def rooms(self) -> list[str]:
        """
        The rooms with members (here).
        """

    def broadcast(
        self, frame: Frame, exclude: Collection[str], room: str | None = None
    ) -> int:
        """
        Send C{frame} to every client (or every member of C{room}) whose id
        is not in C{exclude}, in order with everything else sent to each;
        return how many clients here it is for. It may be written when the
        current reactor turn ends rather than now. A client that cannot
        take it (gone, or a slow consumer) is skipped and logged; the others
        are unaffected.
        """

    def stats(self) -> dict[str, int]:
        """
        Counters: C{clients}, C{rooms}, C{memberships}, C{broadcasts},
        C{deliveries}.
        """


class LocalClientRegistry:
    """
    The clients connected to this process, in connection order, and their
    rooms.

    Small broadcasts are batched per reactor turn, and each client still
    gets one write per turn, its messages in the order they were sent:

      - a broadcast to everyone appends its frame to the turn's shared
        batch (one append, whatever the number of clients);
      - a broadcast to a room, or one that excludes someone, appends its
        frame to each recipient's own list (time proportional to the
        recipients, not to all clients); once a client has a list of its
        own, later shared frames of the turn are appended to every list;
      - when the turn ends, or before anything else is written to one of
        these clients, or a client comes or goes, each client gets the
        shared frames and its own joined in one C{write}.

    Thread: the reactor thread only.
    """

    def __init__(self) -> None:
        self._clients: dict[str, ClientHandle] = {}
        # Each client's FrameWriter, in the same order: a broadcast reads
        # two plain attributes of each (closed, writePaused) and nothing else.
        self._writers: dict[str, FrameWriter] = {}
        # room -> {client id: writer}, in join order; client id -> rooms.
        self._rooms: dict[str, dict[str, FrameWriter]] = {}
        self._memberships: dict[str, set[str]] = {}
        # This turn's frames for every client, then each client's own.
        self._shared: list[bytes] = []
        self._own: dict[str, list[bytes]] = {}
        self._scheduled = False
        # The connections' clock (the reactor, or a test's Clock).
        self._clock: IReactorTime | None = None
        self._broadcasts = 0
        self._deliveries = 0
        # One bound method for every connection's beforeWrite hook.
        self._flush = self.flush

    # -- lifecycle and membership -------------------------------------------

    def start(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def add(self, client: ClientHandle) -> None:
        # A broadcast made before this client was registered is not its.
        self.flush()
        self._clients[client.id] = client
        proto = client.protocol
        if proto is not None and proto.writer is not None:
            proto.writer.beforeWrite = self._flush
            self._writers[client.id] = proto.writer
            if self._clock is None:
                self._clock = proto.clock

    def remove(self, client: ClientHandle) -> None:
        self.flush()
        self._clients.pop(client.id, None)
        self._writers.pop(client.id, None)
        for room in self._memberships.pop(client.id, ()):
            self._dropMember(room, client.id)

    def get(self, client_id: str) -> ClientHandle | None:
        return self._clients.get(client_id)

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[ClientHandle]:
        return iter(list(self._clients.values()))

    # -- rooms ----------------------------------------------------------------

    def join(self, client: ClientHandle, room: str) -> bool:
        check_room(room)
        writer = self._writers.get(client.id)
        if writer is None or self._clients.get(client.id) is not client:
            raise NotConnectedError(
                f"client {client.id} is not connected here; it cannot join {room!r}"
            )
        rooms = self._memberships.setdefault(client.id, set())
        if room in rooms:
            return False
        rooms.add(room)
        self._rooms.setdefault(room, {})[client.id] = writer
        return True

    def leave(self, client: ClientHandle, room: str) -> bool:
        rooms = self._memberships.get(client.id)
        if not rooms or room not in rooms:
            return False
        rooms.discard(room)
        if not rooms:
            del self._memberships[client.id]
        self._dropMember(room, client.id)
        return True

    def _dropMember(self, room: str, client_id: str) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.pop(client_id, None)
            if not members:
                del self._rooms[room]

    def rooms_of(self, client: ClientHandle) -> frozenset[str]:
        return frozenset(self._memberships.get(client.id, ()))

    def members(self, room: str) -> list[ClientHandle]:
        clients = self._clients
        return [clients[cid] for cid in self._rooms.get(room, ())]

    def rooms(self) -> list[str]:
        return list(self._rooms)

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self._clients),
            "rooms": len(self._rooms),
            "memberships": sum(len(m) for m in self._rooms.values()),
            "broadcasts": self._broadcasts,
            "deliveries": self._deliveries,
        }

    # -- broadcasting -----------------------------------------------------------

    def broadcast(
        self, frame: Frame, exclude: Collection[str] = (), room: str | None = None
    ) -> int:
        self._broadcasts += 1
        parts = frame.parts
        if room is None and not exclude:
            if len(parts) != 1:
                return self._writeNow(frame, self._writers, exclude)
            recipients = 0
            for writer in self._writers.values():
                if writer.closed:
                    continue
                if writer.writePaused:
                    # Its outbound limit applies frame by frame: write now.
                    return self._writeNow(frame, self._writers, exclude)
                recipients += 1
            if recipients:
                data = parts[0]
                if self._own:
                    # Clients with frames of their own this turn: keep the
                    # order by giving them this one too.
                    for own in self._own.values():
                        own.append(data)
                self._shared.append(data)
                self._schedule()
            self._deliveries += recipients
            return recipients
        audience = self._writers if room is None else self._rooms.get(room, {})
        if len(parts) != 1:
            return self._writeNow(frame, audience, exclude)
        chosen: list[str] = []
        for client_id, writer in audience.items():
            if writer.closed or client_id in exclude:
                continue
            if writer.writePaused:
                return self._writeNow(frame, audience, exclude)
            chosen.append(client_id)
        if chosen:
            data = parts[0]
            owns = self._own
            shared = self._shared
            for client_id in chosen:
                mine = owns.get(client_id)
                if mine is None:
                    # Its list starts with the shared frames so far.
                    mine = owns[client_id] = list(shared)
                mine.append(data)
            self._schedule()
        self._deliveries += len(chosen)
        return len(chosen)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            assert self._clock is not None
            self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """
        Write this turn's batched broadcasts now, one write per client.
        Called when the turn ends, and before anything else is written to
        one of these clients (so each client's messages stay in order).
        """
        shared, own = self._shared, self._own
        if not shared and not own:
            return
        self._shared = []
        self._own = {}
        self._scheduled = False
        if shared:
            count = len(shared)
            data = shared[0] if count == 1 else b"".join(shared)
            del shared
            for client_id, writer in list(self._writers.items()):
                if writer.closed:
                    continue
                mine = own.pop(client_id, None)
                if mine is None:
                    self._write(client_id, writer, data, count)
                else:
                    self._write(client_id, writer, b"".join(mine), len(mine))
        for client_id, mine in own.items():
            remaining = self._writers.get(client_id)
            if remaining is not None and not remaining.closed:
                self._write(client_id, remaining, b"".join(mine), len(mine))

    def _write(
        self, client_id: str, writer: FrameWriter, data: bytes, count: int
    ) -> None:
        try:
            # Every frame's header is 4 bytes: the rest is payload.
            writer.writeFrames(data, count, len(data) - 4 * count)
        except ConnectionError as e:
            _log.warn(
                "broadcast skipped {client}: {error}",
                client=self._clients.get(client_id),
                error=e,
            )

    def _writeNow(
        self,
        frame: Frame,
        audience: dict[str, FrameWriter],
        exclude: Collection[str],
    ) -> int:
        """
        Write C{frame} to C{audience} now, after this turn's batch: larger
        payloads (header and payload written apart), and broadcasts when a
        recipient is paused (its outbound limit applies frame by frame).
        """
        self.flush()
        sent = 0
        for client_id, writer in list(audience.items()):
            if client_id in exclude:
                continue
            try:
                writer.writeFrame(frame)
            except NotConnectedError:
                continue
            except ConnectionError as e:
                _log.warn(
                    "broadcast skipped {client}: {error}",
                    client=self._clients.get(client_id),
                    error=e,
                )
                continue
            sent += 1
        self._deliveries += sent
        return sent
