"""
Slow callback, threaded API: a sender process sends ~1 KiB json messages as
fast as TCP allows to a receiver whose callback is slower. The receive
window (C{FlowControl(receive_high_count=200, receive_high_bytes=256 KiB)})
pauses reading, TCP slows the sender; every message is handled once, in
order; the receiver's traced memory (tracemalloc, this process) stays under
L{harness.stress.slow_callback.slow_callback_bound}: twice the window's byte
mark, plus 200 messages at ~2.5 KiB each (payload and decoded value), plus
two 64 KiB socket reads kept while paused, plus 4 MiB: about 5.1 MiB,
whatever the number of messages (20 MiB sent at ci scale, 100 MiB at full).
The messages waiting for the callback never exceed the window by more than
one socket read (64 KiB).
"""

from __future__ import annotations

import pytest

from harness.stress.result import assert_held
from harness.stress.scale import Scale
from harness.stress.slow_callback import (
    SLOW_CB_HIGH_COUNT,
    SLOW_CB_SLACK_COUNT,
    slow_callback,
)


@pytest.mark.parametrize("side", ["server", "client"])
def test_slow_callback_memory_bounded_nothing_lost_in_order(
    scale: Scale, side: str
) -> None:
    result = slow_callback(scale, side)
    assert_held(result)
    assert result.peak_memory is not None and result.memory_bound is not None
    assert result.peak_memory <= result.memory_bound
    assert result.details["pauses"] > 0
    # The window stops reading within one socket read of its mark.
    most = result.details["most_waiting"]["count"]
    assert most <= SLOW_CB_HIGH_COUNT + SLOW_CB_SLACK_COUNT
