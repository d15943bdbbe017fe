"""
The architecture, checked: the packages are layers, each importing only
the layers below it; nothing reaches into another module's private names
(nor Twisted's or Python's, but in the two helpers that wrap what has no
public form); every package says what it does and which thread calls it;
files stay short enough to read in one sitting. C{docs/architecture.md}
describes what this enforces.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "twcomms"

#: The layers, bottom up. A module may import twcomms modules of its own
#: package, or of a lower layer; never of a higher one, nor of another
#: package of its own layer (server and client do not import each other).
LAYERS: dict[str, int] = {
    "twcomms._version": 0,
    "twcomms.errors": 0,
    "twcomms.wire": 1,
    "twcomms.options": 2,
    "twcomms.connection": 3,
    # WebSocket clients as connections, and one port for both: below the
    # server, which listens with it.
    "twcomms.web": 4,
    "twcomms.server": 5,
    "twcomms.client": 5,
    "twcomms.backplane": 6,
    "twcomms.threaded": 7,
    "twcomms.ops": 8,
    "twcomms.testing": 8,
    # The public facade, C{python -m twcomms}, and the shims that keep the
    # old module paths working: they may import anything.
    "twcomms": 9,
    "twcomms.__main__": 9,
    "twcomms.framing": 9,
    "twcomms.codecs": 9,
    "twcomms.protocol": 9,
    "twcomms.service": 9,
    "twcomms.cli": 9,
}

#: Private names of other code that twcomms uses, each in one helper that
#: says why and has a test pinning the behaviour relied on.
PRIVATE_ALLOWED = {
    ("twcomms/threaded/eventloop.py", "_register_atexit"): (
        "_register_before_thread_join; tests/test_eventloop.py::"
        "test_hook_runs_before_non_daemon_threads_are_joined"
    ),
    ("twcomms/threaded/eventloop.py", "_temporaryObserver"): (
        "twisted_logging_begun; tests/test_eventloop.py::"
        "test_twisted_logging_begun_follows_begin_logging_to"
    ),
    ("twcomms/threaded/eventloop.py", "_at_exit"): (
        "the exit hook Server and Client give their event loop (one package)"
    ),
}

MAX_LINES = 500


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def layer_of(module: str) -> tuple[str, int]:
    """
    The layer key a module belongs to, and its rank.
    """
    if module in LAYERS:
        return module, LAYERS[module]
    parts = module.split(".")
    for n in range(len(parts) - 1, 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS and key != "twcomms":
            return key, LAYERS[key]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(path: Path, *, runtime_only: bool = False) -> Iterator[tuple[str, str]]:
    """
    C{(module, name)} for each twcomms import in C{path} (C{name} is "" for
    C{import x}). With C{runtime_only}, leave out imports under
    C{if TYPE_CHECKING:} and inside functions.
    """
    tree = ast.parse(path.read_text())
    nodes: list[ast.AST]
    if runtime_only:
        nodes = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    else:
        nodes = list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("twcomms"):
                for alias in node.names:
                    yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("twcomms"):
                    yield alias.name, ""


def test_every_module_is_in_a_layer() -> None:
    for module, _ in modules():
        layer_of(module)


def test_no_import_runs_up_a_layer_or_across_one() -> None:
    wrong = []
    for module, path in modules():
        key, rank = layer_of(module)
        for target, _ in imports(path):
            target_key, target_rank = layer_of(target)
            if target_key == key:
                continue
            if target_rank >= rank:
                wrong.append(
                    f"{module} ({key}, {rank}) imports {target} ({target_rank})"
                )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    known = dict(modules())
    for module, path in known.items():
        graph[module] = set()
        for target, name in imports(path, runtime_only=True):
            # "from pkg import mod" imports pkg.mod when that is a module.
            sub = f"{target}.{name}"
            graph[module].add(sub if sub in known else target)
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, " -> ".join([*visiting, module])
        visiting.append(module)
        for target in sorted(graph.get(module, ())):
            if target != module and not module.startswith(target + "."):
                # (A package's modules may import their own __init__'s
                # names once it has imported them.)
                visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_no_module_imports_another_packages_private_names() -> None:
    wrong = []
    for module, path in modules():
        key, _ = layer_of(module)
        for target, name in imports(path):
            private = name.startswith("_") and not name.startswith("__")
            private_module = any(
                p.startswith("_") and p != "__main__" for p in target.split(".")[1:]
            )
            if (private or private_module) and layer_of(target)[0] != key:
                if target == "twcomms._version":
                    continue  # the version, re-exported by the facade
                wrong.append(f"{module} imports {target}.{name}")
    assert not wrong, "\n".join(wrong)


def _defined_in(path: Path) -> set[str]:
    """
    The attribute names a file defines: assigned on C{self}/C{cls}, class
    attributes, methods.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(
                    item.target, ast.Name
                ):
                    names.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    names.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return names


def test_no_private_attribute_of_another_module_is_used() -> None:
    wrong = []
    for _, path in modules():
        rel = str(path.relative_to(ROOT))
        own = _defined_in(path)
        for node in ast.walk(ast.parse(path.read_text())):
            attr = None
            if isinstance(node, ast.Attribute):
                value = node.value
                if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                    continue
                attr = node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                attr = node.args[1].value
            if attr is None or not attr.startswith("_") or attr.startswith("__"):
                continue
            if (rel, attr) in PRIVATE_ALLOWED:
                continue
            if attr not in own:
                wrong.append(f"{rel}:{node.lineno} uses {attr}")  # type: ignore[attr-defined]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "private",
    ["_exitSignal", "_raiseSynchronously", "_callID", "_subparsers", "__dict__"],
)
def test_the_private_apis_once_used_are_gone(private: str) -> None:
    for _, path in modules():
        used = f".{private}" in path.read_text() or f'"{private}"' in path.read_text()
        assert not used, f"{path} uses {private}"


def test_every_package_says_what_it_does_and_which_thread_calls_it() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init} has no docstring"
        assert "Thread" in doc, f"{init}: say which thread calls this layer"


def test_files_are_short_or_say_why() -> None:
    for _, path in modules():
        lines = path.read_text().count("\n")
        if lines > MAX_LINES:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert f"Over {MAX_LINES} lines" in doc, (
                f"{path} has {lines} lines: split it, or say why at its top"
            )
