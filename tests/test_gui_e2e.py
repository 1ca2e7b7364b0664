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

from chat.store import COMMIT_INTERVAL
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


def start_server(tmp_path: Path, port: int = 0) -> tuple[subprocess.Popen, int]:
    """server.py on 127.0.0.1 with its history in ``tmp_path``; its output
    goes to a file (a pipe nobody reads would fill up and stop it)."""
    output = tmp_path / f"server-{time.monotonic_ns()}.out"
    history = ("--db", str(tmp_path / "h.db"))
    with open(output, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "server.py", "--port", str(port), *history],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )

    def listening() -> int:
        match = re.search(r"Server listening on 127\.0\.0\.1:(\d+)", output.read_text())
        if process.poll() is not None:
            raise AssertionError(f"server.py ended: {output.read_text()}")
        return int(match.group(1)) if match else 0

    return process, wait_for(listening, DEADLINE * 2, "the server to listen")


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
            gui = start_window(tmp_path, port, transcript)
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


def start_window(tmp_path: Path, port: int, transcript: Path) -> subprocess.Popen:
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"))
    where = ("--host", "127.0.0.1", "--port", str(port), "--name", "ada")
    return subprocess.Popen(
        [sys.executable, "gui_client.py", *where, "--log", str(transcript)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_lines_typed_while_the_server_is_down_arrive_once_in_order(tmp_path):
    """Issue 8, as a person lives it: the server dies (kill -9) while ada types
    three lines into the real window; it comes back on the same database."""
    server, port = start_server(tmp_path)
    gui = None
    transcript = tmp_path / "ada.log"
    try:
        with LineClient(port) as bob:
            bob.send_line("bob")
            bob.expect_text("Welcome, bob!")
            gui = start_window(tmp_path, port, transcript)
            bob.expect_text("* ada joined")
            window = find_window("ada — ClassChat")
            xdotool("windowfocus", "--sync", window)
            xdotool("type", "--delay", "15", "before")
            xdotool("key", "Return")
            assert bob.expect_text("ada:") == "ada: before"
        # The contract under test: a kill -9 loses at most the last
        # COMMIT_INTERVAL of history.  Wait that out (with margin): the
        # file cannot be watched instead, the server holds it exclusively.
        time.sleep(3 * COMMIT_INTERVAL)
        server.kill()  # kill -9: no goodbye, as when a laptop's power goes
        server.wait(DEADLINE)
        xdotool("windowfocus", "--sync", window)
        for line in ("one", "two", "three"):
            xdotool("type", "--delay", "15", line)
            xdotool("key", "Return")
        server, _ = start_server(tmp_path, port)  # the same port and database
        with LineClient(port) as carl:
            carl.send_line("carl")
            carl.expect_text("Welcome, carl!")
            # ada's window reconnects by itself and sends what was typed;
            # carl gets each line once (live, or in his welcome's history).
            said: list[str] = []
            while said[-3:] != ["one", "two", "three"]:
                line = carl.next_text(timeout=DEADLINE * 3)
                if "ada: " in line:
                    said.append(line.split("ada: ", 1)[1])
            carl.send_line("all here?")
            wait_for(
                lambda: "carl: all here?" in transcript.read_text("utf-8"),
                what="carl's line in ada's transcript",
            )
            got = [line.decode() for line in carl.lines]
        assert said[-3:] == ["one", "two", "three"]
        for line in ("one", "two", "three"):  # and nothing twice
            assert sum(text.endswith(f"ada: {line}") for text in got) == 1
        with LineClient(port) as dana:  # the history has each line once
            dana.send_json(type="hello", name="dana")
            history = [m["text"] for m in dana.next_json()["history"]]
        assert history == ["before", "one", "two", "three", "all here?"]
    finally:
        if gui is not None:
            stop(gui)
        stop(server)
