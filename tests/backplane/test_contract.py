"""
The registry contract (L{twcomms.testing.RegistryContract}) against a
L{RedisBackplane} on a real Redis, with another node of the same hub
running as a separate process (C{twcomms serve --backplane}) whose
broadcasts must not disturb it: what the server's clients see is what the
local registry promises. Deliveries cross Redis, so C{settle} waits for a
round trip through it (L{RedisBackplane.sync}), not for a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from harness.redis import RedisServer
from harness.sockets import free_port
from tests.procs import TWCOMMS, Hub, hub
from twcomms.backplane import RedisBackplane
from twcomms.testing import RegistryContract


@pytest.fixture(scope="class")
def other_node(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path_factory: Any
) -> Any:
    """
    A second node of the hub, as its own process, for the whole class.
    """
    name = "k" + os.urandom(4).hex()
    port = free_port()
    argv = [
        TWCOMMS,
        "serve",
        "--port",
        str(port),
        "--interface",
        "127.0.0.1",
        "--backplane",
        redis_server.url,
        "--hub",
        name,
    ]
    cwd: Path = tmp_path_factory.mktemp("node")
    with hub(argv, port, cwd=cwd) as node:
        node.wait_line(r"backplane: node \w+ of hub")
        request.cls.redis_url = redis_server.url
        request.cls.hub_name = name
        request.cls.other = node
        yield node


@pytest.mark.usefixtures("other_node")
class RedisRegistryContract(RegistryContract, SynchronousTestCase):
    redis_url: str
    hub_name: str
    other: Hub

    def make_registry(self) -> RedisBackplane:
        registry = RedisBackplane(self.redis_url, hub=self.hub_name)
        self.addCleanup(lambda: pytest_twisted.blockon(registry.stop()))
        return registry

    def settle(self) -> None:
        # The local deliveries happen in the memory network; what this
        # node published comes back (and is dropped) through Redis on the
        # real reactor. Both, until nothing moves.
        for _ in range(3):
            self.net.flush()
            pytest_twisted.blockon(self.registry.sync())  # type: ignore[attr-defined]
        self.net.flush()
