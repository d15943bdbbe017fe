"""
The option sections of the negotiated extensions (C{docs/protocol.md},
"Extensions"): what both ends use (L{ExtensionOptions}), what a client asks
for (L{HelloOptions}) and what a server accepts (L{AccessOptions}).

Thread: plain values; any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from twcomms.options.spec import (
    check_int,
    check_timeout,
    option,
    read_flag,
    read_timeout,
    read_whole,
    set_field,
)

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "MIN_HEARTBEAT_INTERVAL",
    "AccessOptions",
    "ExtensionOptions",
    "HelloOptions",
]

#: Engine.IO's defaults (pingInterval 25 s, pingTimeout 20 s): a ping every
#: 25 s costs a few bytes per client and keeps NAT and proxy idle timers
#: (often 30-60 s) from dropping a quiet connection; a peer silent for 45 s
#: is gone, where TCP keepalive would take two hours to say so.
DEFAULT_HEARTBEAT_INTERVAL = 25.0
DEFAULT_HEARTBEAT_TIMEOUT = 20.0
#: The shortest heartbeat interval a server grants: a client cannot make a
#: server ping it more than once a second.
MIN_HEARTBEAT_INTERVAL = 1.0


def _read_extensions(text: str) -> bool | str:
    if text.lower() == "prefer":
        return "prefer"
    return read_flag(text)


_read_extensions.choices = ("yes", "no", "prefer")  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ExtensionOptions:
    """
    Options of the extended protocol that both ends use.
    """

    section: ClassVar[str] = "extended"

    heartbeat_interval: float | None = option(
        DEFAULT_HEARTBEAT_INTERVAL,
        "Seconds between heartbeat pings on extended connections (the server "
        "pings; a client asks for this interval in its hello, and gets at "
        "least 1 s). None: no heartbeats.",
        read_timeout,
        metavar="SECONDS",
    )
    heartbeat_timeout: float = option(
        DEFAULT_HEARTBEAT_TIMEOUT,
        "An extended peer silent for heartbeat_interval plus this many "
        "seconds is closed (reason heartbeat timeout); any byte received "
        "counts, and the check waits while we ourselves are not reading.",
        read_timeout,
        metavar="SECONDS",
    )
    request_timeout: float | None = option(
        30.0,
        "Seconds request() waits for a reply by default. None: no limit.",
        read_timeout,
        metavar="SECONDS",
    )
    max_requests_in_flight: int = option(
        256,
        "Requests from one peer being answered at once; more get an error "
        "reply (TooManyRequests) at once.",
        read_whole,
        metavar="N",
    )

    def __post_init__(self) -> None:
        interval = check_timeout("heartbeat_interval", self.heartbeat_interval)
        set_field(self, "heartbeat_interval", interval)
        timeout = check_timeout("heartbeat_timeout", self.heartbeat_timeout)
        if timeout is None:
            raise ValueError("heartbeat_timeout must be a positive number of seconds")
        set_field(self, "heartbeat_timeout", timeout)
        set_field(
            self,
            "request_timeout",
            check_timeout("request_timeout", self.request_timeout),
        )
        check_int("max_requests_in_flight", self.max_requests_in_flight, 1)


@dataclass(frozen=True)
class HelloOptions:
    """
    Options of a client asking for the extended protocol.
    """

    section: ClassVar[str] = "hello"

    extensions: bool | str = option(
        False,
        "Open with a hello asking for the extended protocol (heartbeats, "
        "request/reply, authentication, rooms): yes (fail if the server does "
        "not answer), prefer (fall back to plain, once), or no (plain, "
        "as the original). Only twcomms servers understand the hello.",
        _read_extensions,
        metavar="YES|NO|PREFER",
    )
    extension_timeout: float = option(
        5.0,
        "Seconds to wait for the server's answer to the hello.",
        read_timeout,
        metavar="SECONDS",
    )

    def __post_init__(self) -> None:
        if self.extensions not in (True, False, "prefer"):
            raise ValueError(
                f"extensions must be True, False or 'prefer', not {self.extensions!r}"
            )
        timeout = check_timeout("extension_timeout", self.extension_timeout)
        if timeout is None:
            raise ValueError("extension_timeout must be a positive number of seconds")
        set_field(self, "extension_timeout", timeout)


@dataclass(frozen=True)
class AccessOptions:
    """
    Options of a server for extended clients: whether it recognises a hello,
    and authentication.
    """

    section: ClassVar[str] = "access"

    accept_extensions: bool = option(
        True,
        "Recognise a client's hello and answer it. No: every connection is "
        "plain, and a first message that happens to be a hello is delivered "
        "as a message.",
        read_flag,
        metavar="YES|NO",
    )
    require_auth: bool = option(
        False,
        "Register a connection (broadcasts, on_connect) only once it has "
        "authenticated; plain peers are refused (reason auth failed).",
        read_flag,
        metavar="YES|NO",
    )
    auth_timeout: float = option(
        10.0,
        "With require_auth: seconds a connection has to authenticate "
        "(reason auth timeout).",
        read_timeout,
        metavar="SECONDS",
    )
    auth_max_failures: int = option(
        5,
        "Failed authentications allowed per peer address in "
        "auth_failure_window; beyond, attempts are refused unchecked. (Behind "
        "a proxy every peer has the proxy's address.)",
        read_whole,
        metavar="N",
    )
    auth_failure_window: float = option(
        60.0,
        "Seconds over which auth_max_failures counts.",
        read_timeout,
        metavar="SECONDS",
    )

    def __post_init__(self) -> None:
        for name in ("accept_extensions", "require_auth"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False")
        for name in ("auth_timeout", "auth_failure_window"):
            value = check_timeout(name, getattr(self, name))
            if value is None:
                raise ValueError(f"{name} must be a positive number of seconds")
            set_field(self, name, value)
        check_int("auth_max_failures", self.auth_max_failures, 1)
