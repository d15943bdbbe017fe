"""
The option sections, each a frozen dataclass validated once when made,
and L{Options}, which holds one of each.

Thread: plain values; any thread.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from twcomms.options.cluster import ClusterOptions
from twcomms.options.extensions import AccessOptions, ExtensionOptions, HelloOptions
from twcomms.options.spec import (
    check_int,
    check_number,
    check_timeout,
    option,
    option_fields,
    read_choice,
    read_flag,
    read_seconds,
    read_timeout,
    read_whole,
    read_whole_or_none,
    set_field,
)
from twcomms.options.web import WebOptions
from twcomms.wire.codecs import DATA_TYPES, Codec, get_codec
from twcomms.wire.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_FRAME_PAYLOAD,
    struct_format,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_OUTBOUND_HEADROOM",
    "DEFAULT_STALL_TIMEOUT",
    "SECTIONS",
    "ConnectionOptions",
    "FlowControl",
    "Options",
    "ReconnectOptions",
    "ServerOptions",
    "SlowConsumerPolicy",
]


_MiB = 1024 * 1024

#: The default outbound limit is the maximum message size plus this.
DEFAULT_OUTBOUND_HEADROOM = _MiB

#: Seconds bytes may wait for a peer that reads none of them before it is
#: closed as a slow consumer. Long enough for TCP to retransmit through a
#: brief outage (a few seconds of backed-off retransmissions) and for a
#: slow peer to take one 1 MiB slice at 100 KB/s; short enough that a
#: peer that has stopped reading pins its queue (up to the drain marks, or
#: the outbound limit) only that long. Engine.IO waits 25 + 20 s for a
#: missed heartbeat; a stalled reader is a surer sign than a silent one.
DEFAULT_STALL_TIMEOUT = 10.0

#: Seconds a TLS connection may take to complete its handshake before it is
#: aborted (close reason C{handshake timeout}): a peer that opens a TLS
#: connection and says nothing is not a client yet, and would otherwise be
#: held, uncounted by C{max_clients}, for as long as it likes.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


class SlowConsumerPolicy(str, enum.Enum):
    """
    What happens when a peer's outbound limit would be exceeded.
    """

    #: Abort the connection (close reason C{slow consumer}) and raise
    #: L{SlowConsumerError} for the message that did not fit. The default.
    CLOSE = "close"
    #: Keep the connection; raise L{SlowConsumerError} for each message that
    #: does not fit until the peer reads again.
    RAISE = "raise"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ConnectionOptions:
    """
    Options of every connection, server or client side. See each field's
    C{doc} (L{option_fields}) or C{docs/options.md}.
    """

    section: ClassVar[str] = "connection"

    messageDataType: str | Codec = option(
        "json",
        "Message data type: how received messages are decoded (json, string, "
        "binary; the Twisted API also takes a Codec).",
        read_choice(*DATA_TYPES),
        flag="--type",
        short="t",
        metavar="TYPE",
    )
    byteOrder: str = option(
        "little",
        "Byte order of the 4-byte length header: little or big (both ends must agree).",
        read_choice("little", "big"),
        flag="--byte-order",
        metavar="ORDER",
    )
    max_message_size: int = option(
        DEFAULT_MAX_MESSAGE_SIZE,
        "Largest message accepted or sent, in bytes (64 MiB); a peer that "
        "announces more is closed (reason oversize).",
        read_whole,
        metavar="BYTES",
    )
    idle_timeout: float | None = option(
        None,
        "Close a connection whose peer sends nothing for this many seconds "
        "(reason idle timeout); not counted while we have paused reading. "
        "None (or 0 on the command line): never.",
        read_timeout,
        metavar="SECONDS",
    )
    handshake_timeout: float | None = option(
        DEFAULT_HANDSHAKE_TIMEOUT,
        "Over TLS, abort a connection whose handshake has not completed "
        "after this many seconds (reason handshake timeout). None (or 0): "
        "never.",
        read_timeout,
        metavar="SECONDS",
    )
    outbound_limit: int | None = option(
        None,
        "Bytes that may queue to a peer that does not read (while its "
        "transport asks us to pause) before the slow-consumer policy "
        "applies; at least max_message_size + 4. None: max_message_size + "
        "1 MiB.",
        read_whole_or_none,
        metavar="BYTES",
    )
    slow_consumer_policy: SlowConsumerPolicy = option(
        SlowConsumerPolicy.CLOSE,
        "What happens when the outbound limit would be exceeded: close (the "
        "connection, reason slow consumer) or raise (SlowConsumerError for "
        "each message that does not fit, the connection stays).",
        read_choice(*(p.value for p in SlowConsumerPolicy)),
        metavar="POLICY",
    )

    stall_timeout: float | None = option(
        DEFAULT_STALL_TIMEOUT,
        "Close a connection (reason slow consumer) when bytes have waited "
        "for its peer this many seconds without a single byte of them being "
        "read. A peer that reads, however slowly, makes progress at least "
        "once per 1 MiB it takes, so it is never dropped. None (or 0): never.",
        read_timeout,
        metavar="SECONDS",
    )

    codec: Codec = field(init=False, repr=False, compare=False)
    #: The C{struct} format of the length header (from C{byteOrder}).
    structFormat: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_field(self, "codec", get_codec(self.messageDataType))
        set_field(self, "structFormat", struct_format(self.byteOrder))
        size = self.max_message_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(
                f"max_message_size must be an int, not {type(size).__name__}"
            )
        if not 0 < size <= MAX_FRAME_PAYLOAD:
            raise ValueError(
                f"max_message_size must be between 1 and {MAX_FRAME_PAYLOAD} "
                f"(what a 4-byte header can announce), not {size}"
            )
        stall = check_timeout("stall_timeout", self.stall_timeout)
        set_field(self, "stall_timeout", stall)
        set_field(
            self, "idle_timeout", check_timeout("idle_timeout", self.idle_timeout)
        )
        set_field(
            self,
            "handshake_timeout",
            check_timeout("handshake_timeout", self.handshake_timeout),
        )
        limit = self.outbound_limit
        if limit is not None:
            check_int("outbound_limit", limit, 0)
            if limit < size + 4:
                raise ValueError(
                    f"outbound_limit ({limit}) must be at least max_message_size "
                    f"+ 4 ({size + 4}): one largest message must fit"
                )
        set_field(
            self, "slow_consumer_policy", SlowConsumerPolicy(self.slow_consumer_policy)
        )

    @property
    def effective_outbound_limit(self) -> int:
        """
        The outbound limit in force: C{outbound_limit}, or the default.
        """
        if self.outbound_limit is None:
            return self.max_message_size + DEFAULT_OUTBOUND_HEADROOM
        return self.outbound_limit


@dataclass(frozen=True)
class ServerOptions:
    """
    Options of a server.
    """

    section: ClassVar[str] = "server"

    max_clients: int | None = option(
        None,
        "Close connections beyond this many clients at once (reason max "
        "clients). None: no limit.",
        read_whole_or_none,
        metavar="N",
    )
    drain_high_water: int = option(
        8 * _MiB,
        "Bytes waiting for one client above which a broadcaster paces "
        "itself: whenDrained() waits, and the hub stops reading the client "
        "whose messages it relays, until every recipient is under "
        "drain_low_water (or was dropped).",
        read_whole,
        metavar="BYTES",
    )
    drain_low_water: int = option(
        2 * _MiB, "See drain_high_water.", read_whole, metavar="BYTES"
    )

    def __post_init__(self) -> None:
        check_int("max_clients", self.max_clients, 0, none=True)
        check_int("drain_high_water", self.drain_high_water, 0)
        check_int("drain_low_water", self.drain_low_water, 0)
        if self.drain_low_water > self.drain_high_water:
            raise ValueError(
                f"need drain_low_water ({self.drain_low_water}) <= "
                f"drain_high_water ({self.drain_high_water})"
            )


@dataclass(frozen=True)
class ReconnectOptions:
    """
    Options of a client's reconnection (exponential back-off with jitter).
    """

    section: ClassVar[str] = "reconnect"

    autoReconnect: bool = option(
        False,
        "Reconnect after a failed attempt or a lost connection, until "
        "closed. Off by default, as in the original.",
        read_flag,
        flag="--auto-reconnect",
        metavar="YES|NO",
    )
    initial_delay: float = option(
        1.0, "Seconds before the first reconnection attempt.", read_seconds
    )
    max_delay: float = option(
        30.0, "The longest delay between attempts, seconds.", read_seconds
    )
    factor: float = option(
        2.0, "Each delay is the previous one times this (>= 1).", float
    )
    jitter: float = option(
        0.12,
        "Relative standard deviation of each delay (drawn from a normal "
        "distribution, then clamped to [0, max_delay]), so clients that lost "
        "one server do not all return at once.",
        float,
    )
    max_retries: int | None = option(
        None,
        "Give up after this many consecutive failed attempts (a connection "
        "that closes within a second counts as one). None: never.",
        read_whole_or_none,
        metavar="N",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.autoReconnect, bool):
            raise TypeError("autoReconnect must be True or False")
        initial = check_number("initial_delay", self.initial_delay, 0)
        maximum = check_number("max_delay", self.max_delay, 0)
        if initial > maximum:
            raise ValueError(
                "need 0 <= initial_delay <= max_delay, got "
                f"initial_delay={initial}, max_delay={maximum}"
            )
        set_field(self, "initial_delay", initial)
        set_field(self, "max_delay", maximum)
        set_field(self, "factor", check_number("factor", self.factor, 1))
        set_field(self, "jitter", check_number("jitter", self.jitter, 0))
        check_int("max_retries", self.max_retries, 0, none=True)


@dataclass(frozen=True)
class FlowControl:
    """
    Flow-control limits of the threaded API, per connection. Memory stays
    bounded however fast senders, slow callbacks and slow readers are.
    """

    section: ClassVar[str] = "flow"

    send_high_water: int = option(
        8 * _MiB,
        "Bytes accepted by send() and not yet taken by a peer that keeps up; "
        "above this send() blocks until they drain to send_low_water.",
        read_whole,
        metavar="BYTES",
    )
    send_low_water: int = option(
        2 * _MiB, "See send_high_water.", read_whole, metavar="BYTES"
    )
    send_timeout: float | None = option(
        30.0,
        "Seconds a blocked send() waits before raising SendTimeoutError. "
        "None: forever.",
        read_timeout,
        metavar="SECONDS",
    )
    receive_high_count: int = option(
        10_000,
        "Messages received and not yet handled by the callbacks; above this "
        "(or receive_high_bytes) reading from that connection pauses until a "
        "quarter is left. Nothing is dropped.",
        read_whole,
        metavar="N",
    )
    receive_high_bytes: int = option(
        16 * _MiB,
        "The same, in payload bytes.",
        read_whole,
        metavar="BYTES",
    )
    offline_max_count: int = option(
        10_000,
        "With autoReconnect: messages that may wait for the next connection; "
        "when full, send() raises QueueFullError.",
        read_whole,
        metavar="N",
    )
    offline_max_bytes: int = option(
        16 * _MiB, "The same, in payload bytes.", read_whole, metavar="BYTES"
    )

    def __post_init__(self) -> None:
        for name in (
            "send_high_water",
            "send_low_water",
            "receive_high_count",
            "receive_high_bytes",
            "offline_max_count",
            "offline_max_bytes",
        ):
            check_int(name, getattr(self, name), 0)
        if self.send_low_water > self.send_high_water:
            raise ValueError(
                f"need send_low_water ({self.send_low_water}) <= send_high_water "
                f"({self.send_high_water})"
            )
        set_field(
            self, "send_timeout", check_timeout("send_timeout", self.send_timeout)
        )


SECTIONS: tuple[type, ...] = (
    ConnectionOptions,
    ServerOptions,
    ReconnectOptions,
    FlowControl,
    ExtensionOptions,
    HelloOptions,
    AccessOptions,
    ClusterOptions,
    WebOptions,
)


@dataclass(frozen=True)
class Options:
    """
    The one options object: a section of each kind. A front door uses the
    sections that apply to it (a server ignores C{reconnect}).

        Options.build(idle_timeout=60, max_clients=100)

    @ivar connection: L{ConnectionOptions}.
    @ivar server: L{ServerOptions}.
    @ivar reconnect: L{ReconnectOptions}.
    @ivar flow: L{FlowControl}.
    @ivar extended: L{ExtensionOptions}.
    @ivar hello: L{HelloOptions}.
    @ivar access: L{AccessOptions}.
    @ivar cluster: L{ClusterOptions}.
    @ivar gateway: L{WebOptions}.
    """

    connection: ConnectionOptions = field(default_factory=ConnectionOptions)
    server: ServerOptions = field(default_factory=ServerOptions)
    reconnect: ReconnectOptions = field(default_factory=ReconnectOptions)
    flow: FlowControl = field(default_factory=FlowControl)
    extended: ExtensionOptions = field(default_factory=ExtensionOptions)
    hello: HelloOptions = field(default_factory=HelloOptions)
    access: AccessOptions = field(default_factory=AccessOptions)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    gateway: WebOptions = field(default_factory=WebOptions)

    @classmethod
    def build(
        cls,
        options: Options | None = None,
        *,
        door: str = "Options",
        sections: Iterable[type] = SECTIONS,
        **keywords: Any,
    ) -> Options:
        """
        C{options} (default: all defaults) with C{keywords} applied: each
        keyword is a field of a section in C{sections} or, to replace a
        whole section, its name (C{connection=ConnectionOptions(...)}).

        @param door: names the caller in error messages.
        @raise TypeError: a keyword that is not an option of C{door}.
        @raise ValueError: a value out of range (naming the option).
        """
        allowed = tuple(sections)
        base = options if options is not None else cls()
        if not isinstance(base, Options):
            raise TypeError(f"options must be an Options, not {base!r}")
        by_section: dict[str, dict[str, Any]] = {}
        replaced: dict[str, Any] = {}
        for key, value in keywords.items():
            section = _section_by_name(key, allowed)
            if section is not None:
                if not isinstance(value, section):
                    raise TypeError(
                        f"{door}: {key}= takes a {section.__name__}, not {value!r}"
                    )
                replaced[key] = value
                continue
            owner = _owner(key, allowed)
            if owner is None:
                raise TypeError(_unknown(door, key, allowed))
            by_section.setdefault(owner.section, {})[key] = value  # type: ignore[attr-defined]
        for name, value in replaced.items():
            base = replace(base, **{name: value})
        for name, changes in by_section.items():
            base = replace(base, **{name: replace(getattr(base, name), **changes)})
        return base


def _section_by_name(name: str, allowed: tuple[type, ...]) -> type | None:
    for section in allowed:
        if section.section == name:  # type: ignore[attr-defined]
            return section
    return None


def _owner(name: str, allowed: tuple[type, ...]) -> type | None:
    for section in allowed:
        if any(n == name for n, _ in option_fields(section)):
            return section
    return None


def _unknown(door: str, key: str, allowed: tuple[type, ...]) -> str:
    names = [n for s in allowed for n, _ in option_fields(s)]
    names += [s.section for s in allowed]  # type: ignore[attr-defined]
    message = f"{door}() got an unexpected option {key!r}"
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    elsewhere = _owner(key, SECTIONS)
    if elsewhere is not None:
        message += (
            f" ({key} is a {elsewhere.__name__} option, which {door} does not use)"
        )
    return message
