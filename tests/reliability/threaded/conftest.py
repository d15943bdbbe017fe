"""
Reliability tests of the threaded API. They call blocking methods, which
refuse to run on the reactor thread where pytest-twisted runs every test,
so they run in the threaded invocation:

    python -m pytest -p no:twisted tests/threaded tests/reliability/threaded

(the root conftest leaves any C{threaded} directory out of the main run).
"""

from __future__ import annotations

# After each test no Server or Client may still hold the process open (an
# autouse fixture, shared with tests/threaded).
from tests.threaded.conftest import no_open_objects  # noqa: F401
