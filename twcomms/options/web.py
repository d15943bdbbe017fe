"""
The option section of browsers joining a hub (L{WebOptions}): where the
WebSocket gateway listens, whether the main port serves browsers too,
and which pages may connect. The server factory, the threaded C{Server},
C{twistd comms} and C{twcomms serve} take it (L{twcomms.web}).

Thread: plain values; any thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from twcomms.options.spec import check_timeout, option, read_flag, set_field

__all__ = ["WebOptions"]


def _read_endpoint(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _read_origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


def _read_positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"takes seconds, not {text!r}") from None
    if not value > 0:
        raise ValueError(f"must be > 0 seconds, not {text}")
    return value


@dataclass(frozen=True)
class WebOptions:
    """
    Options of the WebSocket gateway (browsers and other WebSocket clients
    as clients of the hub).
    """

    section: ClassVar[str] = "gateway"

    web: str | None = option(
        None,
        "Also listen for browsers on this endpoint (tcp:8080, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem, or a port): the "
        "WebSocket gateway at /ws and the JavaScript client at /twcomms.js. "
        "Needs twcomms[web]. None: no web listener.",
        _read_endpoint,
        metavar="ENDPOINT",
    )
    web_shared: bool = option(
        False,
        "Serve browsers on the main port(s) too: a connection whose first "
        "four bytes are 'GET ' is HTTP (the gateway), any other is a TCP "
        "client. Refused when max_message_size makes 'GET ' a valid header. "
        "Needs twcomms[web].",
        read_flag,
        metavar="YES|NO",
    )
    web_origins: tuple[str, ...] = option(
        (),
        "Origins (scheme://host[:port], comma separated; '*': any) whose "
        "pages may open the gateway. Default: the page's own origin only "
        "(its Origin header names the host it connects to). A client that "
        "sends no Origin (not a browser) is not checked.",
        _read_origins,
        metavar="ORIGINS",
    )
    classify_timeout: float = option(
        0.25,
        "On a shared port: seconds a connection that has sent nothing waits "
        "before it counts as a TCP client (one that only listens); one that "
        "sends is classified by its first four bytes at once. Nothing is "
        "written to a connection before it is classified.",
        _read_positive_seconds,
        metavar="SECONDS",
    )

    dashboard: bool = option(
        False,
        "Serve the live dashboard (clients, rooms, rates, close reasons, the "
        "backplane) at / of the web listener (--web; never on a shared "
        "port). Read-only; it shows addresses and identities: bind the web "
        "listener where only operators reach it, or set monitor_token.",
        read_flag,
        metavar="YES|NO",
    )
    metrics: bool = option(
        False,
        "Serve Prometheus metrics at /metrics of the web listener (--web; "
        "never on a shared port).",
        read_flag,
        metavar="YES|NO",
    )
    monitor_token: str | None = option(
        None,
        "Require this token for the dashboard and /metrics (?token=TOKEN, or "
        "Authorization: Bearer TOKEN): env:NAME reads it from an environment "
        "variable, file:PATH from a file's first line (then it is in no "
        "process list), anything else is the token.",
        _read_endpoint,
        metavar="TOKEN",
    )

    def __post_init__(self) -> None:
        if self.web is not None and not isinstance(self.web, (str, int)):
            raise TypeError("web must be an endpoint description, a port, or None")
        if isinstance(self.web, int) and not isinstance(self.web, bool):
            set_field(self, "web", str(self.web))
        if not isinstance(self.web_shared, bool):
            raise TypeError("web_shared must be True or False")
        set_field(self, "web_origins", _origins(self.web_origins))
        for name in ("dashboard", "metrics"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False")
        if self.monitor_token is not None and not isinstance(self.monitor_token, str):
            raise TypeError("monitor_token must be a string or None")
        timeout = check_timeout("classify_timeout", self.classify_timeout)
        if timeout is None:
            raise ValueError("classify_timeout must be a positive number of seconds")
        set_field(self, "classify_timeout", timeout)

    @property
    def enabled(self) -> bool:
        """
        Whether browsers are served at all (a web listener or a shared port).
        """
        return self.web is not None or self.web_shared


def _origins(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return _read_origins(value)
    if not isinstance(value, Iterable):
        raise TypeError("web_origins must be a list of origins")
    origins = tuple(value)
    for origin in origins:
        if not isinstance(origin, str):
            raise TypeError(f"web_origins must be strings, not {origin!r}")
        if origin != "*" and "://" not in origin:
            raise ValueError(
                f"an origin is scheme://host[:port] (as a browser sends it), "
                f"not {origin!r}"
            )
    return tuple(o.rstrip("/").lower() for o in origins)
