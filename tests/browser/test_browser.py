"""
twcomms.js in a real browser (Debian's Chromium, driven by Playwright):
pages exchange messages through C{twcomms serve} with raw TCP clients (the
4-byte little-endian length, then the payload), on the shared main port
(C{--web-shared}) and on the web port (C{--web}); in json, string and
binary; with requests both ways and rooms; across a hub restart and a
hub gone silent (heartbeats); under hostile loads (a page that floods, a
page that stops reading); and the example chat page, examples/browser.html.

Every wait is bounded: Playwright's (L{conftest.WAIT_MS}), the sockets'
(L{harness.sockets.WAIT}), the hub log's (L{tests.procs.WAIT}).
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest

from harness.procs import ROOT
from harness.sockets import raw_connect, recv_frame, recv_json, send_json
from harness.wire import frame

from .conftest import BrowserHub, StartHub, StaticServer, Tab

WHERE = ["shared", "web"]


def url_of(hub: BrowserHub, where: str) -> str:
    return hub.shared_url if where == "shared" else hub.web_url


# -- json, both ways, both ports ----------------------------------------------


@pytest.mark.parametrize("where", WHERE)
def test_json_both_ways_with_a_tcp_client(
    tab: Tab, static_server: StaticServer, json_hub: BrowserHub, where: str
) -> None:
    tab.goto(static_server.url("/page.html"))
    url = url_of(json_hub, where)
    agreed = tab.open_client("ext", url=url)
    assert agreed["extended"] is True
    assert {"request", "rooms", "heartbeat"} <= set(agreed["features"])
    plain = tab.open_client("plain", url=url, extensions=False)
    assert plain == {"extended": False, "features": {}}
    with raw_connect(json_hub.port) as tcp:
        json_hub.wait_client(tcp)
        sent = {
            "from": "page",
            "text": "h\u00e9llo \u2713 \U0001f600",
            "n": [1, 2.5, None],
        }
        tab.send("ext", sent)
        assert recv_json(tcp) == sent
        tab.send("plain", {"from": "plain page"})
        assert recv_json(tcp) == {"from": "plain page"}
        back = {"from": "tcp", "nested": {"a": [True, False]}, "text": "\u00fc"}
        send_json(tcp, back)
        # The hub relays to every other client: both pages (ext also got
        # plain's message, and plain ext's).
        assert tab.wait_messages("ext", 2) == [{"from": "plain page"}, back]
        assert tab.wait_messages("plain", 2) == [sent, back]


@pytest.mark.parametrize("where", WHERE)
def test_a_page_from_the_hubs_own_origin_imports_its_script(
    tab: Tab, json_hub: BrowserHub, where: str
) -> None:
    """
    A document of the hub's own origin (L{Tab.goto_hub}) needs no
    --web-origins; twcomms.js comes from the hub, and Client() with no url
    connects to /ws beside it.
    """
    port = json_hub.port if where == "shared" else json_hub.web_port
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(base + "/twcomms.js", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/javascript")
        assert response.read() == (ROOT / "twcomms/web/twcomms.js").read_bytes()
    tab.goto_hub(base)
    assert tab.open_client("own")["extended"] is True
    assert tab.js("() => clients.own.client.url") == f"ws://127.0.0.1:{port}/ws"
    with raw_connect(json_hub.port) as tcp:
        json_hub.wait_client(tcp)
        send_json(tcp, {"same": "origin"})
        assert tab.wait_messages("own", 1) == [{"same": "origin"}]


@pytest.mark.parametrize("where", WHERE)
def test_a_page_of_another_origin_imports_the_hubs_script(
    tab: Tab, json_hub: BrowserHub, static_server: StaticServer, where: str
) -> None:
    """
    The hub's /twcomms.js carries a CORS header: a page of any origin can
    import it (whether it may connect is the gateway's origin check).
    """
    port = json_hub.port if where == "shared" else json_hub.web_port
    tab.goto(static_server.url("/page.html"))
    kind = tab.js(
        "async (url) => typeof (await import(url)).Client",
        f"http://127.0.0.1:{port}/twcomms.js",
    )
    assert kind == "function"


@pytest.mark.parametrize("where", WHERE)
def test_a_page_from_an_origin_not_allowed_is_refused(
    tab: Tab, foreign_server: StaticServer, json_hub: BrowserHub, where: str
) -> None:
    tab.goto(foreign_server.url("/page.html"))
    start = len(json_hub.lines)
    tab.js(
        "(url) => { open_client('x', {url, reconnect: false}, 1000).catch(() => {}); }",
        url_of(json_hub, where),
    )
    tab.wait("clients.x.events.length > 0")
    # The handshake is answered 403: the page's WebSocket fails, as any
    # failed handshake does (1006), and the client never opened.
    assert tab.events("x") == [
        {"type": "close", "detail": {"code": 1006, "reason": "", "wasClean": False}}
    ]
    assert tab.js("() => clients.x.client.connected") is False
    json_hub.wait_line(
        rf"origin {re.escape(foreign_server.origin)} is not allowed", start=start
    )


# -- string and binary --------------------------------------------------------


def test_strings_both_ways(
    tab: Tab, static_server: StaticServer, start_hub: StartHub
) -> None:
    hub = start_hub("--type", "string")
    tab.goto(static_server.url("/page.html"))
    assert tab.open_client("s", url=hub.shared_url, type="string")["extended"]
    texts = ["ascii", "\u00fcn\u00efc\u00f6d\u00e9 \U0001f389", '{"not": "json"}', ""]
    with raw_connect(hub.port) as tcp:
        hub.wait_client(tcp)
        for text in texts:
            tab.send("s", text)
        assert [recv_frame(tcp) for _ in texts] == [t.encode() for t in texts]
        for text in reversed(texts):
            tcp.sendall(frame(text.encode()))
        assert tab.wait_messages("s", len(texts)) == texts[::-1]


def test_bytes_both_ways(
    tab: Tab, static_server: StaticServer, start_hub: StartHub
) -> None:
    hub = start_hub("--type", "binary")
    tab.goto(static_server.url("/page.html"))
    assert tab.open_client("b", url=hub.web_url, type="binary")["extended"]
    # 0xff first, as the hello's answer starts; NUL, every byte; empty.
    blobs = [bytes(range(255, -1, -1)), b"\x00", b"\x01\x02\x03", b""]
    with raw_connect(hub.port) as tcp:
        hub.wait_client(tcp)
        for blob in blobs:
            tab.send_bytes("b", blob)
        assert [recv_frame(tcp) for _ in blobs] == blobs
        for blob in reversed(blobs):
            tcp.sendall(frame(blob))
        got = tab.wait_messages("b", len(blobs))
    assert [bytes(m["bytes"]) for m in got] == blobs[::-1]


# -- restarts, heartbeats, closing --------------------------------------------


def test_reconnects_after_the_hub_restarts(
    tab: Tab, static_server: StaticServer, start_hub: StartHub
) -> None:
    hub = start_hub()
    tab.goto(static_server.url("/page.html"))
    tab.open_client("r", url=hub.shared_url, initialDelay=0.1, maxDelay=0.5)
    hub.kill()
    tab.wait("clients.r.events.some(e => e.type === 'reconnecting')")
    again = start_hub(port=hub.port, web_port=hub.web_port)
    # The client's `opened` is a new promise after a close: it resolves
    # when the client has reconnected by itself.
    assert tab.js("() => open_of('r')")["extended"] is True
    with raw_connect(again.port) as tcp:
        again.wait_client(tcp)
        tab.send("r", {"after": "restart"})
        assert recv_json(tcp) == {"after": "restart"}
        send_json(tcp, {"to": "page"})
        assert tab.wait_messages("r", 1) == [{"to": "page"}]
    events = tab.events("r")
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["open", "close", "reconnecting"]
    assert kinds[-1] == "open" and kinds.count("open") == 2
    assert set(kinds[3:-1]) <= {"close", "reconnecting"}
    assert events[1]["detail"]["code"] == 1006  # the hub vanished
    attempts = [e["detail"]["attempt"] for e in events if e["type"] == "reconnecting"]
    assert attempts == list(range(1, len(attempts) + 1))


def test_heartbeats_keep_a_page_connected_and_find_a_silent_hub(
    tab: Tab, static_server: StaticServer, start_hub: StartHub
) -> None:
    """
    With 1-second heartbeats the hub pings and the page answers: the
    connection outlives interval + timeout. A hub that goes silent
    (SIGSTOP) is given up on once the page has heard nothing for interval
    + timeout -- at once, not after the browser's closing handshake
    timeout (a minute in Chromium) -- and the page reconnects when the hub
    runs again.
    """
    hub = start_hub("--heartbeat-interval", "1", "--heartbeat-timeout", "1")
    tab.goto(static_server.url("/page.html"))
    agreed = tab.open_client(
        "h", url=hub.web_url, heartbeat={"interval": 1, "timeout": 1}, initialDelay=0.1
    )
    assert agreed["features"]["heartbeat"] == {"interval": 1, "timeout": 1}
    time.sleep(3)  # (the test: time passing) more than interval + timeout
    assert tab.events("h") == [{"type": "open", "detail": None}]
    assert hub.count("heartbeat timeout") == 0
    hub.signal(signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        tab.wait("clients.h.events.some(e => e.type === 'close')", timeout=6000)
        gave_up = time.monotonic() - stopped
        assert tab.events("h")[1] == {
            "type": "close",
            "detail": {
                "code": 1000,
                "reason": "heartbeat timeout",
                "wasClean": False,
                "message": "the hub went silent",
            },
        }
        assert tab.js("() => clients.h.client.connected") is False
    finally:
        hub.signal(signal.SIGCONT)
    # (Silent for interval + timeout = 2 s from the last ping, which came
    # up to a second before the stop.)
    assert 0.5 < gave_up < 6, gave_up
    assert tab.js("() => open_of('h')")["extended"] is True
    with raw_connect(hub.port) as tcp:
        hub.wait_client(tcp)
        send_json(tcp, {"after": "silence"})
        assert tab.wait_messages("h", 1) == [{"after": "silence"}]


def test_what_cannot_be_sent_is_refused_at_once(
    tab: Tab, static_server: StaticServer, json_hub: BrowserHub
) -> None:
    tab.goto(static_server.url("/page.html"))
    tab.open_client("c", url=json_hub.web_url)
    refused = """(message) => {
      try { clients.c.client.send(message()); return 'sent'; }
      catch (e) { return `${e.name}: ${e.message}`; }
    }"""
    assert tab.js(f"() => ({refused})(() => undefined)") == (
        "TypeError: a json hub takes JSON values, not undefined"
    )
    assert tab.js(f"() => ({refused})(() => () => 1)") == (
        "TypeError: a json hub takes JSON values, not function"
    )
    # Closed for good: send() refuses at once (a closing WebSocket would
    # drop it silently), and nothing reconnects.
    tab.js("() => clients.c.client.close()")
    assert tab.js("() => clients.c.client.connected") is False
    assert tab.js(f"() => ({refused})(() => 1)").startswith("ConnectionClosedError")
    tab.wait("clients.c.events.some(e => e.type === 'close')")
    events = tab.events("c")
    assert [e["type"] for e in events] == ["open", "close"]
    # (The close event's reason is the hub's close frame's: it echoes the
    # code only.)
    assert events[1]["detail"]["code"] == 1000 and events[1]["detail"]["wasClean"]


# -- requests both ways -------------------------------------------------------


def test_requests_both_ways(
    tab: Tab, static_server: StaticServer, json_hub: BrowserHub
) -> None:
    tab.goto(static_server.url("/page.html"))
    tab.open_client("q", url=json_hub.web_url)
    # Page -> hub: the app's on_request answers.
    assert tab.js("() => clients.q.client.request({q: 1, s: 'x'})") == {
        "echo": {"q": 1, "s": "x"}
    }
    replies = tab.js(
        "() => Promise.all([...Array(200).keys()]"
        ".map(i => clients.q.client.request(i)))"
    )
    assert replies == [{"echo": i} for i in range(200)]
    # Hub -> page: on {"ask": m} the app requests m of the page, whose
    # onrequest answers; the app sends the answer back.
    tab.js(
        "() => { clients.q.client.onrequest = async (m) => "
        "{ await new Promise(r => setTimeout(r, 10)); "
        "return {answered: m, by: 'page'}; }; }"
    )
    tab.send("q", {"ask": {"x": 5}})
    assert tab.wait_messages("q", 1) == [
        {"answer": {"answered": {"x": 5}, "by": "page"}}
    ]
    # A handler that throws: the hub gets an ERROR (type and message).
    tab.js(
        "() => { clients.q.client.onrequest = () => "
        "{ throw new RangeError('no such thing'); }; }"
    )
    tab.send("q", {"ask": 7})
    assert tab.wait_messages("q", 2)[1] == {
        "answer_error": ["RangeError", "no such thing"]
    }
    # No handler at all.
    tab.js("() => { clients.q.client.onrequest = null; }")
    tab.send("q", {"ask": 8})
    assert tab.wait_messages("q", 3)[2] == {
        "answer_error": ["NoHandler", "no request handler"]
    }
    # A plain connection has no requests: refused at once, nothing sent.
    tab.open_client("plain", url=json_hub.web_url, extensions=False)
    assert (
        tab.js("() => clients.plain.client.request(1).then(() => 'sent', e => e.name)")
        == "NotNegotiatedError"
    )


# -- rooms --------------------------------------------------------------------


def test_authentication_from_a_page(
    tab: Tab, start_hub: StartHub, static_server: StaticServer
) -> None:
    """
    With --require-auth, a page with good credentials is a client, known
    by its identity; one with bad credentials is closed (auth failed) and
    never sees a message.
    """
    hub = start_hub("--require-auth", "yes")
    tab.goto(static_server.url("/page.html"))
    url = hub.web_url
    agreed = tab.open_client(
        "ada", url=url, credentials={"user": "ada", "password": "secret"}
    )
    assert agreed["features"]["auth"] == {"required": True}
    assert tab.js("() => clients.ada.client.identity") == "ada"
    tab.js(
        "(url) => { open_client('eve', {url, reconnect: false, "
        "credentials: {user: 'eve', password: 'guess'}}).catch(() => null); }",
        url,
    )
    tab.wait("clients.eve.events.some((e) => e.type === 'close')")
    (closed,) = [e for e in tab.events("eve") if e["type"] == "close"]
    assert closed["detail"]["reason"] == "auth failed"
    # Only an authenticated client is asked: its requests are answered.
    reply = tab.js("() => clients.ada.client.request({q: 1})")
    assert reply == {"echo": {"q": 1}}
    assert tab.js("() => clients.eve.messages.length") == 0
    assert hub.count("authenticated as ada") == 1


def test_a_room_broadcast_reaches_its_members_only(
    tab: Tab, static_server: StaticServer, json_hub: BrowserHub
) -> None:
    tab.goto(static_server.url("/page.html"))
    tab.open_client("member", url=json_hub.shared_url)
    tab.open_client("other", url=json_hub.shared_url)
    assert tab.js("() => clients.member.client.join('lobby')") is True
    assert tab.js("() => clients.member.client.join('lobby')") is False  # already in
    assert (
        tab.js(
            "() => clients.member.client.join('no spaces').then(() => 'joined', "
            "e => `${e.name} ${e.type}`)"
        )
        == "RemoteError InvalidRoomError"
    )
    with raw_connect(json_hub.port) as tcp:
        json_hub.wait_client(tcp)
        command = {"to_room": "lobby", "message": {"room": "news"}}
        send_json(tcp, command)
        # (The hub's broadcast mode relays the command itself to everyone.)
        send_json(tcp, {"fence": 1})
        member = tab.wait_messages("member", 3)
        other = tab.wait_messages("other", 2)
        assert sorted(map(json.dumps, member)) == sorted(
            map(json.dumps, [command, {"room": "news"}, {"fence": 1}])
        )
        assert member[-1] == {"fence": 1}
        assert other == [command, {"fence": 1}]
        # Once it has left, the room's broadcasts pass it by.
        assert tab.js("() => clients.member.client.leave('lobby')") is True
        send_json(tcp, command)
        send_json(tcp, {"fence": 2})
        assert tab.wait_messages("member", 5)[3:] == [command, {"fence": 2}]


# -- hostile pages ------------------------------------------------------------

#: The slow-consumer test's --outbound-limit: room for a TCP reader (a
#: thread of this process, on a busy machine) to lag, far less than the
#: flood.
OUTBOUND_LIMIT = 16 << 20

#: A page's flood: this many messages, sent in one synchronous loop.
FLOOD = 20_000


def test_a_flooding_page_does_not_hold_up_a_tcp_client(
    tab: Tab, static_server: StaticServer, start_hub: StartHub
) -> None:
    """
    In echo mode each client gets its own messages back. While a page
    sends FLOOD messages as fast as it can (and reads their echoes), a TCP
    client keeps making round trips: they go on during the flood, in
    order, and promptly; and the page gets every echo, in order.

    (Chromium's per-message cost makes the flood take seconds here, the
    hub using a fraction of a CPU. A round trip takes well under a
    millisecond as a rule; the odd one takes up to a second or two, on a
    2-core machine Chromium keeps busy -- as often with the flood going to
    another hub, so that is the machine, not the hub's fairness: hence
    the bounds below.)
    """
    hub = start_hub("--mode", "echo")
    tab.goto(static_server.url("/page.html"))
    tab.open_client("flood", url=hub.shared_url)
    rtts: list[float] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def round_trips(tcp: Any) -> None:
        try:
            seq = 0
            while not done.is_set():
                sent = time.monotonic()
                send_json(tcp, {"seq": seq})
                assert recv_json(tcp, timeout=10) == {"seq": seq}
                rtts.append(time.monotonic() - sent)
                seq += 1
                time.sleep(0.005)
        except BaseException as e:
            errors.append(e)

    with raw_connect(hub.port) as tcp:
        hub.wait_client(tcp)
        thread = threading.Thread(target=round_trips, args=(tcp,), daemon=True)
        thread.start()
        try:
            result = tab.js(
                """async (n) => {
                  const seen = clients.flood, start = performance.now();
                  for (let i = 0; i < n; i++) seen.client.send({i});
                  while (seen.messages.length < n
                         && performance.now() - start < 30000) {
                    await new Promise(r => setTimeout(r, 20));
                  }
                  const inOrder = seen.messages.every((m, k) => m.i === k);
                  return {got: seen.messages.length, inOrder,
                          ms: performance.now() - start};
                }""",
                FLOOD,
            )
        finally:
            during = len(rtts)
            done.set()
            thread.join(15)
    assert not errors, errors
    assert result["got"] == FLOOD and result["inOrder"], result
    # The TCP client was served all along (about 100 round trips a second
    # when nothing else runs), not once the flood was through.
    assert during >= 20, (during, result)
    ordered = sorted(rtts)
    assert ordered[len(ordered) // 2] < 0.05, ordered[-10:]  # median
    assert ordered[-1] < 5.0, ordered[-10:]


def test_a_page_that_stops_reading_is_dropped_as_a_slow_consumer(
    tab: Tab, static_server: StaticServer, start_hub: StartHub
) -> None:
    """
    A page busy-loops its main thread for a few seconds while a TCP client
    broadcasts large messages: Chromium stops taking the WebSocket's data,
    the socket's buffers fill, and bytes queue for the page in the hub
    until they would pass --outbound-limit; the hub then closes the page's
    connection (reason slow consumer, the socket dropped with no close
    frame: code 1006 in the page), and the page reconnects by itself once
    it runs again. The other TCP client, which reads, gets every message
    in order, and the broadcaster is never held up for long.

    The drain high-water mark is set above the outbound limit: below it,
    the hub would pace the broadcaster (stop reading it) while the page
    is behind, until --stall-timeout (10 s) drops the page -- the other
    documented outcome, which holds the broadcaster up meanwhile.
    """
    size, count = 256 * 1024, 384  # 96 MiB in all
    hub = start_hub(
        "--type", "binary",
        "--max-message-size", str(1 << 20),
        "--outbound-limit", str(OUTBOUND_LIMIT),
        "--drain-high-water", str(2 * OUTBOUND_LIMIT),
    )  # fmt: skip
    tab.goto(static_server.url("/page.html"))
    tab.open_client("slow", url=hub.web_url, type="binary", initialDelay=0.2)
    page_port = hub.wait_new_client()
    start = len(hub.lines)
    got: list[bytes] = []
    errors: list[BaseException] = []
    took: list[float] = []

    def read_all(reader: Any) -> None:
        try:
            for _ in range(count):
                got.append(recv_frame(reader, timeout=20))
        except BaseException as e:
            errors.append(RuntimeError(f"reader, after {len(got)} messages: {e!r}"))

    def flood(sender: Any) -> None:
        try:
            time.sleep(0.3)  # the page's loop has begun
            begin = time.monotonic()
            for n in range(count):
                sender.sendall(frame(n.to_bytes(4, "little") + bytes(size - 4)))
            took.append(time.monotonic() - begin)
        except BaseException as e:
            errors.append(RuntimeError(f"sender: {e!r}"))

    with raw_connect(hub.port) as sender, raw_connect(hub.port) as reader:
        hub.wait_client(sender)
        hub.wait_client(reader)
        threads = [
            threading.Thread(target=read_all, args=(reader,), daemon=True),
            threading.Thread(target=flood, args=(sender,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        busy = tab.js(
            "(ms) => { const end = Date.now() + ms; let n = 0; "
            "while (Date.now() < end) n++; return n; }",
            3000,
        )
        for thread in threads:
            thread.join(30)
        assert not errors, (errors, hub.output[-3000:])
        assert busy > 0
        assert [int.from_bytes(m[:4], "little") for m in got] == list(range(count))
        assert all(len(m) == size for m in got)
        # The page, and only the page, was dropped.
        dropped = hub.wait_line(
            rf"closing connection to 127\.0\.0\.1:(\d+): slow consumer "
            rf"\(\d+ bytes queued, outbound limit {OUTBOUND_LIMIT}\)",
            start=start,
        )
        assert int(dropped.group(1)) == page_port
        assert hub.count("slow consumer") == 2  # closing ..., disconnected: ...
        tab.wait("clients.slow.events.filter(e => e.type === 'open').length === 2")
    events = tab.events("slow")
    close = next(e for e in events if e["type"] == "close")
    assert close["detail"]["code"] == 1006 and close["detail"]["wasClean"] is False
    # Not the flood (none of it, as a rule: it was busy before it began).
    assert 0 <= len(tab.messages("slow")) < count
    assert took and took[0] < 10, took


# -- the example page ---------------------------------------------------------


def test_the_example_chat_page_talks_with_a_tcp_client(
    tab: Tab, static_server: StaticServer, json_hub: BrowserHub
) -> None:
    """
    examples/browser.html, served as its comment says (with twcomms.js
    beside it, from an origin the hub allows), with ?hub= the shared port.
    """
    from playwright.sync_api import expect

    page = tab.page
    query = urllib.parse.urlencode({"hub": json_hub.shared_url, "name": "tester"})
    page.goto(static_server.url(f"/browser.html?{query}"))
    status, log = page.locator("#status"), page.locator("#log li")
    expect(status).to_have_text(f"{json_hub.shared_url}: connected as tester")
    with raw_connect(json_hub.port) as tcp:
        json_hub.wait_client(tcp)
        send_json(tcp, {"from": "tcp", "text": "hello from tcp"})
        send_json(tcp, {"from": "tcp", "text": "<b>not bold</b>"})
        send_json(tcp, [1, 2])
        expect(log).to_have_text(
            ["tcp: hello from tcp", "tcp: <b>not bold</b>", "[1,2]"]
        )
        assert page.locator("#log b").count() == 0  # shown as text, not HTML
        page.fill("#text", "hi from the page")
        page.click("#send")
        assert recv_json(tcp) == {"from": "tester", "text": "hi from the page"}
        expect(log.nth(3)).to_have_text("tester: hi from the page")
        expect(log.nth(3)).to_have_class("mine")
        expect(page.locator("#text")).to_have_value("")
