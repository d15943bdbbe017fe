"""
Fixtures shared by the reliability tests (pytest-twisted ones here, and the
threaded API's in C{threaded/}).

C{TWCOMMS_SCALE} (C{ci}, the default, or C{full}) sizes the heavy tests;
see L{harness.stress.scale.SCALES}.
"""

from __future__ import annotations

import pytest

from harness.procs import raise_fd_limit
from harness.stress.scale import Scale, current_scale


@pytest.fixture(scope="session", autouse=True)
def open_files_limit() -> int:
    """
    These tests open many sockets: raise the open-files soft limit to the
    hard limit (client processes do the same for themselves).
    """
    return raise_fd_limit()


@pytest.fixture(scope="session")
def scale() -> Scale:
    """
    The scale chosen by C{TWCOMMS_SCALE}.
    """
    return current_scale()
