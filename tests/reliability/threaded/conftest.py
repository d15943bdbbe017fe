"""
Reliability tests of the threaded API. They call blocking methods, so
they are marked C{blocking} and run off the reactor thread (see the root
conftest.py).
"""

from __future__ import annotations

# After each test no Server or Client may still hold the process open (an
# autouse fixture, shared with tests/threaded).
from tests.threaded.conftest import no_open_objects  # noqa: F401
