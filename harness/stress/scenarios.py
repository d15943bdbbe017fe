"""
Reliability scenarios: twcomms under load, faults and hostile input, on
127.0.0.1. Each scenario checks what it promises and returns a L{Result}
(numbers for the stress table, and the list of C{problems} it found).

The tests in C{tests/reliability} call these functions and assert on their
results; C{python -m benchmarks.stress} runs each in a fresh process through
this module's command line::

    python -m harness.stress.scenarios NAME [--scale ci|full]

which prints C{RESULT <json>} as its last line.

Scale: C{TWCOMMS_SCALE} (C{ci}, the default, or C{full}) sizes the heavy
scenarios (L{SCALES}).

Two kinds of scenario:
  - Twisted ones are C{async def} functions run on a running global reactor
    (pytest-twisted's, or C{task.react} in the command line). Every wait is
    bounded (L{bounded}); client processes are started with
    C{reactor.spawnProcess} and killed by pid in C{finally}.
  - Threaded ones (names ending C{_threaded}, and C{slow_callback}) are plain
    functions using the threaded API; they must not run on the reactor
    thread (run them with C{-p no:twisted}).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.procs import ROOT, child_env, end_process, kill_pid, raise_fd_limit
from harness.stress.driver import make_pattern, payload_for
from harness.wire import frame, header, split
from harness.wire import outcome as reference_outcome

MiB = 1024 * 1024
KiB = 1024
#: The client driver, run as C{python -m DRIVER} from the repository root.
DRIVER = "harness.stress.driver"
LOCAL_TCP = "tcp:0:interface=127.0.0.1"


# -- scale -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """
    The sizes of the heavy scenarios.
    """

    name: str
    #: load: clients, numbered messages each, broadcasts, client processes.
    load_clients: int
    load_messages: int
    load_broadcasts: int
    load_processes: int
    #: churn: connect/disconnect cycles (Twisted API, then threaded API).
    churn_cycles: int
    churn_threaded_cycles: int
    #: restart: auto-reconnecting clients.
    restart_clients: int
    #: slow consumer: payload bytes broadcast in total.
    slow_consumer_bytes: int
    #: slow callback: messages sent to a slow callback.
    slow_callback_messages: int
    #: hostile input: garbage connections (real sockets), bad-payload
    #: connections, random streams fed in memory.
    garbage_connections: int
    bad_payload_connections: int
    fuzz_streams: int
    #: hypothesis examples per property.
    hypothesis_examples: int
    #: shutdown: messages in flight at stop().
    shutdown_messages: int


SCALES = {
    "ci": Scale(
        name="ci",
        load_clients=100,
        load_messages=100,
        load_broadcasts=100,
        load_processes=2,
        churn_cycles=1_000,
        churn_threaded_cycles=1_000,
        restart_clients=50,
        slow_consumer_bytes=256 * MiB,
        slow_callback_messages=20_000,
        garbage_connections=300,
        bad_payload_connections=50,
        fuzz_streams=3_000,
        hypothesis_examples=1_000,
        shutdown_messages=20_000,
    ),
    "full": Scale(
        name="full",
        load_clients=500,
        load_messages=1_000,
        load_broadcasts=1_000,
        load_processes=4,
        churn_cycles=5_000,
        churn_threaded_cycles=5_000,
        restart_clients=200,
        slow_consumer_bytes=1024 * MiB,
        slow_callback_messages=100_000,
        garbage_connections=1_000,
        bad_payload_connections=200,
        fuzz_streams=20_000,
        hypothesis_examples=5_000,
        shutdown_messages=100_000,
    ),
}


def current_scale(name: str | None = None) -> Scale:
    """
    The scale named C{name}, or by C{TWCOMMS_SCALE} (default C{ci}).
    """
    name = name or os.environ.get("TWCOMMS_SCALE", "ci") or "ci"
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(
            f"TWCOMMS_SCALE must be one of {sorted(SCALES)}, not {name!r}"
        ) from None


# -- results ---------------------------------------------------------------------------


@dataclass
class Result:
    """
    What a scenario did and found.

    @ivar load: the load held, in words.
    @ivar faults: the faults injected, in words.
    @ivar sent: messages that had to arrive.
    @ivar received: of those, how many arrived (once, intact).
    @ivar lost: how many never arrived.
    @ivar duplicated: how many arrived more than once.
    @ivar peak_memory: peak traced memory (bytes) of the measured process
        above its baseline, where measured.
    @ivar memory_bound: the bound asserted on C{peak_memory}.
    @ivar problems: every check that failed, in words; empty when all held.
    """

    scenario: str
    scale: str = ""
    load: str = ""
    faults: str = ""
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    peak_memory: int | None = None
    memory_bound: int | None = None
    seconds: float = 0.0
    #: The memory figure for the table, in words (peak or growth, bound).
    memory: str = "-"
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def check(self, ok: object, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return bool(ok)

    def to_json(self) -> str:
        data = asdict(self)
        if len(self.problems) > 50:
            data["problems"] = [
                *self.problems[:50],
                f"... and {len(self.problems) - 50} more",
            ]
        return json.dumps(data, default=str)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls(**json.loads(text))


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def assert_held(result: Result) -> None:
    """
    For tests: everything the scenario promises held (no problem found,
    nothing lost or duplicated, every message that had to arrive arrived).
    The result is printed, so a failing test shows it.
    """
    print(result.to_json())
    assert result.problems == [], "\n".join(result.problems)
    assert result.lost == 0, f"{result.lost} messages lost"
    assert result.duplicated == 0, f"{result.duplicated} messages duplicated"
    assert result.received == result.sent, (result.received, result.sent)


# -- measuring -------------------------------------------------------------------------


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


# -- Twisted helpers -------------------------------------------------------------------


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def bounded(d: Any, timeout: float, what: str = "an event") -> Any:
    """
    A new Deferred with C{d}'s result, failing with C{TimeoutError} (saying
    C{what}) after C{timeout} seconds. C{d} itself is left alone.
    """
    from twisted.internet import defer

    result: defer.Deferred[Any] = defer.Deferred()
    reactor = _reactor()

    def expire() -> None:
        if not result.called:
            result.errback(TimeoutError(f"no {what} within {timeout} s"))

    call = reactor.callLater(timeout, expire)

    def done(outcome: Any) -> None:
        if call.active():
            call.cancel()
        if not result.called:
            result.callback(outcome)

    d.addBoth(done)
    return result


def sleep(seconds: float) -> Any:
    """
    Let the reactor run for C{seconds}: only to let time pass (a timeout,
    a back-off), never to wait for something that has an event.
    """
    from twisted.internet import task

    return task.deferLater(_reactor(), seconds, lambda: None)


class Counter:
    """
    A count, and Deferreds for "at least N". Reactor thread.
    """

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, Any]] = []

    def add(self, n: int = 1) -> None:
        self.count += n
        if self._waiters:
            ready = [(k, d) for k, d in self._waiters if self.count >= k]
            self._waiters = [(k, d) for k, d in self._waiters if self.count < k]
            for _, d in ready:
                d.callback(self.count)

    def wait(self, n: int, timeout: float, what: str) -> Any:
        from twisted.internet import defer

        if self.count >= n:
            return defer.succeed(self.count)
        d: defer.Deferred[int] = defer.Deferred()
        self._waiters.append((n, d))
        return bounded(d, timeout, f"{what} (have {self.count} of {n})")


class Slots:
    """
    Deferreds by key: C{get(key)} is fired by C{fire(key, value)}, in
    either order. Reactor thread.
    """

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        self._waiters: dict[Any, list[Any]] = {}

    def fire(self, key: Any, value: Any = None) -> None:
        self._values[key] = value
        for d in self._waiters.pop(key, []):
            d.callback(value)

    def get(self, key: Any, timeout: float, what: str) -> Any:
        from twisted.internet import defer

        if key in self._values:
            return defer.succeed(self._values[key])
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiters.setdefault(key, []).append(d)
        return bounded(d, timeout, what)

    def discard(self, key: Any) -> None:
        self._values.pop(key, None)


class DriverProcess:
    """
    A child process started with this interpreter, speaking JSON lines on
    stdout (L{harness.stress.driver}, or this module's command line).
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
                outer.stderr = (outer.stderr + data)[-20000:]

            def processEnded(self, reason: Any) -> None:
                outer._process_ended(reason)

        self._protocol = _Protocol()
        full_env = child_env(**(env or {}))
        transport = _reactor().spawnProcess(
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


def random_split(rng: random.Random, data: bytes, max_pieces: int) -> list[bytes]:
    """
    C{data} cut at up to C{max_pieces - 1} random places.
    """
    if len(data) < 2 or max_pieces < 2:
        return [data] if data else []
    cuts = sorted(rng.sample(range(1, len(data)), min(max_pieces - 1, len(data) - 1)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


GARBAGE_KINDS = ("valid", "cut", "oversize", "random", "many", "bytewise")
#: Oversized headers worth trying, for a limit of L{GARBAGE_LIMIT}.
GARBAGE_LIMIT = 4096
BIG_HEADERS = (GARBAGE_LIMIT + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


def garbage_stream(rng: random.Random, limit: int = GARBAGE_LIMIT) -> tuple[str, bytes]:
    """
    One hostile (or merely awkward) byte stream and its kind.
    """
    kind = rng.choice(GARBAGE_KINDS)

    def size() -> int:
        return rng.choice([0, 1, 3, 4, 5, rng.randint(0, 64), rng.randint(0, limit)])

    def frames(k: int) -> bytes:
        return b"".join(frame(rng.randbytes(size())) for _ in range(k))

    if kind == "valid":
        return kind, frames(rng.randint(0, 20))
    if kind == "cut":
        last = frame(rng.randbytes(max(1, size())))
        return kind, frames(rng.randint(0, 20)) + last[: rng.randint(1, len(last) - 1)]
    if kind == "oversize":
        announced = rng.choice([*BIG_HEADERS, rng.randint(limit + 1, 0xFFFFFFFF)])
        junk = rng.randbytes(rng.randint(0, 2000))
        return kind, frames(rng.randint(0, 10)) + header(announced) + junk
    if kind == "random":
        return kind, rng.randbytes(rng.randint(1, 3000))
    if kind == "many":
        return kind, b"".join(
            frame(rng.randbytes(rng.randint(0, 8)))
            for _ in range(rng.randint(200, 2000))
        )
    # bytewise: small frames, to be written one byte at a time.
    return kind, b"".join(
        frame(rng.randbytes(rng.randint(0, 40))) for _ in range(rng.randint(1, 4))
    )


def garbage_plan(
    rng: random.Random, n: int, limit: int = GARBAGE_LIMIT
) -> list[tuple[str, bytes, list[bytes]]]:
    """
    C{n} garbage streams with the pieces each is written in.
    """
    plan = []
    for _ in range(n):
        kind, stream = garbage_stream(rng, limit)
        max_pieces = len(stream) if kind == "bytewise" else rng.randint(1, 30)
        plan.append((kind, stream, random_split(rng, stream, max_pieces)))
    return plan


# -- hostile framing, in memory --------------------------------------------------------


class RecordingReceiver:
    """
    A L{twcomms.protocol.MessageReceiver} that records what it is given.
    """

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.decode_errors: list[Any] = []
        self.started = 0
        self.stopped: list[Any] = []

    def startReceivingMessages(self, sender: Any) -> None:
        self.started += 1

    def messageReceived(self, message: Any) -> None:
        self.messages.append(message)

    def messageDecodeFailed(self, error: Any) -> None:
        self.decode_errors.append(error)

    def stopReceivingMessages(self, reason: Any, failure: Any) -> None:
        self.stopped.append(reason)


def memory_connection(
    limit: int, data_type: str = "binary", byte_order: str = "little"
) -> tuple[Any, RecordingReceiver, Any]:
    """
    A L{CommsProtocol} connected to a fake TCP transport: (protocol,
    receiver, transport).
    """
    from harness.transport import TCPStringTransport
    from twcomms.protocol import CommsProtocol

    receiver = RecordingReceiver()
    proto = CommsProtocol(
        receiver, data_type, byte_order, max_message_size=limit, idle_timeout=None
    )
    transport = TCPStringTransport()
    proto.makeConnection(transport)
    return proto, receiver, transport


def check_memory_stream(
    stream: bytes, pieces: list[bytes], limit: int, watch: LogWatch
) -> list[str]:
    """
    Feed C{pieces} (C{stream} cut up) to a fresh protocol, then end the
    connection; return what went wrong compared with L{reference_outcome}.
    """
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    from twcomms.protocol import CloseReason

    expected, oversize, trailing = reference_outcome(stream, limit)
    proto, receiver, transport = memory_connection(limit)
    problems = []
    before = len(watch.kept)
    for piece in pieces:
        proto.dataReceived(piece)
    if receiver.messages != expected:
        got = receiver.messages
        first = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
            min(len(expected), len(got)),
        )
        problems.append(
            f"delivered {len(got)} payloads, expected {len(expected)} "
            f"(first difference at {first})"
        )
    if oversize:
        if not transport.disconnecting:
            problems.append("an oversized header did not close the connection")
        if proto.closeReason is not CloseReason.OVERSIZE:
            problems.append(f"close reason {proto.closeReason}, expected oversize")
        if proto.incompleteFrameBytes:
            problems.append(
                f"{proto.incompleteFrameBytes} bytes buffered after an oversized header"
            )
    else:
        if transport.disconnecting:
            problems.append("a valid stream closed the connection")
        if proto.incompleteFrameBytes != trailing:
            problems.append(
                f"holds {proto.incompleteFrameBytes} bytes of an incomplete frame, "
                f"expected {trailing}"
            )
    proto.connectionLost(Failure(ConnectionDone()))
    new = watch.kept[before:]
    oversize_logs = [e for e in new if "header announced" in e.get("log_format", "")]
    cut_logs = [e for e in new if "middle of a message" in e.get("log_format", "")]
    if len(oversize_logs) != (1 if oversize else 0):
        problems.append(f"{len(oversize_logs)} oversize warnings, oversize={oversize}")
    if trailing and not oversize:
        if [e.get("incomplete") for e in cut_logs] != [trailing]:
            problems.append(
                f"cut-off warning(s) {[e.get('incomplete') for e in cut_logs]}, "
                f"expected one for {trailing} bytes"
            )
    elif cut_logs:
        problems.append("a cut-off warning without a cut-off frame")
    return problems


def fuzz_memory(scale: Scale, seed: int = 1) -> Result:
    """
    Hostile framing in memory: C{scale.fuzz_streams} random streams (see
    L{garbage_stream}), each cut at random places, fed to a protocol;
    compared with L{reference_outcome}. Also one stream cut at every byte
    boundary, and one segment of many frames.
    """
    started = time.monotonic()
    rng = random.Random(seed)
    result = Result(
        "hostile framing (memory)",
        scale=scale.name,
        load=f"{scale.fuzz_streams:,} random streams",
        faults="oversized headers up to 0xFFFFFFFF, garbage, cut frames, 1-byte splits",
    )
    limit = GARBAGE_LIMIT
    sent = received = 0
    with LogWatch() as watch:
        for kind, stream, pieces in garbage_plan(rng, scale.fuzz_streams, limit):
            expected = reference_outcome(stream, limit)[0]
            problems = check_memory_stream(stream, pieces, limit, watch)
            sent += len(expected)
            if problems:
                result.problems.append(f"{kind} stream {stream[:40]!r}...: {problems}")
            else:
                received += len(expected)
            watch.kept.clear()
        # One stream split at every byte boundary (two pieces each).
        stream = b"".join(
            frame(p) for p in (b"", b"a", b"bc" * 10, bytes(range(256)), b"z" * 600)
        )
        for cut in range(len(stream) + 1):
            problems = check_memory_stream(
                stream, [stream[:cut], stream[cut:]], limit, watch
            )
            sent += 5
            if problems:
                result.problems.append(f"split at byte {cut}: {problems}")
            else:
                received += 5
            watch.kept.clear()
        # Many frames in one segment.
        many = [str(i).encode() for i in range(50_000)]
        proto, receiver, _ = memory_connection(limit)
        proto.dataReceived(b"".join(frame(p) for p in many))
        sent += len(many)
        if result.check(receiver.messages == many, "50,000 frames in one segment"):
            received += len(many)
    result.sent, result.received = sent, received
    result.lost = sent - received
    result.seconds = time.monotonic() - started
    return result


# -- hostile framing, real sockets -----------------------------------------------------


def _raw_protocol_class() -> Any:
    from twisted.internet import defer, protocol

    class RawPeer(protocol.Protocol):
        """
        Writes given pieces, one per reactor turn (TCP_NODELAY, so they
        tend to leave as separate segments), then optionally closes.
        """

        def __init__(self) -> None:
            self.lost: defer.Deferred[Any] = defer.Deferred()
            self.reason: Any = None
            self.frames: list[bytes] = []
            self.frame_count = Counter()
            self._unparsed = b""

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)
            self.port = int(self.transport.getHost().port)

        def dataReceived(self, data: bytes) -> None:
            payloads, self._unparsed = split(self._unparsed + data)
            if payloads:
                self.frames.extend(payloads)
                self.frame_count.add(len(payloads))

        def connectionLost(self, reason: Any = None) -> None:
            self.reason = reason
            if not self.lost.called:
                self.lost.callback(None)

        async def write_pieces(self, pieces: list[bytes], close: bool) -> None:
            for piece in pieces:
                if self.lost.called:
                    return
                self.transport.write(piece)
                await sleep(0)
            if close and not self.lost.called:
                self.transport.loseConnection()

    return RawPeer


async def connect_raw(port: int, timeout: float = 10.0) -> Any:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    endpoint = TCP4ClientEndpoint(_reactor(), "127.0.0.1", port, timeout=timeout)
    return await bounded(
        connectProtocol(endpoint, _raw_protocol_class()()), timeout, "a raw connection"
    )


class PingPong:
    """
    A well-behaved twcomms client that keeps one ping in flight and checks
    each echo; records the longest wait between echoes.
    """

    def __init__(self, data_type: str = "binary", max_message_size: int = 4096) -> None:
        from twcomms.client import CommsClientFactory

        self.data_type = data_type
        self.echoes = Counter()
        self.bad = 0
        self.longest_gap = 0.0
        self._last = time.monotonic()
        self._n = 0
        self.running = False
        self.client = CommsClientFactory(
            data_type,
            max_message_size=max_message_size,
            on_message=self._on_message,
        )

    def _ping(self) -> Any:
        if self.data_type == "binary":
            return f"ping {self._n}".encode()
        if self.data_type == "string":
            return f"ping {self._n}"
        return {"ping": self._n}

    def start(self, port: int, trust_root: str | None = None) -> Any:
        """
        Connect (over TLS, trusting C{trust_root}, if given).
        """
        if trust_root is None:
            self.client.connectTCP("127.0.0.1", port)
        else:
            self.client.connectSSL("127.0.0.1", port, trust_root=trust_root)
        return self.client.whenConnected()

    def go(self) -> None:
        self.running = True
        self._last = time.monotonic()
        self.client.send(self._ping())

    def _on_message(self, client: Any, message: Any) -> None:
        if message != self._ping():
            self.bad += 1
        now = time.monotonic()
        self.longest_gap = max(self.longest_gap, now - self._last)
        self._last = now
        self._n += 1
        self.echoes.add()
        if self.running:
            client.send(self._ping())

    def stop(self) -> Any:
        self.running = False
        return self.client.stop()


async def garbage_sockets(scale: Scale, seed: int = 7, wave: int = 25) -> Result:
    """
    Hostile framing over real sockets: C{scale.garbage_connections}
    connections send garbage (L{garbage_stream}) in pieces, C{wave} at a
    time, while a well-behaved client keeps getting echoes. Each garbage
    connection gets exactly the complete frames before its first oversized
    header, never a partial one; it is closed once (reason and log) when it
    sends an oversized header; nothing stays buffered; the server ends with
    only the good client.
    """
    from twisted.internet import defer

    from twcomms.protocol import CloseReason
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    limit = GARBAGE_LIMIT
    n = scale.garbage_connections
    plan = garbage_plan(random.Random(seed), n, limit)
    result = Result(
        "hostile framing (sockets)",
        scale=scale.name,
        load=f"{n} garbage connections, {wave} at a time, + 1 echo client",
        faults="oversized headers, random bytes, cut frames, 1-byte writes",
    )
    delivered: dict[str, list[bytes]] = {}
    connected = Slots()  # by peer port: the server's handle
    closed = Slots()  # by handle id: the close reason
    good_port = [0]

    def on_connect(handle: Any) -> None:
        delivered[handle.id] = []
        connected.fire(handle.port, handle)

    def on_message(handle: Any, payload: bytes) -> None:
        if handle.port == good_port[0]:
            handle.send(payload)
        else:
            delivered[handle.id].append(payload)

    def on_close(handle: Any, reason: Any) -> None:
        closed.fire(handle.id, reason)

    server = CommsServerFactory(
        "binary",
        max_message_size=limit,
        on_connect=on_connect,
        on_message=on_message,
        on_close=on_close,
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    good = PingPong("binary", limit)
    counts = {"expected": 0, "matched": 0, "lost": 0, "duplicated": 0}
    try:
        with LogWatch() as watch:
            proto = await bounded(good.start(port), 10, "the good client")
            good_port[0] = proto.transport.getHost().port
            connected.discard(good_port[0])
            good.go()
            await good.echoes.wait(10, 10, "first echoes")
            echoes_before = good.echoes.count

            async def one(kind: str, stream: bytes, pieces: list[bytes]) -> None:
                expected, oversize, trailing = reference_outcome(stream, limit)
                mark = watch.mark()
                peer = await connect_raw(port)
                p = peer.port
                handle = await connected.get(p, 10, f"server side of {p}")
                connected.discard(p)
                await peer.write_pieces(pieces, close=not oversize)
                reason = await closed.get(handle.id, 15, f"close of {kind} {p}")
                await bounded(peer.lost, 10, "the peer's close")
                got = delivered.pop(handle.id)
                counts["expected"] += len(expected)
                if got == expected:
                    counts["matched"] += len(expected)
                else:
                    extra = [g for g in got if g not in expected]
                    result.problems.append(
                        f"{kind} connection: {len(got)} payloads delivered, "
                        f"expected {len(expected)}; {len(extra)} unexpected"
                    )
                    counts["lost"] += max(0, len(expected) - len(got))
                    counts["duplicated"] += max(0, len(got) - len(expected))
                want = CloseReason.OVERSIZE if oversize else CloseReason.PEER_CLOSED
                result.check(
                    reason is want,
                    f"{kind} connection closed {reason}, expected {want}",
                )
                peer_name = f"127.0.0.1:{p}"
                oversize_logs = watch.warnings("header announced", mark, peer=peer_name)
                result.check(
                    len(oversize_logs) == (1 if oversize else 0),
                    f"{kind}: {len(oversize_logs)} oversize warnings "
                    f"(oversize={oversize})",
                )
                cut = watch.warnings("middle of a message", mark, peer=peer_name)
                want_cut = [trailing] if trailing and not oversize else []
                result.check(
                    [e["incomplete"] for e in cut] == want_cut,
                    f"{kind}: cut-off warnings {[e['incomplete'] for e in cut]}, "
                    f"expected {want_cut}",
                )
                result.check(
                    handle.protocol.incompleteFrameBytes == 0,
                    f"{kind}: {handle.protocol.incompleteFrameBytes} bytes still held",
                )

            for i in range(0, n, wave):
                batch = [
                    defer.ensureDeferred(one(kind, stream, pieces))
                    for kind, stream, pieces in plan[i : i + wave]
                ]
                outcomes = await defer.DeferredList(batch, consumeErrors=True)
                for ok, value in outcomes:
                    if not ok:
                        result.problems.append(f"garbage connection: {value.value!r}")
            echoes_during = good.echoes.count - echoes_before
            await good.echoes.wait(good.echoes.count + 10, 10, "echoes after garbage")
            result.check(good.bad == 0, f"{good.bad} wrong echoes")
            result.check(
                echoes_during >= n // wave,
                f"only {echoes_during} echoes during {n} garbage connections",
            )
            result.check(
                good.longest_gap < 2.0,
                f"the good client waited {good.longest_gap:.2f} s for an echo",
            )
            result.check(
                [h.port for h in server.clients] == [good_port[0]],
                f"server clients after: {list(server.clients)}",
            )
            result.check(
                len(server._connections) == 1,
                f"{len(server._connections)} connections tracked after",
            )
            result.details.update(
                echoes_during=echoes_during,
                longest_echo_gap=round(good.longest_gap, 3),
                kinds={k: sum(1 for s in plan if s[0] == k) for k in GARBAGE_KINDS},
            )
    finally:
        await bounded(good.stop(), 10, "good client stop")
        await bounded(server.stop(), 10, "server stop")
    result.sent = counts["expected"] + good.echoes.count
    result.received = counts["matched"] + good.echoes.count
    result.lost, result.duplicated = counts["lost"], counts["duplicated"]
    result.seconds = time.monotonic() - started
    return result


# -- bad payloads ----------------------------------------------------------------------

#: Payloads a json receiver must refuse (and a string receiver, for some).
BAD_PAYLOADS: tuple[tuple[str, bytes], ...] = (
    ("invalid UTF-8", b"\xff\xfe\xfd"),
    ("truncated UTF-8", b'"\xc3'),
    ("UTF-8 surrogate", b'"\xed\xa0\x80"'),
    ("invalid JSON", b"{not json"),
    ("unterminated JSON", b'{"a": [1, 2'),
    ("trailing garbage", b'{"a": 1} x'),
    ("empty frame", b""),
    ("byte-order mark", b"\xef\xbb\xbf{}"),
    ("lists nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000),
    ("objects nested 100,000 deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
)


def independent_decode(payload: bytes, data_type: str) -> tuple[bool, Any]:
    """
    Whether C{payload} decodes for C{data_type}, and to what, decided with
    the standard library only.
    """
    try:
        text = payload.decode("utf-8")
        if data_type == "string":
            return True, text
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


async def bad_payloads(scale: Scale, data_type: str = "json", seed: int = 3) -> Result:
    """
    Bad payloads (L{BAD_PAYLOADS}) mixed with good ones on
    C{scale.bad_payload_connections} raw connections to a C{data_type}
    server: each bad one reaches the decode-error hook with its raw bytes,
    is counted in C{decodeErrors} and logged; the connection stays up
    (it answers a final message); good ones are delivered in order; a
    well-behaved client keeps getting echoes throughout.
    """
    from twisted.internet import defer

    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    rng = random.Random(seed)
    n = scale.bad_payload_connections
    result = Result(
        f"bad payloads ({data_type})",
        scale=scale.name,
        load=f"{n} connections mixing good and bad payloads + 1 echo client",
        faults="invalid UTF-8/JSON, empty, BOM, JSON nested 100,000 deep",
    )
    messages: dict[str, list[Any]] = {}
    errors: dict[str, list[bytes]] = {}
    connected = Slots()
    good_port = [0]

    def done_marker(i: int) -> Any:
        return {"done": i} if data_type == "json" else f"done {i}"

    def on_connect(handle: Any) -> None:
        messages[handle.id] = []
        errors[handle.id] = []
        connected.fire(handle.port, handle)

    def on_message(handle: Any, message: Any) -> None:
        if handle.port == good_port[0]:
            handle.send(message)
            return
        messages[handle.id].append(message)
        if (isinstance(message, dict) and "done" in message) or (
            isinstance(message, str) and message.startswith("done ")
        ):
            reply = {"ack": handle.protocol.decodeErrors}
            handle.send(reply if data_type == "json" else json.dumps(reply))

    def on_decode_error(handle: Any, error: Any) -> None:
        errors[handle.id].append(error.payload)

    server = CommsServerFactory(
        data_type,
        on_connect=on_connect,
        on_message=on_message,
        on_decode_error=on_decode_error,
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    good = PingPong(data_type)
    totals = {"sent": 0, "received": 0, "bad": 0}
    try:
        with LogWatch() as watch:
            proto = await bounded(good.start(port), 10, "the good client")
            good_port[0] = proto.transport.getHost().port
            connected.discard(good_port[0])
            good.go()
            await good.echoes.wait(5, 10, "first echoes")
            before = good.echoes.count

            async def one(i: int, plan: list[bytes]) -> None:
                peer = await connect_raw(port)
                handle = await connected.get(peer.port, 10, "the server side")
                connected.discard(peer.port)
                marker = done_marker(i)
                last = (
                    json.dumps(marker).encode()
                    if data_type == "json"
                    else marker.encode()
                )
                await peer.write_pieces([frame(x) for x in [*plan, last]], close=False)
                await peer.frame_count.wait(1, 15, "the answer to the final message")
                want_ok = []
                want_bad = []
                for x in plan:
                    ok, value = independent_decode(x, data_type)
                    (want_ok.append(value) if ok else want_bad.append(x))
                want_ok.append(marker)
                totals["sent"] += len(want_ok)
                totals["bad"] += len(want_bad)
                got = messages[handle.id]
                if result.check(
                    got == want_ok,
                    f"connection {i}: {len(got)} messages, expected {len(want_ok)}",
                ):
                    totals["received"] += len(got)
                result.check(
                    errors[handle.id] == want_bad,
                    f"connection {i}: decode errors {len(errors[handle.id])}, "
                    f"expected {len(want_bad)}",
                )
                result.check(
                    handle.protocol.decodeErrors == len(want_bad),
                    f"connection {i}: decodeErrors {handle.protocol.decodeErrors}",
                )
                answer = json.loads(peer.frames[0])
                result.check(
                    answer == {"ack": len(want_bad)}, f"connection {i}: answer {answer}"
                )
                result.check(handle.connected, f"connection {i} did not stay up")
                peer.transport.loseConnection()
                await bounded(peer.lost, 10, "the peer's close")

            plans = []
            for _ in range(n):
                plan = [
                    json.dumps({"seq": j}).encode() for j in range(rng.randint(1, 10))
                ]
                plan += [rng.choice(BAD_PAYLOADS)[1] for _ in range(rng.randint(1, 8))]
                rng.shuffle(plan)
                plans.append(plan)
            for start in range(0, n, 25):
                batch = [
                    defer.ensureDeferred(one(i, plans[i]))
                    for i in range(start, min(n, start + 25))
                ]
                for ok, value in await defer.DeferredList(batch, consumeErrors=True):
                    if not ok:
                        result.problems.append(
                            f"bad-payload connection: {value.value!r}"
                        )
            await good.echoes.wait(good.echoes.count + 5, 10, "echoes afterwards")
            during = good.echoes.count - before
            result.check(good.bad == 0, f"{good.bad} wrong echoes")
            result.check(during > 0, "no echoes while bad payloads arrived")
            logged = watch.count("did not decode")
            result.check(
                logged == totals["bad"],
                f"{logged} decode errors logged, {totals['bad']} sent",
            )
            result.details.update(
                decode_errors=totals["bad"],
                echoes_during=during,
                longest_echo_gap=round(good.longest_gap, 3),
            )
    finally:
        await bounded(good.stop(), 10, "good client stop")
        await bounded(server.stop(), 10, "server stop")
    result.sent = totals["sent"] + good.echoes.count
    result.received = totals["received"] + good.echoes.count
    result.lost = result.sent - result.received
    result.seconds = time.monotonic() - started
    return result


# -- slow consumer ---------------------------------------------------------------------

#: Slow consumer settings: message size, maximum message size and outbound
#: limit of the server (explicit, so the bound below is known).
SLOW_MESSAGE = 1 * MiB
SLOW_OUTBOUND_LIMIT = 4 * MiB
#: Twisted pauses a transport's producer above this many buffered bytes
#: (abstract.FileDescriptor.bufferSize).
TWISTED_BUFFER = 64 * KiB


def slow_consumer_bound(fast: int, slow: int) -> int:
    """
    The server's memory bound for the slow-consumer scenario: per slow
    client, what may be queued before it is closed (the outbound limit,
    Twisted's pause threshold and one frame), counted twice because
    Twisted joins a transport's pending writes into one buffer (a copy) when
    it writes; per fast client, the pause threshold and one frame (the
    broadcaster waits for fast clients to drain), also twice; the frame
    being broadcast (twice: it is built from a slice of the pattern); and
    8 MiB for everything else. It does not depend on how much is
    broadcast in total.
    """
    frame_size = SLOW_MESSAGE + 4
    per_slow = 2 * (SLOW_OUTBOUND_LIMIT + TWISTED_BUFFER + frame_size)
    per_fast = 2 * (TWISTED_BUFFER + frame_size)
    return slow * per_slow + fast * per_fast + 2 * frame_size + 8 * MiB


async def slow_consumer(scale: Scale, fast: int = 2, seed: int = 11) -> Result:
    """
    The server broadcasts C{scale.slow_consumer_bytes} in 1 MiB messages to
    C{fast} clients that read (in a client process) and two that do not: a
    raw socket with a 4 KiB receive buffer that never reads, and a twcomms
    client that stops reading after its first message. The broadcaster
    waits for the fast clients to drain (C{whenDrained}), never for the slow
    ones. The slow ones are closed (reason C{slow consumer}, logged) once
    their outbound limit is exceeded; the fast ones get every message
    intact and in order; the server's traced memory stays under
    L{slow_consumer_bound}.
    """
    from twisted.internet import defer

    from twcomms.protocol import CloseReason
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    count = scale.slow_consumer_bytes // SLOW_MESSAGE
    slow = 2
    bound = slow_consumer_bound(fast, slow)
    result = Result(
        "slow consumer",
        scale=scale.name,
        load=f"{scale.slow_consumer_bytes // MiB:,} MiB broadcast to {fast} readers",
        faults="1 client never reads, 1 stops reading",
        memory_bound=bound,
    )
    roles: dict[str, list[Any]] = {"fast": [], "slow-raw": [], "slow-paused": []}
    hellos = Counter()
    closed = Slots()

    def on_message(handle: Any, payload: bytes) -> None:
        role = payload.decode("ascii", "replace")
        if role in roles:
            roles[role].append(handle)
            hellos.add()

    server = CommsServerFactory(
        "binary",
        max_message_size=SLOW_MESSAGE,
        outbound_limit=SLOW_OUTBOUND_LIMIT,
        on_message=on_message,
        on_close=lambda handle, reason: closed.fire(handle.id, reason),
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    pattern = make_pattern(seed, SLOW_MESSAGE)
    timeout = 60 + scale.slow_consumer_bytes / (20 * MiB)
    procs = [
        driver(
            "receivers", "--port", port, "--fast", fast, "--slow-raw", 1,
            "--slow-paused", 1, "--messages", count, "--size", SLOW_MESSAGE,
            "--seed", seed, "--max-message-size", SLOW_MESSAGE, "--timeout", timeout,
        )
    ]  # fmt: skip
    try:
        with LogWatch() as watch:
            await hellos.wait(fast + slow, 20, "hellos from the receivers")
            fast_handles = list(roles["fast"])
            slow_handles = roles["slow-raw"] + roles["slow-paused"]
            sent_to_slow_at_close: dict[str, int] = {}
            with TraceMemory() as memory:
                for seq in range(count):
                    server.broadcast(payload_for(seq, SLOW_MESSAGE, pattern))
                    for h in slow_handles:
                        if h.id not in sent_to_slow_at_close and not h.connected:
                            sent_to_slow_at_close[h.id] = seq
                    waits = [
                        h.protocol.whenDrained()
                        for h in fast_handles
                        if h.protocol.writePaused
                    ]
                    if waits:
                        await bounded(
                            defer.gatherResults(waits), 30, "fast clients to drain"
                        )
                peak = memory.peak
            outcome = await procs[0].wait_event("result", timeout)
            for h in slow_handles:
                reason = await closed.get(h.id, 10, "a slow consumer's close")
                result.check(
                    reason is CloseReason.SLOW_CONSUMER,
                    f"slow client closed with {reason}, expected slow consumer",
                )
                result.check(
                    len(watch.warnings("slow consumer", peer=f"127.0.0.1:{h.port}"))
                    == 1,
                    f"no single 'slow consumer' warning for {h.port}",
                )
            for h in fast_handles:
                result.check(h.connected, f"fast client {h.port} was closed")
    finally:
        await kill_all(procs)
        await bounded(server.stop(), 20, "server stop")
    expected = fast * count
    result.sent = expected
    result.received = outcome["received"]
    result.duplicated = outcome["duplicated"]
    result.lost = expected - outcome["received"]
    result.peak_memory = peak
    result.check(outcome["received"] == expected, f"received {outcome}")
    result.check(outcome["duplicated"] == 0 and outcome["gaps"] == 0, f"{outcome}")
    result.check(outcome["bad"] == 0, f"{outcome['bad']} corrupt payloads")
    result.check(outcome["closed_early"] == 0, "a fast client was closed early")
    result.check(
        peak <= bound,
        f"server memory peaked {peak / MiB:.1f} MiB over its bound {bound / MiB:.1f}",
    )
    result.memory = f"peak {mib(peak)} (bound {mib(bound)})"
    result.details.update(
        messages=count,
        slow_closed_after_messages=sorted(sent_to_slow_at_close.values()),
        peak_mib=round(peak / MiB, 1),
        bound_mib=round(bound / MiB, 1),
    )
    result.seconds = time.monotonic() - started
    return result


# -- load ------------------------------------------------------------------------------


async def load(scale: Scale) -> Result:
    """
    C{scale.load_clients} clients in C{scale.load_processes} client processes
    each send C{scale.load_messages} numbered messages: the server receives
    exactly clients x messages, each client's in order. Then the server
    broadcasts C{scale.load_broadcasts} messages and every client gets all,
    in order.
    """
    from twisted.internet import defer

    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    n, m, k = scale.load_clients, scale.load_messages, scale.load_broadcasts
    nproc = max(1, min(scale.load_processes, n))
    result = Result(
        "load",
        scale=scale.name,
        load=f"{n} clients x {m:,} msgs in, {k:,} broadcasts out ({nproc} procs)",
        faults="-",
    )
    nexts = [0] * n
    state = {"dup": 0, "gaps": 0, "bad": 0}
    received = Counter()

    def on_message(handle: Any, message: Any) -> None:
        try:
            c, i = message["c"], message["i"]
            expected = nexts[c]
        except (TypeError, KeyError, IndexError):
            state["bad"] += 1
            return
        if i == expected:
            nexts[c] = i + 1
        elif i < expected:
            state["dup"] += 1
        else:
            state["gaps"] += 1
            nexts[c] = i + 1
        received.add()

    server = CommsServerFactory("json", on_message=on_message)
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    timeout = 60 + n * m / 20_000 + n * k / 50_000
    procs = []
    per = -(-n // nproc)
    try:
        for first in range(0, n, per):
            count = min(per, n - first)
            procs.append(
                driver(
                    "load", "--port", port, "--clients", count, "--first", first,
                    "--messages", m, "--broadcasts", k, "--timeout", timeout,
                )
            )  # fmt: skip
        await received.wait(n * m, timeout, "messages from every client")
        result.check(len(server.clients) == n, f"{len(server.clients)} clients")
        result.check(all(x == m for x in nexts), "some client's messages are missing")
        inbound_seconds = time.monotonic() - started
        clients = list(server.clients)
        for b in range(k):
            server.broadcast({"b": b})
            if b % 64 == 63:
                waits = [
                    c.protocol.whenDrained() for c in clients if c.protocol.writePaused
                ]
                if waits:
                    await bounded(defer.gatherResults(waits), 30, "clients to drain")
        outcomes = []
        for p in procs:
            outcomes.append(await p.wait_event("result", timeout))
    finally:
        await kill_all(procs)
        await bounded(server.stop(), 20, "server stop")
    got_out = sum(o["received"] for o in outcomes)
    result.sent = n * m + n * k
    result.received = received.count - state["dup"] + got_out
    result.duplicated = state["dup"] + sum(o["duplicated"] for o in outcomes)
    result.lost = n * m - (received.count - state["dup"]) + n * k - got_out
    result.check(received.count == n * m, f"server received {received.count}")
    result.check(state["dup"] == 0 and state["gaps"] == 0, f"inbound order {state}")
    result.check(state["bad"] == 0, f"{state['bad']} malformed messages")
    for o in outcomes:
        result.check(
            o["received"] == o["expected"] and o["duplicated"] == 0 and o["gaps"] == 0,
            f"a client process: {o}",
        )
        result.check(o["closed_early"] == 0 and not o["timed_out"], f"{o}")
    result.details.update(
        inbound_seconds=round(inbound_seconds, 2),
        inbound_msgs_per_s=round(n * m / max(inbound_seconds, 1e-9)),
    )
    result.seconds = time.monotonic() - started
    return result


# -- churn -----------------------------------------------------------------------------

#: How churn cycles end, in turn.
CHURN_ENDINGS = (
    "client stop",
    "client abort",
    "server close",
    "cut mid-message",
    "oversize header",
    "silent raw",
)


def reactor_handles() -> dict[str, int]:
    """
    What the reactor holds: readers, writers, delayed calls.
    """
    reactor = _reactor()
    return {
        "readers": len(reactor.getReaders()),
        "writers": len(reactor.getWriters()),
        "delayed calls": len(reactor.getDelayedCalls()),
    }


async def churn(scale: Scale, concurrency: int = 16) -> Result:
    """
    C{scale.churn_cycles} connect/disconnect cycles (C{concurrency} at a
    time) against one server with an idle timeout (so every connection has
    a timer to cancel), ending in turn as L{CHURN_ENDINGS}. Each cycle
    checks its close reason. After a warm-up, nothing may accumulate: file
    descriptors, threads, server clients and connections, reactor readers,
    writers and delayed calls, and traced memory (under 512 KiB of growth
    over all the cycles: one leaked protocol, handle or timer per cycle
    would be several times that).

    Run it in a fresh process (C{python -m harness.stress.scenarios
    churn}): Twisted keeps every log event in memory until logging begins,
    which would look like a leak.
    """
    from twisted.internet import defer

    from twcomms.client import CommsClientFactory
    from twcomms.protocol import CloseReason
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    cycles = scale.churn_cycles
    warmup = max(100, cycles // 10)
    growth_bound = 512 * KiB
    result = Result(
        "churn",
        scale=scale.name,
        load=f"{cycles:,} connect/disconnect cycles, {concurrency} at a time",
        faults="aborts, server closes, cut frames, oversize, silent peers",
        memory_bound=growth_bound,
    )
    connected = Slots()
    closed = Slots()
    echoes = Slots()
    want = {
        "client stop": CloseReason.PEER_CLOSED,
        "client abort": CloseReason.ERROR,
        "server close": CloseReason.CLOSED,
        "cut mid-message": CloseReason.PEER_CLOSED,
        "oversize header": CloseReason.OVERSIZE,
        "silent raw": CloseReason.PEER_CLOSED,
    }
    server = CommsServerFactory(
        "json",
        max_message_size=64 * KiB,
        idle_timeout=60,
        on_connect=lambda h: connected.fire(h.port, h),
        on_message=lambda h, m: h.send(m),
        on_close=lambda h, r: closed.fire(h.id, r),
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    wrong: dict[str, int] = {}

    async def cycle(i: int) -> None:
        ending = CHURN_ENDINGS[i % len(CHURN_ENDINGS)]
        if ending == "silent raw":
            peer = await connect_raw(port)
            handle = await connected.get(peer.port, 10, "server side")
            connected.discard(peer.port)
            peer.transport.loseConnection()
            await bounded(peer.lost, 10, "raw close")
        else:
            client = CommsClientFactory(
                "json",
                max_message_size=64 * KiB,
                on_message=lambda c, m: echoes.fire(m["n"]),
            )
            client.connectTCP("127.0.0.1", port, timeout=10)
            proto = await bounded(client.whenConnected(), 10, "connection")
            p = proto.transport.getHost().port
            handle = await connected.get(p, 10, "server side")
            connected.discard(p)
            client.send({"n": i})
            await echoes.get(i, 10, "echo")
            echoes.discard(i)
            if ending == "client stop":
                client.stop()
            elif ending == "client abort":
                proto.transport.abortConnection()
            elif ending == "server close":
                handle.close()
            elif ending == "cut mid-message":
                proto.transport.write(header(100) + b"x" * 50)
                proto.close()
            else:
                proto.transport.write(header(0xFFFFFFFF) + b"junk")
            await bounded(client.whenStopped(), 10, "client stopped")
        reason = await closed.get(handle.id, 10, f"server-side close ({ending})")
        closed.discard(handle.id)
        if reason is not want[ending]:
            key = f"{ending}: {reason}"
            wrong[key] = wrong.get(key, 0) + 1

    async def run(first: int, last: int) -> None:
        queue = iter(range(first, last))

        async def worker() -> None:
            for i in queue:
                await cycle(i)

        outcomes = await defer.DeferredList(
            [defer.ensureDeferred(worker()) for _ in range(concurrency)],
            consumeErrors=True,
        )
        for ok, value in outcomes:
            if not ok:
                raise value.value

    try:
        with LogWatch(keep=False) as watch, TraceMemory() as memory:
            await run(0, warmup)
            memory.rebase()
            fds0 = fd_count()
            threads0 = threading.active_count()
            handles0 = reactor_handles()
            await run(warmup, cycles)
            growth = memory.growth
            peak = memory.peak
            fds1 = fd_count()
            threads1 = threading.active_count()
            handles1 = reactor_handles()
    finally:
        await bounded(server.stop(), 10, "server stop")
    result.check(not wrong, f"unexpected close reasons: {wrong}")
    result.check(fds1 <= fds0, f"file descriptors {fds0} -> {fds1}")
    result.check(threads1 <= threads0, f"threads {threads0} -> {threads1}")
    result.check(
        all(handles1[k] <= handles0[k] for k in handles0),
        f"reactor handles {handles0} -> {handles1}",
    )
    result.check(len(server.clients) == 0, f"{len(server.clients)} clients left")
    result.check(
        len(server._connections) == 0, f"{len(server._connections)} connections left"
    )
    result.check(
        growth <= growth_bound,
        f"traced memory grew {growth / KiB:.0f} KiB over "
        f"{cycles - warmup} cycles (bound {growth_bound / KiB:.0f} KiB)",
    )
    n_cut = watch.count("middle of a message")
    n_over = watch.count("header announced")
    result.check(
        n_cut == sum(1 for i in range(cycles) if i % 6 == 3),
        f"{n_cut} cut-off warnings",
    )
    result.check(
        n_over == sum(1 for i in range(cycles) if i % 6 == 4),
        f"{n_over} oversize warnings",
    )
    result.sent = result.received = sum(1 for i in range(cycles) if i % 6 != 5)
    result.peak_memory = peak
    result.memory = (
        f"growth {growth / KiB:.0f} KiB over {cycles - warmup:,} cycles "
        f"(bound {growth_bound // KiB} KiB); peak {mib(peak)}"
    )
    result.details.update(
        memory_growth=growth,
        bytes_per_cycle=round(growth / max(1, cycles - warmup), 1),
        fds=(fds0, fds1),
        threads=(threads0, threads1),
        reactor=(handles0, handles1),
    )
    result.seconds = time.monotonic() - started
    return result


# -- server restart (Twisted API) ------------------------------------------------------


def _counting_client(**kwargs: Any) -> Any:
    """
    A L{CommsClientFactory} that also calls C{on_failure(factory)} after
    each failed connection attempt.
    """
    from twcomms.client import CommsClientFactory

    class CountingClient(CommsClientFactory):
        on_failure: Callable[[Any], object] | None = None

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            super().clientConnectionFailed(connector, reason)
            if self.on_failure is not None:
                self.on_failure(self)

    on_failure = kwargs.pop("on_failure", None)
    client = CountingClient(**kwargs)
    client.on_failure = on_failure
    return client


RESTART_INITIAL_DELAY = 0.1
RESTART_MAX_DELAY = 1.0
RESTART_JITTER = 0.12


async def restart(scale: Scale, seed: int = 1000) -> Result:
    """
    C{scale.restart_clients} auto-reconnecting Twisted-API clients (seeded
    jitter) lose their server, fail to reconnect at least twice each while
    it is down, and all reconnect when it comes back on the same port;
    each then sends one message that arrives once. The first scheduled
    delays are spread by jitter exactly as the seeded generators say, all
    within C{[0, max_delay]}.
    """
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    n = scale.restart_clients
    result = Result(
        "restart (Twisted API)",
        scale=scale.name,
        load=f"{n} auto-reconnecting clients",
        faults="server stopped, down for >= 2 retries, restarted",
    )
    received: dict[int, list[int]] = {}
    got = Counter()

    def on_message(handle: Any, message: Any) -> None:
        received.setdefault(message["c"], []).append(message["round"])
        got.add()

    connects = Counter()
    closes = Counter()
    failing = Counter()
    reconnected_at: dict[int, float] = {}
    restarted_at = [0.0]
    failures: dict[int, int] = {}

    def client(i: int) -> Any:
        def on_connect(c: Any) -> None:
            connects.add()
            if restarted_at[0]:
                reconnected_at[i] = time.monotonic() - restarted_at[0]

        def on_failure(c: Any) -> None:
            failures[i] = failures.get(i, 0) + 1
            if failures[i] == 2:
                failing.add()

        return _counting_client(
            messageDataType="json",
            autoReconnect=True,
            initial_delay=RESTART_INITIAL_DELAY,
            max_delay=RESTART_MAX_DELAY,
            jitter=RESTART_JITTER,
            rng=random.Random(seed + i),
            on_connect=on_connect,
            on_close=lambda c, r: closes.add(),
            on_failure=on_failure,
        )

    first = CommsServerFactory("json", on_message=on_message)
    listening = await bounded(first.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    clients = [client(i) for i in range(n)]
    second = None
    try:
        for c in clients:
            c.connectTCP("127.0.0.1", port, timeout=10)
        await connects.wait(n, 30, "clients connected")
        for i, c in enumerate(clients):
            c.send({"c": i, "round": 0})
        await got.wait(n, 20, "first-round messages")
        await bounded(first.stop(), 20, "first server stop")
        await closes.wait(n, 20, "clients seeing the server go")
        await failing.wait(n, 30, "every client failing twice to reconnect")
        second = CommsServerFactory("json", on_message=on_message)
        restarted_at[0] = time.monotonic()
        await bounded(second.listen(("127.0.0.1", port)), 10, "listening again")
        await connects.wait(2 * n, 30, "clients reconnected")
        for i, c in enumerate(clients):
            c.send({"c": i, "round": 1})
        await got.wait(2 * n, 20, "second-round messages")
        await sleep(0.1)  # a duplicate would arrive now
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await bounded(c.stop(), 10, "client stop")
        if second is not None:
            await bounded(second.stop(), 10, "second server stop")
    ok = sum(1 for i in range(n) if received.get(i) == [0, 1])
    result.sent = 2 * n
    result.received = ok * 2
    result.duplicated = sum(max(0, len(v) - 2) for v in received.values())
    result.lost = 2 * n - sum(min(2, len(v)) for v in received.values())
    result.check(ok == n, f"{n - ok} clients' messages missing or repeated")
    first_delays = [c.scheduled_delays[0] for c in clients]
    expected = []
    for i in range(n):
        rng = random.Random(seed + i)
        d = rng.normalvariate(
            RESTART_INITIAL_DELAY, RESTART_INITIAL_DELAY * RESTART_JITTER
        )
        expected.append(min(max(d, 0.0), RESTART_MAX_DELAY))
    result.check(first_delays == expected, "first delays differ from the seeded jitter")
    all_delays = [d for c in clients for d in c.scheduled_delays]
    result.check(
        all(0 <= d <= RESTART_MAX_DELAY for d in all_delays),
        f"delays outside [0, {RESTART_MAX_DELAY}]: "
        f"{min(all_delays)}..{max(all_delays)}",
    )
    spread = statistics.pstdev(first_delays)
    result.check(len(set(first_delays)) == n, "clients share a first delay")
    result.check(
        0.3 * RESTART_INITIAL_DELAY * RESTART_JITTER
        < spread
        < 3 * RESTART_INITIAL_DELAY * RESTART_JITTER,
        f"first delays' spread {spread:.4f}",
    )
    times = sorted(reconnected_at.values())
    result.details.update(
        first_delay_min=round(min(first_delays), 4),
        first_delay_max=round(max(first_delays), 4),
        first_delay_stdev=round(spread, 4),
        reconnect_after_restart_s=(round(times[0], 3), round(times[-1], 3))
        if times
        else None,
        retries=sum(len(c.scheduled_delays) for c in clients),
    )
    result.seconds = time.monotonic() - started
    return result


# -- shutdown (Twisted API) ------------------------------------------------------------


async def shutdown(scale: Scale, clients: int = 10) -> Result:
    """
    Data in flight at a stop is delivered: C{clients} clients each send
    their share of C{scale.shutdown_messages} numbered messages and stop at
    once (the server gets every one); then the server broadcasts
    C{scale.shutdown_messages} messages to fresh clients and stops at once
    (every client gets every one, in order, then the close). Afterwards
    nothing is left: file descriptors, server clients and connections,
    reactor readers, writers and delayed calls.
    """
    from twisted.internet import defer

    from twcomms.client import CommsClientFactory
    from twcomms.protocol import CloseReason
    from twcomms.server import CommsServerFactory

    started = time.monotonic()
    k = scale.shutdown_messages
    per = k // clients
    result = Result(
        "shutdown (Twisted API)",
        scale=scale.name,
        load=f"{clients} clients; {per * clients:,} msgs in, {k:,} broadcast",
        faults="client stop / server stop with data in flight",
    )
    inbound: dict[int, list[int]] = {}
    server_got = Counter()
    server_closes: list[Any] = []

    def on_message(handle: Any, message: Any) -> None:
        inbound.setdefault(message["c"], []).append(message["i"])
        server_got.add()

    server_connects = Counter()
    server = CommsServerFactory(
        "json",
        on_connect=lambda h: server_connects.add(),
        on_message=on_message,
        on_close=lambda h, r: server_closes.append(r),
    )
    listening = await bounded(server.listen(LOCAL_TCP), 10, "listening")
    port = listening.getHost().port
    # (After listening: Twisted reserves one file descriptor, for good, the
    # first time a port listens.)
    fds0 = fd_count()
    handles0 = reactor_handles()
    pad = "x" * 100
    outbound: list[list[int]] = [[] for _ in range(clients)]
    client_closes: list[Any] = []
    try:
        # Clients send and stop at once.
        senders = []
        for _ in range(clients):
            c = CommsClientFactory("json")
            c.connectTCP("127.0.0.1", port, timeout=10)
            senders.append(c)
        await bounded(
            defer.gatherResults([c.whenConnected() for c in senders]), 10, "connects"
        )
        for ci, c in enumerate(senders):
            for i in range(per):
                c.send({"c": ci, "i": i, "p": pad})
            c.stop()
        await bounded(
            defer.gatherResults([c.whenStopped() for c in senders]), 20, "stops"
        )
        await server_got.wait(per * clients, 20, "messages sent before stop()")

        # The server broadcasts and stops at once.
        def receiver(ci: int) -> Any:
            return CommsClientFactory(
                "json",
                on_message=lambda c, m: outbound[ci].append(m["s"]),
                on_close=lambda c, r: client_closes.append(r),
            )

        readers = [receiver(ci) for ci in range(clients)]
        for c in readers:
            c.connectTCP("127.0.0.1", port, timeout=10)
        await bounded(
            defer.gatherResults([c.whenConnected() for c in readers]), 10, "connects"
        )
        # (The server side of a connection may lag the client's.)
        await server_connects.wait(2 * clients, 10, "the server seeing them")
        for s in range(k):
            server.broadcast({"s": s, "p": pad})
        await bounded(server.stop(), 30, "server stop with data in flight")
        await bounded(
            defer.gatherResults([c.whenStopped() for c in readers]), 20, "closes"
        )
    finally:
        await bounded(server.stop(), 10, "server stop")
    fds1 = fd_count()
    handles1 = reactor_handles()
    ok_in = sum(1 for ci in range(clients) if inbound.get(ci) == list(range(per)))
    ok_out = sum(1 for ci in range(clients) if outbound[ci] == list(range(k)))
    result.sent = per * clients + k * clients
    result.received = ok_in * per + ok_out * k
    result.lost = (
        result.sent - sum(map(len, inbound.values())) - sum(map(len, outbound))
    )
    result.check(ok_in == clients, f"{clients - ok_in} clients' messages incomplete")
    result.check(ok_out == clients, f"{clients - ok_out} clients missed broadcasts")
    result.check(
        server_closes.count(CloseReason.SERVER_STOPPING) == clients,
        f"server close reasons {set(server_closes)}",
    )
    result.check(
        client_closes == [CloseReason.PEER_CLOSED] * clients,
        f"client close reasons {set(client_closes)}",
    )
    result.check(fds1 <= fds0, f"file descriptors {fds0} -> {fds1}")
    result.check(
        all(handles1[x] <= handles0[x] for x in handles0),
        f"reactor handles {handles0} -> {handles1}",
    )
    result.check(not list(server.clients), "server clients left")
    result.check(not server._connections, "server connections left")
    result.seconds = time.monotonic() - started
    return result


# -- threaded API ----------------------------------------------------------------------


class ThreadCounter:
    """
    A count any thread can add to and wait on.
    """

    def __init__(self) -> None:
        self.count = 0
        self._cond = threading.Condition()

    def add(self, n: int = 1) -> None:
        with self._cond:
            self.count += n
            self._cond.notify_all()

    def wait(self, n: int, timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.count >= n, timeout):
                raise TimeoutError(f"{what}: {self.count} of {n} within {timeout} s")


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.01
) -> None:
    """
    Poll C{predicate} until true, for state that has no event to wait on
    (threads ending, a private retry count); C{TimeoutError} after
    C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


#: How often Client.connect() returned before the Client was marked connected
#: (a known race, pinned by tests/reliability/threaded/test_connect.py).
CONNECT_RACES = ThreadCounter()


def connect_threaded(client: Any, timeout: float = 10.0) -> None:
    """
    C{client.connect()}, then wait until C{client.connected}: connect() can
    return just before the Client is marked connected (a known bug, see
    C{threaded/test_connect.py}), and a send() in that window raises
    C{NotConnectedError}. The scenarios count it (L{CONNECT_RACES}) and
    carry on, so that what they measure is not hidden by it.
    """
    client.connect(timeout=timeout)
    if not client.connected:
        CONNECT_RACES.add()
        wait_until(lambda: client.connected, timeout, "the Client marked connected")


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


#: Receive window used by the slow-callback scenario.
SLOW_CB_HIGH_COUNT = 200
SLOW_CB_HIGH_BYTES = 256 * KiB
SLOW_CB_SIZE = 1024
#: How far past its marks the window may go: messages are counted against
#: it per batch (what one reactor turn read: one socket read, 64 KiB), so
#: it can overshoot by one read's worth before reading stops.
SLOW_CB_SLACK_BYTES = TWISTED_BUFFER + 2 * SLOW_CB_SIZE
SLOW_CB_SLACK_COUNT = SLOW_CB_SLACK_BYTES // SLOW_CB_SIZE


def slow_callback_bound() -> int:
    """
    The receiver's memory bound in the slow-callback scenario: the receive
    window's high-water marks (messages and bytes, the decoded messages
    held at most twice: payload and value), one socket read kept while
    paused (64 KiB), and 4 MiB for everything else; independent of how many
    messages are sent.
    """
    per_message = 2 * SLOW_CB_SIZE + 512
    return (
        2 * SLOW_CB_HIGH_BYTES
        + SLOW_CB_HIGH_COUNT * per_message
        + 2 * TWISTED_BUFFER
        + 4 * MiB
    )


def slow_callback(scale: Scale, side: str = "server") -> Result:
    """
    Threaded API: a sender process sends C{scale.slow_callback_messages}
    ~1 KiB json messages as fast as TCP allows to a receiver (a C{Server},
    or a C{Client} with C{side="client"}) whose callback is slow. The
    receive window pauses reading (TCP slows the sender); every message is
    handled once, in order; the messages waiting for the callback never
    exceed the window, and the receiver's traced memory stays under
    L{slow_callback_bound}.
    """
    from twcomms.threaded import Client, FlowControl, Server

    started = time.monotonic()
    n = scale.slow_callback_messages
    bound = slow_callback_bound()
    result = Result(
        f"slow callback ({side})",
        scale=scale.name,
        load=f"{n:,} x 1 KiB msgs from a process sending flat out",
        faults="callback slower than the sender",
        memory_bound=bound,
    )
    flow = FlowControl(
        receive_high_count=SLOW_CB_HIGH_COUNT, receive_high_bytes=SLOW_CB_HIGH_BYTES
    )
    # Checked as they come (keeping every number would itself be measured).
    seen = {"count": 0, "next": 0, "duplicated": 0, "gaps": 0}
    done = threading.Event()
    most = {"count": 0, "bytes": 0}
    windows: list[Any] = []

    def on_message(*args: Any) -> None:
        i = args[-1]["i"]
        if windows:
            w = windows[0]
            most["count"] = max(most["count"], w.pending_count)
            most["bytes"] = max(most["bytes"], w.pending_bytes)
        if i == seen["next"]:
            seen["next"] = i + 1
            seen["count"] += 1
        elif i < seen["next"]:
            seen["duplicated"] += 1
        else:
            seen["gaps"] += 1
            seen["count"] += 1
            seen["next"] = i + 1
        if seen["count"] % 10 == 0:
            time.sleep(0.0002)  # the slow work (not a wait for anything)
        if seen["next"] >= n:
            done.set()

    timeout = 30 + n / 2000
    objs: list[Any] = []
    with TraceMemory() as memory:
        try:
            if side == "server":
                server = Server("127.0.0.1", 0, flow=flow)
                objs.append(server)
                connected = threading.Event()
                server.add_onconnect_callback(lambda c: connected.set())
                server.add_onmessage_callback(on_message, with_sender=True)
                server.start(timeout=10)
                args = ["sender", "--port", server.port, "--messages", n]
            else:
                args = ["sender", "--listen", "--messages", n]
            with child(*args, "--size", SLOW_CB_SIZE, "--timeout", timeout) as proc:
                ready = read_event(proc, "ready", 20)
                if side == "server":
                    if not connected.wait(10):
                        raise TimeoutError("the sender did not connect")
                    windows.append(server.clients[0]._receive)
                else:
                    client = Client("127.0.0.1", ready["port"], flow=flow)
                    objs.append(client)
                    client.add_onmessage_callback(on_message)
                    client.connect(timeout=10)
                    windows.append(client._receive)
                result.check(done.wait(timeout), f"only {seen['count']} of {n} handled")
                peak = memory.peak
        finally:
            for obj in reversed(objs):
                (obj.stop if isinstance(obj, Server) else obj.close)(timeout=10)
    window = windows[0] if windows else None
    result.sent = n
    in_order = seen["gaps"] == 0 and seen["duplicated"] == 0 and seen["next"] == n
    result.received = seen["count"]
    result.duplicated = seen["duplicated"]
    result.lost = n - seen["count"]
    result.peak_memory = peak
    result.check(in_order, f"messages out of order, lost or repeated: {seen}")
    result.check(window is not None and window.pauses > 0, "reading never paused")
    result.check(
        most["count"] <= SLOW_CB_HIGH_COUNT + SLOW_CB_SLACK_COUNT,
        f"{most['count']} messages waited for the callback "
        f"(window {SLOW_CB_HIGH_COUNT} + one read, {SLOW_CB_SLACK_COUNT})",
    )
    result.check(
        most["bytes"] <= SLOW_CB_HIGH_BYTES + SLOW_CB_SLACK_BYTES,
        f"{most['bytes']} bytes waited "
        f"(window {SLOW_CB_HIGH_BYTES} + one read, {SLOW_CB_SLACK_BYTES})",
    )
    result.check(
        peak <= bound,
        f"receiver memory peaked {peak / MiB:.1f} MiB (bound {bound / MiB:.1f})",
    )
    result.memory = f"peak {mib(peak)} (bound {mib(bound)})"
    result.details.update(
        pauses=window.pauses if window else 0,
        most_waiting=most,
        peak_mib=round(peak / MiB, 2),
        bound_mib=round(bound / MiB, 2),
    )
    result.seconds = time.monotonic() - started
    return result


def slow_callback_client(scale: Scale) -> Result:
    return slow_callback(scale, side="client")


def restart_threaded(scale: Scale, offline: int = 5) -> Result:
    """
    Threaded API: C{scale.restart_clients} C{Client(autoReconnect=True)}s
    lose their C{Server}; while it is down each sends C{offline} messages
    (queued offline) and fails to reconnect at least twice; a new Server
    comes up on the same port: every client reconnects, every queued
    message arrives exactly once, in order, and a message sent after
    reconnecting arrives too. The first reconnection delays are spread by
    jitter.
    """
    from twcomms.threaded import Client, Server

    started = time.monotonic()
    n = scale.restart_clients
    result = Result(
        "restart (threaded API)",
        scale=scale.name,
        load=f"{n} auto-reconnecting clients, {offline} msgs each queued offline",
        faults="server stopped, down for >= 2 retries, restarted",
    )
    lock = threading.Lock()
    received: dict[int, list[tuple[int, int]]] = {}
    got = ThreadCounter()
    connects = ThreadCounter()
    closes = ThreadCounter()

    def on_message(message: Any) -> None:
        with lock:
            received.setdefault(message["c"], []).append((message["r"], message["k"]))
        got.add()

    def server() -> Server:
        s = Server("127.0.0.1", port)
        s.add_onmessage_callback(on_message)
        return s

    port = 0
    first = server()
    first.start(timeout=10)
    port = first.port
    servers = [first]
    clients: list[Client] = []
    try:
        for _ in range(n):
            c = Client(
                "127.0.0.1", port, autoReconnect=True, initial_delay=0.1, max_delay=1.0
            )
            c.add_onconnect_callback(lambda c: connects.add())
            c.add_onclose_callback(lambda c: closes.add())
            clients.append(c)
            c.connect(timeout=10, wait=False)
        connects.wait(n, 30, "clients connected")
        for i, c in enumerate(clients):
            c.send({"c": i, "r": 0, "k": 0})
        got.wait(n, 20, "first-round messages")
        first.stop(timeout=10)
        closes.wait(n, 20, "clients seeing the server go")
        refused = 0
        for i, c in enumerate(clients):
            for k in range(offline):
                try:
                    c.send({"c": i, "r": 1, "k": k})
                except Exception as e:
                    refused += 1
                    result.problems.append(f"send while disconnected raised {e!r}")
        result.check(
            not any(c.connected for c in clients), "a client reconnected too early"
        )
        wait_until(
            lambda: all(len(c._factory.scheduled_delays) >= 2 for c in clients),
            30,
            "every client retrying twice",
        )
        second = server()
        servers.append(second)
        second.start(timeout=10)
        connects.wait(2 * n, 30, "clients reconnected")
        got.wait(n + n * offline - refused, 30, "messages queued offline")
        for i, c in enumerate(clients):
            c.send({"c": i, "r": 2, "k": 0})
        got.wait(2 * n + n * offline - refused, 20, "messages after reconnecting")
        time.sleep(0.2)  # a duplicate would arrive now (a negative check)
    finally:
        for c in clients:
            c.close(timeout=10)
        for s in servers:
            s.stop(timeout=10)
    want = [(0, 0), *((1, k) for k in range(offline)), (2, 0)]
    ok = sum(1 for i in range(n) if received.get(i) == want)
    total = sum(map(len, received.values()))
    result.sent = n * len(want)
    result.received = ok * len(want)
    result.duplicated = sum(len(v) - len(set(v)) for v in received.values())
    result.lost = result.sent - (total - result.duplicated)
    result.check(ok == n, f"{n - ok} clients' messages lost, repeated or reordered")
    delays = [c._factory.scheduled_delays[0] for c in clients]
    everything = [d for c in clients for d in c._factory.scheduled_delays]
    spread = statistics.pstdev(delays)
    result.check(len(set(delays)) == n, "clients share a first reconnection delay")
    result.check(spread > 0.003, f"first delays barely spread ({spread:.4f} s)")
    result.check(
        all(0 <= d <= 1.0 for d in everything),
        f"delays outside [0, max_delay]: {min(everything)}..{max(everything)}",
    )
    result.details.update(
        first_delay_range=(round(min(delays), 4), round(max(delays), 4)),
        first_delay_stdev=round(spread, 4),
        retries=len(everything),
    )
    result.seconds = time.monotonic() - started
    return result


def churn_threaded(scale: Scale, workers: int = 4) -> Result:
    """
    Threaded API: C{scale.churn_threaded_cycles} cycles (C{workers} threads
    at a time) of C{Client} connect, one echo, close, against one
    C{Server}. After a warm-up nothing accumulates: file descriptors,
    threads, server clients, traced memory (512 KiB over all cycles). Once
    the server stops, the callback threads end.
    """
    import queue
    from concurrent.futures import ThreadPoolExecutor

    from twcomms.threaded import Client, Server

    started = time.monotonic()
    cycles = scale.churn_threaded_cycles
    warmup = max(100, cycles // 10)
    growth_bound = 512 * KiB
    result = Result(
        "churn (threaded API)",
        scale=scale.name,
        load=f"{cycles:,} Client connect/echo/close cycles, {workers} threads",
        faults="-",
        memory_bound=growth_bound,
    )
    server = Server("127.0.0.1", 0, idle_timeout=60)
    server.add_onmessage_callback(lambda c, m: c.send(m), with_sender=True)
    server.start(timeout=10)
    failures: list[str] = []
    races0 = CONNECT_RACES.count

    def cycle(i: int) -> None:
        replies: queue.Queue[Any] = queue.Queue()
        client = Client("127.0.0.1", server.port)
        client.add_onmessage_callback(replies.put)
        try:
            connect_threaded(client)
            client.send({"n": i})
            reply = replies.get(timeout=10)
            if reply != {"n": i}:
                failures.append(f"cycle {i}: echo {reply!r}")
        except Exception as e:
            failures.append(f"cycle {i}: {e!r}")
        finally:
            client.close(timeout=10)

    def run(first: int, last: int) -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(cycle, range(first, last)))

    def settled() -> bool:
        return len(server.clients) == 0 and len(server._factory._connections) == 0

    try:
        with TraceMemory() as memory:
            run(0, warmup)
            wait_until(settled, 10, "the server forgetting warm-up clients")
            memory.rebase()
            fds0, threads0 = fd_count(), threading.active_count()
            run(warmup, cycles)
            wait_until(settled, 10, "the server forgetting its clients")
            growth, peak = memory.growth, memory.peak
            fds1, threads1 = fd_count(), threading.active_count()
    finally:
        server.stop(timeout=10)
    result.check(not failures, f"{len(failures)} failed cycles: {failures[:3]}")
    result.check(fds1 <= fds0, f"file descriptors {fds0} -> {fds1}")
    result.check(threads1 <= threads0 + workers, f"threads {threads0} -> {threads1}")
    result.check(
        growth <= growth_bound,
        f"traced memory grew {growth / KiB:.0f} KiB over {cycles - warmup} cycles",
    )
    pool_left = -1
    try:
        from twcomms import threaded

        wait_until(
            lambda: threaded._pool is None or threaded._pool.workers == 0,
            15,
            "callback threads ending once nothing is open",
        )
        pool_left = 0
    except TimeoutError as e:
        result.problems.append(str(e))
    result.sent = result.received = 2 * (cycles - len(failures))
    result.lost = 2 * len(failures)
    result.peak_memory = peak
    result.memory = (
        f"growth {growth / KiB:.0f} KiB over {cycles - warmup:,} cycles "
        f"(bound {growth_bound // KiB} KiB); peak {mib(peak)}"
    )
    result.details.update(
        memory_growth=growth,
        bytes_per_cycle=round(growth / max(1, cycles - warmup), 1),
        fds=(fds0, fds1),
        threads=(threads0, threads1),
        pool_workers_after_stop=pool_left,
        connect_returned_before_connected=CONNECT_RACES.count - races0,
    )
    result.seconds = time.monotonic() - started
    return result


def shutdown_threaded(scale: Scale, clients: int = 5) -> Result:
    """
    Threaded API: clients each send their share of
    C{scale.shutdown_messages} and C{close()} at once (the server gets every
    one); the server broadcasts C{scale.shutdown_messages} and C{stop()}s at
    once (every client gets every one, in order). Afterwards no file
    descriptor is left and the callback threads end.
    """
    from twcomms import threaded
    from twcomms.threaded import Client, Server

    started = time.monotonic()
    k = scale.shutdown_messages
    per = k // clients
    result = Result(
        "shutdown (threaded API)",
        scale=scale.name,
        load=f"{clients} clients; {per * clients:,} msgs in, {k:,} broadcast",
        faults="close() / stop() with data in flight",
    )
    # Warm up: the reactor thread and Twisted's reserved descriptor exist
    # from the first listen on, for good.
    warm = Server("127.0.0.1", 0)
    warm.start(timeout=10)
    warm.stop(timeout=10)
    fds0 = fd_count()
    lock = threading.Lock()
    inbound: dict[int, list[int]] = {}
    got_in = ThreadCounter()

    def on_message(message: Any) -> None:
        with lock:
            inbound.setdefault(message["c"], []).append(message["i"])
        got_in.add()

    server = Server("127.0.0.1", 0)
    server.add_onmessage_callback(on_message)
    server.start(timeout=10)
    outbound: list[list[int]] = [[] for _ in range(clients)]
    got_out = ThreadCounter()
    made: list[Client] = []
    pad = "x" * 100
    try:
        senders = []
        for _ in range(clients):
            c = Client("127.0.0.1", server.port)
            made.append(c)
            connect_threaded(c)
            senders.append(c)
        for ci, c in enumerate(senders):
            for i in range(per):
                c.send({"c": ci, "i": i, "p": pad})
            c.close(timeout=20)
        got_in.wait(per * clients, 20, "messages sent before close()")
        readers = []
        for ci in range(clients):
            c = Client("127.0.0.1", server.port)
            made.append(c)

            def on_reply(m: Any, ci: int = ci) -> None:
                outbound[ci].append(m["s"])
                got_out.add()

            c.add_onmessage_callback(on_reply)
            connect_threaded(c)
            readers.append(c)
        wait_until(lambda: len(server.clients) == clients, 10, "clients registered")
        for s in range(k):
            server.broadcast({"s": s, "p": pad})
        server.stop(timeout=30)
        got_out.wait(k * clients, 30, "broadcasts sent before stop()")
        for c in readers:
            result.check(c.wait(10), "a client was not closed by the server's stop")
    finally:
        for c in made:
            c.close(timeout=10)
        server.stop(timeout=10)
    ok_in = sum(1 for ci in range(clients) if inbound.get(ci) == list(range(per)))
    ok_out = sum(1 for ci in range(clients) if outbound[ci] == list(range(k)))
    result.sent = per * clients + k * clients
    result.received = ok_in * per + ok_out * k
    result.lost = (
        result.sent - sum(map(len, inbound.values())) - sum(map(len, outbound))
    )
    result.check(ok_in == clients, f"{clients - ok_in} clients' messages incomplete")
    result.check(ok_out == clients, f"{clients - ok_out} clients missed broadcasts")
    try:
        wait_until(
            lambda: threaded._pool is None or threaded._pool.workers == 0,
            15,
            "callback threads ending",
        )
    except TimeoutError as e:
        result.problems.append(str(e))
    fds1 = fd_count()
    result.check(fds1 <= fds0, f"file descriptors {fds0} -> {fds1}")
    result.details.update(fds=(fds0, fds1), threads_after=threading.active_count())
    result.seconds = time.monotonic() - started
    return result


# -- command line ----------------------------------------------------------------------


async def bad_payloads_string(scale: Scale) -> Result:
    return await bad_payloads(scale, "string")


#: Scenarios by name: (function, runs on the reactor), in the stress
#: table's order.
SCENARIOS: dict[str, tuple[Callable[..., Any], bool]] = {
    "fuzz_memory": (fuzz_memory, False),
    "garbage_sockets": (garbage_sockets, True),
    "bad_payloads": (bad_payloads, True),
    "bad_payloads_string": (bad_payloads_string, True),
    "slow_consumer": (slow_consumer, True),
    "load": (load, True),
    "churn": (churn, True),
    "restart": (restart, True),
    "shutdown": (shutdown, True),
    "slow_callback": (slow_callback, False),
    "slow_callback_client": (slow_callback_client, False),
    "restart_threaded": (restart_threaded, False),
    "churn_threaded": (churn_threaded, False),
    "shutdown_threaded": (shutdown_threaded, False),
}


def run_scenario(name: str, scale: Scale) -> Result:
    """
    Run scenario C{name} in this process (which must not be running a
    reactor yet): Twisted ones under C{task.react}, threaded ones directly.
    Twisted's log is begun to a null observer first, so nothing is buffered.
    """
    from twisted.logger import globalLogBeginner

    raise_fd_limit()
    fn, on_reactor = SCENARIOS[name]
    if not on_reactor:
        return fn(scale)
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    from twisted.internet import defer, task

    box: list[Result] = []

    async def main() -> None:
        # task.react calls this before the reactor runs: start once it has
        # started (and installed its SIGCHLD pipe), so baselines are stable.
        running: defer.Deferred[None] = defer.Deferred()
        _reactor().callWhenRunning(running.callback, None)
        await running
        box.append(await fn(scale))

    with contextlib.suppress(SystemExit):
        task.react(lambda reactor: defer.ensureDeferred(main()))
    if not box:
        raise RuntimeError(f"scenario {name} did not finish")
    return box[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one reliability scenario.")
    parser.add_argument("name", choices=sorted(SCENARIOS))
    parser.add_argument("--scale", choices=sorted(SCALES), default=None)
    args = parser.parse_args(argv)
    result = run_scenario(args.name, current_scale(args.scale))
    print("RESULT " + result.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
