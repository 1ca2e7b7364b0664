"""Tests of ``chat.console``: the operator's commands, the log, and the launcher.

The ``Operator`` and ``SafeFormatter`` are driven directly.  The rest runs the
real ``python server.py`` in a subprocess on port 0 and talks to it the way a
class would: raw socket clients, lines typed on its standard input, signals.
Its output is read through a pipe with deadlines, so a line that is not
flushed at once makes a test fail rather than wait.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat import console
from chat.console import (
    OPERATOR_HELP,
    Operator,
    SafeFormatter,
    build_parser,
    config_from,
    print_addresses,
)
from chat.plain import PROMPT
from chat.protocol import MAX_UNTERMINATED_BYTES
from chat.server import GOODBYE, ServerConfig
from chat.store import default_path
from chat.terminal import StdinReader
from tests.helpers import (
    DEADLINE,
    LineClient,
    json_client,
    plain_client,
    running_server,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d ")
LISTENING = re.compile(r"^Server listening on 127\.0\.0\.1:(\d+)$")


# ---------------------------------------------------------------------------
# The operator's commands, without a keyboard


class Recorder:
    """Stands in for ``print`` and for the console's stop request."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stops = 0

    def out(self, line: str) -> None:
        self.lines.append(line)

    def request_stop(self) -> None:
        self.stops += 1


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def operator(server, recorder):
    """The operator's console for the ``server`` fixture, its thread not started."""
    return Operator(server, recorder.request_stop, recorder.out)


def test_list_shows_who_is_here_and_from_where(server, operator, recorder):
    with (
        json_client(server.port, "alice") as alice,
        plain_client(server.port, "bob") as bob,
        LineClient(server.port) as unnamed,
    ):
        assert unnamed.next_text() == PROMPT
        operator.handle("/list")
        address = {
            name: "{}:{}".format(*client.sock.getsockname())
            for name, client in (("alice", alice), ("bob", bob))
        }
        assert recorder.lines == [
            "2 in the room:",
            f"    {'alice':<24} {address['alice']}",
            f"    {'bob':<24} {address['bob']}",
            "(1 more connected, not in the room)",
        ]


def test_a_typed_line_goes_to_everyone_from_server(server, operator, recorder):
    with (
        json_client(server.port, "alice") as alice,
        plain_client(server.port, "bob") as bob,
    ):
        operator.handle("Welcome, class!\n")
        message = alice.expect_json("message")
        assert (message["from"], message["text"]) == ("server", "Welcome, class!")
        assert bob.expect_text("server:") == "server: Welcome, class!"
        operator.handle("//etc/hosts is a file")  # // sends a line starting with /
        assert alice.next_json()["text"] == "/etc/hosts is a file"
        assert recorder.lines == []


def test_kick_removes_a_member_with_the_reason(server, operator, recorder):
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.expect_json("joined")
        operator.handle("/kick Bob spam and more spam")
        kicked = {"type": "left", "name": "bob", "reason": "kicked: spam and more spam"}
        assert [json.loads(line) for line in bob.expect_closed()] == [kicked]
        assert alice.next_json() == kicked
        operator.handle("/kick alice")
        assert alice.expect_json("left")["reason"] == "kicked: by the operator"
        assert recorder.lines == []
        assert server.room.names() == ()


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("/kick", ["Usage: /kick NAME [REASON]"]),
        ("/kick nobody", ["Nobody here is called nobody."]),
        ("/dance", ["Unknown command /dance; /help lists them."]),
        ("/\x1b[2J", ["Unknown command /\\x1b[2J; /help lists them."]),
        ("/help", list(OPERATOR_HELP)),
        ("   ", []),
    ],
    ids=["kick usage", "kick nobody", "unknown", "escaped", "help", "blank"],
)
def test_operator_answers(operator, recorder, typed, shown):
    operator.handle(typed)
    assert recorder.lines == shown
    assert recorder.stops == 0


