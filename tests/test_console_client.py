"""The console client (``python -m chat``) and its keyboard reader, as a
student meets them: odd arguments, odd input, odd output, Ctrl+C.

The real client runs in a subprocess, against a real server or a fake one
(a socket listening on 127.0.0.1 that the test answers by hand).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat.__main__ import Printer, send_once
from chat.protocol import MAX_LINE_BYTES, MAX_UNTERMINATED_BYTES, Welcome, encode
from chat.terminal import StdinReader
from chat.tls import file_fingerprint
from tests.helpers import DEADLINE, LineClient, json_client, running_server, wait_for

ROOT = Path(__file__).resolve().parent.parent
POSIX_ONLY = pytest.mark.skipif(
    sys.platform == "win32", reason="bytes in argv, SIGINT and FIONREAD are POSIX"
)


def start_client(*args: str | bytes, env: dict | None = None) -> subprocess.Popen:
    """``python -m chat ARGS`` with all three streams piped (as bytes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "chat", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
    )


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """Close its input, wait for it to end; its output and errors, as text."""
    try:
        out, err = process.communicate(timeout=DEADLINE * 2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def run_client(*args: str | bytes, stdin: bytes = b"") -> tuple[int, str, str]:
    process = start_client(*args)
    process.stdin.write(stdin)
    out, err = finish(process)
    return process.returncode, out, err


@pytest.fixture
def listener():
    """A fake server: a socket on 127.0.0.1 that nobody answers but the test."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def port_of(sock: socket.socket) -> str:
    return str(sock.getsockname()[1])


# -- reading what is typed or piped in ------------------------------------------


@pytest.mark.parametrize(
    ("piped", "lines"),
    [
        (b"one\ntwo", ["one", "two"]),  # a file with no newline at its end
        (b"one", ["one"]),  # Ctrl+D twice after typing, in a terminal
        (b"one\r\ntwo\r\n", ["one", "two"]),  # saved by a Windows editor
        (b"caf\xe9 \xff\n", ["caf\ufffd \ufffd"]),  # not UTF-8: no traceback
        (b"\n\n", ["", ""]),
    ],
)
def test_every_line_piped_in_is_read(piped, lines):
    read, write = os.pipe()
    got, ended = [], threading.Event()
    with os.fdopen(read, "r", encoding="utf-8") as stream:
        reader = StdinReader(got.append, on_end=ended.set, stream=stream)
        reader.start()
        try:
            with os.fdopen(write, "wb") as pipe:
                pipe.write(piped)
            assert ended.wait(DEADLINE)
        finally:
            reader.stop()
    assert got == lines


def test_a_last_line_without_a_newline_reaches_the_room(server):
    with json_client(server.port, "bob") as bob:
        status, _, err = run_client(
            "--port", str(server.port), "--name", "ann", stdin=b"hello\nbye now"
        )
        assert status == 0, err
        said = [bob.expect_json("message")["text"] for _ in range(2)]
    assert said == ["hello", "bye now"]


def unread(pipe) -> int:
    """Bytes written to ``pipe`` that its reader has not read yet (POSIX)."""
    import fcntl
    import termios

    buffer = fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buffer, sys.byteorder)


def typed_before_the_welcome(
    process: subprocess.Popen, listener: socket.socket, typed: bytes
) -> LineClient:
    """The fake server's side of ``process``'s connection, once ``process``
    has said hello and has read ``typed`` from its input (no welcome yet)."""
    fake = LineClient.accept(listener)
    assert json.loads(fake.next_line())["type"] == "hello"
    process.stdin.write(typed)
    process.stdin.flush()
    wait_for(lambda: unread(process.stdin) == 0, what="the client to read")
    return fake


@POSIX_ONLY
def test_lines_piped_before_exit_go_out_even_before_the_welcome(listener):
    """``printf 'hello\\nexit\\n' | python -m chat``: the pipe is read at once,
    before the welcome; the exit must not drop the line above it."""
    process = start_client("--port", port_of(listener), "--name", "ann")
    try:
        with typed_before_the_welcome(process, listener, b"hello\nexit\n") as fake:
            fake.send_raw(encode(Welcome("ann", ("ann",), ())))
            sent = [json.loads(line) for line in fake.expect_closed()]
    finally:
        _, err = finish(process)
    assert [(m["type"], m.get("text")) for m in sent] == [
        ("say", "hello"),
        ("bye", None),
    ]
    assert process.returncode == 0, err


@POSIX_ONLY
def test_lines_that_no_echo_confirmed_are_reported_at_the_end(listener):
    """A server that hangs up before any welcome: the typed line may not
    have arrived, and the person is told so, not left to guess."""
    process = start_client("--port", port_of(listener), "--name", "ann")
    try:
        with typed_before_the_welcome(process, listener, b"are you there?\n"):
            pass  # and the server hangs up
        out, err = finish(process)  # it hung up: the client stops (first try)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)
    assert "1 line you typed may not have reached the room" in out, (out, err)
    assert process.returncode == 1


# -- what it prints --------------------------------------------------------------


def test_a_reader_that_goes_away_ends_the_client_quietly(server):
    """``python -m chat | head -1``: once nobody reads, the client leaves the
    room and ends, without a traceback."""
    with json_client(server.port, "bob") as bob:
        process = start_client("--port", str(server.port), "--name", "ann")
        try:
            bob.expect_json("joined")
            # head reads until it has its line (here: the welcome), and exits
            deadline = time.monotonic() + DEADLINE
            while b"Welcome, ann" not in process.stdout.readline():
                assert time.monotonic() < deadline, "no welcome printed"
            process.stdout.close()
            bob.send_json(type="say", text="anyone there?")
            assert bob.expect_json("left")["name"] == "ann"
            process.stdin.close()
            process.wait(DEADLINE)
            err = process.stderr.read().decode("utf-8", "replace")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(DEADLINE)
            process.stderr.close()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert process.returncode == 0


def test_text_the_output_cannot_encode_is_escaped_not_fatal(server):
    """A Windows console redirected to a file is cp1252: an emoji from the
    room must not end the client (here: an ASCII stdout)."""
    with json_client(server.port, "bob") as bob:
        process = start_client(
            "--port",
            str(server.port),
            "--name",
            "ann",
            env={"PYTHONIOENCODING": "ascii"},
        )
        try:
            bob.expect_json("joined")
            bob.send_json(type="say", text="hi 👋")
            lines: list[bytes] = []
            wait_for(
                lambda: lines.append(process.stdout.readline()) or b"bob:" in lines[-1],
                what="bob's line printed",
            )
            process.stdin.write(b"exit\n")
        finally:
            _, err = finish(process)
    assert lines[-1] == b"bob: hi \\U0001f44b\n"
    assert "Traceback" not in err, err
    assert process.returncode == 0


def test_the_echo_clients_reply_cannot_drive_the_terminal(listener):
    """Whatever the server sends back is printed with its controls escaped:
    no clearing the screen, no retitling the window."""
    process = start_client("--port", port_of(listener), "--send", "hi")
    try:
        with LineClient.accept(listener) as fake:
            assert fake.next_line() == b"hi"
            fake.send_raw(b"\x1b[2J\x1b]0;owned\x07 hello\n")
    finally:
        out, err = finish(process)
    assert out == "Received from server: \\x1b[2J\\x1b]0;owned\\x07 hello\n", err
    assert process.returncode == 0


# -- its arguments -------------------------------------------------------------


@POSIX_ONLY
def test_the_echo_client_sends_an_argument_that_is_not_utf8(listener):
    process = start_client("--port", port_of(listener), "--send", b"caf\xe9")
    try:
        with LineClient.accept(listener) as fake:
            assert fake.next_line() == b"caf\xe9"  # the bytes typed, as they were
            fake.send_raw(b"ok\n")
    finally:
        out, err = finish(process)
    assert "Traceback" not in err, err
    assert out == "Received from server: ok\n"
    assert process.returncode == 0


@POSIX_ONLY
@pytest.mark.parametrize("option", ["--name", "--password"])
def test_a_name_or_password_that_is_not_utf8_is_refused_at_once(server, option):
    """It used to reach the wire, and fail there with a traceback and
    "an error inside the program"."""
    args = ["--port", str(server.port), option, b"\xe9"]
    if option == "--password":
        args += ["--name", "ann"]
    status, out, err = run_client(*args)
    assert status == 2
    assert f"argument {option}: not UTF-8 text" in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1"])
def test_a_port_out_of_range_is_refused_at_once(port):
    """99999 used to be taken modulo 65536: port 34463, "connection refused"."""
    status, out, err = run_client("--port", port, "--name", "ann")
    assert status == 2
    assert f"argument --port: {port} is not a port (use 1 to 65535)" in err
    assert out == ""


# -- Ctrl+C --------------------------------------------------------------------


@POSIX_ONLY
def test_ctrl_c_while_the_echo_client_waits_ends_it_without_a_traceback(listener):
    process = start_client("--port", port_of(listener), "--send", "hi")
    try:
        with LineClient.accept(listener) as fake:
            assert fake.next_line() == b"hi"  # now it waits for the answer
            process.send_signal(signal.SIGINT)
            process.wait(DEADLINE)
    finally:
        _, err = finish(process)
    assert "Traceback" not in err, err
    assert process.returncode == 130  # 128 + SIGINT, as a shell reports it


def test_an_echo_answer_with_no_end_is_explained_not_a_traceback(listener):
    """Pointed at a port that streams bytes with no newline (a mistake), the
    echo client used to read a whole MiB and die of a ProtocolError."""
    process = start_client("--port", port_of(listener), "--send", "hi")
    try:
        with LineClient.accept(listener) as fake:
            assert fake.next_line() == b"hi"
            try:
                fake.send_raw(b"x" * (MAX_UNTERMINATED_BYTES + 10))
            except OSError:  # the client hung up as soon as it knew
                pass
    finally:
        out, err = finish(process)
    assert "Traceback" not in err, err
    assert out == (
        f"The server's answer is over {MAX_LINE_BYTES:,} bytes long; it is not shown.\n"
    )
    assert process.returncode == 1


# -- the window's launcher, as started from a terminal ----------------------------


def test_the_window_without_tk_says_what_to_install(tmp_path):
    """A Python built without Tk (Ubuntu's without python3-tk, pyenv's without
    Tk's headers) used to answer ``python gui_client.py`` with a traceback."""
    fake = tmp_path / "tkinter"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named '_tkinter'\", name='_tkinter')\n"
    )
    done = subprocess.run(
        [sys.executable, "gui_client.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},  # found before the stdlib
        timeout=DEADLINE * 2,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert "sudo apt install python3-tk" in done.stderr


def test_the_window_without_a_screen_says_so(tmp_path):
    """ssh without -X, WSL without an X server: Tk finds no display."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")
    }
    env["HOME"] = env["XDG_CONFIG_HOME"] = str(tmp_path)  # not the user's settings
    done = subprocess.run(
        [sys.executable, "gui_client.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=DEADLINE * 2,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert "Cannot open the chat window" in done.stderr
    assert "python -m chat" in done.stderr


# -- the echo client over TLS ----------------------------------------------------

CERT = str(ROOT / "tests" / "data" / "localhost.pem")
KEY = str(ROOT / "tests" / "data" / "localhost.key")


@pytest.fixture(scope="module")
def tls_echo():
    """An echo server that speaks only TLS, with the test certificate."""
    with running_server(echo=True, tls_cert=CERT, tls_key=KEY) as server:
        yield server


def send_over_tls(port: int, **trust) -> tuple[int, str]:
    out = io.StringIO()
    status = send_once("localhost", port, "hi 👋", Printer(out), tls=True, **trust)
    return status, out.getvalue()


def test_the_echo_client_speaks_tls_when_asked(tls_echo):
    """``--send`` used to ignore ``--tls`` and talk in clear text."""
    assert send_over_tls(tls_echo.port, cafile=CERT) == (
        0,
        "Received from server: hi 👋\n",
    )
    pinned = file_fingerprint(CERT).lower()  # as a person may copy it
    assert send_over_tls(tls_echo.port, pinned=pinned)[0] == 0


@pytest.mark.parametrize("pinned", [None, "AA:BB"])
def test_the_echo_client_trusts_no_unknown_certificate(tls_echo, pinned):
    status, said = send_over_tls(tls_echo.port, pinned=pinned)
    assert status == 1
    assert f"its fingerprint is {file_fingerprint(CERT)}" in said
    known = "not known" if pinned is None else "not the one expected"
    assert f"The server's certificate is {known}:" in said
    assert "Received" not in said


def test_the_echo_client_says_when_the_server_has_no_tls():
    with running_server() as plain_chat:  # (an echo server echoes the hello)
        status, said = send_over_tls(plain_chat.port, cafile=CERT)
    assert status == 1 and "No TLS with localhost" in said
