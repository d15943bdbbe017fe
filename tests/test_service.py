"""
Tests for the twistd plugin and L{twcomms.ops.service}, in process (the
subprocess runs are in tests/test_cli.py).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage

from twcomms.client import CommsClientFactory
from twcomms.ops.service import Options, makeService
from twcomms.server import DEFAULT_BACKLOG
from twcomms.testing import MemoryNetwork


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_plugin_is_found_by_twistd() -> None:
    import twisted.plugins

    makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
    assert "comms" in makers
    maker = makers["comms"]
    assert maker.options is Options
    assert maker.makeService is makeService


def test_defaults() -> None:
    options = parse()
    assert options["port"] == 6000 and options["listen"] == []
    assert options["type"] == "json" and options["byte-order"] == "little"
    assert options["mode"] == "broadcast"
    assert options.endpoints() == ["tcp:6000:interface=0.0.0.0:backlog=1024"]


def test_port_and_repeated_listen_both_listen() -> None:
    options = parse(
        "--port",
        "7000",
        "--interface",
        "127.0.0.1",
        "--listen",
        "tcp:7001",
        "-l",
        "unix:/tmp/x.sock",
    )
    assert options.endpoints() == [
        "tcp:7000:interface=127.0.0.1:backlog=1024",
        "tcp:7001:backlog=1024",
        "unix:/tmp/x.sock:backlog=1024",
    ]


def test_listen_alone_does_not_add_the_default_port() -> None:
    assert parse("--listen", "tcp:7001").endpoints() == ["tcp:7001:backlog=1024"]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--type", "xml"], "--type"),
        (["--byte-order", "middle"], "--byte-order"),
        (["--mode", "party"], "--mode"),
        (["--port", "-1"], "port"),
        (["--port", "x"], "port"),
        (["--max-message-size", "0"], "max-message-size"),
        (["--max-message-size", "100", "--outbound-limit", "10"], "outbound-limit"),
        (["--idle-timeout", "-3"], "idle-timeout"),
        (["--app", "nosuchmodule_xyz:f"], "--app"),
        (["--app", "json:nothing_here"], "--app"),
        (["--app", "json"], "--app"),
    ],
)
def test_bad_options_fail_clearly(argv: list[str], complaint: str) -> None:
    with pytest.raises(usage.UsageError, match=complaint):
        parse(*argv)


def test_make_service_listens_with_a_large_backlog_and_stops() -> None:
    reactor = MemoryReactorClock()
    service = makeService(parse("--port", "7000", "--listen", "tcp:7001"), reactor)
    service.startService()
    assert [(p, b) for (p, _, b, _) in reactor.tcpServers] == [
        (7000, DEFAULT_BACKLOG),
        (7001, DEFAULT_BACKLOG),
    ]
    done: list[object] = []
    service.stopService().addCallback(done.append)
    assert done


def hub(mode: str, *extra: str) -> tuple[MemoryNetwork, Any, list[list[Any]], list]:
    net = MemoryNetwork()
    service = makeService(
        parse("--port", "6000", "--mode", mode, "--stats-interval", "0", *extra),
        net.reactor,
    )
    service.startService()
    inboxes: list[list[Any]] = []
    clients = []
    for _ in range(3):
        inbox: list[Any] = []
        client = CommsClientFactory(
            reactor=net.reactor, on_message=lambda c, m, inbox=inbox: inbox.append(m)
        )
        client.connectTCP("127.0.0.1", 6000)
        inboxes.append(inbox)
        clients.append(client)
    net.flush()
    return net, service, inboxes, clients


def test_broadcast_mode_relays_to_every_other_client() -> None:
    net, _, inboxes, clients = hub("broadcast")
    clients[0].send({"from": 0})
    clients[1].send('"a bare JSON string"')
    net.flush()
    assert inboxes[0] == ["a bare JSON string"]
    assert inboxes[1] == [{"from": 0}]
    assert inboxes[2] == [{"from": 0}, "a bare JSON string"]


def test_echo_mode() -> None:
    net, _, inboxes, clients = hub("echo")
    clients[1].send('"x"')
    clients[1].send([1])
    net.flush()
    assert inboxes == [[], ["x", [1]], []]


def test_sink_mode_counts_and_sends_nothing() -> None:
    net, service, inboxes, clients = hub("sink")
    for i in range(5):
        clients[0].send([i])
    net.flush()
    assert inboxes == [[], [], []]
    assert service.factory.totals()[0] == 5


def test_app_callable_gets_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("twcomms_test_app")
    seen: list[Any] = []

    def setup(server: Any) -> None:
        seen.append(server)
        server.on_connect.append(lambda client: client.send({"welcome": True}))

    module.setup = setup  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "twcomms_test_app", module)
    net, service, inboxes, _ = hub("sink", "--app", "twcomms_test_app:setup")
    assert seen == [service.factory]
    assert inboxes == [[{"welcome": True}]] * 3


def test_stop_closes_clients_cleanly() -> None:
    net, service, _, clients = hub("broadcast")
    done: list[object] = []
    service.stopService().addCallback(done.append)
    net.flush()
    assert done
    assert not any(c.connected for c in clients)
    assert len(service.factory.clients) == 0


def test_stats_are_logged() -> None:
    from twisted.logger import capturedLogs

    net = MemoryNetwork()
    service = makeService(
        parse("--port", "6000", "--stats-interval", "10"), net.reactor
    )
    service.startService()
    client = CommsClientFactory(reactor=net.reactor)
    client.connectTCP("127.0.0.1", 6000)
    net.flush()
    with capturedLogs() as events:
        for i in range(20):
            client.send([i])
        net.flush()
        net.advance(10)
    (stats,) = [e for e in events if e.get("log_format", "").startswith("stats:")]
    assert stats["clients"] == 1
    assert stats["m_in"] == pytest.approx(2.0)


def test_an_app_puts_clients_in_rooms_in_hub_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "rooms_app.py"
    spec = importlib.util.spec_from_file_location("rooms_app_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "rooms_app_under_test", module)
    net, service, inboxes, clients = hub(
        "sink", "--app", "rooms_app_under_test:install"
    )
    server = service.factory
    clients[0].send({"join": "lab"})
    clients[1].send({"join": "lab"})
    clients[2].send({"join": "other"})
    net.flush()
    assert [inbox[:] for inbox in inboxes] == [
        [{"joined": "lab"}],
        [{"joined": "lab"}],
        [{"joined": "other"}],
    ]
    assert sorted(server.rooms()) == ["lab", "other"]
    clients[0].send({"room": "lab", "text": "hi"})
    clients[2].send({"room": "lab", "text": "not a member"})  # dropped
    net.flush()
    assert inboxes[1][1:] == [{"room": "lab", "text": "hi"}]
    assert inboxes[0][1:] == [] and inboxes[2][1:] == []
    clients[2].send({"join": "no spaces allowed"})
    net.flush()
    assert "error" in inboxes[2][-1]
    clients[1].stop()
    net.flush()
    assert [c.id for c in server.members("lab")] == [next(iter(server.clients)).id]
