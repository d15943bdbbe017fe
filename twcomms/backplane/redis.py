"""
L{RedisBackplane}: hubs on several machines act as one through Redis.

Messages travel on a Redis Stream, not pub/sub: a node appends (XADD) to
C{twcomms:<hub>:all} what it broadcasts and what it sends to a client of
another node (one stream, so one publisher's messages keep their order
whoever they are for), and every node reads it from its own offset
(XREAD BLOCK), so a node cut off for a while -- a network blip, or Redis
closing its connection at an output-buffer limit, which for a pub/sub
subscriber silently loses everything pushed meanwhile -- reads on from
where it was, and loses only what the stream trimmed (C{history_length}
entries are kept), counted as a gap. Nothing is pushed at a node faster
than it reads. An epoch key tells a Redis that restarted empty: then the
readers start the new streams from their beginning, every node registers
its presence and clients again, and republishes what Redis had confirmed
lately (L{twcomms.backplane.outbox}); receivers drop repeats by sequence
number. See C{docs/scaling.md} for what is guaranteed.

Two connections per node, each kept up by Twisted's C{ClientService}
(back-off with jitter): one publishes and runs commands, one reads.
Presence: C{twcomms:<hub>:node:<node>} holds the node's
client count and expires C{presence_ttl} seconds after its last refresh
(every third of that), so a node killed with SIGKILL stops owning its
clients within C{presence_ttl} seconds; C{twcomms:<hub>:owner} maps a
client id to its node, and an owner whose node key is gone holds nobody.

Thread: the reactor thread only.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twcomms.backplane import presence
from twcomms.backplane.base import LARGE_ABOVE, Backplane
from twcomms.backplane.reader import StreamReader
from twcomms.backplane.resp import RedisError, RedisProtocol, command_prefix
from twcomms.backplane.url import RedisURL, parse_url
from twcomms.connection.events import when_fired
from twcomms.connection.timers import cancel_call, default_reactor
from twcomms.options import ClusterOptions, ServerOptions
from twcomms.server import ClientHandle
from twcomms.server.pacing import when_drained

__all__ = ["RedisBackplane"]

_log = Logger()

_DEFAULTS = ClusterOptions()
_SERVER = ServerOptions()

#: Large payloads are stored in pieces of this size: Redis refuses a value
#: over proto-max-bulk-len (512 MB by default).
_CHUNK = 64 * 1024 * 1024


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
        outage_max_count: int = _DEFAULTS.outage_max_count,
        outage_max_bytes: int = _DEFAULTS.outage_max_bytes,
        history_length: int = _DEFAULTS.history_length,
        read_count: int = 1000,
        drain_high_water: int = _SERVER.drain_high_water,
        drain_low_water: int = _SERVER.drain_low_water,
    ) -> None:
        """
        @param connect_timeout: seconds L{start} waits for Redis.
        @param required: if Redis is not reachable by then, L{start} fails
            (the server does not start); by default the node starts anyway,
            serves its own clients, and joins the others once Redis answers
            (it keeps trying, with back-off).
        @param outage_max_count: see L{ClusterOptions}, as the two below.
        @param read_count: stream entries read at once, at most.
        @param drain_high_water: once a batch read from Redis leaves more
            than this many bytes waiting for one of this node's clients,
            the next read waits until each is under C{drain_low_water} (or
            was dropped as stalled): the node reads at its healthy
            clients' pace, as a broadcasting loop does (L{ServerOptions}).
        """
        self._prefix = f"twcomms:{hub}:"
        super().__init__(
            hub,
            large_above=large_above,
            outage_max_count=outage_max_count,
            outage_max_bytes=outage_max_bytes,
        )
        self.url = url if isinstance(url, RedisURL) else parse_url(url)
        self.history_length = history_length
        self.presence_ttl = presence_ttl
        self.blob_ttl = blob_ttl
        self._reactor = reactor
        # The stream every node reads, and this node's reading of it; the
        # epoch the publishing connection last saw.
        self._streams = (self._key("all").encode(),)
        self.reader = StreamReader(
            self._streams,
            self.received,
            self.counters,
            None,
            read_count,
            pace=self._caughtUp,
        )
        self.drain_high_water = drain_high_water
        self.drain_low_water = drain_low_water
        self._writeEpoch: bytes | None = None
        self._outagesAtLoss = -1
        self._confirm = self._xadded
        self._xadd: dict[str, bytes] = {}
        self._commands: RedisProtocol | None = None
        self._services: list[ClientService] = []
        self._refresh: LoopingCall | None = None
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
        Connect (commands and reader) and register this node; fires once
        both connections are up and the reader knows where to start.
        """
        self.reader.clock = self.reactor
        commands = self._service(self._commandsUp, self._commandsLost)
        reader = self._service(self._readerUp, self._readerLost)
        self._refresh = LoopingCall(self._refreshed)
        self._refresh.clock = self.reactor
        ready: Deferred[Any] = commands.whenConnected().addCallback(
            lambda _: reader.whenConnected()
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
        Fires once Redis has confirmed everything this node published
        before the call, and this node has read every entry its streams
        held then -- its own included, so every node reading has been
        offered them too -- and, while the node stops, once it has
        stopped. At once if Redis is away. For tests and orderly
        hand-overs.
        """
        if self._stopping is not None:
            return when_fired(self._stopping)
        starting = self._starting
        if starting is not None and not starting.called:
            return when_fired(starting).addCallback(lambda _: self.sync())
        commands = self._commands
        if commands is None or not commands.connected or not self._linked:
            return succeed(None)
        # Redis answers in order: once the PING is answered, every XADD
        # sent before it is in the stream.
        ends = [commands.execute("PING")] + [
            commands.execute("XREVRANGE", key, "+", "-", "COUNT", 1)
            for key in self._streams
        ]

        def wait(replies: list[Any]) -> Deferred[None]:
            return self.reader.reached(
                {
                    key: last[0][0]
                    for key, last in zip(self._streams, replies[1:], strict=True)
                    if last
                }
            )

        return gatherResults(ends, consumeErrors=True).addCallback(wait)

    def pause_reading(self) -> Deferred[None]:
        """
        Read nothing more from the other nodes until L{resume_reading}
        (what they publish waits in Redis, within C{history_length}); fires
        once no read is in flight.
        """
        idle = self.reader.pause()
        blocked, commands = self.reader.blocked, self._commands
        if blocked is not None and commands is not None and commands.connected:
            commands.execute("CLIENT", "UNBLOCK", blocked).addErrback(lambda f: None)
        return idle

    def resume_reading(self) -> None:
        self.reader.resume()

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
            services, self._services = self._services, []
            return gatherResults([s.stopService() for s in services])

        return done.addBoth(disconnect).addCallback(lambda _: self.reader.release())

    def _service(self, up: Any, lost: Any) -> ClientService:
        endpoint = self.url.endpoint(self.reactor)
        factory = Factory.forProtocol(RedisProtocol)
        factory.noisy = False  # (a line per reconnection; ours say enough)
        # (Set here: prepareConnection is handed ClientService's proxy of
        # the protocol, which takes no attributes for it.)
        factory.buildProtocol = (  # type: ignore[method-assign]
            lambda addr: RedisProtocol(on_lost=lost)
        )
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

    def _epoch(self, proto: RedisProtocol) -> Deferred[bytes]:
        """
        The epoch of the Redis C{proto} is connected to: a random value
        the first node to connect sets, gone when Redis restarts empty.
        """
        key = self._key("epoch")
        # (Its failure is the GET's too, which the caller gets.)
        proto.execute("SET", key, os.urandom(8).hex(), "NX").addErrback(lambda f: None)
        return proto.execute("GET", key)

    def _commandsUp(self, proto: RedisProtocol) -> Deferred[Any]:
        # ClientService hands the connection out once this fires; until
        # then the node keeps what it publishes (not linked).
        self._commands = proto

        def linked(epoch: bytes) -> None:
            empty = self._writeEpoch is not None and epoch != self._writeEpoch
            self._writeEpoch = epoch
            self._register()
            self.link_up(restarted_empty=empty)

        return (
            self._login(proto)
            .addCallback(lambda _: self._epoch(proto))
            .addCallback(linked)
        )

    def _commandsLost(self, reason: Any) -> None:
        if self._stopping is None:
            self.link_lost(reason.getErrorMessage())

    def _readerUp(self, proto: RedisProtocol) -> Deferred[Any]:
        # ClientService hands the connection out once this fires: once the
        # offsets are placed, nothing appended after it is missed.
        # Only the reader's connection was lost, Redis up all along: Redis
        # cut it off.
        cut = self._linked and self.counters["outages"] == self._outagesAtLoss
        d = self._login(proto).addCallback(lambda _: self._epoch(proto))
        return d.addCallback(lambda epoch: self.reader.connected(proto, epoch, cut))

    def _readerLost(self, reason: Any) -> None:
        self._outagesAtLoss = self.counters["outages"]

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

    def _register(self) -> None:
        """
        This node's presence and the owner of each of its clients, again:
        after Redis restarted empty, else L{send_to} from another node
        would call live clients gone.
        """
        self._announce()
        ids = [c.id for c in self]
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            pairs = [x for client_id in chunk for x in (client_id, self.node)]
            self._run("HSET", self._key("owner"), *pairs)

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
        d = presence.sweep(commands, self._prefix)
        d.addErrback(lambda f: _log.warn("backplane sweep: {e}", e=f.value))
        return d

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
        return presence.owner(commands, self._prefix, client_id)

    def cluster(self) -> Deferred[dict[str, int]]:
        """
        The live nodes of this hub and their client counts (from any node).
        """
        commands = self._commands
        if commands is None or not commands.connected:
            return succeed({self.node: len(self)})
        return presence.cluster(commands, self._prefix)

    # -- Backplane ------------------------------------------------------------

    def publish(self, channel: str, data: bytes) -> bool:
        commands = self._commands
        if commands is None:
            return False
        prefix = self._xadd.get(channel)
        if prefix is None:
            prefix = self._xadd[channel] = command_prefix(
                "XADD", self._key(channel), "MAXLEN", "~", self.history_length, "*", "d"
            )
        return commands.send_last(prefix, data, then=self._confirm)

    def _xadded(self, reply: Any) -> None:
        if isinstance(reply, RedisError):
            self.confirmed(reply)
        else:
            self.confirmed(origin=(self._writeEpoch or b"") + b"/" + reply)

    def was_reading_at(self, origin: bytes) -> bool:
        return self.reader.was_reading_at(origin)

    def _caughtUp(self) -> Deferred[None]:
        writers = [
            h.protocol.writer
            for h in self
            if h.protocol is not None and h.protocol.writer is not None
        ]
        return when_drained(writers, self.drain_high_water, self.drain_low_water)

    def store(self, name: str, data: bytes) -> bytes:
        # In pieces of _CHUNK bytes. (Each piece is a copy: Twisted's
        # transports take bytes only, not memoryviews.)
        ms = int(self.blob_ttl * 1000)
        if len(data) <= _CHUNK:
            self._run("SET", self._key(name), data, "PX", ms)
            return name.encode("ascii")
        pieces = range(0, len(data), _CHUNK)
        for i, start in enumerate(pieces):
            piece = data[start : start + _CHUNK]
            self._run("SET", self._key(f"{name}:{i}"), piece, "PX", ms)
        return f"{name}#{len(pieces)}".encode("ascii")

    def fetch(self, reference: bytes) -> Deferred[bytes | None]:
        name, _, count = reference.decode("ascii", "replace").partition("#")
        if not count:
            d = self._run("GET", self._key(name))
            return d if d is not None else succeed(None)
        gets = []
        for i in range(int(count) if count.isdigit() else 0):
            d = self._run("GET", self._key(f"{name}:{i}"))
            if d is None:
                return succeed(None)
            gets.append(d)

        def joined(pieces: list[bytes | None]) -> bytes | None:
            if not pieces or any(p is None for p in pieces):
                return None
            return b"".join(pieces)  # type: ignore[arg-type]

        return gatherResults(gets, consumeErrors=True).addCallback(joined)
