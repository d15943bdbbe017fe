"""
What an operator sees of a hub: L{Monitor} keeps, per server, what the
dashboard and C{/metrics} show that the server does not count itself --
close reasons, decode errors, recent slow consumers, requests and their
latency, and the rates of the last minutes -- from the server's events,
never per message. L{snapshot} is the dashboard's view of it all.

Nothing here changes the hub: it reads the server factory and listens to
its events.

Thread: the reactor thread only.
"""

from __future__ import annotations

import bisect
import hmac
import os
from collections import Counter, deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Request

from twcomms.web.frames import MessageTransport

__all__ = [
    "LATENCY_BOUNDS",
    "Monitor",
    "authorized",
    "client_view",
    "read_token",
    "refuse",
]

_log = Logger()

#: The request latency histogram's upper bounds, in seconds.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: Rate samples kept: one a second, five minutes.
HISTORY = 300
#: Slow consumers remembered (the latest).
SLOW_KEPT = 20
#: Samples (seconds) between two asks for the cluster's view.
CLUSTER_EVERY = 5


def read_token(spec: str | None) -> str | None:
    """
    The dashboard token from its option: C{env:NAME} (an environment
    variable), C{file:PATH} (the file's first line), or the token itself.

    @raise ValueError: the variable is unset, or the file empty.
    """
    if spec is None:
        return None
    if spec.startswith("env:"):
        value = os.environ.get(spec[4:])
        if not value:
            raise ValueError(f"monitor_token: the environment has no {spec[4:]}")
        return value
    if spec.startswith("file:"):
        with open(spec[5:], encoding="utf-8") as f:
            value = f.readline().strip()
        if not value:
            raise ValueError(f"monitor_token: {spec[5:]} is empty")
        return value
    return spec


def authorized(token: str | None, header: str | None, uri: str | bytes) -> bool:
    """
    Whether a request may see the dashboard or the metrics: no token is
    set, or it carries the token as C{Authorization: Bearer TOKEN} (as
    Prometheus sends it) or as C{?token=TOKEN} (as a browser's address).
    """
    if token is None:
        return True
    given = None
    if header is not None and header.lower().startswith("bearer "):
        given = header[7:].strip()
    else:
        if isinstance(uri, bytes):
            uri = uri.decode("latin-1")
        values = parse_qs(urlsplit(uri).query).get("token")
        given = values[0] if values else None
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def refuse(request: Request) -> bytes:
    request.setResponseCode(401)
    request.setHeader("content-type", "text/plain; charset=utf-8")
    request.setHeader("www-authenticate", 'Bearer realm="twcomms"')
    return b"This hub's dashboard and metrics need its token (?token= or Bearer).\n"


def client_view(handle: Any, rooms: frozenset[str]) -> dict[str, Any]:
    """
    One client as the dashboard shows it.
    """
    protocol = handle.protocol
    web = protocol is not None and isinstance(protocol.transport, MessageTransport)
    return {
        "id": handle.id,
        "address": f"{handle.address}:{handle.port}",
        "transport": "websocket" if web else "tcp",
        "protocol": "extended" if handle.extended else "plain",
        "identity": handle.identity,
        "rooms": sorted(rooms),
        "messages_in": handle.messages_in,
        "bytes_in": handle.bytes_in,
        "messages_out": handle.messages_out,
        "bytes_out": handle.bytes_out,
        "since": handle.connected_at,
    }


