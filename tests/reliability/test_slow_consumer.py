"""
Slow consumer: a client that never reads (and one that stops reading) while
the server broadcasts C{scale.slow_consumer_bytes} (256 MiB at ci scale,
1 GiB at full scale) in 1 MiB messages.

The broadcasting loop paces itself only through the library (C{await
server.whenDrained()} after each broadcast); 0 lost for the fast readers.

Bound asserted (L{harness.stress.slow_consumer.slow_consumer_bound}): the
server's traced memory (tracemalloc, in this process, which runs the
server; the readers are in a client process) stays under, per slow client,
twice (outbound limit + Twisted's 64 KiB pause threshold + one frame); per
fast client, twice (the 2 MiB drain high-water mark + 64 KiB + one frame);
twice the frame being built; plus 8 MiB. "Twice" because Twisted joins a
transport's pending writes into one buffer when it writes. With the
scenario's outbound limit of 4 MiB, 2 fast and 2 slow clients, that is
about 42.5 MiB, whatever the total broadcast.

Policy (README, "Flow control"): a client whose queued bytes would pass its
outbound limit, or whose queue makes no progress for C{stall_timeout}, is
closed with reason C{slow consumer} (logged); others are unaffected.
"""

from __future__ import annotations

import pytest_twisted

from harness.stress.result import assert_held
from harness.stress.scale import Scale
from harness.stress.slow_consumer import slow_consumer, slow_consumer_bound


@pytest_twisted.ensureDeferred
async def test_slow_consumers_are_closed_and_memory_stays_bounded(scale: Scale) -> None:
    result = await slow_consumer(scale)
    assert_held(result)
    assert result.memory_bound == slow_consumer_bound(2, 2)
    assert result.peak_memory is not None
    assert result.peak_memory <= result.memory_bound
    # Far less than what went through.
    assert result.peak_memory < scale.slow_consumer_bytes / 4
    assert len(result.details["slow_closed_after_messages"]) == 2
