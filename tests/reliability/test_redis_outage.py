"""
Redis outage: two hub processes (C{twcomms serve --backplane}) on a
C{redis-server} of the test's own, which is SIGKILLed mid-stream and
started again, empty, on its port while every client goes on sending.
Each node keeps delivering to its own clients; within the outage bound,
every client ends up with every other client's messages exactly once, in
order; past it (C{--outage-max-count}), what each receiver misses is
exactly what the sender's hub counted as overflowed, and nothing else.
Sizes: C{scale.redis_outage_*} (10 clients x 300 messages, bound 50, at
ci scale; 40 x 2,000, bound 200, at full scale).
"""

from __future__ import annotations

import pytest_twisted

from harness.stress.redis_outage import redis_outage
from harness.stress.result import assert_held
from harness.stress.scale import Scale


@pytest_twisted.ensureDeferred
async def test_a_redis_outage_loses_nothing_within_the_bound_and_the_overflow_past_it(
    scale: Scale, redis_executable: str
) -> None:
    result = await redis_outage(scale, redis_executable)
    assert_held(result)
    n, m = scale.redis_outage_clients, scale.redis_outage_messages
    within, past = result.details["within_bound"], result.details["past_bound"]
    # Within the bound: everything, from everyone, to everyone.
    assert within["must_arrive"] == within["delivered"] == m * n * (n - 1)
    assert within["overflowed"] == [0, 0]
    assert within["same_node_during_outage"] > 0
    # Redis died holding entries B had not read: B got them from A's
    # republishing.
    assert within["recovered"] > 0
    # The kill came mid-stream: deliveries were still in flight.
    assert within["in_flight_at_kill"] > 0
    # Past it: both hubs overflowed, and the receivers missed that, exactly.
    assert all(o > 0 for o in past["overflowed"])
    assert past["not_sent_overflowed"] > 0
    nb, na = n // 2, (n + 1) // 2
    assert past["missing_per_receiver"] == {
        "A": [past["overflowed"][0]],
        "B": [past["overflowed"][1]],
    }
    assert past["not_sent_overflowed"] == (
        past["overflowed"][0] * nb + past["overflowed"][1] * na
    )
