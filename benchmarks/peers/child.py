"""
The entry point of a child process (C{python -m benchmarks.peers --child
ROLE SYSTEM SCENARIO SPEC}): one server or client of one system in one
scenario, under a watchdog, leaving without interpreter teardown.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from benchmarks.peers import eventloop, raw, threaded, zeromq
from benchmarks.peers.common import emit, read_go
from harness.procs import raise_fd_limit, watchdog

#: The event-loop systems share one implementation (L{eventloop}), which
#: is told the system; the others each have their own module.
EVENT_LOOP_SYSTEMS = ("twcomms-twisted", "stock-twisted", "asyncio")
MODULES = {"twcomms-threaded": threaded, "pyzmq": zeromq, "raw-socket": raw}


def run_child(role: str, system: str, scn: str, spec: dict[str, Any]) -> int:
    """
    Run one server or client (C{role}) of C{system} in scenario C{scn}, with
    C{spec}'s sizes; a client first reads the server's ports from stdin.
    """
    raise_fd_limit()
    watchdog(spec["bound"] + 10)
    try:
        if system not in EVENT_LOOP_SYSTEMS and system not in MODULES:
            raise ValueError(system)
        if role == "server":
            if system in EVENT_LOOP_SYSTEMS:
                eventloop.run_server(system, scn, spec)
            else:
                MODULES[system].run_server(scn, spec)
        else:
            go = read_go()
            if system in EVENT_LOOP_SYSTEMS:
                eventloop.run_client(system, scn, spec, go)
            else:
                MODULES[system].run_client(scn, spec, go)
    except BaseException as e:  # report anything, then leave at once
        emit("error", error=f"{role}: {type(e).__name__}: {e}")
        sys.stderr.flush()
        os._exit(1)
    sys.stderr.flush()
    # Leave without interpreter teardown (reactor threads, zmq contexts).
    os._exit(0)
