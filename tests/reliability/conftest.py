"""
Fixtures shared by the reliability tests (pytest-twisted ones here, and the
threaded API's in C{threaded/}).

C{TWCOMMS_SCALE} (C{ci}, the default, or C{full}) sizes the heavy tests;
see L{harness.stress.scale.SCALES}.

The cross-node scenarios need a real C{redis-server} (L{harness.redis}):
without a binary they skip with a one-line reason, except under CI, where
they fail (L{harness.redis.missing_server_fails}, the rule the backplane
tests follow too).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.procs import raise_fd_limit
from harness.redis import RedisServer
from harness.stress.scale import Scale, current_scale


@pytest.fixture(scope="session", autouse=True)
def open_files_limit() -> int:
    """
    These tests open many sockets: raise the open-files soft limit to the
    hard limit (client processes do the same for themselves).
    """
    return raise_fd_limit()


@pytest.fixture(scope="session")
def scale() -> Scale:
    """
    The scale chosen by C{TWCOMMS_SCALE}.
    """
    return current_scale()


@pytest.fixture(scope="session")
def redis_server(redis_executable: str) -> Iterator[RedisServer]:
    """
    One C{redis-server} for the run, shared: a scenario uses a hub name
    (keys and channels) of its own, and must not stop or kill it. Skips
    the test if there is no binary (fails it under CI).
    """
    server = RedisServer(redis_executable)
    try:
        yield server
    finally:
        server.stop()
