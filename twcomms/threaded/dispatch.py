"""
Moving work between the reactor thread and user threads (private).

  - L{WorkerPool}: daemon threads that run user callbacks, created on demand.
  - L{SerialQueue}: runs one connection's callbacks in order, one at a time,
    on the pool; a callback that blocks holds up only its own connection.
  - L{Outbox}: carries messages from any thread to the reactor thread in
    batches: one reactor wake-up for however many messages piled up.

Thread: every public method says which thread may call it.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["Outbox", "SerialQueue", "WorkerPool", "default_pool", "in_pool"]

_log = Logger()


class WorkerPool:
    """
    Daemon worker threads, started when a job has no idle worker to take
    it (up to C{max_workers}), ending after C{idle_timeout} seconds idle.

    Thread: any thread may call L{submit}.
    """

    def __init__(
        self,
        max_workers: int = 512,
        idle_timeout: float = 10.0,
        thread_factory: Callable[..., threading.Thread] = threading.Thread,
        name: str = "twcomms-callbacks",
    ) -> None:
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self._thread_factory = thread_factory
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0
        self._unclaimed = 0
        self._retiring = False

    @property
    def workers(self) -> int:
        """
        How many worker threads exist now.
        """
        return self._workers

    def submit(self, job: Callable[[], None]) -> None:
        """
        Run C{job()} on a worker thread.
        """
        with self._lock:
            self._retiring = False
            self._unclaimed += 1
            spawn = self._unclaimed > self._idle and self._workers < self.max_workers
            if spawn:
                self._workers += 1
        self._jobs.put(job)
        if spawn:
            thread = self._thread_factory(
                target=self._work,
                name=f"{self._name}-{self._workers}",
                daemon=True,
            )
            thread.start()

    def retire_idle(self) -> None:
        """
        Ask every idle worker to end now (rather than after its idle
        timeout): used once nothing is open any more.
        """
        with self._lock:
            retiring = max(0, self._idle - self._unclaimed)
            # Those workers no longer count as idle: a job submitted from
            # now on starts a worker of its own if it needs one.
            self._idle -= retiring
            # Workers busy now end when their job is done, unless new work
            # arrives first (submit clears this).
            self._retiring = True
        for _ in range(retiring):
            self._jobs.put(None)

    def _work(self) -> None:
        jobs = self._jobs
        lock = self._lock
        while True:
            with lock:
                self._idle += 1
            try:
                job = jobs.get(timeout=self.idle_timeout)
            except queue.Empty:
                with lock:
                    self._idle -= 1
                    if self._unclaimed == 0:
                        self._workers -= 1
                        return
                continue
            with lock:
                if job is None:
                    # Retired (retire_idle already stopped counting it idle).
                    self._workers -= 1
                    return
                self._idle -= 1
                self._unclaimed -= 1
            try:
                job()
            except Exception:  # pragma: no cover - jobs catch their own errors
                _log.failure("twcomms worker job failed")
            with lock:
                if self._retiring and self._unclaimed == 0:
                    self._workers -= 1
                    return


class SerialQueue:
    """
    Runs calls in the order they were put, one at a time, on a
    L{WorkerPool}. Each connection has one, so its callbacks keep their
    order and a blocked callback stalls nobody else.

    A call that raises is logged with its traceback; the next one runs.

    @ivar pending: calls put but not yet finished.
    """

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._items: collections.deque[
            tuple[Callable[..., object], tuple[Any, ...]]
        ] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._idle = threading.Condition(self._lock)

    @property
    def pending(self) -> int:
        return len(self._items)

    def put(self, f: Callable[..., object], *args: Any) -> None:
        """
        Queue C{f(*args)}. Any thread.
        """
        self._items.append((f, args))
        if self._scheduled:
            # A drain is running or queued: it will take this item (see the
            # re-check at the end of _drain). No lock on the common path.
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._pool.submit(self._drain)

    def wait_idle(self, timeout: float | None) -> bool:
        """
        Wait until every queued call has finished; C{False} on timeout. Not
        from a call run by this queue (it would wait for itself).
        """
        with self._lock:
            return self._idle.wait_for(
                lambda: not self._scheduled and not self._items, timeout
            )

    def _drain(self) -> None:
        items = self._items
        while True:
            try:
                f, args = items.popleft()
            except IndexError:
                with self._lock:
                    if items:
                        continue
                    self._scheduled = False
                    self._idle.notify_all()
                # A put() that saw _scheduled still True before we cleared
                # it returned without scheduling: take its item ourselves.
                if items:
                    with self._lock:
                        if not self._scheduled:
                            self._scheduled = True
                            continue
                return
            try:
                f(*args)
            except Exception:
                _log.failure("callback {callback!r} raised", callback=f)


class Outbox:
    """
    Messages from any thread, written on the reactor thread in batches.

    @ivar pending: items put but not yet handed to the writer.
    """

    def __init__(
        self,
        call_soon: Callable[[Callable[[], None]], None],
        write: Callable[[Any], None],
        flushed: Callable[[], None] | None = None,
        *,
        batch: bool = False,
    ) -> None:
        """
        @param call_soon: schedules a call on the reactor thread.
        @param write: called on the reactor thread with each item, in order
            (with C{batch}: once per flush, with the list of items).
        @param flushed: called on the reactor thread after each batch.
        """
        self._call_soon = call_soon
        self._write = write
        self._flushed = flushed
        self._batch = batch
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    @property
    def pending(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> None:
        """
        Queue C{item} for writing. Any thread; never waits for the reactor.
        """
        self._items.append(item)
        if self._scheduled:
            # A flush is scheduled and has not started (it clears the flag
            # before draining): it will write this item. No lock here.
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._call_soon(self.flush)

    def flush(self) -> None:
        """
        Write everything queued. Reactor thread only.
        """
        with self._lock:
            self._scheduled = False
        items = self._items
        write = self._write
        if self._batch:
            try:
                taken = self.take_all()
                if taken:
                    write(taken)
            finally:
                if self._flushed is not None:
                    self._flushed()
            return
        try:
            while True:
                try:
                    item = items.popleft()
                except IndexError:
                    return
                write(item)
        finally:
            if self._flushed is not None:
                self._flushed()

    def take_all(self) -> list[Any]:
        """
        Remove and return everything queued. Reactor thread only.
        """
        out = []
        items = self._items
        while True:
            try:
                out.append(items.popleft())
            except IndexError:
                return out


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def default_pool() -> WorkerPool:
    """
    The process-wide L{WorkerPool} every Server and Client uses unless
    given one (created on first use). Any thread.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = WorkerPool()
        return _pool


def in_pool(
    pool: WorkerPool,
    call_from_thread: Callable[..., object],
    f: Callable[..., Any],
    *args: Any,
) -> Deferred[Any]:
    """
    Run C{f(*args)} on a worker of C{pool}; a L{Deferred} that fires on the
    reactor thread (through C{call_from_thread}) with its result or its
    exception. Called on the reactor thread: how a user's callable that
    answers something (a request, credentials) runs off it.
    """
    d: Deferred[Any] = Deferred()

    def job() -> None:
        try:
            result = f(*args)
        except BaseException:
            call_from_thread(d.errback, Failure())
        else:
            call_from_thread(d.callback, result)

    pool.submit(job)
    return d
