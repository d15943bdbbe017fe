"""
Tests for L{twcomms.options}: every front door takes every option of the
sections it uses, in its own spelling, and refuses the others; values are
checked once, with messages that name the option; C{docs/options.md} is
what the declarations say.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from twcomms import Client, CommsClientFactory, CommsServerFactory, Server
from twcomms.ops.cli import parse_command
from twcomms.ops.service import Options as TwistdOptions
from twcomms.options import (
    SECTIONS,
    AccessOptions,
    ClusterOptions,
    ConnectionOptions,
    FlowControl,
    HelloOptions,
    Options,
    ReconnectOptions,
    ServerOptions,
    SlowConsumerPolicy,
    WebOptions,
    option_fields,
    options_table,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "options.md"

_MiB = 1024 * 1024

#: For every option: a value other than its default, and how a command
#: line spells it. A new option fails test_every_option_has_a_sample until
#: it is given one here.
SAMPLES: dict[str, tuple[Any, str]] = {
    "messageDataType": ("string", "string"),
    "byteOrder": ("big", "big"),
    "max_message_size": (1000, "1000"),
    "idle_timeout": (5.0, "5"),
    "handshake_timeout": (3.0, "3"),
    "outbound_limit": (128 * _MiB, str(128 * _MiB)),
    "slow_consumer_policy": (SlowConsumerPolicy.RAISE, "raise"),
    "stall_timeout": (3.0, "3"),
    "max_clients": (7, "7"),
    "drain_high_water": (16 * _MiB, str(16 * _MiB)),
    "drain_low_water": (_MiB, str(_MiB)),
    "autoReconnect": (True, "yes"),
    "initial_delay": (2.0, "2"),
    "max_delay": (60.0, "60"),
    "factor": (3.0, "3"),
    "jitter": (0.5, "0.5"),
    "max_retries": (4, "4"),
    "send_high_water": (16 * _MiB, str(16 * _MiB)),
    "send_low_water": (_MiB, str(_MiB)),
    "send_timeout": (5.0, "5"),
    "heartbeat_interval": (10.0, "10"),
    "heartbeat_timeout": (5.0, "5"),
    "request_timeout": (3.0, "3"),
    "max_requests_in_flight": (8, "8"),
    "extensions": (True, "yes"),
    "extension_timeout": (2.0, "2"),
    "accept_extensions": (False, "no"),
    "require_auth": (True, "yes"),
    "auth_timeout": (3.0, "3"),
    "auth_max_failures": (2, "2"),
    "auth_failure_window": (30.0, "30"),
    "backplane": ("redis://127.0.0.1:6390/1", "redis://127.0.0.1:6390/1"),
    "hub": ("lab", "lab"),
    "presence_ttl": (5.0, "5"),
    "require_backplane": (True, "yes"),
    "outage_max_count": (500, "500"),
    "outage_max_bytes": (1_000_000, "1000000"),
    "history_length": (5000, "5000"),
    "redis_password_env": ("HUB_REDIS_PASSWORD", "HUB_REDIS_PASSWORD"),
    "redis_password_file": (os.devnull, os.devnull),  # read when made
    "web": ("tcp:8080", "tcp:8080"),
    "web_shared": (True, "yes"),
    "web_origins": (("https://a.example",), "https://a.example"),
    "classify_timeout": (0.5, "0.5"),
    "dashboard": (True, "yes"),
    "metrics": (True, "yes"),
    "monitor_token": ("t0ken", "t0ken"),
    "receive_high_count": (100, "100"),
    "receive_high_bytes": (1_000_000, "1000000"),
    "offline_max_count": (10, "10"),
    "offline_max_bytes": (1000, "1000"),
}

#: The sections each front door does NOT take, and why. Everything else it
#: must take.
EXCLUDED: dict[str, dict[type, str]] = {
    "CommsServerFactory": {
        ReconnectOptions: "a server does not reconnect",
        HelloOptions: "a server answers a hello; it sends none",
        ClusterOptions: "a Twisted program gives it its backplane: "
        "registry=RedisBackplane(...)",
        FlowControl: "the threaded API's windows between user threads and "
        "the reactor; a Twisted program has no such threads",
    },
    "CommsClientFactory": {
        ServerOptions: "a client has no clients",
        AccessOptions: "a client grants no access",
        ClusterOptions: "a client is one connection to one hub",
        FlowControl: "the threaded API's windows (see CommsServerFactory)",
        WebOptions: "browsers connect to a server; the client speaks TCP",
    },
    "Server": {
        ReconnectOptions: "a server does not reconnect",
        HelloOptions: "a server answers a hello; it sends none",
    },
    "Client": {
        ServerOptions: "a client has no clients",
        AccessOptions: "a client grants no access",
        ClusterOptions: "a client is one connection to one hub",
        WebOptions: "browsers connect to a server; the client speaks TCP",
    },
    "twistd comms / twcomms serve": {
        ReconnectOptions: "the hub is a server",
        HelloOptions: "the hub answers hellos; it sends none",
        FlowControl: "the hub runs the Twisted API on the reactor thread",
    },
    "twcomms send / listen": {
        ServerOptions: "a client",
        AccessOptions: "a client",
        ClusterOptions: "a client",
        WebOptions: "a client",
        ReconnectOptions: "each command makes one connection and reports how "
        "it ended (exit status 1 when it failed)",
        FlowControl: "it runs the Twisted API on the reactor thread",
    },
}


def _fields(door: str) -> list[tuple[type, str]]:
    return [
        (section, name)
        for section in SECTIONS
        if section not in EXCLUDED[door]
        for name, _ in option_fields(section)
    ]


def _excluded_fields(door: str) -> list[tuple[type, str]]:
    return [
        (section, name)
        for section in EXCLUDED[door]
        for name, _ in option_fields(section)
    ]


def _effective(options: Options, section: type, name: str) -> Any:
    return getattr(getattr(options, section.section), name)  # type: ignore[attr-defined]


def test_every_option_has_a_sample() -> None:
    declared = {name for section in SECTIONS for name, _ in option_fields(section)}
    assert declared == set(SAMPLES)
    for section in SECTIONS:
        defaults = section()
        for name, _ in option_fields(section):
            assert SAMPLES[name][0] != getattr(defaults, name), name


def _make(door: str, name: str, value: Any) -> Options:
    """
    Build C{door} with one option given in its spelling; its options.
    """
    clock = MemoryReactorClock()
    if door == "CommsServerFactory":
        return CommsServerFactory(reactor=clock, **{name: value}).options
    if door == "CommsClientFactory":
        return CommsClientFactory(reactor=clock, **{name: value}).options
    if door == "Server":
        return Server("127.0.0.1", 0, **{name: value}).options
    if door == "Client":
        return Client("127.0.0.1", 1, **{name: value}).options
    raise AssertionError(door)


PYTHON_DOORS = ["CommsServerFactory", "CommsClientFactory", "Server", "Client"]


@pytest.mark.parametrize("door", PYTHON_DOORS)
def test_python_doors_take_every_option_as_a_keyword(door: str) -> None:
    for section, name in _fields(door):
        value = SAMPLES[name][0]
        options = _make(door, name, value)
        assert _effective(options, section, name) == value, (door, name)


@pytest.mark.parametrize("door", PYTHON_DOORS)
def test_python_doors_refuse_options_they_do_not_use(door: str) -> None:
    for section, name in _excluded_fields(door):
        with pytest.raises(TypeError, match=f"{section.__name__} option"):
            _make(door, name, SAMPLES[name][0])


@pytest.mark.parametrize("door", PYTHON_DOORS)
def test_python_doors_take_whole_sections_and_an_options_object(door: str) -> None:
    for section in SECTIONS:
        if section in EXCLUDED[door]:
            continue
        if door == "Client" and section is ConnectionOptions:
            # Client's connection= is the original's adopted socket; the
            # section goes in through options= (below).
            with pytest.raises(TypeError, match="options=Options"):
                Client("127.0.0.1", 1, connection=ConnectionOptions())
            continue
        given = section(**{n: SAMPLES[n][0] for n, _ in option_fields(section)})
        options = _make(door, section.section, given)  # type: ignore[attr-defined]
        assert getattr(options, section.section) == given  # type: ignore[attr-defined]
    # The original's positional defaults do not override an options object.
    base = Options.build(idle_timeout=9.0, messageDataType="string")
    clock = MemoryReactorClock()
    made = {
        "CommsServerFactory": lambda: CommsServerFactory(options=base, reactor=clock),
        "CommsClientFactory": lambda: CommsClientFactory(options=base, reactor=clock),
        "Server": lambda: Server("127.0.0.1", 0, options=base),
        "Client": lambda: Client("127.0.0.1", 1, options=base),
    }[door]()
    assert made.options.connection.idle_timeout == 9.0
    assert made.options.connection.codec.name == "string"


def test_twistd_takes_every_option_as_a_flag() -> None:
    door = "twistd comms / twcomms serve"
    for section, name in _fields(door):
        value, text = SAMPLES[name]
        flag = dict(option_fields(section))[name].flag
        options = TwistdOptions()
        options.parseOptions([flag, text])
        assert _effective(options.comms, section, name) == value, name


def test_twistd_has_no_flag_for_options_it_does_not_use() -> None:
    door = "twistd comms / twcomms serve"
    known = {row[0] for row in TwistdOptions.optParameters}
    for section, name in _excluded_fields(door):
        assert dict(option_fields(section))[name].flag[2:] not in known, name


def test_send_and_listen_take_every_option_as_a_flag() -> None:
    door = "twcomms send / listen"
    for command in ("send", "listen"):
        for section, name in _fields(door):
            value, text = SAMPLES[name]
            flag = dict(option_fields(section))[name].flag
            extra = ["--file", "x"] if command == "send" else []
            args = parse_command([command, "127.0.0.1:1", flag, text, *extra])
            assert _effective(args.options, section, name) == value, (command, name)


def test_send_and_listen_have_no_flag_for_options_they_do_not_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    door = "twcomms send / listen"
    for section, name in _excluded_fields(door):
        flag = dict(option_fields(section))[name].flag
        with pytest.raises(SystemExit) as exited:
            parse_command(["listen", "127.0.0.1:1", flag, SAMPLES[name][1]])
        assert exited.value.code == 2
        assert flag in capsys.readouterr().err


def test_unknown_keyword_suggests_the_closest_option() -> None:
    with pytest.raises(TypeError, match=r"'idle_timout'.*did you mean 'idle_timeout'"):
        CommsServerFactory(idle_timout=5)
    with pytest.raises(TypeError, match="ReconnectOptions option"):
        Server("127.0.0.1", 0, max_retries=3)


@pytest.mark.parametrize(
    ("keywords", "error", "match"),
    [
        ({"max_message_size": 0}, ValueError, "max_message_size"),
        ({"max_message_size": 2**32}, ValueError, "max_message_size"),
        ({"max_message_size": 1.5}, TypeError, "max_message_size"),
        ({"idle_timeout": -1}, ValueError, "idle_timeout"),
        ({"idle_timeout": "soon"}, TypeError, "idle_timeout"),
        ({"outbound_limit": 10}, ValueError, "at least max_message_size"),
        ({"slow_consumer_policy": "drop"}, ValueError, "drop"),
        ({"messageDataType": "xml"}, ValueError, "messageDataType"),
        ({"byteOrder": "middle"}, ValueError, "byteOrder"),
        ({"max_clients": -1}, ValueError, "max_clients"),
        ({"initial_delay": 5, "max_delay": 1}, ValueError, "initial_delay"),
        ({"factor": 0.5}, ValueError, "factor"),
        ({"max_retries": -1}, ValueError, "max_retries"),
        ({"send_low_water": 10, "send_high_water": 5}, ValueError, "send_low_water"),
    ],
)
def test_values_are_checked_once_with_the_option_named(
    keywords: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Options.build(**keywords)


def test_sections_are_frozen_and_replace_keeps_defaults_derived() -> None:
    options = ConnectionOptions(max_message_size=1000)
    with pytest.raises(AttributeError):
        options.max_message_size = 5  # type: ignore[misc]
    assert options.effective_outbound_limit == 1000 + _MiB
    bigger = replace(options, max_message_size=10 * _MiB)
    assert bigger.effective_outbound_limit == 11 * _MiB
    assert bigger.codec is options.codec


def test_command_line_values_are_read_in_our_words() -> None:
    from twisted.python import usage

    for argv, message in [
        (["--idle-timeout", "soon"], "--idle-timeout takes seconds, not 'soon'"),
        (["--max-clients", "-2"], "--max-clients must be >= 0, not -2"),
        (["--type", "xml"], "--type must be one of json, string, binary, not 'xml'"),
    ]:
        options = TwistdOptions()
        with pytest.raises(usage.UsageError) as caught:
            options.parseOptions(argv)
        assert str(caught.value) == message
    # 0 turns a timeout off on a command line.
    options = TwistdOptions()
    options.parseOptions(["--idle-timeout", "0"])
    assert options.comms.connection.idle_timeout is None


def test_docs_options_md_is_the_declarations() -> None:
    assert DOCS.read_text() == options_table(), (
        "docs/options.md is out of date: python -m twcomms.options > docs/options.md"
    )
