"""
What the cross-node scenarios (L{harness.stress.cross_node},
L{harness.stress.node_kill}) share: hub processes that are nodes of one
hub on a Redis backplane (L{HubProcess}), raw clients that send and check
numbered messages (L{SeqClient}), and a look at the hub's keys in Redis
(L{hub_keys}).

A hub process is C{python -m twcomms serve --backplane URL --hub NAME} in
its default mode, C{broadcast}: it relays each client's message to every
other client of the hub, on every node, but not back to its sender. Its
log (stderr) is read line by line; a scenario waits for a line (bounded)
where the hub has one for the event: the node joined the backplane
(subscribed), a client is registered.
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Callable
from typing import Any

from harness.stress.processes import DriverProcess
from harness.stress.reactor import bounded, global_reactor
from harness.wire import frame, split

#: The hub's log line once its node is subscribed on the backplane (it
#: listens before that: a client may connect first).
JOINED = r"backplane: node (\w+) of hub"

#: A sequence number's phase for the fences (L{SeqClient.fence}).
FENCE = 0


#: Log lines that say a hub went wrong: an unhandled error, or a message
#: it could not relay to the other nodes.
TROUBLE = re.compile(r"Traceback|Unhandled|was not relayed|\[.*#(error|critical)\]")


def hub_name(prefix: str) -> str:
    """
    A hub name no other run uses (its keys and channels are its own on a
    shared Redis).
    """
    return f"{prefix}-{os.urandom(4).hex()}"


class HubProcess(DriverProcess):
    """
    C{twcomms serve} on 127.0.0.1:C{port}, a node of hub C{hub} on the
    Redis at C{redis_url}, started under the reactor; killed by pid in
    L{kill}. Its log lines are kept (L{lines}) and can be waited for.
    """

    def __init__(
        self, port: int, redis_url: str, hub: str, *extra: str | float
    ) -> None:
        self.port = port
        self.lines: list[str] = []
        self._partial = b""
        self._line_waiters: list[tuple[re.Pattern[str], Any]] = []
        super().__init__(
            [
                "-m", "twcomms", "serve",
                "--port", str(port), "--interface", "127.0.0.1",
                "--backplane", redis_url, "--hub", hub,
                *map(str, extra),
            ]
        )  # fmt: skip

    def _err(self, data: bytes) -> None:
        super()._err(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if self._line_waiters:
                # Taken out first: a callback may wait again (a waiter it
                # adds is kept, and looks from the next line on).
                waiters, self._line_waiters = self._line_waiters, []
                keep = []
                for regex, d in waiters:
                    m = regex.search(line)
                    if m and not d.called:
                        d.callback(m)
                    elif not d.called:
                        keep.append((regex, d))
                self._line_waiters = keep + self._line_waiters

    def _process_ended(self, reason: Any) -> None:
        waiters, self._line_waiters = self._line_waiters, []
        super()._process_ended(reason)
        for regex, d in waiters:
            if not d.called:
                d.errback(
                    RuntimeError(
                        f"hub :{self.port} exited ({self.exit_code}) before a "
                        f"line matching {regex.pattern!r}; its log:\n" + self.log_tail()
                    )
                )

    def trouble(self) -> list[str]:
        """
        The log lines that say something went wrong (L{TROUBLE}).
        """
        return [line for line in self.lines if TROUBLE.search(line)]

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def wait_line(self, pattern: str, timeout: float, start: int = 0) -> Any:
        """
        A Deferred firing with the match of the first log line from index
        C{start} on that matches C{pattern}, failing after C{timeout}
        seconds (or when the hub exits first).
        """
        from twisted.internet import defer

        regex = re.compile(pattern)
        for line in self.lines[start:]:
            m = regex.search(line)
            if m:
                return defer.succeed(m)
        if self.pid is None:
            return defer.fail(
                RuntimeError(
                    f"hub :{self.port} already exited ({self.exit_code}); "
                    f"its log:\n{self.log_tail()}"
                )
            )
        d: defer.Deferred[re.Match[str]] = defer.Deferred()
        self._line_waiters.append((regex, d))

        def explain(failure: Any) -> Any:
            failure.trap(TimeoutError)
            raise TimeoutError(f"{failure.value}; its log ends:\n{self.log_tail()}")

        what = f"log line {pattern!r} from hub :{self.port}"
        return bounded(d, timeout, what).addErrback(explain)

    async def joined(self, timeout: float) -> str:
        """
        Wait until the node is subscribed on the backplane; its node id.
        """
        m = await self.wait_line(JOINED, timeout)
        return str(m.group(1))

    def wait_client(self, client_port: int, timeout: float) -> Any:
        """
        Wait until the hub has registered the client whose local port is
        C{client_port} (it then gets broadcasts).
        """
        return self.wait_line(rf"connected from 127\.0\.0\.1:{client_port}\b", timeout)

    def peak_rss(self) -> int | None:
        """
        The hub's peak resident memory so far (C{VmHWM}, bytes), while it
        runs; L{None} where there is no C{/proc}.
        """
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None


def _seq_client_class() -> Any:
    from twisted.internet import defer, protocol

    class SeqClient(protocol.Protocol):
        """
        A raw client (frames by L{harness.wire}, JSON text) that sends
        numbered messages C{{"p": phase, "s": index, "q": seq}} and checks
        what it receives: per (phase, sender), each number once, in order.

        @ivar nexts: (phase, sender) -> the number expected next.
        @ivar received: phase -> messages that arrived new (not again).
        @ivar by_sender: (phase, sender) -> messages that arrived new.
        @ivar duplicated: phase -> messages that arrived again.
        @ivar gaps: phase -> numbers skipped (lost, or overtaken).
        @ivar own: its own messages come back (broadcast mode never should).
        @ivar bad: frames that are not such a message.
        """

        transport: Any  # a TCP transport once connected

        def __init__(
            self, index: int, tally: Callable[[Any, int, int], object]
        ) -> None:
            self.index = index
            self.tally = tally
            self.nexts: dict[tuple[int, int], int] = {}
            self.received: collections.Counter[int] = collections.Counter()
            self.by_sender: collections.Counter[tuple[int, int]] = collections.Counter()
            self.duplicated: collections.Counter[int] = collections.Counter()
            self.gaps: collections.Counter[int] = collections.Counter()
            self.own = 0
            self.bad = 0
            self.port = 0
            self.lost: defer.Deferred[None] = defer.Deferred()
            self._unparsed = b""

        def connectionMade(self) -> None:
            self.port = int(self.transport.getHost().port)

        def dataReceived(self, data: bytes) -> None:
            payloads, self._unparsed = split(self._unparsed + data)
            for payload in payloads:
                try:
                    m = json.loads(payload)
                    phase, sender, seq = m["p"], m["s"], m["q"]
                except (ValueError, TypeError, KeyError):
                    self.bad += 1
                    continue
                if sender == self.index:
                    self.own += 1
                    continue
                key = (phase, sender)
                expected = self.nexts.get(key, 0)
                if seq < expected:
                    self.duplicated[phase] += 1
                    continue
                if seq > expected:
                    self.gaps[phase] += seq - expected
                self.nexts[key] = seq + 1
                self.received[phase] += 1
                self.by_sender[key] += 1
                self.tally(self, phase, sender)

        def connectionLost(self, reason: Any = None) -> None:
            if not self.lost.called:
                self.lost.callback(None)

        @property
        def is_open(self) -> bool:
            return not self.lost.called

        def send(self, phase: int, seqs: range) -> None:
            """
            Messages C{seqs} of C{phase}, in one write.
            """
            i = self.index
            self.transport.write(
                b"".join(
                    frame(json.dumps({"p": phase, "s": i, "q": q}).encode())
                    for q in seqs
                )
            )

        def fence(self) -> None:
            """
            Send this client's fence: once every other client has got it,
            anything it sent before has arrived (a hub relays a sender's
            messages in order), duplicates too.
            """
            self.send(FENCE, range(1))

        def close(self) -> None:
            if self.is_open:
                self.transport.abortConnection()

    return SeqClient


_SEQ_CLIENT: Any = None


async def connect_seq(
    port: int, index: int, tally: Callable[[Any, int, int], object], timeout: float
) -> Any:
    """
    A connected L{SeqClient}-like raw client of index C{index} to the hub
    on C{port} (connected by the kernel: wait for the hub to register it
    with L{HubProcess.wait_client}).
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    global _SEQ_CLIENT
    if _SEQ_CLIENT is None:
        _SEQ_CLIENT = _seq_client_class()
    endpoint = TCP4ClientEndpoint(global_reactor(), "127.0.0.1", port, timeout=timeout)
    return await bounded(
        connectProtocol(endpoint, _SEQ_CLIENT(index, tally)),
        timeout,
        f"a connection to :{port}",
    )


