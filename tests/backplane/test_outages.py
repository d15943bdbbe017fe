"""
The backplane under faults, in this process against a real Redis of the
test's own (tests/reliability/test_redis_outage.py does it with hubs as
processes): Redis SIGKILLed and restarted empty, within the outage bound
and past it; a reader Redis cuts off at its output-buffer limit; a reader
that fell behind the stream's history. Every message arrives once and in
order, or is counted, exactly, by its cause.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from harness.redis import RedisServer
from tests.backplane.conftest import StartRedis
from tests.backplane.test_nodes import bounded, connect
from twcomms.backplane import RedisBackplane
from twcomms.server import CommsServerFactory


class Watched(RedisBackplane):
    """
    A backplane whose losing and regaining the broker can be waited for.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._waiting: dict[str, list[defer.Deferred[None]]] = {"lost": [], "up": []}

    def when(self, event: str) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting[event].append(d)
        return bounded(d)

    def _fire(self, event: str) -> None:
        waiting, self._waiting[event] = self._waiting[event], []
        for d in waiting:
            d.callback(None)

    def link_lost(self, reason: str) -> None:
        super().link_lost(reason)
        self._fire("lost")

    def link_up(self, restarted_empty: bool = False) -> None:
        super().link_up(restarted_empty)
        self._fire("up")


@pytest.fixture
def hub_name() -> str:
    return "t" + os.urandom(4).hex()


@pytest.fixture
def nodes() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for node in made:
        pytest_twisted.blockon(node.stop())


@defer.inlineCallbacks
def start(
    made: list[Any], redis: RedisServer, hub: str, **kw: Any
) -> defer.Generator[Any, Any, tuple[CommsServerFactory, Watched, int]]:
    backplane = Watched(redis.url, hub=hub, **kw)
    server = CommsServerFactory(backplane=backplane)
    port = yield bounded(server.listen(("127.0.0.1", 0)))
    made.append(server)
    return server, backplane, port.getHost().port


def numbered(items: list[Any]) -> list[int]:
    return [item["n"] for item in items]


