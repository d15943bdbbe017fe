"""
The live dashboard (C{twcomms serve --dashboard yes}) in a real browser:
the page at C{/} of the web port (C{--web}), fed by its own WebSocket
(C{/dashboard/ws}), shows TCP and WebSocket clients within a second of
their coming and going, its chart and totals move under load, a
C{--monitor-token} keeps it (and its WebSocket, and C{/metrics}) from
whoever lacks the token, and the shared main port never serves it.

One test screenshots the dashboard with clients and traffic: with
C{TWCOMMS_SCREENSHOT} set it writes C{docs/dashboard.png} (after
C{TWCOMMS_SCREENSHOT_SECONDS} of traffic, default 20), otherwise a
temporary file. (The delays measured show with C{-s} or C{-rP}.)

The last is an expected failure (strict) until the dashboard's WebSocket
can send a snapshot over 4 KiB: see its reason.

Every wait is bounded: Playwright's (L{conftest.WAIT_MS}, or the 1-second
budget the dashboard promises), the sockets' (L{harness.sockets.WAIT}),
the hub log's (L{tests.procs.WAIT}).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.procs import ROOT
from harness.sockets import raw_connect, recv_frame
from harness.websocket import RawWebSocket
from harness.wire import frame

from .conftest import WAIT_MS, BrowserHub, StartHub, StaticServer, Tab

#: What every hub of this module runs with.
MONITORED = ("--dashboard", "yes", "--metrics", "yes")

#: The dashboard's promise: a client shows (or goes) within this many ms.
WITHIN_MS = 1000

ROWS = "document.querySelectorAll('#clients tbody tr')"


def dashboard_url(hub: BrowserHub, token: str | None = None) -> str:
    query = f"?token={token}" if token is not None else ""
    return f"http://127.0.0.1:{hub.web_port}/{query}"


def open_dashboard(tab: Tab, hub: BrowserHub, token: str | None = None) -> None:
    """
    The dashboard in C{tab}, once its WebSocket has delivered a snapshot.
    """
    tab.page.goto(dashboard_url(hub, token))
    tab.wait("document.getElementById('status').textContent.startsWith('live')")


def timed(tab: Tab, condition: str, since: float, what: str) -> float:
    """
    Seconds from C{since} (a C{time.monotonic()}) until C{condition} holds
    in the page, which must be within L{WITHIN_MS}; recorded as C{what}.
    """
    try:
        tab.page.wait_for_function(f"() => {condition}", timeout=WITHIN_MS, polling=10)
    except Exception as e:
        raise AssertionError(
            f"{what}: not true within {WITHIN_MS} ms of the change: {condition}; "
            f"rows: {rows(tab)}; console:\n" + "\n".join(tab.console[-20:])
        ) from e
    delay = time.monotonic() - since
    print(f"{what}: {delay * 1000:.0f} ms")  # (shown with -s or -rP)
    assert delay < WITHIN_MS / 1000, (what, delay)
    return delay


def rows(tab: Tab) -> list[dict[str, Any]]:
    """
    The clients table, as C{{id, transport, cells}} per row.
    """
    return tab.js(  # type: ignore[no-any-return]
        f"""() => [...{ROWS}].map(tr => ({{
          id: tr.dataset.clientId, transport: tr.dataset.transport,
          cells: [...tr.cells].map(td => td.textContent)}}))"""
    )


def count(tab: Tab) -> int:
    return int(tab.js("() => document.getElementById('client-count').textContent"))


def number(text: str) -> int:
    """
    A count as the page shows it (C{toLocaleString}: C{20,000}).
    """
    return int("".join(c for c in text if c.isdigit()))


def total(tab: Tab, key: str) -> int:
    return number(
        tab.js(
            "(key) => document.querySelector("
            "`#totals tr[data-key='${key}'] td:nth-child(2)`).textContent",
            key,
        )
    )


def chart(tab: Tab) -> dict[str, str]:
    return tab.js("() => ({...document.getElementById('chart').dataset})")  # type: ignore[no-any-return]


def tcp_row(port: int) -> str:
    """
    A JS condition: the TCP client from 127.0.0.1:C{port} has its row.
    """
    return (
        f"[...{ROWS}].some(tr => tr.dataset.transport === 'tcp'"
        f" && tr.cells[1].textContent === '127.0.0.1:{port}')"
    )


def gone(condition: str) -> str:
    return f"!({condition})"


WEB_ROW = f"[...{ROWS}].some(tr => tr.dataset.transport === 'websocket')"


def client_count_is(n: int) -> str:
    return f"document.getElementById('client-count').textContent === '{n}'"


@pytest.fixture
def other_tab(browser: Any) -> Iterator[Tab]:
    """
    A second page, in a browser context of its own, for the browser
    clients the dashboard watches.
    """
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    try:
        yield Tab(context.new_page())
    finally:
        context.close()


class Drain:
    """
    A TCP client's reader on a thread: takes every frame the hub sends
    (so the hub never finds it slow) and counts them, until the socket
    closes.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError, ValueError):
            while True:
                recv_frame(self.sock, timeout=120)
                self.frames += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


