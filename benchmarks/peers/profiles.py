"""
Profiles of the twcomms processes (C{--profile}): py-spy raw output
(C{"frame;frame;...;leaf count"} per line), summed per function.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

_NOT_MEASURED = (
    "watchdog.<locals>.run ",
    "pattern ",
    "messages ",
    "frame ",
)


def _profile_top(path: Path, top: int = 12) -> list[str]:
    if not path.exists():
        return [f"  (no profile written: {path.name})"]
    self_count: collections.Counter[str] = collections.Counter()
    incl_count: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [
            f for f in stack.split(";") if not f.startswith(("thread (", "process "))
        ]
        # Start-up and set-up are not the measured work: imports, the
        # watchdog thread, building messages and payloads.
        if not frames or any(
            f.startswith(_NOT_MEASURED) or "(<frozen importlib" in f for f in frames
        ):
            continue
        total += count
        names = [_frame_name(f) for f in frames]
        self_count[names[-1]] += count
        for name in set(names):
            incl_count[name] += count
    if not total:
        return [f"  (empty profile: {path.name})"]
    lines = [f"  {path.name}: {total} samples (self% / incl%)"]
    for name, count in self_count.most_common(top):
        lines.append(
            f"    {100 * count / total:5.1f}% "
            f"{100 * incl_count[name] / total:5.1f}%  {name}"
        )
    return lines


def _frame_name(frame: str) -> str:
    """
    C{"dataReceived (twcomms/framing.py:255)"} -> C{"dataReceived (twcomms/framing.py)"}
    """
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path or where})"


def print_profiles(run: dict[str, Any]) -> None:
    print(
        "\nProfiles (py-spy samples of the twcomms processes; "
        "self% = in the function itself):"
    )
    for c in run["cells"]:
        for p in c.get("profiles", []):
            for line in _profile_top(Path(p)):
                print(line)
