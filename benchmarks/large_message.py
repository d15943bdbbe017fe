"""
Benchmark: receiving one large length-prefixed message.

Compares twcomms' L{twcomms.wire.FrameReceiver} with Twisted's stock
C{twisted.protocols.basic.Int32StringReceiver} when a single big message
(16, 64 and 256 MiB by default) arrives in 64 KiB pieces. Both receivers
read the same bytes: a 4-byte little-endian length header (C{"<I"}) and the
payload, with C{MAX_LENGTH = 0xFFFFFFFF}. Stock Twisted concatenates its
whole buffer with every chunk, so its time grows with the square of the
message size; FrameReceiver is meant to be linear.

What is measured, per (implementation, size), each in a fresh child process
so that peak memory is per size:

  - time: from the first byte handed to C{dataReceived} to the delivery of
    the whole payload to C{stringReceived}. The child repeats the reception
    C{--repeat} times (twcomms, default 3) or C{--stock-repeat} times
    (stock, default 1: it is slow) and reports the best and the first time
    (the first touches fresh memory and is slower).
  - peak extra memory: the growth of the process's peak RSS
    (C{ru_maxrss}) over a baseline read just before receiving starts, and
    its ratio to the message size.

Two transports (C{--mode}):

  - C{tcp} (default): the child runs a Twisted reactor listening on
    127.0.0.1 and starts a sender process (a plain blocking socket, this
    same file in a hidden mode) that sends the frame, waits for a one-byte
    acknowledgement, and sends it again for each repetition.
  - C{memory}: the child builds the frame once and feeds it to the
    protocol (connected to a C{StringTransport}) as fresh 64 KiB C{bytes}
    objects, as a socket read would give. Only the feeding loop is timed.

The parent kills a child that runs over C{--timeout} seconds (default 60)
and reports it as cut off; stock Twisted is expected to be cut off at
256 MiB. It prints a table, the scaling ratios between consecutive sizes
(linear is the size ratio; twcomms' target is within 12.5% of linear, i.e.
t(256)/t(64) <= 4.5) and twcomms' memory target (peak <= 2.5x the message
size), with PASS/MISS, and writes the results (per mode) to
C{benchmarks/results/large_message.json}.

Run from the repository root::

    python -m benchmarks.large_message                     # tcp, 16,64,256
    python -m benchmarks.large_message --mode memory
    python -m benchmarks.large_message --sizes 1,4 --mode memory   # quick
    python -m benchmarks.large_message --impls twcomms --repeat 5

Linux (or another Unix with C{resource}) only; it uses 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.procs import end_process, run_bounded, watchdog
from harness.wire import header

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
MODULE = "benchmarks.large_message"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "large_message.json"

IMPLS = ("twcomms", "stock")
MODES = ("tcp", "memory")
MAX_LENGTH = 0xFFFFFFFF
ACK = b"\x01"

#: A time ratio between two sizes passes when it is within this factor of
#: the size ratio (4.5 / 4.0 for 256 MiB over 64 MiB).
LINEAR_SLACK = 1.125
#: twcomms' peak extra memory target, as a multiple of the message size.
PEAK_TARGET = 2.5

#: 1 MiB pattern; payload byte i is i % 256, so a few bytes check the order.
PATTERN = bytes(range(256)) * 4096


# -- shared helpers -----------------------------------------------------------


def _build_frame(size: int) -> bytes:
    """
    Header + payload as one C{bytes}, allocated once (no transient copy of
    the payload, which would raise the peak RSS before the baseline).
    """
    full, rest = divmod(size, len(PATTERN))
    return b"".join([header(size), *([PATTERN] * full), PATTERN[:rest]])


def _payload_ok(payload: bytes, size: int) -> bool:
    """
    Cheap check: the length and a few bytes of the pattern.
    """
    if len(payload) != size:
        return False
    return all(payload[i] == i % 256 for i in {0, size // 2, size - 1} if i >= 0)


def _maxrss_kib() -> int:
    """
    This process's peak resident set size so far, in KiB.
    """
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss


def _receiver_class(impl: str) -> type[Any]:
    """
    A receiver class for C{impl} that calls C{on_message(proto, payload)}
    for each payload; both read little-endian headers up to 4 GiB - 1.
    """
    base: type[Any]
    if impl == "twcomms":
        from twcomms.wire.framing import FrameReceiver

        base = FrameReceiver
    elif impl == "stock":
        from twisted.protocols.basic import Int32StringReceiver

        base = Int32StringReceiver
    else:
        raise ValueError(f"unknown implementation {impl!r}")

    class Receiver(base):  # type: ignore[misc, valid-type]
        structFormat = "<I"
        MAX_LENGTH = MAX_LENGTH

        def __init__(self, on_message: Callable[[Any, bytes], None]) -> None:
            self.on_message = on_message

        def stringReceived(self, string: bytes) -> None:
            self.on_message(self, string)

    Receiver.__name__ = Receiver.__qualname__ = f"{impl}Receiver"
    return Receiver


# -- child: memory transport --------------------------------------------------


def _child_memory(impl: str, size: int, repeat: int, chunk: int) -> dict[str, Any]:
    from twisted.internet.testing import StringTransport

    cls = _receiver_class(impl)
    frame = _build_frame(size)  # written by join: allocated and touched
    view = memoryview(frame)
    total = len(frame)
    deliveries: list[tuple[float, bool]] = []

    def on_message(proto: Any, payload: bytes) -> None:
        deliveries.append((time.perf_counter(), _payload_ok(payload, size)))

    base_kib = _maxrss_kib()
    times: list[float] = []
    for _ in range(repeat):
        proto = cls(on_message)
        proto.makeConnection(StringTransport())
        before = len(deliveries)
        t0 = time.perf_counter()
        for i in range(0, total, chunk):
            proto.dataReceived(bytes(view[i : i + chunk]))
        if len(deliveries) != before + 1:
            raise RuntimeError(f"{len(deliveries) - before} messages delivered")
        t_end, ok = deliveries[-1]
        if not ok:
            raise RuntimeError("payload check failed")
        times.append(t_end - t0)
        del proto
    peak_kib = _maxrss_kib() - base_kib
    return {
        "times": times,
        "peak_extra_kib": peak_kib,
        "baseline_kib": base_kib,
        "chunks_per_message": -(-total // chunk),
    }


# -- child: tcp transport -----------------------------------------------------


def _child_tcp(impl: str, size: int, repeat: int, timeout: float) -> dict[str, Any]:
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory
    from twisted.internet.task import LoopingCall

    cls = _receiver_class(impl)
    times: list[float] = []
    chunks: list[int] = []
    errors: list[str] = []
    state: dict[str, Any] = {"connect": None, "first_from_connect": None}

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    def on_message(proto: Any, payload: bytes) -> None:
        now = time.perf_counter()
        ok = _payload_ok(payload, size)
        times.append(now - proto.t_start)
        chunks.append(proto.n_chunks)
        if state["first_from_connect"] is None:
            state["first_from_connect"] = now - state["connect"]
        proto.t_start = None
        proto.n_chunks = 0
        if not ok:
            errors.append("payload check failed")
            proto.transport.abortConnection()
            return
        proto.transport.write(ACK)
        if len(times) >= repeat:
            proto.transport.loseConnection()

    class TimedReceiver(cls):  # type: ignore[misc, valid-type]
        t_start: float | None = None
        n_chunks = 0

        def connectionMade(self) -> None:
            state["connect"] = time.perf_counter()
            port.stopListening()
            super().connectionMade()

        def dataReceived(self, data: bytes) -> None:
            if self.t_start is None:
                self.t_start = time.perf_counter()
            self.n_chunks += 1
            super().dataReceived(data)

        def connectionLost(self, reason: Any) -> None:
            super().connectionLost(reason)
            if len(times) < repeat and not errors:
                errors.append(
                    f"connection lost after {len(times)} of {repeat} messages"
                )
            stop()

    class OneShotFactory(Factory):
        def buildProtocol(self, addr: Any) -> Any:
            proto = TimedReceiver(on_message)
            proto.factory = self
            return proto

    port = reactor.listenTCP(0, OneShotFactory(), interface="127.0.0.1")
    port_number = port.getHost().port

    def check_sender() -> None:
        rc = sender.poll()
        if rc is not None and len(times) < repeat:
            errors.append(f"sender exited with status {rc}")
            stop()

    def internal_timeout() -> None:
        errors.append(f"internal timeout after {timeout + 5:g} s")
        stop()

    base_kib = _maxrss_kib()
    sender = subprocess.Popen(
        [
            sys.executable,
            "-m",
            MODULE,
            "--send",
            str(port_number),
            str(size),
            "--repeat",
            str(repeat),
            "--timeout",
            str(timeout),
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        poller = LoopingCall(check_sender)
        poller.start(0.2, now=False)
        reactor.callLater(timeout + 5, internal_timeout)
        reactor.run(installSignalHandlers=False)
    finally:
        end_process(sender, wait=5)
    peak_kib = _maxrss_kib() - base_kib
    if errors:
        raise RuntimeError("; ".join(errors))
    return {
        "times": times,
        "peak_extra_kib": peak_kib,
        "baseline_kib": base_kib,
        "chunks_per_message": chunks,
        "first_from_connect": state["first_from_connect"],
    }


def _sender(port: int, size: int, repeat: int, timeout: float) -> int:
    """
    Hidden C{--send} mode: connect to the receiver, send the frame
    C{repeat} times, each time waiting for its one-byte acknowledgement.
    """
    watchdog(timeout + 10)
    frame = _build_frame(size)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(repeat):
            sock.sendall(frame)  # the timeout bounds the whole sendall
            if sock.recv(1) != ACK:
                return 1
    return 0


def _child(impl: str, size: int, mode: str, repeat: int, args: Any) -> int:
    """
    Hidden C{--child} mode: one measurement, one JSON line on stdout.
    """
    watchdog(args.timeout + 15)
    result: dict[str, Any] = {"impl": impl, "mode": mode, "size": size}
    try:
        if mode == "memory":
            measured = _child_memory(impl, size, repeat, args.chunk_kib * 1024)
        else:
            measured = _child_tcp(impl, size, repeat, args.timeout)
    except Exception as e:
        result.update(status="error", error=f"{type(e).__name__}: {e}")
        print(json.dumps(result), flush=True)
        return 1
    result.update(status="ok", **measured)
    print(json.dumps(result), flush=True)
    return 0


# -- parent -------------------------------------------------------------------


def _run_one(impl: str, size_mib: float, args: argparse.Namespace) -> dict[str, Any]:
    size = round(size_mib * MIB)
    repeat = args.repeat if impl == "twcomms" else args.stock_repeat
    cmd = [
        sys.executable,
        "-m",
        MODULE,
        "--child",
        impl,
        str(size),
        "--mode",
        args.mode,
        "--repeat",
        str(repeat),
        "--timeout",
        str(args.timeout),
        "--chunk-kib",
        str(args.chunk_kib),
    ]
    base: dict[str, Any] = {
        "impl": impl,
        "mode": args.mode,
        "size": size,
        "size_mib": size_mib,
        "repeat": repeat,
    }
    started = time.monotonic()
    # A new session: the child and its sender are killed as one group.
    done = run_bounded(
        cmd, args.timeout, env=dict(os.environ), text=False, new_session=True
    )
    if done.cut_off:
        return {**base, "status": "cutoff", "wall": time.monotonic() - started}
    wall = time.monotonic() - started
    out, err = done.stdout, done.stderr
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        return {
            **base,
            "status": "error",
            "error": f"child exited {done.returncode}: " + " | ".join(tail),
            "wall": wall,
        }
    result = {**base, **result, "wall": wall}
    if result.get("status") == "ok":
        times = result["times"]
        best = min(times)
        result["best"] = best
        result["first"] = times[0]
        result["mib_per_s"] = size / MIB / best if best > 0 else None
        result["peak_extra_mib"] = result["peak_extra_kib"] / 1024
        result["peak_ratio"] = result["peak_extra_kib"] * 1024 / size
    return result


def _fmt_secs(r: dict[str, Any], key: str, timeout: float) -> str:
    if r["status"] == "cutoff":
        return f"> {timeout:g} s (cut off)" if key == "best" else "-"
    if r["status"] != "ok":
        return "error"
    return f"{r[key]:.4f}"


def _print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    head = (
        f"{'impl':<8} {'MiB':>6} {'best s':>18} {'first s':>9} {'MiB/s':>9} "
        f"{'peak+ MiB':>10} {'peak/size':>9} {'reps':>4}"
    )
    print()
    print(
        f"Receiving one message, mode={args.mode}, "
        f"cut-off {args.timeout:g} s per child"
        + (f", {args.chunk_kib} KiB chunks" if args.mode == "memory" else "")
    )
    print(head)
    print("-" * len(head))
    for r in results:
        ok = r["status"] == "ok"
        mbps = f"{r['mib_per_s']:.0f}" if ok and r["mib_per_s"] else "-"
        peak = f"{r['peak_extra_mib']:.1f}" if ok else "-"
        ratio = f"{r['peak_ratio']:.2f}x" if ok else "-"
        print(
            f"{r['impl']:<8} {r['size_mib']:>6g} "
            f"{_fmt_secs(r, 'best', args.timeout):>18} "
            f"{_fmt_secs(r, 'first', args.timeout):>9} {mbps:>9} {peak:>10} "
            f"{ratio:>9} {r['repeat']:>4}"
        )
        if r["status"] == "error":
            print(f"    error: {r.get('error')}")


def _checks(
    results: list[dict[str, Any]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """
    Scaling ratios between consecutive sizes per impl, and twcomms' peak
    memory target. Returns the checks (also printed).
    """
    checks: list[dict[str, Any]] = []
    print()
    print("Scaling (best times; linear = size ratio, target = linear x 1.125):")
    for impl in args.impls:
        rows = sorted(
            (r for r in results if r["impl"] == impl), key=lambda r: r["size"]
        )
        for small, big in itertools.pairwise(rows):
            linear = big["size"] / small["size"]
            target = linear * LINEAR_SLACK
            label = f"t({big['size_mib']:g})/t({small['size_mib']:g})"
            check: dict[str, Any] = {
                "kind": "scaling",
                "impl": impl,
                "ratio_of": label,
                "linear": linear,
                "target": target,
            }
            if small["status"] == "ok" and big["status"] == "ok":
                value = big["best"] / small["best"]
                check["value"] = value
                text = f"{value:.2f}"
            elif small["status"] == "ok" and big["status"] == "cutoff":
                value = None
                check["lower_bound"] = args.timeout / small["best"]
                text = f"> ~{check['lower_bound']:.1f} (cut off)"
            else:
                value = None
                text = "n/a"
            verdict = ""
            if impl == "twcomms":
                check["pass"] = value is not None and value <= target
                verdict = "PASS" if check["pass"] else "MISS"
            print(
                f"  {impl:<8} {label:<16} = {text:<22} "
                f"(linear {linear:.2f}, target <= {target:.2f})  {verdict}"
            )
            checks.append(check)
    if "twcomms" in args.impls:
        print()
        print(f"twcomms peak extra memory (target <= {PEAK_TARGET:g}x message size):")
        for r in results:
            if r["impl"] != "twcomms":
                continue
            ok = r["status"] == "ok" and r["peak_ratio"] <= PEAK_TARGET
            text = f"{r['peak_ratio']:.2f}x" if r["status"] == "ok" else r["status"]
            print(f"  {r['size_mib']:>6g} MiB: {text:<8}  {'PASS' if ok else 'MISS'}")
            checks.append(
                {
                    "kind": "peak",
                    "impl": "twcomms",
                    "size_mib": r["size_mib"],
                    "value": r.get("peak_ratio"),
                    "target": PEAK_TARGET,
                    "pass": ok,
                }
            )
    return checks


def _write_json(
    path: Path,
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    checks: list[dict[str, Any]],
) -> None:
    """
    Store this run under its mode, keeping the other mode's last run.
    """
    import twisted

    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    if not isinstance(data.get("runs"), dict):
        data = {"runs": {}}
    data["runs"][args.mode] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": [Path(sys.executable).name, "-m", MODULE, *sys.argv[1:]],
        "settings": {
            "sizes_mib": args.sizes,
            "impls": args.impls,
            "timeout": args.timeout,
            "repeat_twcomms": args.repeat,
            "repeat_stock": args.stock_repeat,
            "chunk_kib": args.chunk_kib,
        },
        "environment": {
            "python": platform.python_version(),
            "twisted": twisted.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "results": results,
        "checks": checks,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _parent(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    for impl in args.impls:
        for size_mib in args.sizes:
            print(
                f"[{args.mode}] {impl} {size_mib:g} MiB ...",
                end="",
                file=sys.stderr,
                flush=True,
            )
            r = _run_one(impl, size_mib, args)
            if r["status"] == "ok":
                note = f" best {r['best']:.3f} s, peak +{r['peak_extra_mib']:.0f} MiB"
            elif r["status"] == "cutoff":
                note = f" cut off after {args.timeout:g} s"
            else:
                note = f" error: {r.get('error')}"
            print(note, file=sys.stderr, flush=True)
            results.append(r)
    _print_table(results, args)
    checks = _checks(results, args)
    _write_json(args.output, args, results, checks)
    print(f"\nResults written to {args.output}")
    return 0


# -- command line -------------------------------------------------------------


def _sizes(text: str) -> list[float]:
    sizes = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a size in MiB: {part!r}") from None
        if not 0 < value * MIB <= MAX_LENGTH:
            raise argparse.ArgumentTypeError(f"size out of range: {part!r} MiB")
        sizes.append(value)
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


def _impls(text: str) -> list[str]:
    impls: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if name not in IMPLS:
            raise argparse.ArgumentTypeError(
                f"unknown implementation {name!r}; choose from {', '.join(IMPLS)}"
            )
        if name not in impls:
            impls.append(name)
    return impls


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m " + MODULE,
        description=(
            "Time receiving one large length-prefixed message with twcomms'\n"
            "FrameReceiver and with Twisted's stock Int32StringReceiver, each\n"
            "(implementation, size) in its own child process. Reports seconds\n"
            "(best and first reception), MiB/s, the peak extra memory, and how\n"
            "the time scales with the size (twcomms targets: t(256)/t(64) <= 4.5,\n"
            "peak <= 2.5x the message size)."
        ),
        epilog=(
            "examples:\n"
            "  python -m benchmarks.large_message\n"
            "  python -m benchmarks.large_message --mode memory\n"
            "  python -m benchmarks.large_message --sizes 1,4 --mode tcp\n"
            "results are also written as JSON (per mode) to --output."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=[16.0, 64.0, 256.0],
        metavar="MIB[,MIB...]",
        help="message sizes in MiB, comma-separated (default: 16,64,256)",
    )
    p.add_argument(
        "--impls",
        type=_impls,
        default=list(IMPLS),
        metavar="IMPL[,IMPL...]",
        help="implementations: twcomms, stock (default: twcomms,stock)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="tcp",
        help="tcp: a sender process over 127.0.0.1; memory: feed 64 KiB "
        "chunks to a protocol on a StringTransport (default: tcp)",
    )
    p.add_argument(
        "--timeout",
        type=_positive(float),
        default=60.0,
        metavar="SECONDS",
        help="cut-off per child process; a child over it is killed and "
        "reported as cut off (default: 60)",
    )
    p.add_argument(
        "--repeat",
        type=_positive(int),
        default=3,
        metavar="N",
        help="receptions per child for twcomms; the best and the first "
        "are reported (default: 3)",
    )
    p.add_argument(
        "--stock-repeat",
        type=_positive(int),
        default=1,
        metavar="N",
        help="receptions per child for stock Twisted (default: 1, it is slow)",
    )
    p.add_argument(
        "--chunk-kib",
        type=_positive(int),
        default=64,
        metavar="KIB",
        help="chunk size in KiB for --mode memory (default: 64)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        metavar="PATH",
        help="JSON results file (default: benchmarks/results/large_message.json)",
    )
    # Hidden modes used by the benchmark's own processes.
    p.add_argument(
        "--child", nargs=2, metavar=("IMPL", "BYTES"), help=argparse.SUPPRESS
    )
    p.add_argument("--send", nargs=2, metavar=("PORT", "BYTES"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.send:
        return _sender(int(args.send[0]), int(args.send[1]), args.repeat, args.timeout)
    if args.child:
        impl, size = args.child[0], int(args.child[1])
        return _child(impl, size, args.mode, args.repeat, args)
    return _parent(args)


if __name__ == "__main__":
    sys.exit(main())