# -- clients come and go --------------------------------------------------------


def test_clients_show_and_go_within_a_second(
    tab: Tab, other_tab: Tab, static_server: StaticServer, start_hub: StartHub
) -> None:
    hub = start_hub(*MONITORED)
    open_dashboard(tab, hub)
    assert rows(tab) == [] and count(tab) == 0

    # A TCP client that sends nothing: on the shared port it is classified
    # as TCP after classify_timeout (0.25 s), then shows.
    began = time.monotonic()
    tcp = raw_connect(hub.port)
    try:
        port = tcp.getsockname()[1]
        timed(tab, tcp_row(port), began, "tcp connect -> row")
        hub.wait_client(tcp)
        assert count(tab) == 1
        [row] = rows(tab)
        assert row["transport"] == "tcp"
        assert row["cells"][1:4] == [f"127.0.0.1:{port}", "tcp", "plain"]

        # A browser's twcomms.js Client, on the web port.
        other_tab.goto(static_server.url("/page.html"))
        began = time.monotonic()
        other_tab.js(
            "(url) => { open_client('w', {url, reconnect: false}); }", hub.web_url
        )
        timed(tab, WEB_ROW, began, "websocket connect -> row")
        timed(tab, client_count_is(2), began, "websocket connect -> count")
        web = [r for r in rows(tab) if r["transport"] == "websocket"]
        assert len(web) == 1
        assert web[0]["cells"][2:4] == ["websocket", "extended"]
        assert web[0]["id"] and web[0]["id"] != row["id"]

        # The TCP client leaves (the browser one stays).
        began = time.monotonic()
        tcp.close()
        timed(tab, gone(tcp_row(port)), began, "tcp close -> row gone")
        assert [r["transport"] for r in rows(tab)] == ["websocket"]
        assert count(tab) == 1
    finally:
        tcp.close()

    # The browser's page goes away, and its client with it.
    began = time.monotonic()
    other_tab.page.close()
    timed(tab, gone(WEB_ROW), began, "websocket page closed -> row gone")
    timed(tab, client_count_is(0), began, "websocket page closed -> count")
    assert rows(tab) == []
    # The close reasons table counts both.
    closes = tab.js(
        "() => Object.fromEntries([...document.querySelectorAll('#closes tr')]"
        ".map(tr => [tr.dataset.key, tr.cells[1].textContent]))"
    )
    assert closes == {"peer closed": "2"}
    assert not [m for m in tab.console if m.startswith(("error", "pageerror"))]
    assert hub.count("Unhandled error") == 0, hub.output


