"""
L{RedisBackplane}: hubs on several machines act as one through Redis.

Two connections per node, each kept up by Twisted's C{ClientService}
(back-off with jitter): one publishes and runs commands, one subscribes
to C{twcomms:<hub>:all} and C{twcomms:<hub>:to:<node>} (again after every
reconnection). Presence: C{twcomms:<hub>:node:<node>} holds the node's
client count and expires C{presence_ttl} seconds after its last refresh
(every third of that), so a node killed with SIGKILL stops owning its
clients within C{presence_ttl} seconds; C{twcomms:<hub>:owner} maps a
client id to its node, and an owner whose node key is gone holds nobody.

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twcomms.backplane.base import LARGE_ABOVE, Backplane
from twcomms.backplane.resp import RedisError, RedisProtocol
from twcomms.backplane.url import RedisURL, parse_url
from twcomms.connection.timers import cancel_call, default_reactor
from twcomms.server import ClientHandle

__all__ = ["RedisBackplane"]

_log = Logger()


class RedisBackplane(Backplane):
    """
    A L{Backplane} on Redis.

        hub = RedisBackplane("redis://10.0.0.5:6379/0", hub="lab")
        server = CommsServerFactory(registry=hub)
    """

    def __init__(
        self,
        url: str | RedisURL = "redis://127.0.0.1:6379/0",
        hub: str = "twcomms",
        *,
        reactor: Any = None,
        presence_ttl: float = 15.0,
        blob_ttl: float = 60.0,
        large_above: int = LARGE_ABOVE,
        connect_timeout: float = 5.0,
        required: bool = False,
    ) -> None:
        """
        @param connect_timeout: seconds L{start} waits for Redis.
        @param required: if Redis is not reachable by then, L{start} fails
            (the server does not start); by default the node starts anyway,
            serves its own clients, and joins the others once Redis answers
            (it keeps trying, with back-off).
        """
        super().__init__(hub, large_above=large_above)
        self.url = url if isinstance(url, RedisURL) else parse_url(url)
        self.presence_ttl = presence_ttl
        self.blob_ttl = blob_ttl
        self._reactor = reactor
        self._prefix = f"twcomms:{hub}:"
        self._commands: RedisProtocol | None = None
        self._services: list[ClientService] = []
        self._refresh: LoopingCall | None = None
        self._subscriber: RedisProtocol | None = None
        self._refreshes = 0
        self._starting: Deferred[None] | None = None
        self._stopping: Deferred[None] | None = None
        self.connect_timeout = connect_timeout
        self.required = required

    def __repr__(self) -> str:
        return f"<RedisBackplane {self.url!r} hub={self.hub!r} node={self.node}>"

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            self._reactor = default_reactor()
        return self._reactor

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Connect (commands and subscriber) and register this node; fires once
        both connections are up and subscribed.
        """
        commands = self._service(self._commandsUp)
        subscriber = self._service(self._subscriberUp, subscribe=True)
        self._refresh = LoopingCall(self._refreshed)
        self._refresh.clock = self.reactor
        ready: Deferred[Any] = commands.whenConnected().addCallback(
            lambda _: subscriber.whenConnected()
        )

        def up(_: object) -> None:
            assert self._refresh is not None
            self._refresh.start(self.presence_ttl / 3, now=True)
            _log.info(
                "backplane: node {node} of hub {hub} on {url}",
                node=self.node,
                hub=self.hub,
                url=repr(self.url),
            )

        ready.addCallback(up)
        started: Deferred[None] = Deferred()

        def connected(_: object) -> None:
            cancel_call(timer)
            if not started.called:
                started.callback(None)

        def late() -> None:
            if started.called:
                return
            if self.required:
                started.errback(
                    RedisError(
                        f"Redis at {self.url!r} did not answer within "
                        f"{self.connect_timeout} s (the backplane is required)"
                    )
                )
                return
            _log.warn(
                "backplane: Redis at {url} does not answer yet; serving this "
                "node's clients alone, and joining the others once it does",
                url=repr(self.url),
            )
            started.callback(None)

        timer = self.reactor.callLater(self.connect_timeout, late)
        ready.addCallback(connected)
        self._starting = started
        return started

    def sync(self) -> Deferred[None]:
        """
        Fires once everything this node published before the call has come
        back through its own subscription -- so every node subscribed then
        has had it too -- and, while the node stops, once it has stopped.
        (A PING on each connection: Redis answers commands in order, and
        pushes a PUBLISH to subscribers before answering the next
        command.) For tests and orderly hand-overs.
        """
        if self._stopping is not None:
            return _after(self._stopping)
        starting = self._starting
        if starting is not None and not starting.called:
            return _after(starting).addCallback(lambda _: self.sync())
        commands, subscriber = self._commands, self._subscriber
        if commands is None or not commands.connected:
            return succeed(None)
        pinged = commands.execute("PING")
        if subscriber is not None and subscriber.connected:
            pinged.addCallback(lambda _: subscriber.execute("PING"))
        return pinged.addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        self._stopping = self._stop()
        return self._stopping

    def _stop(self) -> Deferred[None]:
        if self._refresh is not None and self._refresh.running:
            self._refresh.stop()
        done: Deferred[Any] = succeed(None)
        commands = self._commands
        if commands is not None and commands.connected:
            ids = [c.id for c in self]
            done = commands.execute("DEL", self._key("node:" + self.node))
            if ids:
                commands.execute("HDEL", self._key("owner"), *ids)
            commands.execute("SREM", self._key("nodes"), self.node)

        def disconnect(_: object) -> Deferred[Any]:
            from twisted.internet.defer import gatherResults

            services, self._services = self._services, []
            return gatherResults([s.stopService() for s in services])

        return done.addBoth(disconnect).addCallback(lambda _: None)

    def _service(self, up: Any, subscribe: bool = False) -> ClientService:
        endpoint = self.url.endpoint(self.reactor)

        def build(addr: object) -> RedisProtocol:
            proto = RedisProtocol(self._message if subscribe else None)
            return proto

        factory = Factory.forProtocol(RedisProtocol)
        factory.buildProtocol = build  # type: ignore[method-assign]
        service = ClientService(
            endpoint, factory, clock=self.reactor, prepareConnection=up
        )
        service.startService()
        self._services.append(service)
        return service

    def _login(self, proto: RedisProtocol) -> Deferred[Any]:
        """
        AUTH and SELECT, as the URL says; fires once Redis has answered.
        """
        url = self.url
        done: Deferred[Any] = succeed(None)
        if url.password is not None:
            auth = ("AUTH", url.username) if url.username else ("AUTH",)
            done = proto.execute(*auth, url.password)
            # (The password is in no log line: only Redis's answer is.)
            done.addErrback(
                lambda f: _log.error("Redis refused the password: {e}", e=f.value)
            )
        if url.db:
            done = proto.execute("SELECT", url.db)
        return done

    def _commandsUp(self, proto: RedisProtocol) -> Deferred[Any]:
        self._commands = proto
        return self._login(proto)

    def _subscriberUp(self, proto: RedisProtocol) -> Deferred[Any]:
        # ClientService hands the connection out once this fires: once
        # Redis has confirmed the subscriptions, nothing published is missed.
        channels = (self._key("all"), self._key("to:" + self.node))
        self._subscriber = proto
        login = self._login(proto)
        return login.addCallback(lambda _: proto.subscribe(*channels))

    def _message(self, channel: bytes, data: bytes) -> None:
        self.received(data)

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _run(self, *args: Any) -> Deferred[Any] | None:
        commands = self._commands
        if commands is None or not commands.connected:
            return None
        d = commands.execute(*args)
        d.addErrback(lambda f: _log.warn("Redis: {error}", error=f.value))
        return d

    # -- presence -------------------------------------------------------------

    def _announce(self) -> None:
        ttl_ms = int(self.presence_ttl * 1000)
        self._run("SET", self._key("node:" + self.node), len(self), "PX", ttl_ms)
        self._run("SADD", self._key("nodes"), self.node)

    def _refreshed(self) -> None:
        # Every presence_ttl / 3 seconds; once a presence_ttl, a sweep.
        self._announce()
        self._refreshes += 1
        if self._refreshes % 3 == 0:
            self.sweep()

    def sweep(self) -> Deferred[None]:
        """
        Forget the nodes whose presence expired (killed, not stopped) and
        their clients: the C{nodes} set and the C{owner} hash would
        otherwise keep them for good. Any live node sweeps, once per
        C{presence_ttl}.
        """
        commands = self._commands
        if commands is None or not commands.connected:
            return succeed(None)

        def dead_nodes(nodes: list[bytes]) -> Deferred[Any] | None:
            names = [n.decode("ascii") for n in nodes]
            if not names:
                return None
            keys = [self._key("node:" + n) for n in names]
            d = commands.execute("MGET", *keys)
            return d.addCallback(
                lambda values: {
                    n for n, v in zip(names, values, strict=True) if v is None
                }
            ).addCallback(forget)

        def forget(dead: set[str]) -> Deferred[Any] | None:
            if not dead:
                return None
            commands.execute("SREM", self._key("nodes"), *sorted(dead))
            owners = commands.execute("HGETALL", self._key("owner"))

            def drop(flat: list[bytes]) -> Deferred[Any] | None:
                gone = [
                    flat[i]
                    for i in range(0, len(flat), 2)
                    if flat[i + 1].decode("ascii", "replace") in dead
                ]
                if not gone:
                    return None
                return commands.execute("HDEL", self._key("owner"), *gone)

            return owners.addCallback(drop)

        d = commands.execute("SMEMBERS", self._key("nodes")).addCallback(dead_nodes)
        d.addErrback(lambda f: _log.warn("backplane sweep: {e}", e=f.value))
        return d.addCallback(lambda _: None)

    def add(self, client: ClientHandle) -> None:
        super().add(client)
        self._run("HSET", self._key("owner"), client.id, self.node)
        self._announce()  # the cluster view's count, now

    def remove(self, client: ClientHandle) -> None:
        super().remove(client)
        self._run("HDEL", self._key("owner"), client.id)
        self._announce()

    def owner(self, client_id: str) -> Deferred[str | None]:
        commands = self._commands
        if commands is None or not commands.connected:
            return succeed(None)

        def alive(node: bytes | None) -> Deferred[str | None] | None:
            if node is None:
                return None
            name = node.decode("ascii")
            return commands.execute("EXISTS", self._key("node:" + name)).addCallback(
                lambda exists: name if exists else None
            )

        return commands.execute("HGET", self._key("owner"), client_id).addCallback(
            alive
        )

    def cluster(self) -> Deferred[dict[str, int]]:
        """
        The live nodes of this hub and their client counts (from any node).
        """
        commands = self._commands
        if commands is None or not commands.connected:
            return succeed({self.node: len(self)})

        def counts(nodes: list[bytes]) -> Deferred[dict[str, int]] | dict[str, int]:
            names = sorted(n.decode("ascii") for n in nodes)
            if not names:
                return {}
            keys = [self._key("node:" + n) for n in names]
            return commands.execute("MGET", *keys).addCallback(
                lambda values: {
                    n: int(v)
                    for n, v in zip(names, values, strict=True)
                    if v is not None
                }
            )

        return commands.execute("SMEMBERS", self._key("nodes")).addCallback(counts)

    # -- Backplane ------------------------------------------------------------

    def publish(self, channel: str, data: bytes) -> None:
        commands = self._commands
        if commands is None or not commands.send("PUBLISH", self._key(channel), data):
            _log.warn("backplane: Redis is not connected; a message was not relayed")

    def store(self, key: str, data: bytes) -> None:
        self._run("SET", self._key(key), data, "PX", int(self.blob_ttl * 1000))

    def fetch(self, key: str) -> Deferred[bytes | None]:
        d = self._run("GET", self._key(key))
        return d if d is not None else succeed(None)


def _after(d: Deferred[Any]) -> Deferred[None]:
    """
    A new Deferred that fires (with None) when C{d} does, leaving C{d}'s
    own result to its other callbacks.
    """
    after: Deferred[None] = Deferred()

    def fired(result: object) -> object:
        after.callback(None)
        return result

    d.addBoth(fired)
    return after