@pytest_twisted.inlineCallbacks
def test_redis_restarted_empty_loses_nothing_within_the_bound(
    start_redis: StartRedis, hub_name: str, nodes: list[Any]
) -> Any:
    """
    Node B lags: Redis has confirmed A's messages 2-20, B has not read
    them, and Redis is SIGKILLed. While it is away, A's own clients get
    what A broadcasts (21-30) at once; A keeps it for B. Redis comes back
    empty on the same port: A republishes what Redis had confirmed lately
    and sends what it kept; B delivers 2-20 (recovered) and 21-30, once
    each, in order, and drops the one it had (1). Each node logs each
    change of state once.
    """
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith("twcomms.backplane"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        yield outage_within_the_bound(start_redis, hub_name, nodes)
    finally:
        globalLogPublisher.removeObserver(observe)
    for line in ("lost the broker", "the broker is back", "restarted empty (a new"):
        assert sum(line in seen for seen in lines) == 2, (line, lines)


@defer.inlineCallbacks
def outage_within_the_bound(
    start_redis: StartRedis, hub_name: str, nodes: list[Any]
) -> Any:
    redis = start_redis()
    a, bp_a, port_a = yield start(nodes, redis, hub_name)
    b, bp_b, port_b = yield start(nodes, redis, hub_name)
    _, on_a = yield connect(nodes, port_a)
    _, on_b = yield connect(nodes, port_b)
    a.broadcast({"n": 1})
    yield on_b.wait(1)
    yield bp_b.pause_reading()
    for n in range(2, 21):
        a.broadcast({"n": n})
    yield bp_a.sync()  # Redis has them; B has not read them
    assert numbered(on_b.items) == [1]
    lost = defer.gatherResults([bp_a.when("lost"), bp_b.when("lost")])
    redis.kill()
    yield lost
    bp_b.resume_reading()
    for n in range(21, 31):
        a.broadcast({"n": n})
    # Local delivery never stops:
    assert numbered((yield on_a.wait(30))) == list(range(1, 31))
    assert bp_a.stats()["kept"] == 10
    back = defer.gatherResults([bp_a.when("up"), bp_b.when("up")])
    redis.restart()
    yield back
    got = yield on_b.wait(30)
    yield bp_a.sync()
    yield bp_b.sync()
    assert numbered(got) == list(range(1, 31))
    sa, sb = bp_a.stats(), bp_b.stats()
    assert (sa["outages"], sa["overflowed"], sa["kept"]) == (1, 0, 0)
    assert sa["replayed"] == 20  # 1-20, confirmed before the kill
    assert (sb["recovered"], sb["duplicates"], sb["missed"]) == (19, 1, 0)
    assert sb["restarts"] == 1
    assert numbered(on_b.items) == list(range(1, 31))  # and nothing after


@pytest_twisted.inlineCallbacks
def test_past_the_outage_bound_the_counts_say_how_many_were_lost(
    start_redis: StartRedis, hub_name: str, nodes: list[Any]
) -> Any:
    """
    With room for 5 messages, 12 broadcast while Redis is away: A's own
    clients get all 12; 5 are kept and cross once Redis is back; 7 are
    counted as overflowed by A -- and, taking no sequence number, are no
    gap at B: every loss counted once, where it happened.
    """
    redis = start_redis()
    a, bp_a, port_a = yield start(nodes, redis, hub_name, outage_max_count=5)
    b, bp_b, port_b = yield start(nodes, redis, hub_name)
    _, on_a = yield connect(nodes, port_a)
    _, on_b = yield connect(nodes, port_b)
    a.broadcast({"n": 1})
    yield on_b.wait(1)
    lost = bp_a.when("lost")
    redis.kill()
    yield lost
    for n in range(2, 14):
        a.broadcast({"n": n})
    assert numbered((yield on_a.wait(13))) == list(range(1, 14))
    back = defer.gatherResults([bp_a.when("up"), bp_b.when("up")])
    redis.restart()
    yield back
    a.broadcast({"n": 14})
    got = yield on_b.wait(7)
    yield bp_a.sync()
    yield bp_b.sync()
    assert numbered(got) == [1, 2, 3, 4, 5, 6, 14]
    sa, sb = bp_a.stats(), bp_b.stats()
    assert (sa["overflowed"], sa["published"]) == (7, 7)
    assert (sb["missed"], sb["gaps"]) == (0, 0)


@pytest_twisted.inlineCallbacks
def test_after_an_empty_restart_every_node_registers_its_clients_again(
    start_redis: StartRedis, hub_name: str, nodes: list[Any]
) -> Any:
    """
    Redis restarted empty knows no node and no client; each node registers
    its presence and its clients again, so a send by id from another node
    still finds a client that never left.
    """
    redis = start_redis()
    a, bp_a, _ = yield start(nodes, redis, hub_name)
    b, bp_b, port_b = yield start(nodes, redis, hub_name)
    _, on_b = yield connect(nodes, port_b)
    (client,) = list(b.clients)
    yield a.send_to(client.id, {"n": 1})
    back = defer.gatherResults([bp_a.when("up"), bp_b.when("up")])
    redis.kill()
    redis.restart()
    yield back
    yield bp_b.sync()  # its registration is in
    assert (yield bp_a.cluster()) == {bp_a.node: 0, bp_b.node: 1}
    yield a.send_to(client.id, {"n": 2})
    assert numbered((yield on_b.wait(2))) == [1, 2]


@pytest_twisted.inlineCallbacks
def test_a_reader_redis_cuts_off_at_its_output_buffer_limit_reads_on(
    start_redis: StartRedis, hub_name: str, nodes: list[Any]
) -> Any:
    """
    Redis closes a connection whose pending replies pass its output-buffer
    limit (512 KiB here) -- for a pub/sub subscriber, losing everything
    pushed meanwhile. B falls behind by 300 messages of 8 KiB (2.4 MB) and
    asks for 200 at once: Redis cuts it off; it reads on from its offset,
    asking for fewer, and delivers every message once, in order.
    """
    redis = start_redis(config=["client-output-buffer-limit normal 512kb 0 0"])
    a, bp_a, _ = yield start(nodes, redis, hub_name)
    b, bp_b, port_b = yield start(nodes, redis, hub_name, read_count=200)
    _, on_b = yield connect(nodes, port_b)
    a.broadcast({"n": 0, "pad": ""})
    yield on_b.wait(1)
    yield bp_b.pause_reading()
    for n in range(1, 301):
        a.broadcast({"n": n, "pad": "x" * 8000})
    yield bp_a.sync()
    bp_b.resume_reading()
    got = yield on_b.wait(301)
    assert numbered(got) == list(range(301))
    stats = bp_b.stats()
    assert stats["cutoffs"] >= 1 and stats["missed"] == 0
    assert bp_b.reader.count < 200
    assert "output buffer limits" in redis.log()  # Redis says it closed it


@pytest_twisted.inlineCallbacks
def test_a_reader_behind_the_streams_history_counts_exactly_what_it_missed(
    start_redis: StartRedis, hub_name: str, nodes: list[Any]
) -> Any:
    """
    The stream keeps about history_length entries; a node further behind
    than that finds the oldest gone: it delivers the rest in order, and
    counts the hole exactly (gaps 1, missed = what never arrived).
    """
    redis = start_redis()
    a, bp_a, _ = yield start(nodes, redis, hub_name, history_length=100)
    b, bp_b, port_b = yield start(nodes, redis, hub_name)
    _, on_b = yield connect(nodes, port_b)
    a.broadcast({"n": 0})
    yield on_b.wait(1)
    yield bp_b.pause_reading()
    for n in range(1, 1001):
        a.broadcast({"n": n})
    yield bp_a.sync()
    bp_b.resume_reading()
    a.broadcast({"n": 1001})
    yield bp_a.sync()
    yield bp_b.sync()  # B has read all there is
    stats = bp_b.stats()
    got = numbered((yield on_b.wait(stats["received"])))
    assert got[-1] == 1001 and got[0] == 0
    tail = got[1:]
    assert tail == list(range(tail[0], 1002))  # in order, no repeats
    missed = tail[0] - 1
    assert missed >= 1001 - 300  # about 100 kept (~: whole stream nodes)
    assert (stats["gaps"], stats["missed"]) == (1, missed)


@pytest_twisted.inlineCallbacks
def test_a_node_that_had_not_read_a_publisher_yet_still_recovers_its_messages(
    start_redis: StartRedis, hub_name: str, nodes: list[Any]
) -> Any:
    """
    B had heard nothing from A when Redis died holding A's first ten
    messages: their replays are still B's to deliver (B was reading when
    Redis took them), not skipped as from before B joined.
    """
    redis = start_redis()
    a, bp_a, _ = yield start(nodes, redis, hub_name)
    b, bp_b, port_b = yield start(nodes, redis, hub_name)
    _, on_b = yield connect(nodes, port_b)
    yield bp_b.pause_reading()
    for n in range(1, 11):
        a.broadcast({"n": n})
    yield bp_a.sync()
    lost = defer.gatherResults([bp_a.when("lost"), bp_b.when("lost")])
    redis.kill()
    yield lost
    bp_b.resume_reading()
    back = defer.gatherResults([bp_a.when("up"), bp_b.when("up")])
    redis.restart()
    yield back
    a.broadcast({"n": 11})
    assert numbered((yield on_b.wait(11))) == list(range(1, 12))
    stats = bp_b.stats()
    assert (stats["recovered"], stats["skipped"], stats["missed"]) == (10, 0, 0)


def test_replays_from_before_a_node_read_the_stream_are_not_its_own() -> None:
    """
    Which replayed entries a node delivers from a publisher it never
    heard: those Redis took after this node began reading (in its first
    epoch, after its first offset; or in any later epoch, read from its
    start) -- not those from before it joined, nor from an epoch it never
    read.
    """
    from twcomms.backplane.reader import StreamReader

    reader = StreamReader((b"s",), lambda data: None, {}, clock=None)
    reader.first_epoch, reader.first_offset = b"e1", b"1700-5"
    reader.later_epochs.add(b"e3")
    assert reader.was_reading_at(b"e1/1700-6")
    assert reader.was_reading_at(b"e1/1701-0")
    assert not reader.was_reading_at(b"e1/1700-5")
    assert not reader.was_reading_at(b"e1/1699-9")
    assert reader.was_reading_at(b"e3/1-0")
    assert not reader.was_reading_at(b"e0/9999-0")
    assert not reader.was_reading_at(b"e2/9999-0")
