"""
L{twcomms.backplane.resp.RedisProtocol} against a real C{redis-server}
(see C{conftest.py}): replies in order, binary safety, error replies,
pub/sub, and what a lost connection does to the commands still waiting.

Every wait is bounded (L{bounded}); nothing sleeps. A command that must
still be waiting when its connection goes is a C{BLPOP} on a key nobody
pushes to: Redis answers nothing, and holds the connection's later
commands, until the connection ends.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.python.failure import Failure

from harness.redis import RedisServer
from tests import test_sockets
from tests.backplane.conftest import StartRedis
from tests.test_sockets import TIMEOUT, Cleanup, Events, bounded
from twcomms.backplane.resp import (
    RedisError,
    RedisProtocol,
    command_prefix,
    encode_command,
)
from twcomms.errors import CommsError

#: The fixture that closes what a test opened (see C{tests/test_sockets.py}).
cleanup = test_sockets.cleanup

_unique = itertools.count()


def name(kind: str = "key") -> str:
    """
    A key or channel name no other test uses (the server is shared).
    """
    return f"test-resp:{kind}:{next(_unique)}"


@dataclass
class Conn:
    """
    A connected L{RedisProtocol}, with what it received: published
    messages (C{(channel, data)}) and the failure it was lost with.
    """

    proto: RedisProtocol
    messages: Events = field(default_factory=Events)
    lost: Events = field(default_factory=Events)

    def __call__(self, *args: Any) -> defer.Deferred[Any]:
        """
        Run a command; its reply, bounded in time.
        """
        return bounded(self.proto.execute(*args))

    def close(self) -> defer.Deferred[Any]:
        if not self.proto.connected:
            return defer.succeed(None)
        self.proto.transport.abortConnection()  # type: ignore[union-attr]
        return self.lost.wait()


@defer.inlineCallbacks
def connect(cleanup: Cleanup, server: RedisServer) -> Any:
    """
    A L{Conn} to C{server}, closed after the test.
    """
    conn = Conn(RedisProtocol())
    conn.proto.on_message = conn.messages
    conn.proto.on_lost = conn.lost
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port, timeout=TIMEOUT)
    yield bounded(connectProtocol(endpoint, conn.proto))
    cleanup(conn.close)
    return conn


async def failure_of(d: defer.Deferred[Any]) -> Failure:
    """
    How C{d} failed (the test fails if it succeeds instead).
    """
    try:
        result = await d
    except Exception:
        return Failure()
    raise AssertionError(f"expected a failure, got {result!r}")


# -- encoding ------------------------------------------------------------------


def test_encode_command() -> None:
    assert b"".join(encode_command(("SET", "k\u00e9", b"\r\n", 12, -3))) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n\r\n\r\n"  # SET, k\u00e9, CRLF
        b"$2\r\n12\r\n$2\r\n-3\r\n"  # 12, -3
    )


# -- commands ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_set_get_round_trip(cleanup: Cleanup, redis_server: RedisServer) -> None:
    conn = await connect(cleanup, redis_server)
    key = name()
    assert await conn("GET", key) is None
    assert await conn("SET", key, "caf\u00e9") == b"OK"
    assert await conn("GET", key) == "caf\u00e9".encode()

    # 16 MiB holding every byte value, and bytes that look like RESP.
    big = b"$-1\r\n*2\r\n" + bytes(range(256)) * (1 << 16)
    assert len(big) > 16 * 1024 * 1024
    assert await conn("SET", key, big) == b"OK"
    assert await conn("STRLEN", key) == len(big)
    got = await conn("GET", key)
    assert type(got) is bytes
    assert got == big
    assert await conn("DEL", key) == 1


@pytest_twisted.ensureDeferred
async def test_pipelined_incrs_answered_in_order(
    cleanup: Cleanup, redis_server: RedisServer
) -> None:
    conn = await connect(cleanup, redis_server)
    key = name()
    fired: list[int] = []
    # All 1,000 written before any answer is read.
    pending = [conn.proto.execute("INCR", key) for _ in range(1000)]

    def record(n: int) -> int:
        fired.append(n)
        return n

    for d in pending:
        d.addCallback(record)
    replies = await bounded(defer.gatherResults(pending))
    assert replies == list(range(1, 1001))
    assert fired == list(range(1, 1001))  # and fired in that order
    assert await conn("GET", key) == b"1000"


@pytest_twisted.ensureDeferred
async def test_error_reply_fails_only_its_command(
    cleanup: Cleanup, redis_server: RedisServer
) -> None:
    conn = await connect(cleanup, redis_server)
    key, other = name(), name()
    assert await conn("SET", key, "not a number") == b"OK"
    # Pipelined: the error is in the middle of the replies.
    incr = conn("INCR", key)
    get = conn("GET", key)
    unknown = conn("NO-SUCH-COMMAND", "x")
    incr_other = conn("INCR", other)

    failure = await failure_of(incr)
    assert failure.check(RedisError)
    assert isinstance(failure.value, CommsError)
    assert "not an integer" in str(failure.value)
    assert await get == b"not a number"
    failure = await failure_of(unknown)
    assert failure.check(RedisError)
    assert "unknown command" in str(failure.value)
    assert await incr_other == 1
    assert conn.proto.connected
    assert await conn("PING") == b"PONG"


@pytest_twisted.ensureDeferred
async def test_a_command_that_cannot_be_written_leaves_no_reply_waiting(
    cleanup: Cleanup, redis_server: RedisServer
) -> None:
    """
    A command that fails before it is written (an argument that is not
    bytes, text or a number -- a memoryview, which Twisted's transports
    refuse) raises, and every reply after it still goes to its own command
    (a waiter left behind shifted them all by one).
    """
    conn = await connect(cleanup, redis_server)
    key = name()
    with pytest.raises(TypeError):
        conn.proto.execute("SET", key, memoryview(b"x" * 100_000))
    with pytest.raises(TypeError):
        conn.proto.send("SET", key, object())
    assert await conn("SET", key, "1") == b"OK"
    assert await conn("INCR", key) == 2
    assert await conn("PING") == b"PONG"


@pytest_twisted.ensureDeferred
async def test_send_last_completes_a_prefixed_command(
    cleanup: Cleanup, redis_server: RedisServer
) -> None:
    """
    A command whose first arguments were encoded once (command_prefix),
    sent with its last: small (one write) and large (a sequence), each
    reply to its C{then}, in order.
    """
    conn = await connect(cleanup, redis_server)
    key = name()
    replies: list[object] = []
    big = b"v" * 20_000
    assert conn.proto.send_last(command_prefix("SET", key), big, then=replies.append)
    assert conn.proto.send_last(command_prefix("APPEND", key), b"!", replies.append)
    assert await conn("GET", key) == big + b"!"
    assert replies == [b"OK", len(big) + 1]


@pytest_twisted.ensureDeferred
async def test_execute_when_not_connected() -> None:
    proto = RedisProtocol()
    failure = await failure_of(proto.execute("PING"))
    assert failure.check(RedisError)
    assert "not connected" in str(failure.value)


# -- pub/sub -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscriber_receives_messages_in_order(
    cleanup: Cleanup, redis_server: RedisServer
) -> None:
    subscriber = await connect(cleanup, redis_server)
    publisher = await connect(cleanup, redis_server)
    channel, second, elsewhere = name("ch\u00e9"), name("ch"), name("ch")
    # Fires once Redis has confirmed both subscriptions.
    await bounded(subscriber.proto.subscribe(channel, second))
    # A subscribed connection still answers PING (its PONG is a list).
    assert await subscriber("PING") == [b"pong", b""]

    payloads = [b"", bytes(range(256)), b"*3\r\n$7\r\nmessage\r\n", b"x" * (1 << 20)]
    payloads += [b"%d" % i for i in range(200)]
    for payload in payloads:
        assert await publisher("PUBLISH", channel, payload) == 1
    # Not subscribed: never delivered (the last message below comes after).
    assert await publisher("PUBLISH", elsewhere, b"no") == 0
    assert await publisher("PUBLISH", second, b"last") == 1

    got = await subscriber.messages.wait(len(payloads) + 1)
    expected = [(channel.encode(), p) for p in payloads]
    expected.append((second.encode(), b"last"))
    assert got == expected
    assert all(type(c) is bytes and type(d) is bytes for c, d in got)
    assert len(subscriber.messages) == len(payloads) + 1
    assert subscriber.proto.connected


# -- losing the connection -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_client_kill_fails_every_pending_command(
    cleanup: Cleanup, redis_server: RedisServer
) -> None:
    victim = await connect(cleanup, redis_server)
    killer = await connect(cleanup, redis_server)
    client_id = await victim("CLIENT", "ID")
    assert isinstance(client_id, int)

    blocked = victim("BLPOP", name(), 0)  # never answered
    queued = [victim("INCR", name()) for _ in range(5)]  # held behind it
    assert await killer("CLIENT", "KILL", "ID", client_id) == 1

    (reason,) = await victim.lost.wait(1)
    assert isinstance(reason, Failure)
    for d in [blocked, *queued]:
        failure = await failure_of(d)
        assert failure.check(RedisError)
        assert "lost" in str(failure.value)
    assert not victim.proto.connected
    failure = await failure_of(victim("PING"))
    assert failure.check(RedisError)
    assert "not connected" in str(failure.value)
    assert len(victim.lost) == 1
    assert killer.proto.connected
    assert await killer("PING") == b"PONG"


@pytest_twisted.ensureDeferred
async def test_server_killed_then_restarted(
    cleanup: Cleanup, start_redis: StartRedis
) -> None:
    server = start_redis(config=["client-output-buffer-limit pubsub 1mb 512kb 10"])
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    commands = await connect(cleanup, server)
    subscriber = await connect(cleanup, server)
    assert await commands("CONFIG", "GET", "client-output-buffer-limit") == [
        b"client-output-buffer-limit",
        b"normal 0 0 0 slave 268435456 67108864 60 pubsub 1048576 524288 10",
    ]
    assert await commands("CONFIG", "GET", "save") == [b"save", b""]
    assert await commands("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
    await bounded(subscriber.proto.subscribe(name("ch")))
    assert await subscriber("PING") == [b"pong", b""]
    blocked = commands("BLPOP", name(), 0)
    queued = commands("PING")
    waiting = subscriber("PING")  # may or may not be answered first

    pid, port = server.pid, server.port
    server.kill()
    assert not server.running
    for conn in (commands, subscriber):
        (reason,) = await conn.lost.wait(1)
        assert isinstance(reason, Failure)
    for d in (blocked, queued):
        failure = await failure_of(d)
        assert failure.check(RedisError)
    # Answered before the kill, or failed by it: settled either way.
    settled = await waiting.addErrback(lambda f: f.trap(RedisError))
    assert settled in ([b"pong", b""], RedisError)

    server.restart()
    assert server.running
    assert (server.port, server.url) == (port, f"redis://127.0.0.1:{port}/0")
    assert server.pid != pid
    again = await connect(cleanup, server)
    assert await again("PING") == b"PONG"
    assert await again("DBSIZE") == 0  # nothing persisted


def test_stop_ends_the_server_and_removes_its_directory(
    start_redis: StartRedis,
) -> None:
    server = start_redis()
    assert server.running and server.workdir.is_dir()
    server.stop()
    assert not server.running
    assert not server.workdir.exists()
    server.stop()  # again: harmless
    with pytest.raises(RuntimeError, match="stopped"):
        server.pid  # noqa: B018


@pytest_twisted.ensureDeferred
async def test_a_subscribed_connection_refuses_commands_it_could_confuse(
    cleanup: Cleanup, redis_server: RedisServer
) -> None:
    """
    Replies on a subscribed connection cannot be told from its messages:
    subscribe() refuses while commands wait, and a subscribed connection
    runs nothing but PING.
    """
    conn = await connect(cleanup, redis_server)
    waiting = conn.proto.execute("PING")
    with pytest.raises(RedisError, match="commands in flight"):
        conn.proto.subscribe(name("x"))
    assert await bounded(waiting) == b"PONG"
    await bounded(conn.proto.subscribe(name("x")))
    failure = await failure_of(conn.proto.execute("GET", name("k")))
    assert failure.check(RedisError)
    assert "runs no commands" in str(failure.value)
