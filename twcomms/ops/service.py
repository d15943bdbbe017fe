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
from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from twisted.python import usage

from twcomms.connection.protocol import (
    validate_max_message_size,
    validate_outbound_limit,
    validate_timeout,
)
from twcomms.server.factory import ClientHandle, CommsServerFactory, server_endpoint
from twcomms.wire.codecs import DATA_TYPES
from twcomms.wire.framing import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["MODES", "Options", "makeService"]

_log = Logger()

#: What the hub does with each message.
MODES = ("broadcast", "echo", "sink")


def _count(option: str) -> Callable[[str], int]:
    """
    A coercer for a whole number >= 0 whose errors name C{option}.
    """

    def coerce(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"{option} takes a whole number, not {value!r}") from None
        if n < 0:
            raise ValueError(f"{option} must be >= 0, not {n}")
        if option == "--port" and n > 65535:
            raise ValueError(f"--port must be 0-65535, not {n}")
        return n

    coerce.coerceDoc = "A whole number >= 0."  # type: ignore[attr-defined]
    return coerce


def _seconds(option: str) -> Callable[[str], float]:
    """
    A coercer for a number of seconds >= 0 whose errors name C{option}.
    """

    def coerce(value: str) -> float:
        try:
            f = float(value)
        except ValueError:
            raise ValueError(f"{option} takes seconds, not {value!r}") from None
        if f < 0:
            raise ValueError(f"{option} must be >= 0 seconds, not {f}")
        return f

    coerce.coerceDoc = "Seconds."  # type: ignore[attr-defined]
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

    optParameters = [
        ["port", "p", None, "TCP port to listen on, on --interface", _count("--port")],
        ["interface", "i", "", "Interface for --port (default: all IPv4)."],
        [
            "type",
            "t",
            "json",
            f"Message data type: {', '.join(DATA_TYPES)}.",
        ],
        ["byte-order", None, "little", "Header byte order: little or big."],
        [
            "max-message-size",
            None,
            DEFAULT_MAX_MESSAGE_SIZE,
            "Largest message accepted or sent, in bytes",
            _count("--max-message-size"),
        ],
        [
            "max-clients",
            None,
            None,
            "Close connections beyond this many (default: no limit)",
            _count("--max-clients"),
        ],
        [
            "idle-timeout",
            None,
            None,
            "Close clients silent for this many seconds (default: never)",
            _seconds("--idle-timeout"),
        ],
        [
            "outbound-limit",
            None,
            None,
            "Bytes that may queue to a client that does not read before it is "
            "closed as a slow consumer (default: max-message-size + 1 MiB)",
            _count("--outbound-limit"),
        ],
        ["mode", "m", "broadcast", f"What to do with messages: {', '.join(MODES)}."],
        [
            "stats-interval",
            None,
            60.0,
            "Seconds between one-line stats logs; 0 turns them off",
            _seconds("--stats-interval"),
        ],
        [
            "app",
            "a",
            None,
            "module:callable given the server (a CommsServerFactory) to attach "
            "your own callbacks; they run on the reactor thread.",
        ],
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
        if self["type"] not in DATA_TYPES:
            raise usage.UsageError(
                f"--type must be one of {', '.join(DATA_TYPES)}, not {self['type']!r}"
            )
        if self["byte-order"] not in ("little", "big"):
            raise usage.UsageError(
                f"--byte-order must be little or big, not {self['byte-order']!r}"
            )
        if self["mode"] not in MODES:
            raise usage.UsageError(
                f"--mode must be one of {', '.join(MODES)}, not {self['mode']!r}"
            )
        try:
            validate_max_message_size(self["max-message-size"])
            validate_outbound_limit(self["outbound-limit"], self["max-message-size"])
            validate_timeout(self["idle-timeout"] or None, "--idle-timeout")
        except (TypeError, ValueError) as e:
            raise usage.UsageError(str(e).replace("_", "-")) from None
        if self["app"] is not None:
            self["app"] = load_app(self["app"])
        if self["port"] is None and not self["listen"]:
            self["port"] = 6000

    def endpoints(self) -> list[str | tuple[str, int]]:
        """
        Where to listen: C{--port} (on C{--interface}) and every C{--listen}.
        """
        where: list[str | tuple[str, int]] = []
        if self["port"] is not None:
            where.append((self["interface"] or "0.0.0.0", self["port"]))
        where.extend(self["listen"])
        return where


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

    def echo(self, client: ClientHandle, message: Any) -> None:
        client.write_frame(self.factory.encode(message, as_value=True))


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


class _CloseClients(Service):
    """
    On stop (SIGTERM, Ctrl-C), closes every client cleanly.
    """

    def __init__(self, factory: CommsServerFactory) -> None:
        self.factory = factory

    def stopService(self) -> Any:
        super().stopService()
        # twistd re-raises the signal that stopped it, so a hub stopped by
        # SIGTERM would exit with status 143 even after this clean shutdown.
        # SIGTERM is how operators stop the hub: report success (exit 0).
        reactor = self.factory.reactor
        if getattr(reactor, "_exitSignal", None) == getattr(signal, "SIGTERM", None):
            reactor._exitSignal = None
        return self.factory.stop()


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    The hub as a service: listening on every endpoint, closing clients on
    stop, logging stats.
    """
    factory = CommsServerFactory(
        options["type"],
        options["byte-order"],
        max_message_size=options["max-message-size"],
        max_clients=options["max-clients"],
        idle_timeout=options["idle-timeout"] or None,
        outbound_limit=options["outbound-limit"],
        reactor=reactor,
    )
    Hub(factory, options["mode"])
    if options["app"] is not None:
        options["app"](factory)
    top = MultiService()
    top.factory = factory  # type: ignore[attr-defined]
    _CloseClients(factory).setServiceParent(top)
    for where in options.endpoints():
        svc = StreamServerEndpointService(
            server_endpoint(factory.reactor, where), factory
        )
        # Fail at start-up when a port cannot be listened on, as twistd's
        # own strports services do, instead of running without it.
        svc._raiseSynchronously = True
        svc.setServiceParent(top)
    if options["stats-interval"]:
        stats = TimerService(options["stats-interval"], _Stats(factory))
        stats.clock = factory.reactor
        stats.setServiceParent(top)
    return top
