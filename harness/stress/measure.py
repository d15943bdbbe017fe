"""
Measuring a process while a scenario runs: open file descriptors, traced
memory (tracemalloc), twcomms' log events, and what the reactor holds.
"""

from __future__ import annotations

import gc
import os
import threading
import tracemalloc
from typing import Any

from harness.stress.reactor import global_reactor


def fd_count() -> int:
    """
    Open file descriptors of this process.
    """
    return len(os.listdir("/proc/self/fd"))


class TraceMemory:
    """
    Traces Python allocations (tracemalloc) from C{__enter__}: C{peak} is
    the highest traced memory above the baseline taken then, C{growth} the
    traced memory now above it.
    """

    def __init__(self) -> None:
        self._started = False
        self.baseline = 0

    def __enter__(self) -> TraceMemory:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started = True
        gc.collect()
        self.baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        return self

    def rebase(self) -> None:
        """
        Take a new baseline now (after a warm-up).
        """
        gc.collect()
        self.baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

    @property
    def peak(self) -> int:
        return tracemalloc.get_traced_memory()[1] - self.baseline

    @property
    def growth(self) -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - self.baseline

    def __exit__(self, *exc: object) -> None:
        if self._started:
            tracemalloc.stop()


class LogWatch:
    """
    Watches Twisted log events of twcomms (any thread): keeps those at
    warning level and above, counts the others by format.
    """

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.kept: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        namespace = event.get("log_namespace") or ""
        if not namespace.startswith("twcomms"):
            return
        fmt = event.get("log_format") or ""
        level = event.get("log_level")
        with self._lock:
            self.counts[fmt] = self.counts.get(fmt, 0) + 1
            if (
                self.keep
                and level is not None
                and level.name in ("warn", "error", "critical")
            ):
                self.kept.append(event)

    def __enter__(self) -> LogWatch:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.removeObserver(self)

    def mark(self) -> int:
        """
        A position in C{kept}, for L{warnings}C{(since=...)}.
        """
        with self._lock:
            return len(self.kept)

    def warnings(
        self, contains: str, since: int = 0, **fields: Any
    ) -> list[dict[str, Any]]:
        """
        Kept events (from position C{since}) whose format contains
        C{contains} and whose fields equal C{fields}.
        """
        with self._lock:
            events = self.kept[since:]
        return [
            e
            for e in events
            if contains in (e.get("log_format") or "")
            and all(e.get(k) == v for k, v in fields.items())
        ]

    def count(self, contains: str) -> int:
        with self._lock:
            return sum(n for fmt, n in self.counts.items() if contains in fmt)


def reactor_handles() -> dict[str, int]:
    """
    What the reactor holds: readers, writers, delayed calls.
    """
    reactor = global_reactor()
    return {
        "readers": len(reactor.getReaders()),
        "writers": len(reactor.getWriters()),
        "delayed calls": len(reactor.getDelayedCalls()),
    }
