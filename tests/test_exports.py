"""
The public surface, pinned (as klein's C{test_exports.py} does): what
C{twcomms.__all__} lists is importable, documented and complete; every
exception is in C{twcomms.errors} and exported; the names and module paths
the README, docs and examples use keep working (old paths through shims
that warn); the tests the README's Guarantees table names exist.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import warnings
from pathlib import Path

import pytest

import twcomms
import twcomms.errors

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

PACKAGES = [
    "twcomms.wire",
    "twcomms.options",
    "twcomms.connection",
    "twcomms.server",
    "twcomms.client",
    "twcomms.threaded",
    "twcomms.errors",
    "twcomms.testing",
]


def test_all_is_sorted_unique_and_importable() -> None:
    names = twcomms.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(twcomms, name), name


@pytest.mark.parametrize("package", PACKAGES)
def test_each_layer_all_is_importable(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name}"


def test_every_exported_name_is_documented() -> None:
    text = README.read_text() + "".join(p.read_text() for p in DOCS)
    missing = [n for n in twcomms.__all__ if n != "__version__" and n not in text]
    assert not missing, f"not in README.md or docs/: {missing}"
    for name in twcomms.__all__:
        value = getattr(twcomms, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"


def test_every_exception_lives_in_errors_and_is_exported() -> None:
    defined = set()
    for path in (ROOT / "twcomms").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                # (A module's own private exception, used for its control
                # flow and never raised to callers, may stay with it.)
                if node.name.startswith("_"):
                    continue
                if any(b.endswith(("Error", "Exception")) for b in bases):
                    defined.add((path.relative_to(ROOT).as_posix(), node.name))
    elsewhere = {d for d in defined if d[0] != "twcomms/errors.py"}
    assert not elsewhere, f"exceptions outside twcomms/errors.py: {elsewhere}"
    for name in twcomms.errors.__all__:
        assert name in twcomms.__all__, name
        assert issubclass(getattr(twcomms.errors, name), twcomms.errors.CommsError)


# -- compatibility: what README, docs and examples use ---------------------------


@pytest.mark.parametrize(
    ("old", "names", "new"),
    [
        ("twcomms.framing", ["FrameReceiver", "Frame", "frame_header"], "twcomms.wire"),
        ("twcomms.codecs", ["get_codec", "JSONCodec", "DATA_TYPES"], "twcomms.wire"),
        (
            "twcomms.protocol",
            ["CommsProtocol", "CloseReason", "MessageReceiver", "SlowConsumerPolicy"],
            "twcomms.connection",
        ),
        ("twcomms.service", ["Options", "makeService"], "twcomms.ops.service"),
        ("twcomms.cli", ["main"], "twcomms.ops.cli"),
    ],
)
def test_old_module_paths_warn_and_give_the_same_objects(
    old: str, names: list[str], new: str
) -> None:
    import sys

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(
        issubclass(w.category, DeprecationWarning) and old in str(w.message)
        for w in caught
    ), [str(w.message) for w in caught]
    target = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(target, name), name


def test_names_the_readme_uses_keep_working() -> None:
    from twcomms.client import CommsClientFactory
    from twcomms.server import CommsServerFactory, LocalClientRegistry
    from twcomms.testing import MemoryNetwork
    from twcomms.threaded import Client, FlowControl, Server

    assert Server is twcomms.Server and Client is twcomms.Client
    assert FlowControl is twcomms.FlowControl
    net = MemoryNetwork()
    registry = LocalClientRegistry()
    server = CommsServerFactory(
        "json", registry=registry, reactor=net.reactor, max_clients=3, idle_timeout=5
    )
    assert server.clients is registry
    client = CommsClientFactory(
        "json", autoReconnect=True, initial_delay=0.5, reactor=net.reactor
    )
    assert client.initialDelay == 0.5


def test_the_twistd_plugin_names_a_module_that_serves() -> None:
    import twisted.plugins.twcomms_plugin as plugin

    module = importlib.import_module(plugin.TwcommsHub.module)
    assert module.__name__ == "twcomms.ops.service"
    assert callable(module.makeService) and module.Options


def _guarantee_tests() -> list[tuple[str, str]]:
    """
    C{(file, test)} for every test the README's Guarantees table names.
    """
    text = README.read_text()
    section = text[text.index("## Guarantees") :]
    section = section[: section.index("\n## ", 5)]
    found: list[tuple[str, str]] = []
    for row in section.splitlines():
        if not row.startswith("|"):
            continue
        last = ""
        for ref in re.findall(r"`([^`]+)`", row):
            if ".py" not in ref and not ref.startswith("::"):
                continue  # prose: `stop()`, `close()`
            path, _, name = ref.partition("::")
            if path:
                last = path if path.startswith("tests/") else _find(path)
            if name:
                found.append((last, name))
            elif path.endswith(".py"):
                found.append((last, ""))
    return found


def _find(filename: str) -> str:
    matches = sorted(p for p in (ROOT / "tests").rglob(filename))
    assert len(matches) == 1, f"README names {filename}: found {matches}"
    return matches[0].relative_to(ROOT).as_posix()


def test_the_tests_the_guarantees_table_names_exist() -> None:
    named = _guarantee_tests()
    assert len(named) > 10
    for path, name in named:
        source = (ROOT / path).read_text()
        if name:
            assert re.search(rf"\bdef {re.escape(name)}\(", source), f"{path}::{name}"
