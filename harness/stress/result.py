"""
What a scenario did and found (L{Result}), and the one assertion every
test makes on it (L{assert_held}).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.stress.scale import MiB


@dataclass
class Result:
    """
    What a scenario did and found.

    @ivar load: the load held, in words.
    @ivar faults: the faults injected, in words.
    @ivar sent: messages that had to arrive.
    @ivar received: of those, how many arrived (once, intact).
    @ivar lost: how many never arrived.
    @ivar duplicated: how many arrived more than once.
    @ivar peak_memory: peak traced memory (bytes) of the measured process
        above its baseline, where measured.
    @ivar memory_bound: the bound asserted on C{peak_memory}.
    @ivar problems: every check that failed, in words; empty when all held.
    """

    scenario: str
    scale: str = ""
    load: str = ""
    faults: str = ""
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    peak_memory: int | None = None
    memory_bound: int | None = None
    seconds: float = 0.0
    #: The memory figure for the table, in words (peak or growth, bound).
    memory: str = "-"
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def check(self, ok: object, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return bool(ok)

    def to_json(self) -> str:
        data = asdict(self)
        if len(self.problems) > 50:
            data["problems"] = [
                *self.problems[:50],
                f"... and {len(self.problems) - 50} more",
            ]
        return json.dumps(data, default=str)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls(**json.loads(text))


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def assert_held(result: Result) -> None:
    """
    For tests: everything the scenario promises held (no problem found,
    nothing lost or duplicated, every message that had to arrive arrived).
    The result is printed, so a failing test shows it.
    """
    print(result.to_json())
    assert result.problems == [], "\n".join(result.problems)
    assert result.lost == 0, f"{result.lost} messages lost"
    assert result.duplicated == 0, f"{result.duplicated} messages duplicated"
    assert result.received == result.sent, (result.received, result.sent)
