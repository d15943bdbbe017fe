"""
The server operators run: C{twistd -n comms --port 6000}, or
C{twcomms serve --port 6000} in the foreground.

It is a message hub: in C{broadcast} mode (the default) every message a
client sends is relayed to every other client (the hub the original's
examples build by hand); C{echo} sends each message back; C{sink} only
counts. C{--app module:callable} hands the Twisted-level server
(L{CommsServerFactory}) to your code to attach callbacks, without a tac
file. Connections, disconnections (with reasons) and errors are logged
through C{twisted.logger}; a one-line stats summary is logged every
C{--stats-interval} seconds. SIGTERM closes clients cleanly and exits 0.

L{Options} is the one definition of the options, used by twistd and by the
C{twcomms serve} command alike.

Thread: the reactor thread (twistd runs everything there).
"""

from __future__ import annotations

import importlib
import signal
import threading
from collections.abc import Callable
from typing import Any

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage

from twcomms.backplane import make_backplane
from twcomms.connection import PauseReason
from twcomms.options import ClusterOptions, from_arguments, twistd_parameters
from twcomms.options import Options as CommsOptions
from twcomms.options.spec import read_seconds, read_whole
from twcomms.server import (
    SERVER_SECTIONS,
    ClientHandle,
    CommsServerFactory,
    listen_description,
)
from twcomms.server.pacing import when_drained

__all__ = ["MODES", "Options", "makeService"]

#: The option sections of the hub: a server's, and the cluster it may be
#: one node of.
HUB_SECTIONS = (*SERVER_SECTIONS, ClusterOptions)

_log = Logger()

#: What the hub does with each message.
MODES = ("broadcast", "echo", "sink")


def _flag(
    option: str, read: Callable[[str], Any], doc: str, maximum: int | None = None
) -> Callable[[str], Any]:
    """
    A twistd coercer from one of the options' readers, whose errors name
    C{option} (C{--port must be >= 0, not -1}).
    """

    def coerce(value: str) -> Any:
        try:
            result = read(value)
        except ValueError as e:
            raise ValueError(f"{option} {e}") from None
        if maximum is not None and result > maximum:
            raise ValueError(f"{option} must be 0-{maximum}, not {result}")
        return result

    coerce.coerceDoc = doc  # type: ignore[attr-defined]
    return coerce


