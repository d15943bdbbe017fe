"""
Churn, threaded API: C{Client} connect / echo / close cycles, four threads
at a time, against one C{Server} (1,000 at ci scale, 5,000 at full). After
a warm-up nothing accumulates: file descriptors, threads, server clients
and connections, traced memory (under 512 KiB of growth over all cycles);
once the server stops, the callback threads end.
"""

from __future__ import annotations

from harness.stress.churn import churn_threaded
from harness.stress.result import assert_held
from harness.stress.scale import Scale


def test_client_churn_leaks_nothing(scale: Scale) -> None:
    result = churn_threaded(scale)
    assert_held(result)
    assert result.details["memory_growth"] <= 512 * 1024
    fds0, fds1 = result.details["fds"]
    assert fds1 <= fds0
