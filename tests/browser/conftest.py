"""
Fixtures for the browser tests: Debian's Chromium driven by Playwright's
sync API (never Playwright's own browser download, which cannot work
here), C{twcomms serve} hubs in subprocesses on free ports of 127.0.0.1,
and a small static HTTP server for the pages.

The hub serves only C{/ws} and C{/twcomms.js}: the static server serves
the pages and, beside them, the repository's copy of
C{twcomms/web/twcomms.js} (the one the hub serves; a test checks they are
the same bytes, and another that a page can import the hub's own). Its
origin is allowed with C{--web-origins}; a second static server
(L{foreign_server}) is an origin no hub allows.

Without Chromium (C{/usr/bin/chromium}, or C{chromium} on C{PATH}) the
tests skip with a one-line reason -- except under CI (C{$CI} set), where
they fail: CI installs it (C{.ci/run}), as the root C{conftest.py}'s
C{redis_executable} does for Redis.

The tests run their bodies on pytest-twisted's reactor greenlet, blocking
it (they use no Twisted), on the main thread; Playwright's sync API
switches greenlets on that one thread, so one browser serves the module.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.procs import ROOT, child_env
from harness.sockets import free_port
from tests.procs import Hub

HERE = Path(__file__).resolve().parent

#: What the browser is launched with: no sandbox (we run as root), and
#: nothing that reaches out to the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

MISSING = (
    "no Chromium (/usr/bin/chromium, or chromium on PATH): apt-get install chromium"
)

#: Milliseconds any single browser-side wait may take.
WAIT_MS = 10_000

#: The app every test hub runs (tests/browser/hub_app.py).
APP = "tests.browser.hub_app:install"


def find_chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING} (CI is set: not skipping)", pytrace=False)
        pytest.skip(MISSING)
    return found


@pytest.fixture(scope="module")
def browser(chromium_executable: str) -> Iterator[Any]:
    """
    Chromium, for the module's tests. Not for the session: Playwright's sync
    API is bound to the thread that started it, and a session fixture is
    torn down by the session's last test, which may be a C{blocking} one
    on a worker thread (the root C{conftest.py}).
    """
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


# -- static pages -------------------------------------------------------------

#: What the static servers serve: path -> (file, content type).
STATIC: dict[str, tuple[Path, str]] = {
    "/page.html": (HERE / "page.html", "text/html; charset=utf-8"),
    "/page.js": (HERE / "page.js", "text/javascript; charset=utf-8"),
    "/browser.html": (ROOT / "examples" / "browser.html", "text/html; charset=utf-8"),
    "/twcomms.js": (
        ROOT / "twcomms" / "web" / "twcomms.js",
        "text/javascript; charset=utf-8",
    ),
}


class _Static(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = STATIC.get(self.path.split("?")[0])
        if found is None:
            self.send_error(404)
            return
        path, content_type = found
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class StaticServer:
    server: ThreadingHTTPServer

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.origin + path


def _static() -> Iterator[StaticServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Static)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StaticServer(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def static_server() -> Iterator[StaticServer]:
    """
    The pages' server: its origin is the one the hubs allow.
    """
    yield from _static()


@pytest.fixture(scope="session")
def foreign_server() -> Iterator[StaticServer]:
    """
    The same pages from an origin no hub allows.
    """
    yield from _static()


# -- hubs ---------------------------------------------------------------------


class BrowserHub(Hub):
    """
    C{twcomms serve} on 127.0.0.1:C{port} (TCP clients, and browsers too
    with C{--web-shared}) and 127.0.0.1:C{web_port} (browsers only).
    """

    def __init__(self, argv: list[str], port: int, web_port: int) -> None:
        super().__init__(argv, port, cwd=ROOT, env=child_env())
        self.web_port = web_port

    @property
    def shared_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def web_url(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}/ws"

    def wait_started(self) -> None:
        # twistd logs "<factory> starting on <port>" once each port listens.
        self.wait_line(rf"starting on {self.port}\b")
        self.wait_line(rf"starting on {self.web_port}\b")

    def kill(self) -> None:
        """
        SIGKILL by pid, and wait for the exit.
        """
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        self.wait_exit()

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))


StartHub = Callable[..., BrowserHub]


@pytest.fixture(scope="module")
def start_hub(static_server: StaticServer) -> Iterator[StartHub]:
    """
    Start hubs (C{start_hub("--type", "string", ...)}); each listens on
    free ports (or C{port}/C{web_port}, to restart one in place), runs the
    test app, allows the static server's origin, and is ended by its pid
    when the module's tests are done (or by the test).
    """
    started: list[BrowserHub] = []

    def start(
        *extra: str, port: int | None = None, web_port: int | None = None
    ) -> BrowserHub:
        port = port or free_port()
        web_port = web_port or free_port()
        argv = [
            sys.executable, "-m", "twcomms", "serve",
            "--port", str(port), "--interface", "127.0.0.1",
            "--web", f"tcp:{web_port}:interface=127.0.0.1",
            "--web-shared", "yes",
            "--web-origins", static_server.origin,
            "--app", APP,
            "--stats-interval", "0",
            *extra,
        ]  # fmt: skip
        hub = BrowserHub(argv, port, web_port)
        started.append(hub)
        hub.wait_started()
        return hub

    yield start
    for hub in reversed(started):
        hub.stop()


@pytest.fixture(scope="module")
def json_hub(start_hub: StartHub) -> BrowserHub:
    """
    One json hub in broadcast mode for the module's tests that need no
    other: each test uses connections of its own.
    """
    return start_hub()


# -- pages --------------------------------------------------------------------


class Tab:
    """
    One page of the browser, with helpers over C{page.html}'s
    C{open_client} and the record it keeps per client.
    """

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def goto(self, url: str) -> None:
        self.page.goto(url)
        self.wait_ready()

    def goto_hub(self, origin: str) -> None:
        """
        A document of the hub's own origin, with page.js's helpers: the hub
        serves no pages, so the document is its C{/twcomms.js} (shown as
        text), and page.js is added to it as an inline module. (A page
        Playwright itself supplies, by C{page.route}, is not one: it has no
        address, and Chromium's local network access checks block its
        WebSocket to 127.0.0.1.)
        """
        self.page.goto(origin + "/twcomms.js")
        self.page.add_script_tag(path=HERE / "page.js", type="module")
        self.wait_ready()

    def wait_ready(self) -> None:
        self.wait("window.ready === true")

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def open_client(self, name: str, **options: Any) -> Any:
        """
        A C{twcomms.Client(options)} named C{name}, once open: what was
        agreed (C{extended}, C{features}).
        """
        return self.js(
            "([name, options]) => open_client(name, options)", [name, options]
        )

    def send(self, name: str, message: Any) -> None:
        self.js("([name, m]) => clients[name].client.send(m)", [name, message])

    def send_bytes(self, name: str, data: bytes) -> None:
        self.js(
            "([name, a]) => clients[name].client.send(to_bytes(a))", [name, list(data)]
        )

    def messages(self, name: str) -> list[Any]:
        return self.js("(name) => clients[name].messages", name)  # type: ignore[no-any-return]

    def events(self, name: str) -> list[dict[str, Any]]:
        return self.js("(name) => clients[name].events", name)  # type: ignore[no-any-return]

    def wait_messages(self, name: str, n: int, timeout: int = WAIT_MS) -> list[Any]:
        """
        The client's messages, once it has at least C{n}.
        """
        self.wait(f"clients[{name!r}].messages.length >= {n}", timeout)
        return self.messages(name)

    def wait(self, condition: str, timeout: int = WAIT_MS) -> None:
        try:
            self.page.wait_for_function(
                f"() => {condition}", timeout=timeout, polling=25
            )
        except Exception as e:
            raise AssertionError(
                f"not true within {timeout} ms: {condition}; console:\n"
                + "\n".join(self.console[-20:])
            ) from e


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    """
    A fresh page (its own browser context) for the test, closed after it.
    """
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    try:
        yield Tab(context.new_page())
    finally:
        context.close()
