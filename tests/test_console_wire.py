"""``python -m chat --wire``: the console client shows every chunk, in order.

The real console client runs in a subprocess against a real server on
127.0.0.1, with its standard input piped; its output is read once it exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chat.__main__ import build_parser
from tests.helpers import DEADLINE, running_server

ROOT = Path(__file__).resolve().parent.parent


def run_console_client(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chat", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=DEADLINE * 2,
    )


def test_wire_shows_the_hello_the_welcome_and_a_line_in_order():
    with running_server() as server:
        done = run_console_client(
            "--wire", "--port", str(server.port), "--name", "x", stdin="hi 👋\n"
        )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()

    def first(prefix: str, fragment: str) -> int:
        return next(
            i
            for i, line in enumerate(lines)
            if line.startswith(prefix) and fragment in line
        )

    hello = first("→ ", '{"type":"hello","name":"x"}⏎┃')
    welcome = first("← ", '{"type":"welcome","name":"x"')
    said = first("→ ", '"text":"hi 👋"')
    bye = first("→ ", '{"type":"bye"')
    greeted = first("* ", "Welcome, x!")
    assert hello < welcome < greeted  # a chunk is shown before what it carries
    assert welcome < said < bye
    # The hex, indented under the text, follows each chunk's line.
    indent = " " * lines[hello].index("{")
    assert (
        lines[hello + 1] == indent + "7b 22 74 79 70 65 22 3a  22 68 65 6c 6c 6f 22 2c"
    )
    hex_of_said = "".join(lines[said + 1 : said + 8]).replace(" ", "")
    assert "f09f918b" in hex_of_said  # 👋, byte by byte


def test_without_wire_no_chunks_are_shown():
    assert build_parser().parse_args([]).wire is False
    with running_server() as server:
        done = run_console_client("--port", str(server.port), "--name", "x", stdin="")
    assert done.returncode == 0, done.stderr
    assert "→" not in done.stdout and "←" not in done.stdout
