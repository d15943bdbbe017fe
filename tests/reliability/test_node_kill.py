"""
Node kill: one of two hub processes (C{twcomms serve --backplane}) on one
real Redis is SIGKILLed while clients on both stream numbered messages.
The survivors lose nothing among themselves and get no duplicates; the
killed node's clients see their connection drop; a new process on the
same port joins as a new node, the clients reconnect, and everything
broadcast afterwards from both nodes reaches every client exactly once,
in order. Sizes: C{scale.node_kill_*} (20 clients x 200 messages at ci
scale, 60 x 1,000 at full scale).
"""

from __future__ import annotations

import pytest_twisted

from harness.redis import RedisServer
from harness.stress.node_kill import node_kill
from harness.stress.result import assert_held
from harness.stress.scale import Scale


@pytest_twisted.ensureDeferred
async def test_survivors_lose_nothing_and_a_restarted_node_rejoins(
    scale: Scale, redis_server: RedisServer
) -> None:
    result = await node_kill(scale, redis_server.url)
    assert_held(result)
    n, m = scale.node_kill_clients, scale.node_kill_messages
    na = (n + 1) // 2
    assert result.sent == m * na * (na - 1) + m * n * (n - 1)
    # The kill came mid-stream: messages were still in flight among A's
    # clients, and B's clients had sent some of theirs.
    assert result.details["in_flight_at_kill"] > 0
    assert result.details["sent_before"]["by B's clients"] > 0
