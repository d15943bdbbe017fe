"""
Where the backplane's Redis is: L{parse_url} reads C{redis://} and
C{rediss://} (TLS) URLs into a L{RedisURL}, which makes the endpoint to
connect with. A password comes from the URL, an environment variable or a
file; the latter two keep it out of process lists, and a L{RedisURL}
never shows it.

Thread: any (parsing); L{RedisURL.endpoint} on the reactor thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint
from twisted.logger import Logger

from twcomms.client.tls import client_tls_options

__all__ = ["RedisURL", "parse_url"]

_log = Logger()


@dataclass(frozen=True)
class RedisURL:
    """
    Where Redis is, and how to log in. Its C{repr} never shows the
    password.

    @ivar tls: C{rediss://}: TLS, verifying the server's certificate
        against C{ca} (a PEM file; default the platform's trust store) and
        its name against C{host} -- unless C{verify} is off, which only
        C{?verify=none} in the URL does (and a warning is logged).
    """

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca: str | None = None
    verify: bool = True

    def __repr__(self) -> str:
        auth = "***@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def endpoint(self, reactor: Any) -> Any:
        """
        The Twisted endpoint to connect to Redis with.
        """
        if not self.tls:
            return TCP4ClientEndpoint(reactor, self.host, self.port)
        if self.verify:
            options = client_tls_options(self.host, trust_root=self.ca)
        else:
            from twisted.internet.ssl import CertificateOptions

            _log.warn(
                "backplane: TLS to {url} WITHOUT verifying its certificate "
                "(verify=none): anyone on the path can read and change it",
                url=repr(self),
            )
            options = CertificateOptions(verify=False)
        return SSL4ClientEndpoint(reactor, self.host, self.port, options)


def parse_url(
    url: str, *, password_env: str | None = None, password_file: str | None = None
) -> RedisURL:
    """
    Read C{redis[s]://[[user]:password@]host[:port][/db][?ca=PATH]} (also
    C{?verify=none} for TLS without verification, by name only). The
    password may instead come from the environment variable
    C{password_env} or the first line of C{password_file}.

    @raise ValueError: not such a URL, or an unknown query parameter.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"a backplane URL is redis://host:port/db or rediss://..., not "
            f"{parts.scheme}://..."
        )
    try:
        db = int(parts.path.strip("/") or 0)
        port = parts.port or 6379
    except ValueError:
        raise ValueError("the URL's port and database must be numbers") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"ca", "verify"}
    if unknown:
        raise ValueError(f"unknown URL parameters: {', '.join(sorted(unknown))}")
    tls = parts.scheme == "rediss"
    if not tls and query:
        raise ValueError("ca= and verify= are for rediss:// (TLS) URLs")
    if query.get("verify", "full") not in ("full", "none"):
        raise ValueError("verify= takes full (the default) or none")
    password = unquote(parts.password) if parts.password else None
    if password_env is not None and password_env in os.environ:
        password = os.environ[password_env]
    if password_file is not None:
        with open(password_file, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    return RedisURL(
        parts.hostname or "127.0.0.1",
        port,
        db,
        unquote(parts.username) if parts.username else None,
        password,
        tls,
        query.get("ca"),
        query.get("verify", "full") != "none",
    )
