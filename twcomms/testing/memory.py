"""
Test twcomms code without sockets: an in-memory network with a fake clock.

    from twcomms.server import CommsServerFactory
    from twcomms.client import CommsClientFactory
    from twcomms.testing import MemoryNetwork

    def test_echo():
        net = MemoryNetwork()
        server = CommsServerFactory(reactor=net.reactor,
                                    on_message=lambda c, m: c.send(m))
        server.listen(6000)
        got = []
        client = CommsClientFactory(reactor=net.reactor,
                                    on_message=lambda c, m: got.append(m))
        client.connectTCP("127.0.0.1", 6000)
        net.flush()
        client.send({"hi": 1})
        net.flush()
        assert got == [{"hi": 1}]

C{net.reactor} is a L{MemoryReactorClock}: give it to the factories (or to
your own code) wherever a reactor or clock is taken. C{listenTCP},
C{connectTCP}, C{listenUNIX} and C{connectUNIX} on it connect factories to
each other through L{twisted.test.iosim} pumps; a connection to a port
nobody listens on fails with C{ConnectionRefusedError}; closes reach both
protocols and the client factory's C{clientConnectionLost}, so reconnection
logic runs as it would on a real reactor. Time moves only when you call
L{MemoryNetwork.advance}.

Thread: one thread, the test's; nothing here uses a real reactor.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import (
    ConnectionLost,
    ConnectionRefusedError,
    NotConnectingError,
)
from twisted.internet.interfaces import IConnector, IListeningPort
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

__all__ = ["MemoryNetwork"]

_MAX_PUMPS = 100_000


class MemoryNetwork:
    """
    Servers and clients connected in memory, driven by hand.

    @ivar reactor: the fake reactor to give to factories.
    @ivar pumps: the connections made so far (L{iosim.IOPump}s).
    """

    def __init__(self) -> None:
        self.reactor = _NetworkReactor(self)
        self.pumps: list[iosim.IOPump] = []
        self._listeners: dict[Any, _MemoryPort] = {}
        self._ephemeral = itertools.count(40000)

    def flush(self) -> None:
        """
        Run what is due now and move bytes until every connection is quiet.
        """
        for _ in range(_MAX_PUMPS):
            self.reactor.advance(0)
            moved = False
            for pump in list(self.pumps):
                if pump.pump(advanceClock=False):
                    moved = True
                if pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self.pumps.remove(pump)
            if not moved and not self._due():
                return
        raise AssertionError("MemoryNetwork.flush: connections never went quiet")

    def advance(self, seconds: float) -> None:
        """
        Move the clock forward by C{seconds}, running what falls due, then
        L{flush}.
        """
        self.flush()
        self.reactor.advance(seconds)
        self.flush()

    def break_connections(self) -> None:
        """
        Drop every connection as if the network failed (each side sees
        C{ConnectionLost}).
        """
        for pump in self.pumps:
            for io in (pump.clientIO, pump.serverIO):
                io.disconnectReason = ConnectionLost("network failure (simulated)")
            pump.clientIO.loseConnection()
        self.flush()

    def _due(self) -> bool:
        now = self.reactor.seconds()
        return any(c.getTime() <= now for c in self.reactor.getDelayedCalls())

    def _connect(self, connector: _MemoryConnector) -> None:
        port = self._listeners.get(connector.key)
        factory = connector.factory
        if port is None:
            connector.state = "disconnected"
            factory.clientConnectionFailed(
                connector,
                Failure(ConnectionRefusedError(f"nothing listens on {connector.key}")),
            )
            return
        connector.state = "connected"
        client_address = self._clientAddress(connector.key)
        server_address = port.getHost()
        client_proto = factory.buildProtocol(server_address)
        server_proto = port.factory.buildProtocol(client_address)
        if client_proto is None or server_proto is None:
            connector.state = "disconnected"
            factory.clientConnectionFailed(
                connector, Failure(ConnectionRefusedError("no protocol built"))
            )
            return
        client_io = _ConnectorTransport(
            client_proto,
            False,
            hostAddress=client_address,
            peerAddress=server_address,
        )
        client_io.connector = connector
        server_io = iosim.FakeTransport(
            server_proto, True, hostAddress=server_address, peerAddress=client_address
        )
        self.pumps.append(
            iosim.connect(
                server_proto,
                server_io,
                client_proto,
                client_io,
                greet=False,
                clock=self.reactor,
            )
        )

    def _clientAddress(self, key: Any) -> Any:
        if isinstance(key, int):
            return IPv4Address("TCP", "127.0.0.1", next(self._ephemeral))
        return UNIXAddress(None)


class _ConnectorTransport(iosim.FakeTransport):
    """
    The client side's transport: tells its connector when the connection
    is lost, as a real reactor does.
    """

    connector: _MemoryConnector | None = None

    def reportDisconnect(self) -> None:
        super().reportDisconnect()
        connector = self.connector
        if connector is not None:
            connector.state = "disconnected"
            connector.factory.clientConnectionLost(
                connector, Failure(self.disconnectReason)
            )


@implementer(IConnector)
class _MemoryConnector:
    """
    An L{IConnector} over a L{MemoryNetwork}: C{connect()} really connects
    (on the next L{MemoryNetwork.flush}).
    """

    def __init__(self, network: MemoryNetwork, key: Any, factory: Any) -> None:
        self.network = network
        self.key = key
        self.factory = factory
        self.state = "disconnected"
        self.attempts = 0
        self._started = False
        self._pending: Any = None

    def connect(self) -> None:
        if not self._started:
            self._started = True
            self.factory.doStart()
        self.state = "connecting"
        self.attempts += 1
        self.factory.startedConnecting(self)
        self._pending = self.network.reactor.callLater(0, self._attempt)

    def _attempt(self) -> None:
        self._pending = None
        if self.state == "connecting":
            self.network._connect(self)

    def stopConnecting(self) -> None:
        if self.state != "connecting":
            raise NotConnectingError()
        self.state = "disconnected"
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def disconnect(self) -> None:
        if self.state == "connecting":
            self.stopConnecting()

    def getDestination(self) -> Any:
        if isinstance(self.key, int):
            return IPv4Address("TCP", "127.0.0.1", self.key)
        return UNIXAddress(self.key)


@implementer(IListeningPort)
class _MemoryPort:
    def __init__(self, network: MemoryNetwork, key: Any, factory: Any) -> None:
        self.network = network
        self.key = key
        self.factory = factory

    def startListening(self) -> None:
        self.network._listeners[self.key] = self
        self.factory.doStart()

    def stopListening(self) -> None:
        if self.network._listeners.get(self.key) is self:
            del self.network._listeners[self.key]
            self.factory.doStop()

    def getHost(self) -> Any:
        if isinstance(self.key, int):
            return IPv4Address("TCP", "127.0.0.1", self.key)
        return UNIXAddress(self.key)


class _NetworkReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose TCP and UNIX listen/connect calls go
    through a L{MemoryNetwork}.
    """

    def __init__(self, network: MemoryNetwork) -> None:
        super().__init__()
        self._network = network

    def _listen(self, key: Any, factory: Any) -> _MemoryPort:
        if key in self._network._listeners:
            from twisted.internet.error import CannotListenError

            raise CannotListenError(None, key, OSError("address already in use"))
        port = _MemoryPort(self._network, key, factory)
        port.startListening()
        return port

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> _MemoryPort:
        if port == 0:
            port = next(self._network._ephemeral)
        super().listenTCP(port, factory, backlog, interface)
        return self._listen(port, factory)

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: Any = None,
    ) -> _MemoryConnector:
        self.tcpClients.append((host, port, factory, timeout, bindAddress))  # type: ignore[arg-type]
        connector = _MemoryConnector(self._network, port, factory)
        self.connectors.append(connector)
        connector.connect()
        return connector

    def listenUNIX(
        self,
        address: str,
        factory: Any,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> _MemoryPort:
        super().listenUNIX(address, factory, backlog, mode, wantPID)
        return self._listen(address, factory)

    def connectUNIX(
        self,
        address: str,
        factory: Any,
        timeout: float = 30,
        checkPID: int = 0,
    ) -> _MemoryConnector:
        self.unixClients.append((address, factory, timeout, checkPID))
        connector = _MemoryConnector(self._network, address, factory)
        self.connectors.append(connector)
        connector.connect()
        return connector