async def hub_keys(redis_url: str, hub: str, timeout: float = 10.0) -> dict[str, Any]:
    """
    What hub C{hub} keeps in Redis: the node ids in its C{nodes} set, which
    of them still have a presence key, and how many client ids its
    C{owner} hash maps, per node.
    """
    from urllib.parse import urlsplit

    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from twcomms.backplane.resp import RedisProtocol

    url = urlsplit(redis_url)
    endpoint = TCP4ClientEndpoint(
        global_reactor(), url.hostname or "127.0.0.1", url.port or 6379
    )
    proto = await bounded(connectProtocol(endpoint, RedisProtocol()), timeout, "Redis")
    prefix = f"twcomms:{hub}:"
    try:
        nodes = await bounded(
            proto.execute("SMEMBERS", prefix + "nodes"), timeout, "SMEMBERS"
        )
        names = sorted(n.decode("ascii") for n in nodes)
        alive = []
        for name in names:
            if await bounded(
                proto.execute("EXISTS", prefix + "node:" + name), timeout, "EXISTS"
            ):
                alive.append(name)
        owners = await bounded(
            proto.execute("HGETALL", prefix + "owner"), timeout, "HGETALL"
        )
    finally:
        proto.transport.loseConnection()
    per_node: dict[str, int] = {}
    for value in owners[1::2]:
        node = value.decode("ascii")
        per_node[node] = per_node.get(node, 0) + 1
    return {"nodes": names, "alive": alive, "owners": per_node}


async def stop_hubs(hubs: list[HubProcess], timeout: float = 10.0) -> list[Any]:
    """
    Stop every hub still running as an operator does (SIGTERM: it closes
    its clients and leaves the backplane, then exits 0), then SIGKILL any
    left after C{timeout} seconds; their exit codes (L{None}: killed).
    """
    import contextlib
    import signal

    for h in hubs:
        h.signal(signal.SIGTERM)
    codes: list[Any] = []
    for h in hubs:
        try:
            codes.append(await h.wait_ended(timeout))
        except TimeoutError:
            codes.append(None)
    for h in hubs:
        h.kill()
        with contextlib.suppress(Exception):
            await h.wait_ended(timeout)
    return codes
