"""
The example tests a user copies (C{examples/testing/}) run as a user runs
them -- with trial and with pytest, each in its own process, on a copy of
the folder -- and pass, every test found, the reactor left clean; so do
the README's "Testing your code" snippets, run beside them. Then
the same tests run against the example's code with its behaviour broken
(the hub drops what it should relay, the echo server does not answer):
the tests that check that behaviour fail, the others still pass.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.procs import child_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "testing"

#: Bound on each runner's process; the example tests bound their own waits
#: (5 s each), so a broken behaviour fails them, never hangs them.
RUN_TIMEOUT = 120

README = EXAMPLES.parent.parent / "README.md"

TRIAL = [sys.executable, "-m", "twisted.trial", "test_chat_trial"]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "."]

BREAKS = {
    "chat.py": (
        'hub.broadcast({"from": client.id, "said": message}, exclude=client)',
        "pass  # broken on purpose: nothing is relayed",
    ),
    "threaded_echo.py": (
        'client.send({"echo": message})',
        "pass  # broken on purpose: no answer",
    ),
}


def _copy(tmp_path: Path, broken: bool) -> Path:
    folder = tmp_path / ("broken" if broken else "intact")
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("__pycache__"))
    if broken:
        for name, (line, replacement) in BREAKS.items():
            path = folder / name
            text = path.read_text()
            assert line in text, f"{name} no longer has {line!r}: update BREAKS"
            path.write_text(text.replace(line, replacement))
    else:
        trial_snippet, pytest_snippet = readme_snippets()
        (folder / "test_readme_trial.py").write_text(trial_snippet)
        (folder / "test_readme_pytest.py").write_text(pytest_snippet)
        with open(folder / "conftest.py", "a") as f:
            f.write('collect_ignore.append("test_readme_trial.py")\n')
    return folder


def readme_snippets() -> tuple[str, str]:
    """
    The README's "Testing your code" Python snippets: the trial one (it
    has a C{SynchronousTestCase}) and the pytest-twisted one.
    """
    text = README.read_text()
    section = text[text.index("## Testing your code") :]
    section = section[: section.index("\n## ", 5)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    trial = [b for b in blocks if "SynchronousTestCase" in b]
    pytest_ = [b for b in blocks if "pytest_twisted" in b]
    assert len(trial) == 1 and len(pytest_) == 1, blocks
    return trial[0], pytest_[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """
    Each runner on the intact and the broken copy, all four at once.
    """
    tmp_path = tmp_path_factory.mktemp("examples")
    procs = {}
    for broken in (False, True):
        folder = _copy(tmp_path, broken)
        trial = TRIAL if broken else [*TRIAL, "test_readme_trial"]
        for runner, argv in (("trial", trial), ("pytest", PYTEST)):
            procs[f"{runner} {'broken' if broken else 'intact'}"] = subprocess.Popen(
                argv,
                cwd=folder,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
    out = {}
    try:
        for name, proc in procs.items():
            out[name] = proc.communicate(timeout=RUN_TIMEOUT)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return out


def _count_tests(path: Path) -> int:
    return len(re.findall(r"^\s*(?:async )?def test_", path.read_text(), re.M))


def test_trial_runs_every_example_and_leaves_the_reactor_clean(
    runs: dict[str, str],
) -> None:
    out = runs["trial intact"]
    expected = _count_tests(EXAMPLES / "test_chat_trial.py") + 1  # + README's
    assert expected >= 6
    assert out.rstrip().endswith(f"PASSED (successes={expected})"), out
    assert "DirtyReactor" not in out, out


def test_pytest_runs_every_example(runs: dict[str, str]) -> None:
    out = runs["pytest intact"]
    expected = _count_tests(EXAMPLES / "test_chat_pytest.py") + 1  # + README's
    assert expected >= 6
    assert re.search(rf"^{expected} passed in ", out, re.M), out
    assert "error" not in out.lower(), out


def test_the_examples_fail_when_the_behaviour_they_check_is_broken(
    runs: dict[str, str],
) -> None:
    # Broken: the relay tests (in memory and over sockets) and the echo
    # test fail; the idle-timeout and reconnect tests still pass.
    trial = runs["trial broken"]
    summary = trial.rstrip().splitlines()[-1]
    assert summary.startswith("FAILED ("), trial
    counts = dict(re.findall(r"(\w+)=(\d+)", summary))
    assert int(counts.get("failures", 0)) + int(counts.get("errors", 0)) == 3, trial
    assert counts["successes"] == "2", trial
    assert "test_relays_to_the_others_not_the_sender" in trial
    assert "test_echo" in trial
    pytest_out = runs["pytest broken"]
    assert re.search(r"^3 failed, 2 passed in ", pytest_out, re.M), pytest_out
    for name in (
        "test_relays_to_the_others_not_the_sender",
        "test_relays_over_sockets",
        "test_threaded_echo",
    ):
        assert f"FAILED test_chat_pytest.py::{name}" in pytest_out, pytest_out
