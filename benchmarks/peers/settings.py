"""
What the peers benchmark runs: the systems, the scenarios, the sizes and
time bounds of a run (L{Settings}: L{FULL}, L{QUICK}), and the constants
its processes share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

MODULE = "benchmarks.peers"
ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "benchmarks" / "results"

SYSTEMS = (
    "raw-socket",
    "twcomms-twisted",
    "twcomms-threaded",
    "stock-twisted",
    "asyncio",
    "pyzmq",
)
SCENARIOS = ("A", "B", "C", "D", "E")
FLOOR = "raw-socket"
NOT_APPLICABLE = {
    ("E", "twcomms-threaded"): "E covers the Twisted API; a threaded Client per "
    "connection (each with its callback queue) is not how 10,000 peers are held",
    ("E", "raw-socket"): "blocking sockets need a thread per connection; "
    "there is no blocking floor at this scale",
}

MIB = 1024 * 1024
#: D's maximum message size for the systems that have one (twcomms).
MAX_MESSAGE = 300 * MIB
#: C: messages broadcast between two returns to the event loop.
BATCH = 1000
#: E: connection attempts in flight per client process, and connections per
#: client process.
IN_FLIGHT = 100
HELLO = b"hello"
HI = b"hi"
ACK = b"ok"

now = time.perf_counter


@dataclass(frozen=True)
class Settings:
    """
    Sizes and time bounds of one run.
    """

    a_messages: int = 200_000
    b_trips: int = 5_000
    b_warmup: int = 500
    c_clients: int = 50
    c_procs: int = 2
    c_messages: int = 20_000
    d_sizes_mib: tuple[float, float] = (64.0, 256.0)
    e_connections: int = 10_000
    e_per_proc: int = 2_500
    repeat: int = 3
    bound_a: float = 60.0
    bound_b: float = 60.0
    bound_c: float = 120.0
    bound_d: float = 60.0
    bound_e_base: float = 40.0
    bound_e_per_1000: float = 10.0
    e_stall: float = 20.0
    quick: bool = False

    def bound(self, scenario: str) -> float:
        if scenario == "E":
            return self.bound_e_base + self.bound_e_per_1000 * self.e_connections / 1000
        return float(getattr(self, "bound_" + scenario.lower()))


FULL = Settings()
QUICK = Settings(
    a_messages=3_000,
    b_trips=300,
    b_warmup=30,
    c_clients=4,
    c_procs=2,
    c_messages=500,
    d_sizes_mib=(1.0, 4.0),
    e_connections=40,
    e_per_proc=20,
    repeat=1,
    bound_a=20.0,
    bound_b=20.0,
    bound_c=20.0,
    bound_d=20.0,
    bound_e_base=20.0,
    bound_e_per_1000=0.0,
    e_stall=10.0,
    quick=True,
)
