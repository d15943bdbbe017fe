"""
Client processes of the scenarios: L{harness.stress.driver} (or a
scenario's own command line) started with this interpreter, from the
repository root, and killed by pid when done. L{DriverProcess} runs under
the reactor (C{spawnProcess}); L{child} is a blocking subprocess for the
threaded scenarios.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from harness.procs import ROOT, child_env, end_process, kill_pid
from harness.stress.reactor import bounded, global_reactor

#: The client driver, run as C{python -m DRIVER} from the repository root.
DRIVER = "harness.stress.driver"


class DriverProcess:
    """
    A child process started with this interpreter, speaking JSON lines on
    stdout (L{harness.stress.driver}, or C{python -m harness.stress}).
    Killed by pid in L{kill}.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        from twisted.internet import protocol

        self.argv = argv
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self.stdout_tail = b""
        self.exit_code: int | None = None
        self._buffer = b""
        self._waiters: list[tuple[str, Any]] = []
        self._ended: list[Any] = []
        self.pid: int | None = None
        outer = self

        class _Protocol(protocol.ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                outer._out(data)

            def errReceived(self, data: bytes) -> None:
                outer._err(data)

            def processEnded(self, reason: Any) -> None:
                outer._process_ended(reason)

        self._protocol = _Protocol()
        full_env = child_env(**(env or {}))
        transport = global_reactor().spawnProcess(
            self._protocol,
            sys.executable,
            [sys.executable, *argv],
            env=full_env,
            path=str(ROOT),
        )
        self.pid = transport.pid

    def _out(self, data: bytes) -> None:
        self.stdout_tail = (self.stdout_tail + data)[-20000:]
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").strip()
            if text.startswith("RESULT "):
                event = {"event": "RESULT", "result": text[len("RESULT ") :]}
            elif text.startswith("{"):
                try:
                    event = json.loads(text)
                except ValueError:
                    continue
            else:
                continue
            self.events.append(event)
            keep = []
            for name, d in self._waiters:
                if event.get("event") == name and not d.called:
                    d.callback(event)
                else:
                    keep.append((name, d))
            self._waiters = keep

    def _err(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-20000:]

    def _process_ended(self, reason: Any) -> None:
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.pid = None
        for d in self._ended:
            d.callback(self.exit_code)
        self._ended = []
        for name, d in self._waiters:
            d.errback(
                RuntimeError(
                    f"{self.argv[:2]} exited ({self.exit_code}) before "
                    f"{name!r}; stderr:\n{self.stderr.decode(errors='replace')}"
                )
            )
        self._waiters = []

    def wait_event(self, name: str, timeout: float) -> Any:
        from twisted.internet import defer

        for event in self.events:
            if event.get("event") == name:
                return defer.succeed(event)
        if self.pid is None and self.exit_code is not None:
            return defer.fail(
                RuntimeError(
                    f"{self.argv[:2]} already exited ({self.exit_code}); "
                    f"stderr:\n{self.stderr.decode(errors='replace')}"
                )
            )
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiters.append((name, d))
        return bounded(d, timeout, f"{name!r} from {self.argv[:2]}")

    def wait_ended(self, timeout: float) -> Any:
        from twisted.internet import defer

        if self.pid is None:
            return defer.succeed(self.exit_code)
        d: defer.Deferred[int | None] = defer.Deferred()
        self._ended.append(d)
        return bounded(d, timeout, f"exit of {self.argv[:2]}")

    def signal(self, sig: int) -> None:
        kill_pid(self.pid, sig)

    def kill(self) -> None:
        """
        SIGKILL by pid (also wakes a SIGSTOPped process), if still running.
        """
        self.signal(signal.SIGKILL)
        self.signal(signal.SIGCONT)


def driver(*args: Any) -> DriverProcess:
    """
    Start L{harness.stress.driver} with C{args}.
    """
    return DriverProcess(["-m", DRIVER, *map(str, args)])


async def kill_all(procs: list[DriverProcess], timeout: float = 10.0) -> None:
    """
    Kill every process still running, by pid, and wait (bounded) for each.
    """
    for p in procs:
        p.kill()
    for p in procs:
        with contextlib.suppress(Exception):
            await p.wait_ended(timeout)


@contextlib.contextmanager
def child(*args: Any) -> Iterator[subprocess.Popen[str]]:
    """
    L{harness.stress.driver} as a blocking subprocess; killed by pid on
    exit.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", DRIVER, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    try:
        yield proc
    finally:
        end_process(proc)
        with contextlib.suppress(Exception):
            proc.communicate(timeout=10)


def read_event(
    proc: subprocess.Popen[str], name: str, timeout: float
) -> dict[str, Any]:
    """
    The next JSON line from C{proc} whose C{event} is C{name}.
    """
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    box: list[Any] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    box.append(event)
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    if not box:
        raise TimeoutError(f"no {name!r} from the driver within {timeout} s")
    return box[0]
