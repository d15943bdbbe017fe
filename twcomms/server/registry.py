"""
Where a server's connected clients are kept, and how a broadcast reaches
them: the L{ClientRegistry} interface and L{LocalClientRegistry}, the
clients of this process.

A registry that also relays broadcasts to other server processes (the
Redis backplane) implements the same interface.

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twcomms.connection import FrameWriter
from twcomms.errors import NotConnectedError
from twcomms.server.handle import ClientHandle
from twcomms.wire.framing import Frame

__all__ = ["ClientRegistry", "LocalClientRegistry"]

_log = Logger()


class ClientRegistry(Protocol):
    """
    Where a server's connected clients are kept, and how a broadcast
    reaches them.

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
        # Each client's FrameWriter, in the same order: a broadcast reads
        # two plain attributes of each (closed, writePaused) and nothing else.
        self._writers: dict[str, FrameWriter] = {}
        # This turn's small broadcasts (whole frames), for every client.
        self._batch: list[bytes] | None = None
        self._batchPayloadBytes = 0
        # The connections' clock (the reactor, or a test's Clock).
        self._clock: IReactorTime | None = None
        # One bound method for every connection's beforeWrite hook.
        self._flush = self.flush

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
        for writer in self._writers.values():
            if writer.closed:
                continue
            if writer.writePaused:
                # Its outbound limit applies frame by frame: write now.
                self.flush()
                return self._writeEach(frame, exclude)
            recipients += 1
        if recipients:
            batch = self._batch
            if batch is None:
                batch = self._batch = []
                assert self._clock is not None
                self._clock.callLater(0, self.flush)
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
        for client_id, writer in list(self._writers.items()):
            if writer.closed:
                continue
            try:
                writer.writeFrames(data, count, payloadBytes)
            except ConnectionError as e:
                _log.warn(
                    "broadcast skipped {client}: {error}",
                    client=self._clients.get(client_id),
                    error=e,
                )

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
