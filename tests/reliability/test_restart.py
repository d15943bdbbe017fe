"""
Server restart, Twisted API: auto-reconnecting C{CommsClientFactory}s with
seeded jitter all come back when the server does, their first delays spread
exactly as their generators say. The threaded API's version, with messages
queued while offline, is C{threaded/test_restart.py}; a single-client
restart is C{tests/test_sockets.py::test_reconnects_to_a_restarted_server}.
"""

from __future__ import annotations

import pytest_twisted

from harness.stress.restart import restart
from harness.stress.result import assert_held
from harness.stress.scale import Scale


@pytest_twisted.ensureDeferred
async def test_every_client_reconnects_with_jittered_delays(scale: Scale) -> None:
    result = await restart(scale)
    assert_held(result)
    assert result.sent == 2 * scale.restart_clients
    assert result.details["first_delay_stdev"] > 0
