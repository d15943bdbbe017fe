"""
The scenarios by name (L{SCENARIOS}, in the stress table's order), and
running one in a fresh process: C{python -m harness.stress NAME [--scale
ci|full] [--redis URL]} prints C{RESULT <json>} as its last line.

The cross-node scenarios (L{NEEDS_REDIS}) run hub processes on a real
Redis: the one at C{--redis URL} (C{python -m benchmarks.stress} starts
one for its whole run), else a C{redis-server} this process starts and
stops (L{harness.redis.RedisServer}). Those of L{OWN_REDIS} start and
kill a C{redis-server} of their own.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any

from harness.procs import raise_fd_limit
from harness.stress.bad_payloads import bad_payloads, bad_payloads_string
from harness.stress.churn import churn, churn_threaded
from harness.stress.cross_node import cross_node_load
from harness.stress.hostile_framing import fuzz_memory, garbage_sockets
from harness.stress.load import load
from harness.stress.node_kill import node_kill
from harness.stress.reactor import global_reactor
from harness.stress.redis_outage import redis_outage
from harness.stress.restart import restart, restart_threaded
from harness.stress.result import Result
from harness.stress.scale import SCALES, Scale, current_scale
from harness.stress.shutdown import shutdown, shutdown_threaded
from harness.stress.slow_callback import slow_callback, slow_callback_client
from harness.stress.slow_consumer import slow_consumer

#: Scenarios by name: (function, runs on the reactor), in the stress
#: table's order.
SCENARIOS: dict[str, tuple[Callable[..., Any], bool]] = {
    "fuzz_memory": (fuzz_memory, False),
    "garbage_sockets": (garbage_sockets, True),
    "bad_payloads": (bad_payloads, True),
    "bad_payloads_string": (bad_payloads_string, True),
    "slow_consumer": (slow_consumer, True),
    "load": (load, True),
    "churn": (churn, True),
    "restart": (restart, True),
    "shutdown": (shutdown, True),
    "slow_callback": (slow_callback, False),
    "slow_callback_client": (slow_callback_client, False),
    "restart_threaded": (restart_threaded, False),
    "churn_threaded": (churn_threaded, False),
    "shutdown_threaded": (shutdown_threaded, False),
    "cross_node_load": (cross_node_load, True),
    "node_kill": (node_kill, True),
    "redis_outage": (redis_outage, True),
}

#: The scenarios that take a Redis URL after the scale (hub processes on a
#: backplane).
NEEDS_REDIS = frozenset({"cross_node_load", "node_kill"})

#: The scenarios that start (and kill) a C{redis-server} of their own: they
#: need the binary, not a running server.
OWN_REDIS = frozenset({"redis_outage"})


def run_scenario(name: str, scale: Scale, redis_url: str | None = None) -> Result:
    """
    Run scenario C{name} in this process (which must not be running a
    reactor yet): Twisted ones under C{task.react}, threaded ones directly.
    Twisted's log is begun to a null observer first, so nothing is buffered.
    A scenario of L{NEEDS_REDIS} uses the Redis at C{redis_url}, or one
    started (and stopped) for it here.

    @raise RuntimeError: it needs Redis, none is given, and there is no
        C{redis-server} to start (L{harness.redis.MISSING}).
    """
    if name in NEEDS_REDIS and redis_url is None:
        from harness.redis import RedisServer

        with RedisServer() as server:
            return run_scenario(name, scale, server.url)
    from twisted.logger import globalLogBeginner

    raise_fd_limit()
    fn, on_reactor = SCENARIOS[name]
    args: tuple[Any, ...] = (scale, redis_url) if name in NEEDS_REDIS else (scale,)
    if not on_reactor:
        return fn(*args)
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    from twisted.internet import defer, task

    box: list[Result] = []

    async def main() -> None:
        # task.react calls this before the reactor runs: start once it has
        # started (and installed its SIGCHLD pipe), so baselines are stable.
        running: defer.Deferred[None] = defer.Deferred()
        global_reactor().callWhenRunning(running.callback, None)
        await running
        box.append(await fn(*args))

    with contextlib.suppress(SystemExit):
        task.react(lambda reactor: defer.ensureDeferred(main()))
    if not box:
        raise RuntimeError(f"scenario {name} did not finish")
    return box[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one reliability scenario.")
    parser.add_argument("name", choices=sorted(SCENARIOS))
    parser.add_argument("--scale", choices=sorted(SCALES), default=None)
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="the Redis of the cross-node scenarios (default: start one)",
    )
    args = parser.parse_args(argv)
    result = run_scenario(args.name, current_scale(args.scale), args.redis)
    print("RESULT " + result.to_json(), flush=True)
    return 0
