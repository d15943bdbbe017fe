"""
The option section of several hubs acting as one (L{ClusterOptions}):
where their backplane is and what they are called. The threaded C{Server},
C{twistd comms} and C{twcomms serve} take it; a Twisted program gives its
factory the backplane itself (C{registry=RedisBackplane(...)}).

Thread: plain values; any thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from twcomms.options.spec import (
    check_int,
    check_timeout,
    option,
    read_flag,
    read_seconds,
    read_whole,
    set_field,
)

__all__ = ["ClusterOptions"]

_HUB = re.compile(r"[\w\-.]{1,64}")


def _read_text(text: str) -> str:
    return text


def _read_optional(text: str) -> str | None:
    return None if text.lower() == "none" else text


@dataclass(frozen=True)
class ClusterOptions:
    """
    Options of a hub that is one of several (a backplane).
    """

    section: ClassVar[str] = "cluster"

    backplane: str | None = option(
        None,
        "redis://[:PASSWORD@]HOST:PORT/DB: act as one hub with every node on "
        "that Redis with the same hub name; broadcasts, rooms and sends by id "
        "cross nodes. None: this process alone.",
        _read_optional,
        metavar="URL",
    )
    hub: str = option(
        "twcomms",
        "The name of the hub the nodes on one backplane share (one Redis can "
        "carry several hubs).",
        _read_text,
        metavar="NAME",
    )
    presence_ttl: float = option(
        15.0,
        "Seconds after which a node that stopped refreshing its presence (a "
        "crashed node) no longer owns its clients (sends to them fail).",
        read_seconds,
        metavar="SECONDS",
    )
    require_backplane: bool = option(
        False,
        "Refuse to start when the backplane's Redis does not answer within 5 s. "
        "No (default): start anyway, serve this node's clients, and join the "
        "others once Redis answers.",
        read_flag,
        metavar="YES|NO",
    )
    outage_max_count: int = option(
        100_000,
        "While the backplane's Redis is away (or slow to confirm), keep up to "
        "this many messages for the other nodes, and send them, in order, once "
        "it is back; past it (or outage_max_bytes), what is published reaches "
        "this node's clients only and is counted as overflowed.",
        read_whole,
        metavar="COUNT",
    )
    outage_max_bytes: int = option(
        256 * 1024 * 1024,
        "The same bound in bytes of payload (one message is always kept, "
        "whatever its size). The messages Redis confirmed last "
        "are kept within the same bounds, to send again if Redis restarts empty.",
        read_whole,
        metavar="BYTES",
    )
    history_length: int = option(
        100_000,
        "Messages each of the hub's Redis streams keeps (about: trimmed with "
        "MAXLEN ~), so a node cut off from Redis for a while reads what it "
        "missed when it is back. Redis memory: about this many times the mean "
        "message size (messages over 1 MiB are stored apart, for 60 s).",
        read_whole,
        metavar="COUNT",
    )
    redis_password_env: str | None = option(
        None,
        "Read the backplane's Redis password from this environment variable "
        "(then it is in no process list or log).",
        _read_optional,
        metavar="NAME",
    )
    redis_password_file: str | None = option(
        None,
        "Read the backplane's Redis password from the first line of this file.",
        _read_optional,
        metavar="PATH",
    )

    def __post_init__(self) -> None:
        if self.backplane is not None and not isinstance(self.backplane, str):
            raise TypeError("backplane must be a redis:// URL or None")
        if not isinstance(self.hub, str) or not _HUB.fullmatch(self.hub):
            raise ValueError(
                f"hub must be 1 to 64 letters, digits, '-', '_' or '.', not "
                f"{self.hub!r}"
            )
        if not isinstance(self.require_backplane, bool):
            raise TypeError("require_backplane must be True or False")
        check_int("outage_max_count", self.outage_max_count, 0)
        check_int("outage_max_bytes", self.outage_max_bytes, 0)
        check_int("history_length", self.history_length, 1)
        ttl = check_timeout("presence_ttl", self.presence_ttl)
        if ttl is None:
            raise ValueError("presence_ttl must be a positive number of seconds")
        set_field(self, "presence_ttl", ttl)
