"""
Reliability tests of the threaded API. They call blocking methods, which
refuse to run on the reactor thread where pytest-twisted runs every test,
so they run in the threaded invocation:

    python -m pytest -p no:twisted tests/threaded tests/reliability/threaded

(the root conftest leaves any C{threaded} directory out of the main run;
here they are also skipped if collected with the plugin active).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from twcomms._eventloop import get_event_loop


@pytest.fixture(autouse=True)
def nothing_left_open() -> Iterator[None]:
    """
    After each test no Server or Client may still hold the process open.
    """
    yield
    loop = get_event_loop()
    left = loop.open_objects()
    for obj in left:
        try:
            obj._at_exit()
        except Exception:
            logging.getLogger(__name__).exception("cleaning up %r", obj)
        loop.release(obj)
    assert not left, f"left open after the test: {left}"
