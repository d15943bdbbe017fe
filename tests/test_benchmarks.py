"""
The benchmarks run end to end at CI size: every cell is produced. Speed is
never asserted here (benchmarks print ratios; see docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest


def test_every_peer_benchmark_cell_is_produced(tmp_path: Path) -> None:
    from benchmarks.peers import problems, run_quick

    run = run_quick(tmp_path)
    assert not problems(run), problems(run)
    assert (tmp_path / "peers-quick.json").exists()


def test_every_extensions_benchmark_cell_is_produced(tmp_path: Path) -> None:
    from benchmarks.extensions import problems, run_quick

    run = run_quick(tmp_path)
    assert not problems(run), problems(run)
    assert (tmp_path / "extensions-quick.json").exists()


def test_every_websocket_benchmark_cell_is_produced(tmp_path: Path) -> None:
    from benchmarks.websocket import problems, run_quick

    run = run_quick(tmp_path)
    assert not problems(run), problems(run)
    assert (tmp_path / "websocket-quick.json").exists()


def test_the_rooms_benchmark_runs_and_prints_its_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.rooms import main

    assert main(["--clients", "200", "--rooms", "20", "--count", "20"]) == 0
    out = capsys.readouterr().out
    assert "room broadcast x" in out and "B/membership" in out


@pytest.mark.usefixtures("redis_executable")  # (skips, or fails under CI)
def test_every_backplane_benchmark_cell_is_produced(tmp_path: Path) -> None:
    from benchmarks.backplane import problems, run_quick

    run = run_quick(tmp_path)
    assert not problems(run), problems(run)
    assert (tmp_path / "backplane-quick.json").exists()
