"""
Load: clients in separate processes (C{harness/stress/driver.py}), each
sending numbered messages; the server must receive exactly clients x
messages, each client's in order; then it broadcasts and every client must
get every broadcast, in order. Sizes: C{scale.load_*} (100 x 100 at ci
scale, 500 x 1,000 at full scale).
"""

from __future__ import annotations

import pytest_twisted

from harness.stress.load import load
from harness.stress.result import assert_held
from harness.stress.scale import Scale


@pytest_twisted.ensureDeferred
async def test_every_message_once_in_order_both_ways(scale: Scale) -> None:
    result = await load(scale)
    assert_held(result)
    n, m, k = scale.load_clients, scale.load_messages, scale.load_broadcasts
    assert result.sent == n * m + n * k
