"""
A small Redis client for Twisted: L{RedisProtocol} speaks RESP over one
connection -- commands pipelined, each answered by a L{Deferred} in order
-- and, once subscribed, hands published messages to a callback.

Why not txredisapi: its subscriber keeps no channel list and never
resubscribes after a reconnect, its TLS does not verify certificates, it
parses no URLs, and its reply path concatenates buffers and schedules a
C{callLater(0)} per reply. This one parses with C{hiredis}'s reader (C,
the parser redis-py uses) and fires each reply's Deferred as it is parsed.
Reconnection is the caller's (L{twcomms.backplane.redis.RedisBackplane}
uses Twisted's C{ClientService}).

Thread: the reactor thread only.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twcomms.errors import RedisError

__all__ = ["RedisError", "RedisProtocol", "command_prefix", "encode_command"]

_log = Logger()


def encode_command(args: tuple[Any, ...]) -> list[bytes]:
    """
    The RESP encoding of one command, as parts to write (a large argument
    is not copied).
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        elif isinstance(arg, float):
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return parts


def command_prefix(*args: Any) -> bytes:
    """
    The RESP encoding of a command's first arguments, for a command of one
    argument more (see L{RedisProtocol.send_last}): made once, so a command
    sent per message encodes only its last argument.
    """
    parts = encode_command(args)
    parts[0] = b"*%d\r\n" % (len(args) + 1)
    return b"".join(parts)


class RedisProtocol(Protocol):
    """
    One connection to Redis.

    @ivar on_message: called with C{(channel, data)} for each message
        published to a channel this connection subscribed to (bytes).
    @ivar on_lost: called with the failure when the connection is lost.
    """

    def __init__(
        self,
        on_message: Callable[[bytes, bytes], object] | None = None,
        on_lost: Callable[[Failure], object] | None = None,
    ) -> None:
        import hiredis  # the twcomms[redis] extra

        self._reader = hiredis.Reader(replyError=RedisError)
        # Per command in flight: its Deferred, a plain callable (send()'s
        # then), or None (nobody waits for it).
        self._waiting: collections.deque[Any] = collections.deque()
        self.on_message = on_message
        self.on_lost = on_lost
        self.connected = False
        self._subscribed = False
        self._confirming = 0

    def connectionMade(self) -> None:
        self.connected = True
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

    def execute(self, *args: Any) -> Deferred[Any]:
        """
        Send one command; a L{Deferred} for its reply (bytes, int, list,
        L{None}), failing with L{RedisError}.
        """
        if not self.connected:
            return fail(RedisError("not connected to Redis"))
        if self._subscribed and args[0] != "PING":
            # (Its replies could not be told from the subscription's.)
            return fail(RedisError("a subscribed connection runs no commands"))
        d: Deferred[Any] = Deferred()
        # Written first: a command that cannot be encoded or written must
        # not leave a waiter behind, or every reply after it would go to
        # the command before.
        self._write(encode_command(args))
        self._waiting.append(d)
        return d

    def send(self, *args: Any, then: Callable[[Any], object] | None = None) -> bool:
        """
        Send one command without a L{Deferred} for its reply (an XADD per
        message: measured, a Deferred each was 9% of a publishing node's
        time): C{then}, if given, is called with the reply (or the
        L{RedisError}) -- else an error reply is logged. C{False} if not
        connected (nothing sent).
        """
        if not self.connected or self._subscribed:
            return False
        self._write(encode_command(args))
        self._waiting.append(then)
        return True

    def send_last(
        self, prefix: bytes, last: bytes, then: Callable[[Any], object] | None = None
    ) -> bool:
        """
        L{send} the command L{command_prefix} made C{prefix} of, with
        C{last} as its last argument (an XADD per message: measured, its
        nine arguments encoded each time were 12% of a publishing node's
        time, and written as a sequence, 20%).
        """
        if not self.connected or self._subscribed:
            return False
        head = b"%s$%d\r\n" % (prefix, len(last))
        if len(last) <= 16 * 1024:
            self.transport.write(head + last + b"\r\n")  # type: ignore[union-attr]
        else:
            self.transport.writeSequence((head, last, b"\r\n"))  # type: ignore[union-attr]
        self._waiting.append(then)
        return True

    def _write(self, parts: list[bytes]) -> None:
        # A small command as one write: Twisted's writeSequence handles
        # its parts one by one (measured: 9% of a publishing node's time).
        if sum(len(p) for p in parts) <= 16 * 1024:
            self.transport.write(b"".join(parts))  # type: ignore[union-attr]
        else:
            self.transport.writeSequence(parts)  # type: ignore[union-attr]

    def subscribe(self, *channels: str) -> Deferred[None]:
        """
        Subscribe to C{channels}: their messages go to L{on_message}. A
        subscribed connection runs no other commands, as Redis requires.
        The L{Deferred} fires once Redis has confirmed every channel: from
        then on, nothing published to them is missed.

        @raise RedisError: commands are still waiting for replies (their
            replies could not be told from the subscription's).
        """
        if self._waiting:
            raise RedisError("subscribe() on a connection with commands in flight")
        self._subscribed = True
        self._confirming = len(channels)
        self._confirmed: Deferred[None] = Deferred()
        self.transport.writeSequence(  # type: ignore[union-attr]
            encode_command(("SUBSCRIBE", *channels))
        )
        return self._confirmed

    def dataReceived(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if self._subscribed and type(reply) is list and reply:
                kind = reply[0]
                if kind == b"message":
                    if self.on_message is not None:
                        self.on_message(reply[1], reply[2])
                    continue
                if kind == b"subscribe":
                    self._confirming -= 1
                    if self._confirming == 0:
                        self._confirmed.callback(None)
                    continue
                if kind == b"unsubscribe":
                    continue
            if not waiting:
                continue  # an answer nobody waits for (a PING's pong)
            d = waiting.popleft()
            if d is None:
                if isinstance(reply, RedisError):
                    _log.warn("Redis: {error}", error=reply)
            elif type(d) is not Deferred:
                d(reply)
            elif isinstance(reply, RedisError):
                d.errback(reply)
            else:
                d.callback(reply)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.connected = False
        waiting, self._waiting = self._waiting, collections.deque()
        error = RedisError(
            f"the connection to Redis was lost: {reason.getErrorMessage()}"
        )
        for d in waiting:
            if type(d) is Deferred:
                d.errback(error)
        if self.on_lost is not None:
            self.on_lost(reason)
