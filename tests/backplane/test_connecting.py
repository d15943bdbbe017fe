"""
How a node reaches Redis: over TLS (rediss://, the certificate verified;
unverified only when the URL says verify=none), with a password from the
URL, the environment or a file (never logged), and what it does when Redis
does not answer at start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.logger import globalLogPublisher
from twisted.protocols.portforward import ProxyFactory

from harness.redis import RedisServer
from harness.sockets import free_port
from tests.backplane.test_nodes import bounded, connect, handle_of
from tests.tls_helpers import make_tls_files
from twcomms.backplane import RedisBackplane, parse_url
from twcomms.errors import RedisError
from twcomms.server import CommsServerFactory


@pytest.fixture
def made() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        pytest_twisted.blockon(defer.maybeDeferred(thing.stop))


@pytest.fixture
def log_text() -> Iterator[list[str]]:
    from twisted.logger import formatEvent

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


class _Stoppable:
    def __init__(self, port: Any) -> None:
        self.port = port

    def stop(self) -> Any:
        return self.port.stopListening()


@defer.inlineCallbacks
def tls_proxy(made: list[Any], redis: RedisServer, tmp_path: Path) -> Any:
    """
    A TLS listener on 127.0.0.1 forwarding to the plain Redis (the bundled
    redis-server has no TLS): what a rediss:// URL reaches. Returns the
    port and the CA file to trust.
    """
    files = make_tls_files(str(tmp_path))
    endpoint = serverFromString(reactor, files.ssl_description(free_port()))
    port = yield endpoint.listen(ProxyFactory("127.0.0.1", redis.port))
    made.append(_Stoppable(port))
    return port.getHost().port, files.ca_pem


@defer.inlineCallbacks
def two_nodes(made: list[Any], url: str, **kw: Any) -> Any:
    name = "c" + os.urandom(4).hex()
    servers = []
    for _ in range(2):
        server = CommsServerFactory(registry=RedisBackplane(url, hub=name, **kw))
        port = yield bounded(server.listen(("127.0.0.1", 0)))
        made.insert(0, server)
        servers.append((server, port.getHost().port))
    return servers


@pytest_twisted.inlineCallbacks
def test_rediss_verifies_the_certificate(
    redis_server: RedisServer, tmp_path: Path, made: list[Any]
) -> Any:
    port, ca = yield tls_proxy(made, redis_server, tmp_path)
    (a, _), (_, port_b) = yield two_nodes(made, f"rediss://127.0.0.1:{port}/0?ca={ca}")
    client, inbox = yield connect(made, port_b)
    a.broadcast({"over": "tls"})
    assert (yield inbox.wait(1)) == [{"over": "tls"}]


@pytest_twisted.inlineCallbacks
def test_rediss_refuses_an_untrusted_certificate(
    redis_server: RedisServer, tmp_path: Path, made: list[Any], log_text: list[str]
) -> Any:
    port, _ = yield tls_proxy(made, redis_server, tmp_path)
    other_ca = make_tls_files(str(tmp_path), "other").ca_pem
    backplane = RedisBackplane(
        f"rediss://127.0.0.1:{port}/0?ca={other_ca}",
        hub="untrusted",
        connect_timeout=1.0,
        required=True,
    )
    made.insert(0, backplane)
    with pytest.raises(RedisError, match="did not answer"):
        yield bounded(backplane.start())
    # verify=none, by name, connects -- and says so.
    unverified = RedisBackplane(
        f"rediss://127.0.0.1:{port}/0?verify=none", hub="unverified", required=True
    )
    made.insert(0, unverified)
    yield bounded(unverified.start())
    assert any("WITHOUT verifying" in line for line in log_text)


@pytest_twisted.inlineCallbacks
def test_a_password_from_a_file_or_the_environment_is_never_logged(
    start_redis: Any, tmp_path: Path, made: list[Any], log_text: list[str]
) -> Any:
    secret = "s3cret-" + os.urandom(4).hex()
    redis = start_redis(config=[f"requirepass {secret}"])
    path = tmp_path / "password"
    path.write_text(secret + "\n")
    url = parse_url(redis.url, password_file=str(path))
    (a, _), (_, port_b) = yield two_nodes(made, url)
    client, inbox = yield connect(made, port_b)
    a.broadcast({"with": "auth"})
    assert (yield inbox.wait(1)) == [{"with": "auth"}]
    os.environ["TWCOMMS_TEST_REDIS_PW"] = secret
    try:
        assert (
            parse_url(redis.url, password_env="TWCOMMS_TEST_REDIS_PW").password
            == secret
        )
    finally:
        del os.environ["TWCOMMS_TEST_REDIS_PW"]
    assert secret not in repr(url)
    assert not any(secret in line for line in log_text)


@pytest_twisted.inlineCallbacks
def test_redis_away_at_start(made: list[Any], log_text: list[str]) -> Any:
    """
    Nothing listens on the URL's port: by default the node starts after
    connect_timeout and serves its own clients (and keeps trying); with
    required=True it fails to start.
    """
    url = f"redis://127.0.0.1:{free_port()}/0"
    required = CommsServerFactory(
        registry=RedisBackplane(url, hub="away", connect_timeout=0.5, required=True)
    )
    with pytest.raises(RedisError, match=r"did not answer within 0\.5"):
        yield bounded(required.listen(("127.0.0.1", 0)))
    yield required.clients.stop()
    alone = CommsServerFactory(
        registry=RedisBackplane(url, hub="away", connect_timeout=0.5)
    )
    port = yield bounded(alone.listen(("127.0.0.1", 0)))
    made.insert(0, alone)
    client, inbox = yield connect(made, port.getHost().port)
    alone.broadcast({"local": "still"})
    assert (yield inbox.wait(1)) == [{"local": "still"}]
    assert any("does not answer yet" in line for line in log_text)
    assert handle_of(alone).connected
