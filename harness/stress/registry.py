"""
The scenarios by name (L{SCENARIOS}, in the stress table's order), and
running one in a fresh process: C{python -m harness.stress NAME [--scale
ci|full]} prints C{RESULT <json>} as its last line.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any

from harness.procs import raise_fd_limit
from harness.stress.bad_payloads import bad_payloads, bad_payloads_string
from harness.stress.churn import churn, churn_threaded
from harness.stress.hostile_framing import fuzz_memory, garbage_sockets
from harness.stress.load import load
from harness.stress.reactor import global_reactor
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
}


def run_scenario(name: str, scale: Scale) -> Result:
    """
    Run scenario C{name} in this process (which must not be running a
    reactor yet): Twisted ones under C{task.react}, threaded ones directly.
    Twisted's log is begun to a null observer first, so nothing is buffered.
    """
    from twisted.logger import globalLogBeginner

    raise_fd_limit()
    fn, on_reactor = SCENARIOS[name]
    if not on_reactor:
        return fn(scale)
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    from twisted.internet import defer, task

    box: list[Result] = []

    async def main() -> None:
        # task.react calls this before the reactor runs: start once it has
        # started (and installed its SIGCHLD pipe), so baselines are stable.
        running: defer.Deferred[None] = defer.Deferred()
        global_reactor().callWhenRunning(running.callback, None)
        await running
        box.append(await fn(scale))

    with contextlib.suppress(SystemExit):
        task.react(lambda reactor: defer.ensureDeferred(main()))
    if not box:
        raise RuntimeError(f"scenario {name} did not finish")
    return box[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one reliability scenario.")
    parser.add_argument("name", choices=sorted(SCENARIOS))
    parser.add_argument("--scale", choices=sorted(SCALES), default=None)
    args = parser.parse_args(argv)
    result = run_scenario(args.name, current_scale(args.scale))
    print("RESULT " + result.to_json(), flush=True)
    return 0
