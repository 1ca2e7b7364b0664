"""Shared fixtures.  Under CI (``CI`` set), a skipped test counts as a failure."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import running_server  # noqa: E402


@pytest.fixture
def server():
    """A chat server on 127.0.0.1, port 0, with default settings."""
    with running_server() as chat_server:
        yield chat_server


@pytest.fixture
def make_client():
    """``make(port, name, **options)``: a started ``ChatClient`` on 127.0.0.1;
    every one made is closed after the test."""
    from chat.client import ChatClient

    clients = []

    def make(port, name="ada", **options):
        client = ChatClient("127.0.0.1", port, name, **options)
        clients.append(client)
        client.start()
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    """Every test must stop the threads it started (the owner joins them)."""
    before = set(threading.enumerate())
    yield
    from tests.helpers import wait_for

    def leftovers():
        return [t for t in threading.enumerate() if t not in before and t.is_alive()]

    try:
        wait_for(lambda: not leftovers(), timeout=5, what="threads to end")
    except AssertionError:
        names = sorted(t.name for t in leftovers())
        pytest.fail(f"threads still running after the test: {names}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI, which counts as a failure: {report.longrepr}"
        )
