"""End to end, as a person: start server.py and gui_client.py, type with xdotool.

Needs the X display that pytest-xvfb provides and the ``xdotool`` program
(``.ci/run`` installs it; under CI a skip counts as a failure).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, LineClient, wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("xdotool") is None, reason="xdotool is not installed"
)


def xdotool(*args: str) -> str:
    done = subprocess.run(
        ["xdotool", *args], capture_output=True, text=True, timeout=DEADLINE
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def start_server(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "server.py", "--port", "0", "--db", str(tmp_path / "h.db")],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = process.stdout.readline()
    match = re.search(r"Server listening on 127\.0\.0\.1:(\d+)", first)
    assert match, first
    return process, int(match.group(1))


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(DEADLINE)


def find_window(title: str) -> str:
    """The id of a visible window called exactly ``title`` (polled)."""

    def search() -> str:
        # xdotool's --name regex does not match non-ASCII, so compare here.
        for window in xdotool("search", "--onlyvisible", "--name", "ClassChat").split():
            if xdotool("getwindowname", window) == title:
                return window
        return ""

    return wait_for(search, DEADLINE * 2, f"a window called {title!r}")


def test_typing_in_the_real_window(tmp_path):
    server, port = start_server(tmp_path)
    gui = None
    transcript = tmp_path / "ada.log"
    try:
        with LineClient(port) as bob:
            bob.send_line("bob")
            bob.expect_text("Welcome, bob!")
            env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"))
            gui = subprocess.Popen(
                [
                    sys.executable,
                    "gui_client.py",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--name",
                    "ada",
                    "--log",
                    str(transcript),
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
            )
            bob.expect_text("* ada joined")
            window = find_window("ada — ClassChat")
            xdotool("windowfocus", "--sync", window)
            xdotool("type", "--delay", "15", "hello from the window!")
            xdotool("key", "Return")
            assert bob.expect_text("ada:") == "ada: hello from the window!"

            bob.send_line("hi ada, I see you")
            wait_for(
                lambda: (
                    transcript.exists()
                    and "bob: hi ada, I see you" in transcript.read_text("utf-8")
                ),
                what="bob's reply in the --log transcript",
            )

            xdotool("windowfocus", "--sync", window)
            xdotool("key", "ctrl+q")
            started = time.monotonic()
            assert gui.wait(DEADLINE) == 0
            # "Closing the window ... the process ends within a second"; the
            # margin is for a loaded CI machine.
            assert time.monotonic() - started < 2.0
            assert bob.expect_text("* ada left") == "* ada left (quit)"
    finally:
        if gui is not None:
            stop(gui)
        stop(server)
