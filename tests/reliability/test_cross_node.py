"""
Cross-node load: two hub processes (C{twcomms serve --backplane}) on one
real Redis act as one hub under load: N raw clients spread over both each
send M numbered messages, and every client gets exactly N x M - M
(everyone's but its own), each sender's in order, none twice. Sizes:
C{scale.cross_node_*} (20 x 200 at ci scale, 60 x 1,000 at full scale).
"""

from __future__ import annotations

import pytest_twisted

from harness.redis import RedisServer
from harness.stress.cross_node import cross_node_load
from harness.stress.result import assert_held
from harness.stress.scale import Scale


@pytest_twisted.ensureDeferred
async def test_every_client_gets_everyone_elses_messages_once_in_order(
    scale: Scale, redis_server: RedisServer
) -> None:
    result = await cross_node_load(scale, redis_server.url)
    assert_held(result)
    n, m = scale.cross_node_clients, scale.cross_node_messages
    assert result.sent == n * (n * m - m)