class Monitor:
    """
    The counts and history of one server (see the module docstring).

    @ivar closes: close reasons and how often each happened.
    @ivar decode_errors: frames that did not decode.
    @ivar slow: the latest slow consumers: C{(time, id, address)}.
    @ivar requests: answered requests by outcome (C{ok}, C{error}).
    @ivar latency: requests per L{LATENCY_BOUNDS} bucket (one more: above).
    @ivar latency_sum: their seconds, summed.
    @ivar history: C{(time, msgs in/s, bytes in/s, msgs out/s, bytes out/s,
        clients)}, one a second.
    """

    def __init__(self, comms: Any) -> None:
        self.comms = comms
        self.closes: Counter[str] = Counter()
        self.decode_errors = 0
        self.slow: deque[tuple[float, str, str]] = deque(maxlen=SLOW_KEPT)
        self.requests: Counter[str] = Counter()
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latency_sum = 0.0
        self.history: deque[tuple[float, ...]] = deque(maxlen=HISTORY)
        self.watchers: list[Any] = []
        #: The cluster's view (node id: clients), with a backplane: asked of
        #: the broker every L{CLUSTER_EVERY} samples, not per snapshot.
        self.cluster: dict[str, int] | None = None
        self._ticks = 0
        self._last: tuple[float, tuple[int, int, int, int]] | None = None
        self._sampler = LoopingCall(self._sample)
        self._sampler.clock = comms.reactor
        comms.on_connect.append(self._changed)
        comms.on_close.append(self._closed)
        comms.on_decode_error.append(self._decodeFailed)
        comms.on_request_done.append(self._answered)

    # -- events ---------------------------------------------------------------

    def _closed(self, client: Any, reason: Any) -> None:
        self.closes[str(reason)] += 1
        if str(reason) == "slow consumer":
            now = self.comms.reactor.seconds()
            self.slow.append((now, client.id, f"{client.address}:{client.port}"))
        self._changed(client)

    def _decodeFailed(self, client: Any, error: Any) -> None:
        self.decode_errors += 1

    def _answered(self, client: Any, seconds: float, failed: bool) -> None:
        self.requests["error" if failed else "ok"] += 1
        self.latency[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.latency_sum += seconds

    def _changed(self, client: Any) -> None:
        # Dashboards see a client come and go at once, not at the next tick.
        for watcher in list(self.watchers):
            watcher.changed()

    # -- sampling -------------------------------------------------------------

    def start(self) -> None:
        """
        Sample the rates once a second (while a listener serves browsers).
        """
        if not self._sampler.running:
            self._sampler.start(1.0, now=True)

    def stop(self) -> None:
        if self._sampler.running:
            self._sampler.stop()

    def _sample(self) -> None:
        now = self.comms.reactor.seconds()
        totals = self.comms.totals()
        last = self._last
        self._last = (now, totals)
        if last is not None and now > last[0]:
            span = now - last[0]
            rates = tuple(
                max(b - a, 0) / span for a, b in zip(last[1], totals, strict=True)
            )
            self.history.append((now, *rates, len(self.comms.clients)))
        self._ticks += 1
        cluster = getattr(self.comms.clients, "cluster", None)
        if cluster is not None and self._ticks % CLUSTER_EVERY == 1:
            cluster().addCallbacks(self._clustered, lambda failure: None)
        for watcher in list(self.watchers):
            try:
                watcher.tick()
            except Exception:
                # One dashboard failing stops neither sampling nor the others.
                _log.failure("a dashboard could not be updated")

    def _clustered(self, nodes: dict[str, int]) -> None:
        self.cluster = dict(nodes)

    # -- views ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """
        What the dashboard shows, now.
        """
        comms = self.comms
        rooms = {room: len(comms.members(room)) for room in comms.rooms()}
        clients = [
            client_view(c, comms.rooms_of(c)) for c in comms.clients if c.registered
        ]
        m_in, b_in, m_out, b_out = comms.totals()
        registry = comms.clients
        backplane = registry.stats() if hasattr(registry, "counters") else None
        return {
            "time": comms.reactor.seconds(),
            "clients": clients,
            "rooms": rooms,
            "totals": {
                "messages_in": m_in,
                "bytes_in": b_in,
                "messages_out": m_out,
                "bytes_out": b_out,
                "rejected": comms.rejected,
                "decode_errors": self.decode_errors,
            },
            "closes": dict(self.closes),
            "slow": [list(s) for s in self.slow],
            "history": [list(h) for h in self.history],
            "backplane": backplane,
            "cluster": self.cluster,
        }
