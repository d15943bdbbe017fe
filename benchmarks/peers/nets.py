"""
Event-loop systems: twcomms-twisted, stock-twisted, asyncio.

Each "net" offers the same small interface; the scenario logic
(L{benchmarks.peers.eventloop}) is written once against it, so those three
do exactly the same work::

  listen(on_connect, on_message) -> port
  reply(conn, msg); sender(conn) -> send(msg); broadcast(msg)
  connect(port, on_message, on_connected, on_failed)
  call_soon(f, *a); call_later(dt, f, *a); run(); stop()

on_connect(conn), on_message(conn, msg), on_connected(conn): conn is the
system's own connection object.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from benchmarks.peers.common import json_bytes, json_value
from benchmarks.peers.settings import MAX_MESSAGE
from harness.wire import HEADER


class _TwistedLoop:
    def __init__(self) -> None:
        from twisted.internet import reactor
        from twisted.logger import (
            FilteringLogObserver,
            LogLevel,
            LogLevelFilterPredicate,
            globalLogBeginner,
            textFileLogObserver,
        )

        # Warnings and errors to stderr; info events (twcomms logs each
        # connection) are dropped, as a configured server would.
        observer = FilteringLogObserver(
            textFileLogObserver(sys.stderr),
            [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
        )
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
        self.reactor: Any = reactor

    def call_soon(self, f: Callable[..., Any], *args: Any) -> None:
        self.reactor.callLater(0, f, *args)

    def call_later(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        self.reactor.callLater(delay, f, *args)

    def run(self) -> None:
        self.reactor.run(installSignalHandlers=False)

    def stop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()


class TwcommsNet(_TwistedLoop):
    """
    twcomms' Twisted API.
    """

    def __init__(self, binary: bool) -> None:
        super().__init__()
        from twcomms import CommsClientFactory, CommsServerFactory
        from twcomms.wire.framing import DEFAULT_MAX_MESSAGE_SIZE

        self._client_cls = CommsClientFactory
        self._server_cls = CommsServerFactory
        self._mode = "binary" if binary else "json"
        self._max = MAX_MESSAGE if binary else DEFAULT_MAX_MESSAGE_SIZE
        self.server: Any = None

    def listen(
        self, on_connect: Callable[..., Any], on_message: Callable[..., Any]
    ) -> int:
        self.server = self._server_cls(
            self._mode,
            max_message_size=self._max,
            on_connect=on_connect,
            on_message=on_message,
        )
        ports: list[Any] = []
        self.server.listen(("127.0.0.1", 0)).addCallback(ports.append)
        return int(ports[0].getHost().port)

    def reply(self, conn: Any, message: Any) -> None:
        conn.send(message)

    def sender(self, conn: Any) -> Callable[[Any], None]:
        return conn.send  # type: ignore[no-any-return]

    def broadcast(self, message: Any) -> None:
        self.server.broadcast(message)

    def connect(
        self,
        port: int,
        on_message: Callable[..., Any],
        on_connected: Callable[[Any], Any],
        on_failed: Callable[[str], Any],
    ) -> None:
        client = self._client_cls(
            self._mode, max_message_size=self._max, on_message=on_message
        )
        client.connectTCP("127.0.0.1", port)
        client.whenConnected().addCallbacks(
            lambda _: on_connected(client), lambda f: on_failed(f.getErrorMessage())
        )


class _StockNet(_TwistedLoop):
    """
    Twisted's own Int32StringReceiver, json around it.
    """

    def __init__(self, binary: bool) -> None:
        super().__init__()
        from twisted.internet.protocol import ClientFactory, Factory
        from twisted.protocols.basic import Int32StringReceiver

        self._encode: Callable[[Any], bytes] = (lambda m: m) if binary else json_bytes
        decode: Callable[[bytes], Any] = (lambda b: b) if binary else json_value
        self.protocols: dict[Any, None] = {}
        net = self

        class Proto(Int32StringReceiver):
            structFormat = "<I"
            prefixLength = 4
            MAX_LENGTH = 0xFFFFFFFF

            def connectionMade(self) -> None:
                self.factory.made(self)

            def stringReceived(self, string: bytes) -> None:
                self.factory.on_message(self, decode(string))

            def connectionLost(self, reason: Any = None) -> None:
                net.protocols.pop(self, None)

        class ServerFactory(Factory):
            protocol = Proto
            noisy = False

            def __init__(self, on_connect: Any, on_message: Any) -> None:
                self.on_connect = on_connect
                self.on_message = on_message

            def made(self, proto: Any) -> None:
                net.protocols[proto] = None
                self.on_connect(proto)

        class Client(ClientFactory):
            protocol = Proto
            noisy = False

            def __init__(self, on_message: Any, on_connected: Any, on_failed: Any):
                self.on_message = on_message
                self.on_connected = on_connected
                self.on_failed = on_failed

            def made(self, proto: Any) -> None:
                self.on_connected(proto)

            def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
                self.on_failed(reason.getErrorMessage())

        self._server_factory = ServerFactory
        self._client_factory = Client

    def listen(
        self, on_connect: Callable[..., Any], on_message: Callable[..., Any]
    ) -> int:
        port = self.reactor.listenTCP(
            0,
            self._server_factory(on_connect, on_message),
            backlog=1024,
            interface="127.0.0.1",
        )
        return int(port.getHost().port)

    def reply(self, conn: Any, message: Any) -> None:
        conn.sendString(self._encode(message))

    def sender(self, conn: Any) -> Callable[[Any], None]:
        send_string = conn.sendString
        encode = self._encode

        def send(message: Any) -> None:
            send_string(encode(message))

        return send

    def broadcast(self, message: Any) -> None:
        data = self._encode(message)
        for proto in list(self.protocols):
            proto.sendString(data)

    def connect(
        self,
        port: int,
        on_message: Callable[..., Any],
        on_connected: Callable[[Any], Any],
        on_failed: Callable[[str], Any],
    ) -> None:
        self.reactor.connectTCP(
            "127.0.0.1", port, self._client_factory(on_message, on_connected, on_failed)
        )


class _AsyncioNet:
    """
    asyncio streams with a struct header.
    """

    def __init__(self, binary: bool) -> None:
        import asyncio

        self._asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._binary = binary
        self._decode: Callable[[bytes], Any] = (lambda b: b) if binary else json_value
        self._encode: Callable[[Any], bytes] = (lambda m: m) if binary else json_bytes
        self.writers: dict[Any, None] = {}
        self._tasks: set[Any] = set()

    def call_soon(self, f: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon(f, *args)

    def call_later(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        self.loop.call_later(delay, f, *args)

    def run(self) -> None:
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.stop()

    async def _read_frames(self, reader: Any, writer: Any, on_message: Any) -> None:
        readexactly = reader.readexactly
        unpack = HEADER.unpack
        decode = self._decode
        try:
            while True:
                (length,) = unpack(await readexactly(4))
                on_message(writer, decode(await readexactly(length)))
        except (self._asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.pop(writer, None)
            writer.close()

    def listen(
        self, on_connect: Callable[..., Any], on_message: Callable[..., Any]
    ) -> int:
        async def handle(reader: Any, writer: Any) -> None:
            self.writers[writer] = None
            on_connect(writer)
            await self._read_frames(reader, writer, on_message)

        server = self.loop.run_until_complete(
            self._asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        )
        self._server = server
        return int(server.sockets[0].getsockname()[1])

    def _write(self, writer: Any, data: bytes) -> None:
        if len(data) <= 16384:
            writer.write(HEADER.pack(len(data)) + data)
        else:
            # No copy of a large payload to prepend 4 bytes.
            writer.write(HEADER.pack(len(data)))
            writer.write(data)

    def reply(self, conn: Any, message: Any) -> None:
        self._write(conn, self._encode(message))

    def sender(self, conn: Any) -> Callable[[Any], None]:
        write = self._write
        encode = self._encode

        def send(message: Any) -> None:
            write(conn, encode(message))

        return send

    def broadcast(self, message: Any) -> None:
        data = self._encode(message)
        frame = HEADER.pack(len(data)) + data
        for writer in list(self.writers):
            writer.write(frame)

    def connect(
        self,
        port: int,
        on_message: Callable[..., Any],
        on_connected: Callable[[Any], Any],
        on_failed: Callable[[str], Any],
    ) -> None:
        async def run() -> None:
            try:
                reader, writer = await self._asyncio.open_connection("127.0.0.1", port)
            except OSError as e:
                on_failed(str(e))
                return
            on_connected(writer)
            await self._read_frames(reader, writer, on_message)

        task = self.loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def make_net(system: str, binary: bool) -> Any:
    if system == "twcomms-twisted":
        return TwcommsNet(binary)
    if system == "stock-twisted":
        return _StockNet(binary)
    if system == "asyncio":
        return _AsyncioNet(binary)
    raise ValueError(system)
