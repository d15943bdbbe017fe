"""
Every option of twcomms, declared once.

An option is a field of one of four sections, each a frozen dataclass:

  - L{ConnectionOptions}: every connection, either side (codec, byte order,
    sizes, timeouts, the outbound limit);
  - L{ServerOptions}: a server's (how many clients);
  - L{ReconnectOptions}: a client's reconnection (back-off, retries);
  - L{FlowControl}: the threaded API's send and receive windows.

L{Options} holds one of each: the one options object. A field carries its
documentation and how it is read from command-line text, and the front
doors are built from these declarations: the Twisted factories and the
threaded C{Server}/C{Client} take any field as a keyword (L{Options.build}),
C{twistd comms} and C{twcomms serve} get a flag per field
(L{twistd_parameters}), C{twcomms send/listen} likewise
(L{add_arguments}). A new option is one field here, plus its tests
(C{tests/test_options.py} checks every door takes every field).

Values are validated once, when a section is made; a bad one raises
C{ValueError} or C{TypeError} naming the option.

Thread: plain values; any thread.
"""

from __future__ import annotations

import argparse
import difflib
import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from twcomms.wire.codecs import DATA_TYPES, Codec, get_codec
from twcomms.wire.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_FRAME_PAYLOAD,
    struct_format,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_OUTBOUND_HEADROOM",
    "ConnectionOptions",
    "FlowControl",
    "Options",
    "ReconnectOptions",
    "ServerOptions",
    "SlowConsumerPolicy",
    "add_arguments",
    "from_arguments",
    "option_fields",
    "options_table",
    "twistd_parameters",
]

_MiB = 1024 * 1024

#: The default outbound limit is the maximum message size plus this.
DEFAULT_OUTBOUND_HEADROOM = _MiB

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


# -- reading option values from text -------------------------------------------


def _whole(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"takes a whole number, not {text!r}") from None
    if n < 0:
        raise ValueError(f"must be >= 0, not {n}")
    return n


def _whole_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else _whole(text)


def _seconds(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise ValueError(f"takes seconds, not {text!r}") from None
    if not f >= 0:
        raise ValueError(f"must be >= 0 seconds, not {text}")
    return f


def _timeout(text: str) -> float | None:
    # 0 (or "none") turns a timeout off, as operators expect of a flag.
    if text.lower() in ("none", "off"):
        return None
    return _seconds(text) or None


def _choice(*values: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"must be one of {', '.join(values)}, not {text!r}")
        return text

    parse.choices = values  # type: ignore[attr-defined]
    return parse


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"takes yes or no, not {text!r}")


@dataclass(frozen=True)
class OptionSpec:
    """
    What a field declares besides its type and default.

    @ivar doc: one line of documentation (help text, docstrings).
    @ivar parse: reads the value from command-line text; raises
        C{ValueError} with a message to show after the flag's name.
    @ivar flag: the long command-line flag.
    @ivar short: a one-letter flag, or L{None}.
    @ivar metavar: the value's name in help text.
    """

    doc: str
    parse: Callable[[str], Any]
    flag: str
    short: str | None
    metavar: str

    @property
    def choices(self) -> tuple[str, ...] | None:
        return getattr(self.parse, "choices", None)


def option(
    default: Any,
    doc: str,
    parse: Callable[[str], Any],
    *,
    flag: str | None = None,
    short: str | None = None,
    metavar: str = "VALUE",
) -> Any:
    """
    Declare a field as an option (its flag defaults to C{--field-name}).
    """
    return field(
        default=default,
        metadata={
            "option": {
                "doc": doc,
                "parse": parse,
                "flag": flag,
                "short": short,
                "metavar": metavar,
            }
        },
    )


def option_fields(section: type) -> Iterator[tuple[str, OptionSpec]]:
    """
    The options a section declares, as C{(name, spec)}, in order.
    """
    for f in fields(section):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        yield (
            f.name,
            OptionSpec(
                meta["doc"], meta["parse"], flag, meta["short"], meta["metavar"]
            ),
        )


# -- checks ---------------------------------------------------------------------


