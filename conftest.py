"""
pytest configuration shared by every test directory.

The threaded API's tests (tests/threaded) call blocking methods that must
not run on the reactor thread; pytest-twisted runs every test body there.
So they run in their own invocation without the plugin
(``python -m pytest -p no:twisted tests/threaded``), and the main
invocation leaves them out.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if (
        config.pluginmanager.hasplugin("twisted")
        and "threaded" in collection_path.parts
    ):
        return True
    return None