class Options(usage.Options):
    """
    Options of the comms hub (C{twistd comms}, C{twcomms serve}).
    """

    synopsis = "[options]"
    longdesc = (
        "Run a twcomms message hub: json, string or binary messages behind a "
        "4-byte length header (wire-compatible with Python Comms). Listens on "
        "--port (TCP, all interfaces) and/or each --listen endpoint; with "
        "neither, on TCP port 6000."
    )

    # The hub's own options, then every connection and server option,
    # generated from twcomms.options (one definition for every front door).
    optParameters = [
        [
            "port",
            "p",
            None,
            "TCP port to listen on, on --interface",
            _flag("--port", read_whole, "A whole number >= 0.", 65535),
        ],
        ["interface", "i", "", "Interface for --port (default: all IPv4)."],
        ["mode", "m", "broadcast", f"What to do with messages: {', '.join(MODES)}."],
        [
            "stats-interval",
            None,
            60.0,
            "Seconds between one-line stats logs; 0 turns them off",
            _flag("--stats-interval", read_seconds, "Seconds."),
        ],
        [
            "app",
            "a",
            None,
            "module:callable given the server (a CommsServerFactory) to attach "
            "your own callbacks; they run on the reactor thread.",
        ],
        *twistd_parameters(HUB_SECTIONS),
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Twisted endpoint description to listen on (repeatable), e.g.
        tcp:6000:interface=127.0.0.1, unix:/run/comms.sock,
        ssl:6001:privateKey=key.pem:certKey=cert.pem
        """
        self["listen"].append(description)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if self["mode"] not in MODES:
            raise usage.UsageError(
                f"--mode must be one of {', '.join(MODES)}, not {self['mode']!r}"
            )
        try:
            given = from_arguments(self, HUB_SECTIONS)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        try:
            self.comms = CommsOptions.build(
                door="twistd comms", sections=HUB_SECTIONS, **given
            )
        except (TypeError, ValueError) as e:
            # The options' own messages name them as keywords: say flags.
            raise usage.UsageError(str(e).replace("_", "-")) from None
        if self["app"] is not None:
            self["app"] = load_app(self["app"])
        try:
            make_backplane(self.comms.cluster)  # the URL checked now
        except (ValueError, OSError) as e:
            raise usage.UsageError(f"--backplane: {e}") from None
        if self["port"] is None and not self["listen"]:
            self["port"] = 6000

    def endpoints(self) -> list[str]:
        """
        Where to listen, as endpoint descriptions: C{--port} (on
        C{--interface}) and every C{--listen}.
        """
        where: list[str | tuple[str, int]] = []
        if self["port"] is not None:
            where.append((self["interface"] or "0.0.0.0", self["port"]))
        where.extend(self["listen"])
        return [listen_description(w) for w in where]


def load_app(spec: str) -> Callable[[CommsServerFactory], object]:
    """
    Import C{module:callable} (or C{module.callable}).

    @raise usage.UsageError: it cannot be imported or is not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise usage.UsageError(f"--app takes module:callable, not {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as e:
        raise usage.UsageError(f"--app {spec!r} cannot be loaded: {e}") from None
    if not callable(target):
        raise usage.UsageError(f"--app {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


class Hub:
    """
    What the hub does with messages, per C{--mode}.
    """

    def __init__(self, factory: CommsServerFactory, mode: str) -> None:
        self.factory = factory
        self.mode = mode
        if mode == "broadcast":
            factory.on_message.append(self.relay)
        elif mode == "echo":
            factory.on_message.append(self.echo)

    def relay(self, client: ClientHandle, message: Any) -> None:
        self.factory.broadcast(message, exclude=client, as_value=True)
        self._pace(client, self.factory.whenDrained())

    def echo(self, client: ClientHandle, message: Any) -> None:
        client.write_frame(self.factory.encode(message, as_value=True))
        proto = client.protocol
        writer = proto.writer if proto is not None else None
        marks = self.factory.options.server
        # Checked here first: when_drained makes a Deferred, which per
        # echoed message cost about 1 us of a WebSocket echo's 32 (profiled).
        if writer is not None and writer.queued > marks.drain_high_water:
            self._pace(
                client,
                when_drained([writer], marks.drain_high_water, marks.drain_low_water),
            )

    def _pace(self, client: ClientHandle, drained: Deferred[None]) -> None:
        """
        While the clients this one's messages go to are behind (over the
        drain high-water mark), stop reading from it -- TCP then slows it
        down -- until they have caught up or been dropped as stalled.
        """
        proto = client.protocol
        if drained.called or proto is None:
            return
        proto.pauseReading(PauseReason.PACING)
        drained.addBoth(lambda _: proto.resumeReading(PauseReason.PACING))


_BACKPLANE_FIGURES = (
    "published",
    "kept",
    "received",
    "overflowed",
    "missed",
    "gaps",
    "expired",
    "refused",
    "duplicates",
    "recovered",
    "outages",
)


class _Stats:
    """
    Logs clients, messages/s and bytes/s once per interval.
    """

    def __init__(self, factory: CommsServerFactory) -> None:
        self.factory = factory
        self.last = factory.totals()
        self.last_time = factory.clock.seconds()

    def __call__(self) -> None:
        now = self.factory.clock.seconds()
        totals = self.factory.totals()
        elapsed = max(now - self.last_time, 1e-9)
        rates = [(t - p) / elapsed for t, p in zip(totals, self.last, strict=True)]
        self.last, self.last_time = totals, now
        _log.info(
            "stats: {clients} clients, in {m_in:.0f} msg/s {b_in:.0f} B/s, "
            "out {m_out:.0f} msg/s {b_out:.0f} B/s",
            clients=len(self.factory.clients),
            m_in=rates[0],
            b_in=rates[1],
            m_out=rates[2],
            b_out=rates[3],
        )
        cluster = getattr(self.factory.clients, "cluster", None)
        if cluster is not None:
            s = self.factory.clients.stats()
            _log.info(
                "stats: backplane: {published} published ({kept} waiting for "
                "Redis), {received} received; lost: {overflowed} overflowed, "
                "{missed} missed in {gaps} gaps, {expired} expired, {refused} "
                "refused; {duplicates} duplicates dropped, {recovered} recovered, "
                "{outages} outages",
                **{k: s.get(k, 0) for k in _BACKPLANE_FIGURES},
            )
            cluster().addCallbacks(
                lambda nodes: _log.info(
                    "stats: cluster of {nodes} nodes, {total} clients ({each})",
                    nodes=len(nodes),
                    total=sum(nodes.values()),
                    each=", ".join(f"{n[:8]}: {c}" for n, c in sorted(nodes.items())),
                ),
                lambda f: _log.warn("stats: no cluster view: {e}", e=f.value),
            )


def stop_on_sigterm(reactor: Any) -> None:
    """
    From now on SIGTERM stops C{reactor} as a plain C{reactor.stop()}, so a
    hub stopped by SIGTERM, after closing its clients cleanly, exits 0.

    Twisted's own handler records the signal, and twistd re-raises it once
    the reactor has stopped (exit status 143). SIGTERM is how operators stop
    the hub, so it reports success. Only over a handler Twisted installed
    (a reactor run without signal handlers is left alone), and only from
    the main thread, where signal handlers live. Call it once the reactor
    runs (C{callWhenRunning}): Twisted installs its handlers as it starts.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None:  # pragma: no cover - every POSIX platform has it
        return
    current = signal.getsignal(sigterm)
    if current in (signal.SIG_DFL, signal.SIG_IGN, None):
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        reactor.callFromThread(reactor.stop)

    signal.signal(sigterm, on_sigterm)


class _CloseClients(Service):
    """
    On stop (SIGTERM, Ctrl-C), closes every client cleanly.
    """

    def __init__(self, factory: CommsServerFactory) -> None:
        self.factory = factory

    def startService(self) -> None:
        super().startService()
        self.factory.reactor.callWhenRunning(stop_on_sigterm, self.factory.reactor)

    def stopService(self) -> Any:
        super().stopService()
        return self.factory.stop()


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    The hub as a service: listening on every endpoint, closing clients on
    stop, logging stats.
    """
    factory = CommsServerFactory(
        options=options.comms,
        reactor=reactor,
        registry=make_backplane(options.comms.cluster, reactor, options.comms.server),
    )
    Hub(factory, options["mode"])
    if options["app"] is not None:
        options["app"](factory)
    top = MultiService()
    top.factory = factory  # type: ignore[attr-defined]
    _CloseClients(factory).setServiceParent(top)
    # Each port serves TCP clients, or with --web-shared browsers too;
    # --web is a port for browsers only.
    serving = factory.listening_factory()
    listeners = [(d, serving) for d in options.endpoints()]
    web = options.comms.gateway.web
    if web is not None:
        listeners.append((listen_description(web), factory.web_site))
    for description, served in listeners:
        # strports' services fail at start-up when a port cannot be
        # listened on, instead of running without it.
        strports.service(description, served, reactor=factory.reactor).setServiceParent(
            top
        )
    if options["stats-interval"]:
        stats = TimerService(options["stats-interval"], _Stats(factory))
        stats.clock = factory.reactor
        stats.setServiceParent(top)
    return top
