"""
Process lifetime, in subprocesses: like the original (non-daemon threads),
a script that ends after Server.start() or Client.connect() stays alive
while they are open, and exits once they are stopped/closed; Ctrl-C then
closes them cleanly.

Every subprocess is killed by pid in a finally; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from harness.procs import child_env, end_process
from harness.wire import frame

from .raw import WAIT, RawServer, raw_connect, recv_frame

#: How soon a process must exit once nothing holds it open.
EXIT_WITHIN = 5.0


class Script:
    """
    A running script whose stdout lines are read on a thread, so a read
    never blocks the test beyond its own timeout.
    """

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._stderr: list[str] = []
        threading.Thread(
            target=self._pump, args=(self.proc.stdout,), daemon=True
        ).start()
        threading.Thread(
            target=self._pump_err, args=(self.proc.stderr,), daemon=True
        ).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def _pump_err(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def wait_line(self, prefix: str, timeout: float = WAIT) -> str:
        def found() -> str | None:
            return next((x for x in self.lines if x.startswith(prefix)), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout)
            line = found()
        assert line is not None, (
            f"no line starting {prefix!r} within {timeout} s; stdout: "
            f"{self.lines}; stderr: {self.stderr}"
        )
        return line

    def exited_within(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        end_process(self.proc, wait=WAIT)


@pytest.fixture
def run_script(tmp_path: Path) -> Iterator[Any]:
    started: list[Script] = []

    def run(source: str) -> Script:
        path = tmp_path / f"script{len(started)}.py"
        path.write_text(textwrap.dedent(source))
        script = Script(path)
        started.append(script)
        return script

    yield run
    for script in started:
        script.kill()


def test_server_script_stays_alive_then_ctrl_c_exits(run_script):
    """
    (a) A script that only starts a server and ends stays alive and
    serving; Ctrl-C (SIGINT) then closes it and it exits.
    """
    script = run_script(
        """
        from twcomms.threaded import Server

        server = Server("127.0.0.1", 0)
        server.add_onmessage_callback(lambda m: print("GOT", m["n"], flush=True))
        server.start()
        print("PORT", server.port, flush=True)
        print("MAIN-END", flush=True)
        """
    )
    port = int(script.wait_line("PORT").split()[1])
    script.wait_line("MAIN-END")
    with raw_connect(port) as sock:
        sock.sendall(frame(json.dumps({"n": 42}).encode()))
        assert script.wait_line("GOT") == "GOT 42"
        assert script.proc.poll() is None, "the process ended after start()"
        start = time.monotonic()
        os.kill(script.proc.pid, signal.SIGINT)
        code = script.exited_within(EXIT_WITHIN)
        assert code is not None, f"still running {EXIT_WITHIN} s after SIGINT"
        # The server closed the connection cleanly on the way out.
        sock.settimeout(WAIT)
        assert sock.recv(1) == b""
    # 0 today (Ctrl-C after the script ended closes everything cleanly);
    # 130 would also be acceptable.
    assert code in (0, 130), (code, script.stderr)
    assert time.monotonic() - start < EXIT_WITHIN
    assert "Traceback" not in script.stderr, script.stderr


def test_server_stopped_from_a_thread_after_the_script_ended(run_script):
    """
    (b) The main script ends; later a thread (started from a message
    callback) calls server.stop(); the process exits within seconds.
    """
    script = run_script(
        """
        import threading
        from twcomms.threaded import Server

        server = Server("127.0.0.1", 0)

        def on_message(message):
            print("STOPPING", flush=True)
            threading.Thread(target=server.stop).start()

        server.add_onmessage_callback(on_message)
        server.start()
        print("PORT", server.port, flush=True)
        """
    )
    port = int(script.wait_line("PORT").split()[1])
    with raw_connect(port) as sock:
        # The main script has ended: the process is alive only because of
        # the server. A round of traffic shows it is still serving.
        assert script.exited_within(0.3) is None, "exited before stop()"
        sock.sendall(frame(b'{"stop": true}'))
        script.wait_line("STOPPING")
        code = script.exited_within(EXIT_WITHIN)
        assert code is not None, f"still running {EXIT_WITHIN} s after stop()"
    assert code == 0, script.stderr
    assert "Traceback" not in script.stderr, script.stderr


def test_client_script_stays_alive_until_the_client_closes(run_script):
    """
    (c) A script whose main part connects a client and ends stays alive
    while the client is open: it still receives and answers; once the
    connection closes (the server closes it; no autoReconnect) it exits.
    """
    server = RawServer()
    try:
        script = run_script(
            f"""
            from twcomms.threaded import Client

            client = Client("127.0.0.1", {server.port})
            client.add_onmessage_callback(
                lambda m: (print("GOT", m, flush=True), client.send({{"echo": m}}))
            )
            client.add_onclose_callback(lambda c: print("CLOSED", flush=True))
            client.connect()
            print("CONNECTED", flush=True)
            """
        )
        conn = server.accept()
        script.wait_line("CONNECTED")
        assert script.exited_within(0.3) is None, "exited after connect()"
        conn.sendall(frame(b'{"ping": 1}'))
        assert recv_frame(conn) == b'{"echo": {"ping": 1}}'
        assert script.proc.poll() is None
        conn.close()
        script.wait_line("CLOSED")
        code = script.exited_within(EXIT_WITHIN)
        assert code is not None, f"still running {EXIT_WITHIN} s after close"
        assert code == 0, script.stderr
    finally:
        server.close()


def _slow_close_client_script(port: int, last_line: str = "") -> str:
    """
    A script that connects a client with a slow close callback (printing
    CLOSED), prints CONNECTED, then runs C{last_line} and ends.
    """
    return f"""
        import time
        from twcomms.threaded import Client

        def on_close(c):
            time.sleep(0.5)  # a slow callback (the user's code)
            print("CLOSED", flush=True)

        client = Client("127.0.0.1", {port})
        client.add_onclose_callback(on_close)
        client.connect()
        print("CONNECTED", flush=True)
        {last_line}
        """


def test_close_event_runs_before_the_process_exits(run_script):
    """
    (c'') The server closes the connection of a script whose main part has
    ended: its close callback runs, even a slow one, before the process
    exits.
    """
    server = RawServer()
    try:
        script = run_script(_slow_close_client_script(server.port))
        conn = server.accept()
        script.wait_line("CONNECTED")
        conn.close()
        script.wait_line("CLOSED")
        code = script.exited_within(EXIT_WITHIN)
        assert code == 0, script.stderr
    finally:
        server.close()


def test_close_event_runs_when_the_script_ends_with_close(run_script, make_server):
    """
    (c''') A script's last line closes its client: the close callback, even
    a slow one, runs before the process exits.
    """
    server = make_server()
    script = run_script(_slow_close_client_script(server.port, "client.close()"))
    script.wait_line("CONNECTED")
    script.wait_line("CLOSED")
    code = script.exited_within(EXIT_WITHIN)
    assert code == 0, script.stderr


def test_close_events_run_when_the_script_ends_with_server_stop(run_script):
    """
    A script's last line stops its server: each client's close callback,
    even a slow one, runs before the process exits.
    """
    script = run_script(
        """
        import threading, time
        from twcomms.threaded import Server

        connected = threading.Event()

        def on_close(c):
            time.sleep(0.5)  # a slow callback (the user's code)
            print("CLOSED", flush=True)

        server = Server("127.0.0.1", 0)
        server.add_onconnect_callback(lambda c: connected.set())
        server.add_onclose_callback(on_close)
        server.start()
        print("PORT", server.port, flush=True)
        assert connected.wait(10)
        server.stop()
        """
    )
    port = int(script.wait_line("PORT").split()[1])
    with raw_connect(port) as sock:
        script.wait_line("CLOSED")
        assert sock.recv(1) == b""  # the server closed it
    code = script.exited_within(EXIT_WITHIN)
    assert code == 0, script.stderr


def test_client_script_exits_after_client_close(run_script, make_server):
    """
    (c') The script's client closes itself (from a callback) after the main
    script ended: the process exits.
    """
    server = make_server()
    script = run_script(
        f"""
        from twcomms.threaded import Client

        client = Client("127.0.0.1", {server.port})
        client.add_onmessage_callback(lambda m: client.close())
        client.connect()
        print("CONNECTED", flush=True)
        """
    )
    script.wait_line("CONNECTED")
    assert script.exited_within(0.3) is None, "exited after connect()"
    server.broadcast({"close": "now"})
    code = script.exited_within(EXIT_WITHIN)
    assert code is not None, f"still running {EXIT_WITHIN} s after close()"
    assert code == 0, script.stderr


def test_keep_process_alive_false_lets_the_script_end(run_script):
    script = run_script(
        """
        from twcomms.threaded import Server

        server = Server("127.0.0.1", 0, keep_process_alive=False)
        server.start()
        print("PORT", server.port, flush=True)
        """
    )
    script.wait_line("PORT")
    code = script.exited_within(EXIT_WITHIN)
    assert code == 0, script.stderr


def test_refused_background_connect_does_not_hold_the_process(run_script):
    import socket

    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, never listening: refused
        script = run_script(
            f"""
            from twcomms.threaded import Client

            client = Client("127.0.0.1", {bound.getsockname()[1]})
            client.connect(wait=False)
            print("MAIN-END", flush=True)
            """
        )
        script.wait_line("MAIN-END")
        code = script.exited_within(EXIT_WITHIN)
    assert code is not None, f"still running {EXIT_WITHIN} s after the refusal"


def test_ctrl_c_in_serve_forever_stops_and_exits(run_script):
    script = run_script(
        """
        from twcomms.threaded import Server

        server = Server("127.0.0.1", 0)
        server.add_onconnect_callback(lambda c: print("CONNECTED", flush=True))
        server.start()
        print("PORT", server.port, flush=True)
        server.serve_forever()
        print("RETURNED", flush=True)
        """
    )
    port = int(script.wait_line("PORT").split()[1])
    with raw_connect(port) as sock:
        # By the time the connect callback ran, the main thread is in
        # serve_forever() (a Ctrl-C before it is another test's case).
        script.wait_line("CONNECTED")
        os.kill(script.proc.pid, signal.SIGINT)
        script.wait_line("RETURNED")
        assert sock.recv(1) == b""  # closed cleanly by stop()
    code = script.exited_within(EXIT_WITHIN)
    assert code == 0, (code, script.stderr)


def test_ctrl_c_in_the_main_loop_exits(run_script):
    script = run_script(
        """
        import time
        from twcomms.threaded import Server

        server = Server("127.0.0.1", 0)
        server.start()
        print("PORT", server.port, flush=True)
        while True:
            time.sleep(0.05)
        """
    )
    script.wait_line("PORT")
    os.kill(script.proc.pid, signal.SIGINT)
    code = script.exited_within(EXIT_WITHIN)
    assert code is not None, f"still running {EXIT_WITHIN} s after one Ctrl-C"
    # An uncaught KeyboardInterrupt: Python exits by SIGINT (-2) or 130.
    assert code in (0, 1, 130, -signal.SIGINT), (code, script.stderr)
