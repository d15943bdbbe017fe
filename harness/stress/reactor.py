"""
Helpers for the scenarios that run on a running global reactor: bounded
waits (L{bounded}), counters and keyed slots that fire Deferreds, a raw
TCP peer that writes given pieces and parses frames with L{harness.wire},
and a well-behaved ping-pong client.
"""

from __future__ import annotations

import time
from typing import Any

from harness.wire import split

LOCAL_TCP = "tcp:0:interface=127.0.0.1"


def global_reactor() -> Any:
    """
    Twisted's global reactor, imported when first needed (importing this
    module installs none).
    """
    from twisted.internet import reactor

    return reactor


def bounded(d: Any, timeout: float, what: str = "an event") -> Any:
    """
    A new Deferred with C{d}'s result, failing with C{TimeoutError} (saying
    C{what}) after C{timeout} seconds. C{d} itself is left alone.
    """
    from twisted.internet import defer

    result: defer.Deferred[Any] = defer.Deferred()
    reactor = global_reactor()

    def expire() -> None:
        if not result.called:
            result.errback(TimeoutError(f"no {what} within {timeout} s"))

    call = reactor.callLater(timeout, expire)

    def done(outcome: Any) -> None:
        if call.active():
            call.cancel()
        if not result.called:
            result.callback(outcome)

    d.addBoth(done)
    return result


def sleep(seconds: float) -> Any:
    """
    Let the reactor run for C{seconds}: only to let time pass (a timeout,
    a back-off), never to wait for something that has an event.
    """
    from twisted.internet import task

    return task.deferLater(global_reactor(), seconds, lambda: None)


class Counter:
    """
    A count, and Deferreds for "at least N". Reactor thread.
    """

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, Any]] = []

    def add(self, n: int = 1) -> None:
        self.count += n
        if self._waiters:
            ready = [(k, d) for k, d in self._waiters if self.count >= k]
            self._waiters = [(k, d) for k, d in self._waiters if self.count < k]
            for _, d in ready:
                d.callback(self.count)

    def wait(self, n: int, timeout: float, what: str) -> Any:
        from twisted.internet import defer

        if self.count >= n:
            return defer.succeed(self.count)
        d: defer.Deferred[int] = defer.Deferred()
        self._waiters.append((n, d))
        return bounded(d, timeout, f"{what} (have {self.count} of {n})")


class Slots:
    """
    Deferreds by key: C{get(key)} is fired by C{fire(key, value)}, in
    either order. Reactor thread.
    """

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        self._waiters: dict[Any, list[Any]] = {}

    def fire(self, key: Any, value: Any = None) -> None:
        self._values[key] = value
        for d in self._waiters.pop(key, []):
            d.callback(value)

    def get(self, key: Any, timeout: float, what: str) -> Any:
        from twisted.internet import defer

        if key in self._values:
            return defer.succeed(self._values[key])
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiters.setdefault(key, []).append(d)
        return bounded(d, timeout, what)

    def discard(self, key: Any) -> None:
        self._values.pop(key, None)


def _raw_protocol_class() -> Any:
    from twisted.internet import defer, protocol

    class RawPeer(protocol.Protocol):
        """
        Writes given pieces, one per reactor turn (TCP_NODELAY, so they
        tend to leave as separate segments), then optionally closes.
        """

        def __init__(self) -> None:
            self.lost: defer.Deferred[Any] = defer.Deferred()
            self.reason: Any = None
            self.frames: list[bytes] = []
            self.frame_count = Counter()
            self._unparsed = b""

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)
            self.port = int(self.transport.getHost().port)

        def dataReceived(self, data: bytes) -> None:
            payloads, self._unparsed = split(self._unparsed + data)
            if payloads:
                self.frames.extend(payloads)
                self.frame_count.add(len(payloads))

        def connectionLost(self, reason: Any = None) -> None:
            self.reason = reason
            if not self.lost.called:
                self.lost.callback(None)

        async def write_pieces(self, pieces: list[bytes], close: bool) -> None:
            for piece in pieces:
                if self.lost.called:
                    return
                self.transport.write(piece)
                await sleep(0)
            if close and not self.lost.called:
                self.transport.loseConnection()

    return RawPeer


async def connect_raw(port: int, timeout: float = 10.0) -> Any:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    endpoint = TCP4ClientEndpoint(global_reactor(), "127.0.0.1", port, timeout=timeout)
    return await bounded(
        connectProtocol(endpoint, _raw_protocol_class()()), timeout, "a raw connection"
    )


class PingPong:
    """
    A well-behaved twcomms client that keeps one ping in flight and checks
    each echo; records the longest wait between echoes.
    """

    def __init__(self, data_type: str = "binary", max_message_size: int = 4096) -> None:
        from twcomms.client import CommsClientFactory

        self.data_type = data_type
        self.echoes = Counter()
        self.bad = 0
        self.longest_gap = 0.0
        self._last = time.monotonic()
        self._n = 0
        self.running = False
        self.client = CommsClientFactory(
            data_type,
            max_message_size=max_message_size,
            on_message=self._on_message,
        )

    def _ping(self) -> Any:
        if self.data_type == "binary":
            return f"ping {self._n}".encode()
        if self.data_type == "string":
            return f"ping {self._n}"
        return {"ping": self._n}

    def start(self, port: int, trust_root: str | None = None) -> Any:
        """
        Connect (over TLS, trusting C{trust_root}, if given).
        """
        if trust_root is None:
            self.client.connectTCP("127.0.0.1", port)
        else:
            self.client.connectSSL("127.0.0.1", port, trust_root=trust_root)
        return self.client.whenConnected()

    def go(self) -> None:
        self.running = True
        self._last = time.monotonic()
        self.client.send(self._ping())

    def _on_message(self, client: Any, message: Any) -> None:
        if message != self._ping():
            self.bad += 1
        now = time.monotonic()
        self.longest_gap = max(self.longest_gap, now - self._last)
        self._last = now
        self._n += 1
        self.echoes.add()
        if self.running:
            client.send(self._ping())

    def stop(self) -> Any:
        self.running = False
        return self.client.stop()
