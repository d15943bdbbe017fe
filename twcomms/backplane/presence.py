"""
The queries behind a hub's presence in Redis, under its key prefix:
C{nodes} (a set of node ids), C{node:<id>} (a node's client count, which
expires unless the node refreshes it: a killed node's goes) and C{owner}
(a hash of client id to node id). L{twcomms.backplane.redis.RedisBackplane}
writes them; these read them, from any node.

Thread: the reactor thread only.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from twcomms.backplane.resp import RedisProtocol

__all__ = ["cluster", "owner", "sweep"]


def owner(commands: RedisProtocol, prefix: str, client_id: str) -> Deferred[str | None]:
    """
    The live node that holds C{client_id}, or L{None}: an owner whose
    node key is gone holds nobody.
    """

    def alive(node: bytes | None) -> Deferred[str | None] | None:
        if node is None:
            return None
        name = node.decode("ascii")
        return commands.execute("EXISTS", f"{prefix}node:{name}").addCallback(
            lambda exists: name if exists else None
        )

    return commands.execute("HGET", prefix + "owner", client_id).addCallback(alive)


def cluster(commands: RedisProtocol, prefix: str) -> Deferred[dict[str, int]]:
    """
    The live nodes and their client counts.
    """

    def counts(nodes: list[bytes]) -> Deferred[dict[str, int]] | dict[str, int]:
        names = sorted(n.decode("ascii") for n in nodes)
        if not names:
            return {}
        keys = [f"{prefix}node:{n}" for n in names]
        return commands.execute("MGET", *keys).addCallback(
            lambda values: {
                n: int(v) for n, v in zip(names, values, strict=True) if v is not None
            }
        )

    return commands.execute("SMEMBERS", prefix + "nodes").addCallback(counts)


def sweep(commands: RedisProtocol, prefix: str) -> Deferred[None]:
    """
    Forget the nodes whose presence expired (killed, not stopped) and
    their clients: the C{nodes} set and the C{owner} hash would otherwise
    keep them for good.
    """

    def dead_nodes(nodes: list[bytes]) -> Deferred[Any] | None:
        names = [n.decode("ascii") for n in nodes]
        if not names:
            return None
        keys = [f"{prefix}node:{n}" for n in names]
        d = commands.execute("MGET", *keys)
        return d.addCallback(
            lambda values: {n for n, v in zip(names, values, strict=True) if v is None}
        ).addCallback(forget)

    def forget(dead: set[str]) -> Deferred[Any] | None:
        if not dead:
            return None
        commands.execute("SREM", prefix + "nodes", *sorted(dead))
        owners = commands.execute("HGETALL", prefix + "owner")

        def drop(flat: list[bytes]) -> Deferred[Any] | None:
            gone = [
                flat[i]
                for i in range(0, len(flat), 2)
                if flat[i + 1].decode("ascii", "replace") in dead
            ]
            if not gone:
                return None
            return commands.execute("HDEL", prefix + "owner", *gone)

        return owners.addCallback(drop)

    d = commands.execute("SMEMBERS", prefix + "nodes").addCallback(dead_nodes)
    return d.addCallback(lambda _: None)
