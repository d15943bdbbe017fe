"""
Backplanes: client registries that span nodes, so several hubs (processes,
machines) act as one -- one base class that knows the envelopes and the
order of delivery (L{Backplane}), one subclass per broker
(L{RedisBackplane}), as python-socketio's managers are. A backplane is a
L{twcomms.server.ClientRegistry}: give it to a server factory
(C{registry=}) and nothing else changes.

Thread: the reactor thread only.
"""

from typing import Any

from twcomms.backplane.base import LARGE_ABOVE, Backplane
from twcomms.backplane.redis import RedisBackplane
from twcomms.backplane.url import RedisURL, parse_url
from twcomms.options import ClusterOptions, ServerOptions

__all__ = [
    "LARGE_ABOVE",
    "Backplane",
    "RedisBackplane",
    "RedisURL",
    "make_backplane",
    "parse_url",
]


def make_backplane(
    cluster: ClusterOptions, reactor: Any = None, server: ServerOptions | None = None
) -> Backplane | None:
    """
    The backplane C{cluster} describes (L{None}: no C{backplane} URL), for
    a server with the options C{server} (its drain marks pace reading).

    @raise ValueError: the URL is not one a backplane can use.
    """
    if cluster.backplane is None:
        return None
    url = parse_url(
        cluster.backplane,
        password_env=cluster.redis_password_env,
        password_file=cluster.redis_password_file,
    )
    return RedisBackplane(
        url,
        hub=cluster.hub,
        presence_ttl=cluster.presence_ttl,
        required=cluster.require_backplane,
        outage_max_count=cluster.outage_max_count,
        outage_max_bytes=cluster.outage_max_bytes,
        history_length=cluster.history_length,
        reactor=reactor,
        **(
            {}
            if server is None
            else {
                "drain_high_water": server.drain_high_water,
                "drain_low_water": server.drain_low_water,
            }
        ),
    )