def test_quit_asks_the_console_to_stop(operator, recorder):
    operator.handle("/quit")
    assert recorder.stops == 1
    assert recorder.lines == ["Stopping the server..."]


# ---------------------------------------------------------------------------
# The log shows control characters escaped


@pytest.mark.parametrize(
    ("message", "args", "shown"),
    [
        ("alice: %s", ("hello",), "alice: hello"),
        ("alice: %s", ("\x1b[31mred\x1b[0m",), "alice: \\x1b[31mred\\x1b[0m"),
        ("alice: %s", ("ding\x07",), "alice: ding\\x07"),
        ("alice: %s", ("over\rwrite",), "alice: over\\rwrite"),
        ("alice: %s", ("hi\nbob: forged",), "alice: hi\\nbob: forged"),
        ("alice: %s", ("\u202eevil",), "alice: \\u202eevil"),
        ("alice: %s", ("\x9b2J",), "alice: \\x9b2J"),
        ("tab\tkept, café ☕", (), "tab\tkept, café ☕"),
    ],
    ids=["plain", "escape", "bell", "cr", "newline", "bidi", "c1 csi", "kept"],
)
def test_safe_formatter_escapes_control_characters(message, args, shown):
    formatter = SafeFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "chat.room", logging.INFO, __file__, 1, message, args, None
    )
    assert formatter.format(record) == f"INFO {shown}"


# ---------------------------------------------------------------------------
# Command-line options


def test_defaults_serve_this_computer_on_port_12345():
    config = config_from(build_parser().parse_args([]))
    assert config == ServerConfig(db=str(default_path()))
    assert (config.host, config.port, config.history) == ("127.0.0.1", 12345, 50)
    assert config.echo is False
    assert config.db.endswith("history.db")  # kept, in the user's data folder


def test_every_option_reaches_the_server_config():
    argv = [
        *("--host", "0.0.0.0", "--port", "0", "--max-clients", "7"),
        *("--history", "3", "--max-line-bytes", "100", "--max-outbox-bytes", "5000"),
        *("--log", "chat.log", "-v", "--db", "/tmp/x.db", "--store-private"),
    ]
    args = build_parser().parse_args(argv)
    assert config_from(args) == ServerConfig(
        host="0.0.0.0",
        port=0,
        max_clients=7,
        history=3,
        max_line_bytes=100,
        max_outbox_bytes=5000,
        db="/tmp/x.db",
        store_private=True,
    )
    assert (args.log, args.verbose) == ("chat.log", True)


def test_an_echo_server_keeps_no_history_whatever_db_says():
    args = build_parser().parse_args(["--echo", "--db", "/tmp/x.db"])
    config = config_from(args)
    assert (config.echo, config.db) == (True, ":memory:")


