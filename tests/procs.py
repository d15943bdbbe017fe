"""
Helpers for tests that run twcomms commands in subprocesses (and talk to
them over raw sockets: L{harness.sockets}).

Every process is started with this interpreter (C{sys.executable -m ...}) or
a script next to it, and is ended by its pid when its context exits
(terminate, a bounded wait, kill). Every wait here is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from harness.procs import child_env, end_process
from harness.sockets import local_port

#: Seconds any single wait may take before the test fails.
WAIT = 10.0

#: Where the venv's scripts are (twistd, twcomms).
BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
TWCOMMS = str(BIN / "twcomms")
PYTHON = sys.executable


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
        end_process(self.proc, first=signal.SIGTERM, grace=5, wait=5)
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
