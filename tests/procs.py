"""
Helpers for tests that run twcomms commands in subprocesses and talk to
them over raw sockets.

Every process is started with this interpreter (C{sys.executable -m ...}) or
a script next to it, and is ended by its pid when its context exits
(terminate, a bounded wait, kill). Every wait here is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: Seconds any single wait may take before the test fails.
WAIT = 10.0

#: Where the venv's scripts are (twistd, twcomms).
BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
TWCOMMS = str(BIN / "twcomms")
PYTHON = sys.executable

_HEADER = struct.Struct("<I")


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listened on a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def child_env(**extra: str) -> dict[str, str]:
    """
    The environment for a child: ours, unbuffered, plus C{extra}.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# -- raw sockets ---------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """
    One message on the wire: 4-byte little-endian length, then the payload.
    """
    return _HEADER.pack(len(payload)) + payload


def recv_exact(sock: socket.socket, n: int, timeout: float = WAIT) -> bytes:
    """
    Exactly C{n} bytes, within C{timeout} seconds overall.

    @raise EOFError: the peer closed first.
    @raise TimeoutError: they did not arrive in time.
    """
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"got {got} of {n} bytes within {timeout} s")
        sock.settimeout(left)
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """
    The payload of the next message.
    """
    deadline = time.monotonic() + timeout
    (length,) = _HEADER.unpack(recv_exact(sock, 4, timeout))
    return recv_exact(sock, length, max(deadline - time.monotonic(), 0.01))


def send_json(sock: socket.socket, value: Any) -> None:
    sock.sendall(frame(json.dumps(value).encode()))


def recv_json(sock: socket.socket, timeout: float = WAIT) -> Any:
    return json.loads(recv_frame(sock, timeout))


def recv_eof(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """
    Read until the peer closes; return what arrived first (C{b""} if
    nothing). A reset or a timeout raises.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the connection did not close within {timeout} s")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@contextmanager
def raw_client(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    try:
        yield sock
    finally:
        sock.close()


def local_port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


# -- processes -----------------------------------------------------------------

_CONNECTED = re.compile(r"connected from 127\.0\.0\.1:(\d+)\b")


class Proc:
    """
    A running command whose output (stdout and stderr merged) is read line
    by line on a thread, so a test can wait for a line with a deadline.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env if env is not None else child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(
            target=self._pump, args=(self.proc.stdout,), daemon=True
        )
        self._reader.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def describe(self) -> str:
        return (
            f"{' '.join(self.argv)} (exit {self.proc.poll()}); output:\n{self.output}"
        )

    def wait_line(
        self, pattern: str, timeout: float = WAIT, start: int = 0
    ) -> re.Match[str]:
        """
        The first output line from index C{start} on matching the regular
        expression C{pattern}, waiting up to C{timeout} seconds for it.
        """
        regex = re.compile(pattern)

        def find() -> re.Match[str] | None:
            for line in self.lines[start:]:
                m = regex.search(line)
                if m:
                    return m
            return None

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = find()
                if m is not None:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(left)
        raise AssertionError(
            f"no line matching {pattern!r} within {timeout} s; {self.describe()}"
        )

    def wait_exit(self, timeout: float = WAIT) -> int:
        """
        The exit status, once the process has exited and its output is read.
        """
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self) -> None:
        """
        End the process by its pid: terminate, wait, kill.
        """
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Hub(Proc):
    """
    A twcomms server process listening on 127.0.0.1:C{port}; it logs each
    client connection with the client's address, which is how a test knows
    a client is registered (and will get broadcasts) rather than only
    accepted by the kernel.
    """

    def __init__(self, argv: Sequence[str], port: int, **kw: Any) -> None:
        super().__init__(argv, **kw)
        self.port = port
        self.known: set[int] = set()

    def wait_listening(self, timeout: float = WAIT) -> None:
        """
        Poll a TCP connect until it succeeds (the probe is then closed).
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited; {self.describe()}")
            try:
                probe = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"nothing listening on {self.port} within {timeout} s; "
                        f"{self.describe()}"
                    ) from None
                time.sleep(0.05)
                continue
            self.known.add(local_port(probe))
            probe.close()
            return

    def wait_client(self, sock: socket.socket, timeout: float = WAIT) -> None:
        """
        Wait until the server has registered the connection C{sock}.
        """
        port = local_port(sock)
        self.known.add(port)
        self.wait_line(rf"connected from 127\.0\.0\.1:{port}\b", timeout)

    def wait_new_client(self, timeout: float = WAIT) -> int:
        """
        Wait until a client connects that is not one we know of (a
        subprocess's); return its port.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = _CONNECTED.search(line)
                    if m and int(m.group(1)) not in self.known:
                        port = int(m.group(1))
                        self.known.add(port)
                        return port
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(left)
        raise AssertionError(f"no new client within {timeout} s; {self.describe()}")


@contextmanager
def hub(
    argv: Sequence[str],
    port: int,
    *,
    cwd: Path | str,
    env: dict[str, str] | None = None,
) -> Iterator[Hub]:
    """
    Start a server, wait until it accepts connections, stop it on exit.
    """
    server = Hub(argv, port, cwd=cwd, env=env)
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = WAIT,
) -> subprocess.CompletedProcess[str]:
    """
    Run a command to completion (killed if it outlives C{timeout}).
    """
    return subprocess.run(
        list(argv),
        cwd=cwd,
        env=env if env is not None else child_env(),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