def _check_timeout(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None")
    if not value > 0:
        raise ValueError(f"{name} must be positive (seconds), or None; not {value}")
    return float(value)


def _check_int(name: str, value: Any, minimum: int, *, none: bool = False) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an int or None" if none else "an int"
        raise TypeError(f"{name} must be {kind}, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")


def _check_number(name: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return float(value)


def _set(obj: object, name: str, value: Any) -> None:
    # Normalising a frozen dataclass's own field in __post_init__.
    object.__setattr__(obj, name, value)


# -- the sections ---------------------------------------------------------------


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
        _choice(*DATA_TYPES),
        flag="--type",
        short="t",
        metavar="TYPE",
    )
    byteOrder: str = option(
        "little",
        "Byte order of the 4-byte length header: little or big (both ends must agree).",
        _choice("little", "big"),
        flag="--byte-order",
        metavar="ORDER",
    )
    max_message_size: int = option(
        DEFAULT_MAX_MESSAGE_SIZE,
        "Largest message accepted or sent, in bytes (64 MiB); a peer that "
        "announces more is closed (reason oversize).",
        _whole,
        metavar="BYTES",
    )
    idle_timeout: float | None = option(
        None,
        "Close a connection whose peer sends nothing for this many seconds "
        "(reason idle timeout); not counted while we have paused reading. "
        "None (or 0 on the command line): never.",
        _timeout,
        metavar="SECONDS",
    )
    handshake_timeout: float | None = option(
        DEFAULT_HANDSHAKE_TIMEOUT,
        "Over TLS, abort a connection whose handshake has not completed "
        "after this many seconds (reason handshake timeout). None (or 0): "
        "never.",
        _timeout,
        metavar="SECONDS",
    )
    outbound_limit: int | None = option(
        None,
        "Bytes that may queue to a peer that does not read (while its "
        "transport asks us to pause) before the slow-consumer policy "
        "applies; at least max_message_size + 4. None: max_message_size + "
        "1 MiB.",
        _whole_or_none,
        metavar="BYTES",
    )
    slow_consumer_policy: SlowConsumerPolicy = option(
        SlowConsumerPolicy.CLOSE,
        "What happens when the outbound limit would be exceeded: close (the "
        "connection, reason slow consumer) or raise (SlowConsumerError for "
        "each message that does not fit, the connection stays).",
        _choice(*(p.value for p in SlowConsumerPolicy)),
        metavar="POLICY",
    )

    codec: Codec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set(self, "codec", get_codec(self.messageDataType))
        struct_format(self.byteOrder)  # validates
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
        _set(self, "idle_timeout", _check_timeout("idle_timeout", self.idle_timeout))
        _set(
            self,
            "handshake_timeout",
            _check_timeout("handshake_timeout", self.handshake_timeout),
        )
        limit = self.outbound_limit
        if limit is not None:
            _check_int("outbound_limit", limit, 0)
            if limit < size + 4:
                raise ValueError(
                    f"outbound_limit ({limit}) must be at least max_message_size "
                    f"+ 4 ({size + 4}): one largest message must fit"
                )
        _set(
            self, "slow_consumer_policy", SlowConsumerPolicy(self.slow_consumer_policy)
        )

    @property
    def structFormat(self) -> str:
        """
        The C{struct} format of the length header.
        """
        return struct_format(self.byteOrder)

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
        _whole_or_none,
        metavar="N",
    )

    def __post_init__(self) -> None:
        _check_int("max_clients", self.max_clients, 0, none=True)


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
        _flag,
        flag="--auto-reconnect",
        metavar="YES|NO",
    )
    initial_delay: float = option(
        1.0, "Seconds before the first reconnection attempt.", _seconds
    )
    max_delay: float = option(
        30.0, "The longest delay between attempts, seconds.", _seconds
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
        _whole_or_none,
        metavar="N",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.autoReconnect, bool):
            raise TypeError("autoReconnect must be True or False")
        initial = _check_number("initial_delay", self.initial_delay, 0)
        maximum = _check_number("max_delay", self.max_delay, 0)
        if initial > maximum:
            raise ValueError(
                "need 0 <= initial_delay <= max_delay, got "
                f"initial_delay={initial}, max_delay={maximum}"
            )
        _set(self, "initial_delay", initial)
        _set(self, "max_delay", maximum)
        _set(self, "factor", _check_number("factor", self.factor, 1))
        _set(self, "jitter", _check_number("jitter", self.jitter, 0))
        _check_int("max_retries", self.max_retries, 0, none=True)


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
        _whole,
        metavar="BYTES",
    )
    send_low_water: int = option(
        2 * _MiB, "See send_high_water.", _whole, metavar="BYTES"
    )
    send_timeout: float | None = option(
        30.0,
        "Seconds a blocked send() waits before raising SendTimeoutError. "
        "None: forever.",
        _timeout,
        metavar="SECONDS",
    )
    receive_high_count: int = option(
        10_000,
        "Messages received and not yet handled by the callbacks; above this "
        "(or receive_high_bytes) reading from that connection pauses until a "
        "quarter is left. Nothing is dropped.",
        _whole,
        metavar="N",
    )
    receive_high_bytes: int = option(
        16 * _MiB,
        "The same, in payload bytes.",
        _whole,
        metavar="BYTES",
    )
    offline_max_count: int = option(
        10_000,
        "With autoReconnect: messages that may wait for the next connection; "
        "when full, send() raises QueueFullError.",
        _whole,
        metavar="N",
    )
    offline_max_bytes: int = option(
        16 * _MiB, "The same, in payload bytes.", _whole, metavar="BYTES"
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
            _check_int(name, getattr(self, name), 0)
        if self.send_low_water > self.send_high_water:
            raise ValueError(
                f"need send_low_water ({self.send_low_water}) <= send_high_water "
                f"({self.send_high_water})"
            )
        _set(self, "send_timeout", _check_timeout("send_timeout", self.send_timeout))


_SECTIONS: tuple[type, ...] = (
    ConnectionOptions,
    ServerOptions,
    ReconnectOptions,
    FlowControl,
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
    """

    connection: ConnectionOptions = field(default_factory=ConnectionOptions)
    server: ServerOptions = field(default_factory=ServerOptions)
    reconnect: ReconnectOptions = field(default_factory=ReconnectOptions)
    flow: FlowControl = field(default_factory=FlowControl)

    @classmethod
    def build(
        cls,
        options: Options | None = None,
        *,
        door: str = "Options",
        sections: Iterable[type] = _SECTIONS,
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
    elsewhere = _owner(key, _SECTIONS)
    if elsewhere is not None:
        message += (
            f" ({key} is a {elsewhere.__name__} option, which {door} does not use)"
        )
    return message


# -- command lines ----------------------------------------------------------------


def _default_text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def twistd_parameters(sections: Iterable[type]) -> list[list[Any]]:
    """
    C{usage.Options.optParameters} rows for every option of C{sections}:
    C{[name, short, default, doc]}. The default is the field's Python
    value; a value given on the command line stays text until
    L{from_arguments} parses it (so a bad one is reported in our words,
    naming the flag).
    """
    rows: list[list[Any]] = []
    for section in sections:
        defaults = section()
        for name, spec in option_fields(section):
            rows.append([spec.flag[2:], spec.short, getattr(defaults, name), spec.doc])
    return rows


def add_arguments(parser: argparse.ArgumentParser, sections: Iterable[type]) -> None:
    """
    Add a flag to C{parser} for every option of C{sections} (defaults:
    L{None}, meaning the field's default; see L{from_arguments}).
    """
    for section in sections:
        defaults = section()
        group = parser.add_argument_group(f"{section.section} options")  # type: ignore[attr-defined]
        for name, spec in option_fields(section):
            flags = [spec.flag] + ([f"-{spec.short}"] if spec.short else [])
            group.add_argument(
                *flags,
                dest=f"option_{name}",
                type=_argparse_type(spec),
                default=None,
                metavar=spec.metavar,
                help=f"{spec.doc} Default: {_default_text(getattr(defaults, name))}.",
            )


def _argparse_type(spec: OptionSpec) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = spec.flag  # argparse names it in "invalid ... value"
    return parse


def from_arguments(
    values: dict[str, Any] | argparse.Namespace, sections: Iterable[type]
) -> dict[str, Any]:
    """
    The option keywords given on a command line: from an argparse namespace
    filled by L{add_arguments}, or from a C{usage.Options} mapping filled
    through L{twistd_parameters} (keyed by flag name; given values are
    parsed here).

    @raise ValueError: a value that does not parse, the message naming its
        flag (C{--type must be one of json, string, binary, not 'xml'}).
    """
    out: dict[str, Any] = {}
    for section in sections:
        defaults = section()
        for name, spec in option_fields(section):
            if isinstance(values, argparse.Namespace):
                value = getattr(values, f"option_{name}", None)
                if value is not None:
                    out[name] = value
                continue
            value = values[spec.flag[2:]]
            if value is not getattr(defaults, name):
                try:
                    value = spec.parse(value)
                except ValueError as e:
                    raise ValueError(f"{spec.flag} {e}") from None
            out[name] = value
    return out


def options_table() -> str:
    """
    Every option as Markdown tables, one per section (C{docs/options.md}
    is this text; a test keeps the two the same).
    """
    lines = [
        "# Options",
        "",
        "Generated from `twcomms/options.py` (`python -m twcomms.options`).",
        "",
    ]
    for section in _SECTIONS:
        lines.append(f"## {section.__name__} (`{section.section}`)")  # type: ignore[attr-defined]
        lines.append("")
        lines.append("| option | default | flag | what it does |")
        lines.append("|---|---|---|---|")
        defaults = section()
        for name, spec in option_fields(section):
            default = _default_text(getattr(defaults, name))
            lines.append(f"| `{name}` | {default} | `{spec.flag}` | {spec.doc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(options_table(), end="")
