"""
Child processes for tests and benchmarks: started with this interpreter,
ended by their pid (or process group), every wait bounded.

  - L{run_bounded}: run a command to its end or to a time bound, whichever
    comes first; an overrun is killed (its group too, if it has one).
  - L{end_process}: end a running child by pid (a polite signal first, if
    asked, then SIGKILL) and wait for it, bounded.
  - L{kill_pid}: one signal to a pid that may already be gone.
  - L{watchdog}: in a child, leave at once when the parent goes away or a
    time bound passes, so that no child outlives its run.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The repository's root (where C{python -m harness...} and
#: C{python -m benchmarks...} run from).
ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """
    The environment for a child: ours, unbuffered, plus C{extra}.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def raise_fd_limit() -> int:
    """
    Raise this process's open-files soft limit to its hard limit; return
    the soft limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def watchdog(limit: float) -> None:
    """
    Exit this process if its parent goes away or after C{limit} seconds, so
    that no benchmark or test process outlives its run. (The parent's death
    has no event a child can wait on portably: it is polled, 4 times a
    second.)
    """
    ppid = os.getppid()
    deadline = time.monotonic() + limit

    def run() -> None:
        while True:
            time.sleep(0.25)
            if os.getppid() != ppid or time.monotonic() > deadline:
                os._exit(3)

    threading.Thread(target=run, name="watchdog", daemon=True).start()


def kill_pid(pid: int | None, sig: int = signal.SIGKILL) -> None:
    """
    Send C{sig} to C{pid}, if there is still such a process.
    """
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def end_process(
    proc: subprocess.Popen[Any],
    *,
    first: int | None = None,
    grace: float = 0.0,
    group: bool = False,
    wait: float = 10.0,
) -> int | None:
    """
    End C{proc} by its pid if it is still running: send C{first} (say
    SIGTERM or SIGINT) and give it C{grace} seconds, then SIGKILL; then
    wait up to C{wait} seconds for it. With C{group}, the signals go to its
    process group (a child started with C{start_new_session=True} and
    whatever it started). Returns the exit status, or L{None} if it did
    not end within C{wait}.
    """

    def send(sig: int) -> None:
        if group:
            try:
                os.killpg(proc.pid, sig)
                return
            except (ProcessLookupError, PermissionError):
                pass
        kill_pid(proc.pid, sig)

    if proc.poll() is None and first is not None:
        send(first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    if proc.poll() is None:
        send(signal.SIGKILL)
    try:
        return proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        return None


@dataclass
class Finished:
    """
    How a command run by L{run_bounded} ended.

    @ivar returncode: its exit status (L{None} if it had to be killed and
        did not end).
    @ivar cut_off: it overran its time bound and was killed.
    """

    returncode: int | None
    stdout: Any
    stderr: Any
    cut_off: bool


def run_bounded(
    argv: Sequence[str],
    timeout: float,
    *,
    cwd: Path | str = ROOT,
    env: dict[str, str] | None = None,
    text: bool = True,
    new_session: bool = False,
) -> Finished:
    """
    Run C{argv} (its stdout and stderr captured, no stdin) until it ends or
    C{timeout} seconds pass; an overrun is killed by pid (with
    C{new_session}, it leads a new process group, and the whole group is
    killed), and what it wrote is still collected (bounded).
    """
    proc = subprocess.Popen(
        list(argv),
        cwd=str(cwd),
        env=env if env is not None else child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=text,
        start_new_session=new_session,
    )
    cut_off = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        cut_off = True
        out, err = "" if text else b"", "" if text else b""
    finally:
        # Killed by pid (or group) if it still runs.
        end_process(proc, group=new_session, wait=10.0)
    if cut_off:
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
            out, err = proc.communicate(timeout=10)
    return Finished(proc.poll(), out, err, cut_off)
