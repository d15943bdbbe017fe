"""
What one node publishes to the others: an L{Envelope} -- who sent it (the
node, and its sequence number), to whom (everyone, a room, one client;
minus some), and the message's payload, or the key a large payload is
stored under. Binary, so a payload crosses as the bytes it is::

    version u8 | kind u8 (| 0x80 stored, | 0x40 replayed) | node 16 bytes | seq u64
    | room: u16 length + UTF-8 | exclude: u16 count + (u8 length + id)...
    | target: u8 length + id | to node: u8 length + id
    | origin: u8 length + bytes | the rest: payload (or a key)

Integers are big-endian.

Thread: pure functions; any thread.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = ["Envelope", "Kind", "decode", "encode"]

VERSION = 2
_HEAD = struct.Struct(">BB16sQ")
_U16 = struct.Struct(">H")


class Kind(enum.IntEnum):
    #: For every client (or every member of the room), but the excluded.
    BROADCAST = 1
    #: For one client (the target).
    DIRECT = 2


@dataclass(frozen=True)
class Envelope:
    """
    @ivar kind: L{Kind}.
    @ivar node: the publishing node's id (32 hex digits).
    @ivar seq: the publisher's sequence number (from 1, per node).
    @ivar room: the room (BROADCAST), or L{None}: everyone.
    @ivar exclude: client ids not to deliver to.
    @ivar target: the client (DIRECT), else C{""}.
    @ivar to_node: the node that holds it (DIRECT), else C{""}: every node
        reads every envelope, in one stream, so that one publisher's
        messages keep their order whoever they are for.
    @ivar payload: the message's payload, or with C{stored} the key it is
        stored under.
    @ivar stored: whether C{payload} is a key (a large payload).
    @ivar replayed: published again after the broker restarted empty.
    @ivar origin: with C{replayed}, where the broker had put it first
        (for Redis, C{epoch/entry id}): a node that never heard its
        publisher delivers it only if it was reading the stream then.
    """

    kind: Kind
    node: str
    seq: int
    payload: bytes
    room: str | None = None
    exclude: frozenset[str] = frozenset()
    target: str = ""
    to_node: str = ""
    stored: bool = False
    replayed: bool = False
    origin: bytes = b""


_STORED = 0x80
_REPLAYED = 0x40
_FLAGS = _STORED | _REPLAYED


def encode(env: Envelope) -> bytes:
    room = env.room.encode("utf-8") if env.room is not None else b""
    parts = [
        _HEAD.pack(
            VERSION,
            env.kind
            | (_STORED if env.stored else 0)
            | (_REPLAYED if env.replayed else 0),
            bytes.fromhex(env.node),
            env.seq,
        ),
        _U16.pack(len(room)),
        room,
        _U16.pack(len(env.exclude)),
    ]
    for client_id in env.exclude:
        raw = client_id.encode("ascii")
        parts.append(bytes((len(raw),)))
        parts.append(raw)
    target = env.target.encode("ascii")
    parts.append(bytes((len(target),)))
    parts.append(target)
    to_node = env.to_node.encode("ascii")
    parts.append(bytes((len(to_node),)))
    parts.append(to_node)
    parts.append(bytes((len(env.origin),)))
    parts.append(env.origin)
    parts.append(env.payload)
    return b"".join(parts)


def decode(data: bytes) -> Envelope:
    """
    @raise ValueError: C{data} is not an envelope this version reads.
    """
    try:
        version, kind, node, seq = _HEAD.unpack_from(data, 0)
        if version != VERSION:
            raise ValueError(f"envelope version {version}, not {VERSION}")
        offset = _HEAD.size
        (n,) = _U16.unpack_from(data, offset)
        offset += 2
        room = data[offset : offset + n].decode("utf-8") if n else None
        offset += n
        (count,) = _U16.unpack_from(data, offset)
        offset += 2
        exclude = set()
        for _ in range(count):
            n = data[offset]
            exclude.add(data[offset + 1 : offset + 1 + n].decode("ascii"))
            offset += 1 + n
        n = data[offset]
        target = data[offset + 1 : offset + 1 + n].decode("ascii")
        offset += 1 + n
        n = data[offset]
        to_node = data[offset + 1 : offset + 1 + n].decode("ascii")
        offset += 1 + n
        n = data[offset]
        origin = data[offset + 1 : offset + 1 + n]
        offset += 1 + n
        if offset > len(data):
            raise ValueError("truncated envelope")
        return Envelope(
            kind=Kind(kind & ~_FLAGS),
            node=node.hex(),
            seq=seq,
            payload=data[offset:],
            room=room,
            exclude=frozenset(exclude),
            target=target,
            to_node=to_node,
            stored=bool(kind & _STORED),
            replayed=bool(kind & _REPLAYED),
            origin=origin,
        )
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"malformed envelope: {e}") from None