def test_the_shared_port_serves_no_dashboard(start_hub: StartHub) -> None:
    hub = start_hub(*MONITORED)
    for path in ("/", "/metrics"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{hub.port}{path}", timeout=10)
        assert caught.value.code == 404, path
    ws = RawWebSocket(hub.port, "/dashboard/ws")
    try:
        assert ws.status == 404
    finally:
        ws.close()
    # (The web port does.)
    with urllib.request.urlopen(dashboard_url(hub), timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        assert b'id="clients"' in response.read()


# -- the chart under load -----------------------------------------------------------


def test_the_chart_and_totals_move_under_load(tab: Tab, start_hub: StartHub) -> None:
    hub = start_hub(*MONITORED, "--mode", "echo")
    open_dashboard(tab, hub)
    # The chart draws from its second rate sample (two seconds of the
    # monitor's once-a-second sampling).
    tab.wait("document.getElementById('chart').dataset.samples >= 2", 5000)
    before = chart(tab)
    assert float(before["lastIn"]) == 0
    in_before = total(tab, "messages_in")

    n, batches, seconds = 20_000, 50, 3.0
    per = n // batches
    # Every message is 17 to 21 bytes of JSON.
    payloads = b"".join(frame(json.dumps({"n": i}).encode()) for i in range(per))
    seen: list[dict[str, str]] = []
    began = time.monotonic()
    with raw_connect(hub.port) as tcp:
        for b in range(batches):
            tcp.sendall(payloads)
            for _ in range(per):
                recv_frame(tcp)  # the echo: read, or the hub finds us slow
            seen.append(chart(tab))
            pause = began + (b + 1) * seconds / batches - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # (the test: load spread over a few seconds)
        loaded = time.monotonic() - began
        # One more sample after the load, so the last second counts.
        tab.wait(
            f"document.getElementById('chart').dataset.samples > {seen[-1]['samples']}",
            3000,
        )
        seen.append(chart(tab))
        port = tcp.getsockname()[1]
        tab.wait(tcp_row(port), 2000)
        tab.wait(
            "document.querySelector(`#totals tr[data-key='messages_in'] "
            f"td:nth-child(2)`).textContent.replace(/\\D/g, '') >= {in_before + n}",
            3000,
        )
        mine = next(r for r in rows(tab) if r["cells"][1] == f"127.0.0.1:{port}")
        assert number(mine["cells"][6]) == n  # msgs in
        assert number(mine["cells"][8]) == n  # msgs out (echoed)
    assert loaded < 10, loaded

    peak_in = max(float(s["lastIn"]) for s in seen)
    peak_out = max(float(s["lastOut"]) for s in seen)
    # ~6,700 messages a second for three seconds: any one-second sample
    # within the load sees well over a thousand.
    assert peak_in > 1000, seen
    assert peak_out > 1000, seen
    assert int(seen[-1]["samples"]) > int(before["samples"]), (before, seen)
    assert total(tab, "messages_in") >= in_before + n
    assert total(tab, "messages_out") >= n
    assert tab.js("() => document.getElementById('rate-now').textContent").startswith(
        "now: "
    )
    assert hub.count("Unhandled error") == 0, hub.output


# -- the token ------------------------------------------------------------------


def test_a_token_keeps_the_dashboard_from_whoever_lacks_it(
    tab: Tab, start_hub: StartHub
) -> None:
    hub = start_hub(*MONITORED, "--monitor-token", "s3cret")
    base = f"http://127.0.0.1:{hub.web_port}"
    for path in ("/", "/?token=wrong", "/metrics", "/metrics?token=nope"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(base + path, timeout=10)
        assert caught.value.code == 401, path
        assert caught.value.headers["www-authenticate"].startswith("Bearer")
    with urllib.request.urlopen(base + "/?token=s3cret", timeout=10) as response:
        assert response.status == 200
        assert b'id="clients"' in response.read()
    bearer = urllib.request.Request(
        base + "/metrics", headers={"Authorization": "Bearer s3cret"}
    )
    with urllib.request.urlopen(bearer, timeout=10) as response:
        assert response.status == 200
    # The dashboard's WebSocket too.
    for path, status in (("/dashboard/ws", 401), ("/dashboard/ws?token=s3cret", 101)):
        ws = RawWebSocket(hub.web_port, path)
        try:
            assert ws.status == status, path
        finally:
            ws.close()

    # Without the token the browser gets the 401, and no dashboard.
    response = tab.page.goto(dashboard_url(hub))
    assert response is not None and response.status == 401
    assert tab.js("() => document.getElementById('clients')") is None
    # With it, the live dashboard.
    open_dashboard(tab, hub, "s3cret")
    assert tab.js("() => document.getElementById('status').textContent").startswith(
        "live"
    )
    with raw_connect(hub.port) as tcp:
        hub.wait_client(tcp)
        tab.wait(tcp_row(tcp.getsockname()[1]))


# -- the screenshot ---------------------------------------------------------------


def test_screenshot(
    tab: Tab,
    other_tab: Tab,
    static_server: StaticServer,
    start_hub: StartHub,
    tmp_path: Path,
) -> None:
    """
    The dashboard with two TCP clients, a browser that authenticated and
    joined a room, and broadcast traffic: to docs/dashboard.png with
    TWCOMMS_SCREENSHOT set (after TWCOMMS_SCREENSHOT_SECONDS of traffic,
    default 20), otherwise (after three seconds) to a temporary file.
    """
    for_docs = bool(os.environ.get("TWCOMMS_SCREENSHOT"))
    seconds = (
        float(os.environ.get("TWCOMMS_SCREENSHOT_SECONDS", "20")) if for_docs else 3.0
    )
    hub = start_hub(*MONITORED, "--mode", "broadcast")
    tab.page.set_viewport_size({"width": 1200, "height": 800})
    open_dashboard(tab, hub)

    other_tab.goto(static_server.url("/page.html"))
    other_tab.open_client(
        "alice", url=hub.web_url, credentials={"user": "alice", "password": "secret"}
    )
    other_tab.js("() => clients.alice.client.join('lobby')")
    sender = raw_connect(hub.port)
    listener = Drain(raw_connect(hub.port))
    try:
        hub.wait_client(sender)
        hub.wait_client(listener.sock)
        # One more, that comes and goes: a close reason to show.
        with raw_connect(hub.port) as passing:
            hub.wait_client(passing)
        tab.wait("document.querySelector(\"#closes tr[data-key='peer closed']\")")
        tab.wait(client_count_is(3))
        tab.wait("document.querySelector(\"#rooms tr[data-key='lobby']\") !== null")
        # Broadcast traffic whose rate rises and falls: the sender's
        # messages go to the other two (so out is twice in); the sender
        # reads nothing, as all it gets is alice's few messages.
        sent = 0
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            rate = 300 + 250 * math.sin(elapsed / 6)
            batch = max(1, int(rate / 10))
            sender.sendall(
                b"".join(
                    frame(json.dumps({"n": sent + i, "text": "hello"}).encode())
                    for i in range(batch)
                )
            )
            sent += batch
            if int(elapsed) % 5 == 0:
                other_tab.send("alice", {"from": "alice", "at": round(elapsed)})
            time.sleep(0.1)  # (the test: traffic over time)
        tab.wait(
            "document.getElementById('chart').dataset.samples >= 2"
            " && +document.getElementById('chart').dataset.lastOut > 0",
            5000,
        )
        tab.wait(
            "document.querySelector(`#totals tr[data-key='messages_in'] "
            f"td:nth-child(2)`).textContent.replace(/\\D/g, '') >= {sent}",
            5000,
        )
        lobby = [r for r in rows(tab) if r["cells"][5] == "lobby"]
        assert [r["cells"][4] for r in lobby] == ["alice"]  # identity
        path = ROOT / "docs" / "dashboard.png" if for_docs else tmp_path / "d.png"
        tab.page.screenshot(path=str(path), full_page=True)
    finally:
        sender.close()
        listener.close()
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert hub.count("Unhandled error") == 0, hub.output


# -- a snapshot larger than 4 KiB -----------------------------------------------


def test_a_snapshot_over_4_kib_still_reaches_the_dashboard(
    tab: Tab, start_hub: StartHub
) -> None:
    hub = start_hub(*MONITORED)
    open_dashboard(tab, hub)
    n = 30  # each client's row is some 250 bytes of the snapshot's JSON
    socks = [raw_connect(hub.port) for _ in range(n)]
    try:
        tab.wait(client_count_is(n), 3000)
        # ... and it goes on ticking, once a second.
        status = tab.js("() => document.getElementById('status').textContent")
        tab.wait(f"document.getElementById('status').textContent !== {status!r}", 3000)
    finally:
        for sock in socks:
            sock.close()
    assert hub.count("Unhandled error") == 0, hub.output