def test_the_first_line_says_where_to_connect():
    shown: list[str] = []
    print_addresses("127.0.0.1", 12345, shown.append)
    assert shown[0] == "Server listening on 127.0.0.1:12345"
    assert "--host 0.0.0.0" in shown[1]
    shown.clear()
    print_addresses("0.0.0.0", 4000, shown.append)
    assert shown[0] == "Server listening on 0.0.0.0:4000"
    assert shown[1] in (
        "Students can connect to:",
        "No network address found: only this computer can connect.",
    )


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error(port, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--port", port])
    assert stopped.value.code == 2
    assert "argument --port" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The real launcher in a subprocess


class Launcher:
    """``python server.py ARGS`` running in a subprocess; stdout read with deadlines."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.output = b""  # everything read from stdout so far
        self.lines: list[str] = []
        self._buffer = b""
        self._read = 0
        os.set_blocking(process.stdout.fileno(), False)

    def _fill(self, deadline: float) -> bool:
        """Read what stdout has, waiting until ``deadline``; False at its end."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; the server printed {self.lines!r}")
        ready, _, _ = select.select([self.process.stdout], [], [], remaining)
        if not ready:
            raise AssertionError(f"timed out; the server printed {self.lines!r}")
        data = os.read(self.process.stdout.fileno(), 65536)
        if not data:
            return False
        self.output += data
        *complete, self._buffer = (self._buffer + data).split(b"\n")
        self.lines.extend(line.decode("utf-8") for line in complete)
        return True

    def next_line(self, timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while self._read >= len(self.lines):
            if not self._fill(deadline):
                raise AssertionError(f"stdout ended; the server printed {self.lines!r}")
        self._read += 1
        return self.lines[self._read - 1]

    def expect(self, fragment: str, timeout: float = DEADLINE) -> str:
        """Skip output lines until one containing ``fragment``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(deadline - time.monotonic(), 0.001))
            if fragment in line:
                return line

    def rest(self, timeout: float = DEADLINE) -> list[str]:
        """Every line still to come, until stdout ends."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        rest, self._read = self.lines[self._read :], len(self.lines)
        return rest

    def type(self, line: str) -> None:
        """The operator types ``line`` and presses Enter."""
        self.process.stdin.write(line.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def wait_for_port(self) -> int:
        line = self.expect("Server listening on")
        match = LISTENING.match(line)
        assert match, line
        return int(match.group(1))


@contextlib.contextmanager
def launched(*args: str, stdin=subprocess.PIPE) -> Iterator[Launcher]:
    """Run the launcher with ``args``; kill it by its PID if it is still running."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)  # its output must come at once without it
    if "--db" not in args:  # never the user's own history file
        args = (*args, "--db", ":memory:")
    process = subprocess.Popen(
        [sys.executable, "server.py", *args],
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        yield Launcher(process)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(DEADLINE)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def running_launcher(
    *args: str, stdin=subprocess.PIPE
) -> Iterator[tuple[Launcher, int]]:
    """The launcher on port 0, serving; yields it and the port it printed."""
    with launched("--port", "0", *args, stdin=stdin) as server:
        port = server.wait_for_port()
        yield server, port


def stop_with(server: Launcher, signum: int) -> float:
    """Send ``signum``; return how long the process took to exit."""
    started = time.monotonic()
    os.kill(server.process.pid, signum)
    server.process.wait(2 * DEADLINE)
    return time.monotonic() - started


def test_the_launcher_serves_and_logs_the_conversation_at_once():
    with running_launcher() as (server, port):
        with plain_client(port, "alice") as alice:
            joined = server.expect("* alice joined")
            assert TIMESTAMP.match(joined), joined
            assert joined.endswith(f"from 127.0.0.1:{alice.sock.getsockname()[1]}")
            with plain_client(port, "bob") as bob:
                alice.expect_text("* bob joined")
                alice.send_line("hello bob")
                assert bob.expect_text("alice:") == "alice: hello bob"
                said = server.expect("alice: hello bob")
                assert TIMESTAMP.match(said) and said[9:] == "alice: hello bob"
                bob.send_line("/me waves")
                assert alice.expect_text("waves") == "* bob waves"
                bob.send_line("/quit")
                assert bob.expect_closed() == []
            left = server.expect("* bob left")
            assert TIMESTAMP.match(left) and left[9:] == "* bob left (quit)"
        assert server.process.poll() is None  # still serving
        assert stop_with(server, signal.SIGTERM) < 2.0
        assert server.process.returncode == 0


def test_control_characters_from_a_client_reach_the_console_escaped():
    with running_launcher() as (server, port), plain_client(port, "mallory") as mallory:
        server.expect("* mallory joined")
        mallory.send_raw(b"ding\x07 \x1b[2J\x1b]0;owned\x07 \xe2\x80\xae!\n")
        line = server.expect("mallory: ")
        assert line[9:] == "mallory: ding\\x07 \\x1b[2J\\x1b]0;owned\\x07 \\u202e!"
        mallory.send_raw(b"\x1b[31m\n")  # an escape sequence alone on a line
        server.expect("mallory: \\x1b[31m")
        assert b"\x1b" not in server.output and b"\x07" not in server.output


def test_log_file_gets_the_conversation(tmp_path):
    transcript = tmp_path / "chat.log"

    # The room logs just after it lets go of its lock, so another thread's
    # next event may be logged first: wait for each log line itself before
    # making the next event happen.
    def in_transcript(text: str) -> None:
        wait_for(
            lambda: text in transcript.read_text(encoding="utf-8"),
            what=f"{text!r} in the transcript",
        )

    with running_launcher("--log", str(transcript)) as (server, port):
        with plain_client(port, "alice") as alice:
            in_transcript("alice joined")
            bob = plain_client(port, "bob")
            in_transcript("bob joined")
            alice.send_line("for the record \x1b[1m")
            bob.expect_text("alice:")
            in_transcript("for the record")
            bob.send_line("/quit")
            alice.expect_text("* bob left")
            in_transcript("bob left")
            bob.close()
            server.type("/kick alice enough")
            alice.expect_closed()

        def logged():
            lines = transcript.read_text(encoding="utf-8").splitlines()
            return lines if len(lines) >= 5 else None

        lines = wait_for(logged, what="the transcript")
        stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
        assert all(stamp.match(line) for line in lines), lines
        said = [line[20:] for line in lines]
        assert said[0].startswith("* alice joined from 127.0.0.1:")
        assert said[1].startswith("* bob joined from 127.0.0.1:")
        assert said[2:] == [
            "alice: for the record \\x1b[1m",
            "* bob left (quit)",
            "* alice was kicked (enough)",
        ]


def test_the_operator_types_on_standard_input():
    with running_launcher() as (server, port):
        with (
            plain_client(port, "alice") as alice,
            json_client(port, "bob") as bob,
        ):
            server.expect("* bob joined")
            server.type("/list")
            assert server.expect("in the room:") == "2 in the room:"
            assert server.next_line().split() == [
                "alice",
                f"127.0.0.1:{alice.sock.getsockname()[1]}",
            ]
            assert server.next_line().split()[0] == "bob"
            server.type("Hello, class! \x1b[5m")
            assert alice.expect_text("server:") == "server: Hello, class! \\x1b[5m"
            message = bob.expect_json("message")
            assert (message["from"], message["text"]) == (
                "server",
                "Hello, class! \x1b[5m",
            )
            server.type("/kick bob no reason at all")
            kicked = {
                "type": "left",
                "name": "bob",
                "reason": "kicked: no reason at all",
            }
            assert [json.loads(line) for line in bob.expect_closed()] == [kicked]
            assert (
                alice.expect_text("bob left") == "* bob left (kicked: no reason at all)"
            )
            assert server.expect("kicked")[9:] == "* bob was kicked (no reason at all)"
            server.type("/quit")
            assert alice.expect_closed()[-1] == f"* {GOODBYE}".encode()
        assert server.rest()[-1] == "Server stopped."
        assert server.process.wait(DEADLINE) == 0


def test_standard_input_at_its_end_keeps_the_server_serving():
    with running_launcher(stdin=subprocess.DEVNULL) as (server, port):
        server.expect("Type a line to talk to everyone")
        with plain_client(port, "alice") as alice, plain_client(port, "bob") as bob:
            alice.send_line("still there?")
            assert bob.expect_text("alice:") == "alice: still there?"
        server.expect("* alice left")
        with plain_client(port, "carol"):
            server.expect("* carol joined")
        assert server.process.poll() is None
        assert stop_with(server, signal.SIGTERM) < 2.0
        assert server.process.returncode == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_the_server_cleanly_and_quickly(signum):
    with running_launcher() as (server, port):
        with (
            json_client(port, "alice") as alice,
            plain_client(port, "bob") as bob,
            LineClient(port) as unnamed,
        ):
            server.expect("* bob joined")
            assert unnamed.next_text() == PROMPT
            took = stop_with(server, signum)
            assert took < 2.0
            assert server.process.returncode == 0
            assert json.loads(alice.expect_closed()[-1]) == {
                "type": "notice",
                "text": GOODBYE,
            }
            assert bob.expect_closed()[-1] == f"* {GOODBYE}".encode()
            assert unnamed.expect_closed() == [f"* {GOODBYE}".encode()]
        assert server.rest()[-1] == "Server stopped."
        assert server.process.stderr.read() == b""  # no traceback


def test_echo_mode_end_to_end():
    with running_launcher("--echo") as (server, port):
        server.expect("Echo mode: every line goes back to its sender.")
        # printf 'Hello, server!\n' | nc -N 127.0.0.1 PORT
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as nc:
            nc.sendall(b"Hello, server!\n")
            nc.shutdown(socket.SHUT_WR)
            received = b""
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                data = nc.recv(4096)
                if not data:
                    break
                received += data
            assert received == b"Hello, server!\n"


def test_an_echo_server_runs_beside_the_chat_server_and_keeps_no_history(tmp_path):
    """The README starts both: the echo server must not lock the chat's
    database, nor put what its console types into that history."""
    db = str(tmp_path / "history.db")
    with running_launcher("--db", db) as (chat, chat_port):
        with running_launcher("--echo", "--db", db) as (echo, _):
            echo.expect("Echo mode: every line goes back to its sender.")
            echo.type("hello from the echo console")
            echo.expect("This server only echoes (--echo): nobody hears the console.")
            assert not any(line.startswith("History:") for line in echo.lines)
        with plain_client(chat_port, "alice") as alice:
            chat.expect("* alice joined")
            alice.send_line("still here")
            chat.expect("alice: still here")


def test_options_reach_the_running_server():
    with running_launcher("--history", "1", "--max-clients", "1", "-v") as (
        server,
        port,
    ):
        with plain_client(port, "alice") as alice:
            assert TIMESTAMP.match(server.expect("connection from 127.0.0.1:"))
            alice.send_line("first")
            alice.send_line("second")
            alice.send_line("/quit")
            alice.expect_closed()
        server.expect("* alice left")

        # The reader thread may still be finishing: wait until a place is free.
        def bob_gets_in():
            client = LineClient(port)
            try:
                client.send_line("bob")
                return client if client.expect_text("The last") else None
            except (AssertionError, OSError):
                client.close()
                return None

        with wait_for(bob_gets_in, what="a free place") as bob:
            assert bob.next_text().endswith("alice: second")  # only the last one
            bob.expect_text("Welcome, bob!")
            with LineClient(port) as third:
                refusal = json.loads(third.expect_closed()[0])
                assert (refusal["type"], refusal["code"]) == ("error", "server_full")


def test_a_port_in_use_gives_a_clear_message():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with launched("--port", str(port)) as server:
            assert server.process.wait(DEADLINE) == 1
            lines = server.rest()
            assert lines[0].startswith(f"Cannot listen on 127.0.0.1:{port}: ")
            assert "Address already in use" in lines[0]
            assert "Another program" in lines[1]
            assert server.process.stderr.read() == b""  # no traceback


@pytest.mark.parametrize("option", ["--max-line-bytes", "--max-outbox-bytes"])
@pytest.mark.parametrize("value", ["0", "-5", "99999999999", "lots"])
def test_sizes_out_of_range_are_usage_errors(option, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([option, value])
    assert stopped.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_a_long_line_limit_raises_the_hard_limit_with_it():
    config = config_from(build_parser().parse_args(["--max-line-bytes", "2000000"]))
    assert config.max_line_bytes == 2_000_000
    assert config.max_unterminated_bytes >= config.max_line_bytes


def test_an_unwritable_log_file_is_a_clear_message(tmp_path):
    done = subprocess.run(
        [sys.executable, "server.py", "--port", "0", "--log", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert "Cannot write the log file" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_stats_show_one_row_per_client(server, operator, recorder):
    with json_client(server.port, "alice") as alice, plain_client(server.port, "bob"):
        alice.send_json(type="say", text="one")
        alice.send_json(type="say", text="two")
        alice.expect_json("message")
        alice.expect_json("message")
        wait_for(
            lambda: any(r.name == "alice" and r.lines_in == 3 for r in server.stats()),
            what="alice's lines counted",
        )
        operator.handle("/stats")
    header, *rows, total = recorder.lines
    columns = ["name", "address", "connected", "in", "out", "queued", "idle"]
    assert header.split() == columns
    assert total == "2 connection(s)."
    alice_row = next(r for r in rows if r.startswith("alice "))
    fields = alice_row.split()
    assert fields[3] == "3"  # hello and two lines
    assert int(fields[4]) >= 3  # bob joined, and its own two lines came back
    assert next(r for r in rows if r.startswith("bob ")).split()[3] == "1"


# ---------------------------------------------------------------------------
# /bots: a crowd for the front of the room


def test_bots_fill_the_room_and_leave_on_bots_0(server, recorder):
    operator = Operator(server, recorder.request_stop, recorder.out)
    try:
        with json_client(server.port, "teacher") as teacher:
            operator.handle("/bots 3")
            assert recorder.lines == ["3 bots are coming in; /bots 0 sends them away."]
            arrived = {teacher.expect_json("joined")["name"] for _ in range(3)}
            wait_for(lambda: len(server.room.names()) == 4, what="3 bots in the room")
            assert arrived == set(server.room.names()) - {"teacher"}
            said = teacher.expect_json("message", timeout=30)  # they talk
            assert said["from"] in arrived
            operator.handle("/bots")
            assert recorder.lines[-1].startswith("3 bots, 3 in the room, ")
            operator.handle("/bots 0")
            assert recorder.lines[-1] == "The bots have left."
            left = {teacher.expect_json("left")["name"] for _ in range(3)}
            assert left == arrived
            assert server.room.names() == ("teacher",)
    finally:
        operator.stop()


@pytest.mark.parametrize("typed", ["/bots many", "/bots -1", "/bots 201"])
def test_bots_refuse_a_bad_count(server, recorder, typed):
    operator = Operator(server, recorder.request_stop, recorder.out)
    operator.handle(typed)
    assert recorder.lines == ["Usage: /bots N, with N from 0 to 200."]
    assert server.room.names() == ()


def test_stopping_the_console_sends_the_bots_away(server, recorder):
    operator = Operator(server, recorder.request_stop, recorder.out)
    try:
        operator.handle("/bots 2")
        wait_for(lambda: len(server.room.names()) == 2, what="2 bots in the room")
    finally:
        operator.stop()  # joins every bot's threads (conftest checks for leaks)
    wait_for(lambda: server.room.names() == (), what="the bots to leave")


def test_a_line_too_long_on_stdin_is_skipped_and_reading_goes_on():
    """A file piped in with a line of over a MiB: that line is dropped, and
    said to be, and the next line is read (it used to end the thread with a
    traceback, and a /quit after it was never read)."""
    read, write = os.pipe()
    lines, too_long, ended = [], [], threading.Event()
    with os.fdopen(read, "r") as stream:
        reader = StdinReader(
            lines.append,
            on_end=ended.set,
            stream=stream,
            on_too_long=lambda: too_long.append(True),
        )
        reader.start()
        with os.fdopen(write, "wb") as pipe:
            pipe.write(b"before\n" + b"x" * (MAX_UNTERMINATED_BYTES + 10) + b"\n")
            pipe.write(b"/quit\n")
        assert ended.wait(DEADLINE)
        reader.stop()
    assert lines == ["before", "/quit"]  # not the tail of the long line either
    assert too_long == [True]


# ---------------------------------------------------------------------------
# Found in review: what a teacher at the console would have seen


def test_bots_are_refused_on_an_echo_server(recorder):
    """An echo server has no room: bots would wait for a welcome forever."""
    from tests.helpers import running_server

    with running_server(echo=True) as server:
        operator = Operator(server, recorder.request_stop, recorder.out)
        try:
            operator.handle("/bots 3")
            assert recorder.lines == [
                "This server only echoes (--echo): there is no room for bots."
            ]
        finally:
            operator.stop()


def test_bots_n_says_how_the_crowd_changed(server, recorder):
    """Shrinking the crowd must not say that bots are coming in."""
    operator = Operator(server, recorder.request_stop, recorder.out)
    try:
        for typed in ("/bots 3", "/bots 1", "/bots 1", "/bots 2", "/bots 0"):
            operator.handle(typed)
        assert recorder.lines == [
            "3 bots are coming in; /bots 0 sends them away.",
            "2 bots sent away; the crowd is now 1.",
            "The crowd is 1 already.",
            "1 more bot is coming in; the crowd is now 2.",
            "The bots have left.",
        ]
        wait_for(lambda: server.room.names() == (), what="the bots to leave")
    finally:
        operator.stop()


def test_bots_say_why_none_are_left(server, recorder):
    """Every bot turned away: /bots says why, not just "No bots"."""
    operator = Operator(server, recorder.request_stop, recorder.out)

    def status() -> list[str] | None:
        recorder.lines.clear()
        operator.handle("/bots")
        shown = list(recorder.lines)
        return shown if shown[0].startswith("No bots") and shown[1:] else None

    try:
        operator.handle("/ban 127.0.0.1")
        operator.handle("/bots 2")
        shown = wait_for(status, what="the reason the bots gave up")
        assert shown[1].startswith("Last problem: ")
        assert shown[1].endswith(": You are banned from this server.")
    finally:
        operator.stop()


def test_a_command_that_fails_does_not_end_the_console(server, recorder, monkeypatch):
    """A bug behind one command (here: the bots' thread failed, so /bots
    raises) is reported; the keyboard thread goes on, and /quit still works."""
    from chat.bots import Bots

    def broken(self: Bots, now: float) -> None:
        raise ZeroDivisionError("a bug in the bots")

    monkeypatch.setattr(Bots, "_tend", broken)
    operator = Operator(server, recorder.request_stop, recorder.out)
    try:
        operator.handle("/bots 1")  # the crowd's thread fails, and ends
        recorder.lines.clear()
        operator.handle("/bots 2")
        assert recorder.lines == ["/bots failed: a bug (see the log)."]
        operator.handle("/quit")
        assert recorder.stops == 1
    finally:
        operator.stop()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-clients", "0"),  # nobody could ever join: "the server is full"
        ("--max-clients", "-1"),
        ("--history", "-3"),
        ("--history", "99999999999999999999"),  # was a traceback at start
        ("--history", "lots"),
        ("--flood-burst", "0"),  # every line refused (was quietly taken as 1)
        ("--flood-rate", "-1"),  # was flood control quietly off
        ("--flood-rate", "nan"),
    ],
)
def test_counts_out_of_range_are_usage_errors(option, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([option, value])
    assert stopped.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_discovery_says_when_its_udp_port_is_taken():
    with (
        running_server() as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        udp.bind(("127.0.0.1", server.port))  # the same number, on UDP
        said: list[str] = []
        assert console.start_discovery(server, said.append) is None
    assert said == [
        f"Discovery is off: UDP port {server.port} is taken (Address already in use)."
    ]


def test_discovery_that_cannot_listen_for_another_reason_says_so(monkeypatch):
    def unavailable(*args, **kwargs):
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    monkeypatch.setattr(console, "DiscoveryResponder", unavailable)
    with running_server() as server:
        said: list[str] = []
        assert console.start_discovery(server, said.append) is None
    assert said == [
        f"Discovery is off: it cannot listen on UDP port {server.port} "
        "(Cannot assign requested address)."
    ]
