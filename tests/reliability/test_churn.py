"""
Churn: thousands of connect/disconnect cycles (clean stops, aborts, server
closes, frames cut off, oversized headers, silent peers) leak nothing: file
descriptors (/proc/self/fd), threads, server clients and connections,
reactor readers/writers/delayed calls, memory (tracemalloc growth under
512 KiB after a warm-up).

It runs in a fresh process (C{python -m harness.stress churn}):
under pytest-twisted nobody begins Twisted logging, so Twisted keeps every
log event in memory (up to 65,536), which would read as a leak. The
threaded API's churn is in C{threaded/test_churn.py}.
"""

from __future__ import annotations

import pytest_twisted

from harness.stress.processes import DriverProcess, kill_all
from harness.stress.result import Result, assert_held
from harness.stress.scale import Scale


@pytest_twisted.ensureDeferred
async def test_churn_leaks_nothing(scale: Scale) -> None:
    proc = DriverProcess(["-m", "harness.stress", "churn", "--scale", scale.name])
    try:
        event = await proc.wait_event("RESULT", 60 + scale.churn_cycles / 50)
    finally:
        await kill_all([proc])
    result = Result.from_json(event["result"])
    assert_held(result)
    assert result.details["memory_growth"] <= 512 * 1024
    fds0, fds1 = result.details["fds"]
    assert fds1 <= fds0
