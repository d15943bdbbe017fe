"""
Server restart, threaded API: C{Client(autoReconnect=True, initial_delay=0.1,
max_delay=1.0)}s lose their server; messages they send during the outage
wait in the offline queue and arrive exactly once, in order, after the new
server comes up on the same port; every client reconnects; the first
reconnection delays are spread by jitter (50 clients at ci scale, 200 at
full scale).
"""

from __future__ import annotations

from harness.stress.restart import restart_threaded
from harness.stress.result import assert_held
from harness.stress.scale import Scale


def test_clients_reconnect_and_offline_messages_arrive_once(scale: Scale) -> None:
    result = restart_threaded(scale)
    assert_held(result)
    assert result.sent == scale.restart_clients * 7
    assert result.details["first_delay_stdev"] > 0.003
