"""The demo bots (``chat.bots``) against a real server, and ``python -m chat.bots``."""

from __future__ import annotations

import itertools
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat.bots import (
    ACTIONS,
    MAX_BOTS,
    MAX_RATE,
    NAMES,
    PHRASES,
    Bots,
    bot_names,
    build_parser,
    compose,
)
from chat.protocol import MAX_NAME_CHARS, check_name, name_key
from chat.tls import file_fingerprint
from tests.helpers import DEADLINE, LineClient, json_client, running_server, wait_for

ROOT = Path(__file__).resolve().parent.parent
FIRST_FIVE = ("ada", "alan", "grace", "linus", "guido")


@pytest.fixture
def make_bots():
    """Bots on 127.0.0.1 that the test need not stop (but may)."""
    made: list[Bots] = []

    def make(port: int, **options) -> Bots:
        options.setdefault("seed", 7)
        bots = Bots("127.0.0.1", port, **options)
        made.append(bots)
        return bots

    yield make
    for bots in made:
        assert bots.stop(), "the bots did not stop in time"


def room_is(server, names) -> bool:
    return sorted(server.room.names()) == sorted(names)


def bot_threads(names) -> list[str]:
    """Live threads that belong to bots: their clients' writers, the crowd's own."""
    writers = {f"writer {name}" for name in names}
    return [
        thread.name
        for thread in threading.enumerate()
        if thread.name in writers or thread.name.startswith("bots")
    ]


# -- the crowd ----------------------------------------------------------------


def test_resize_to_five_brings_five_bots_in(server, make_bots):
    bots = make_bots(server.port)
    assert bots.resize(5, timeout=DEADLINE)
    assert bots.count == 5
    wait_for(lambda: room_is(server, FIRST_FIVE), what="five bots in the room")
    wait_for(lambda: bots.joined == 5, what="the bots to count themselves in")
    assert bots.problem == ""


def test_bots_talk_within_the_default_flood_limit(make_bots):
    with running_server(flood_rate=5.0) as server:  # the server's defaults
        bots = make_bots(server.port, rate=MAX_RATE)
        bots.resize(3)
        with json_client(server.port, "watcher") as watcher:
            lines = []
            deadline = time.monotonic() + DEADLINE
            while len(lines) < 8:
                remaining = max(deadline - time.monotonic(), 0.001)
                message = watcher.expect_json("message", timeout=remaining)
                lines.append(message)
        assert {line["from"] for line in lines} <= set(FIRST_FIVE[:3])
        assert all(line["text"].strip() for line in lines)
        wait_for(lambda: bots.sent >= 8, what="the bots to count their lines")
        assert bots.problem == ""  # no line refused as a flood
        assert bots.stop()


def test_bots_greet_whoever_comes_in(server, make_bots):
    bots = make_bots(server.port, rate=MAX_RATE)
    bots.resize(2)
    wait_for(lambda: bots.joined == 2, what="two bots in")
    with json_client(server.port, "student") as student:
        deadline = time.monotonic() + DEADLINE
        while True:
            remaining = max(deadline - time.monotonic(), 0.001)
            message = student.expect_json("message", timeout=remaining)
            if message["text"].startswith("@student "):
                break
        assert message["from"] in FIRST_FIVE[:2]


def test_shrinking_sends_the_newest_away_with_reason_quit(server, make_bots):
    bots = make_bots(server.port)
    bots.resize(5)
    wait_for(lambda: room_is(server, FIRST_FIVE), what="five bots in the room")
    with json_client(server.port, "watcher") as watcher:
        assert bots.resize(2, timeout=DEADLINE)
        assert bots.count == 2
        left = [watcher.expect_json("left") for _ in range(3)]
        assert sorted(m["name"] for m in left) == sorted(FIRST_FIVE[2:])
        assert {m["reason"] for m in left} == {"quit"}
        assert room_is(server, ("watcher", *FIRST_FIVE[:2]))
        bots.resize(4)  # names are given out again from the start
        wait_for(
            lambda: room_is(server, ("watcher", *FIRST_FIVE[:4])),
            what="two bots back",
        )


def test_resize_zero_and_stop_leave_nothing_behind(server, make_bots):
    bots = make_bots(server.port)
    bots.resize(5)
    wait_for(lambda: bots.joined == 5, what="five bots in")
    assert bot_threads(FIRST_FIVE)
    assert bots.resize(0, timeout=DEADLINE)
    assert bots.count == 0
    assert bot_threads(FIRST_FIVE) == ["bots"]  # only the crowd's own thread
    wait_for(lambda: server.room.names() == (), what="an empty room")
    bots.resize(3)
    wait_for(lambda: bots.joined == 3, what="three bots in")
    assert bots.stop()
    assert bot_threads(FIRST_FIVE) == []  # joined, not just ending
    assert bots.count == 0
    wait_for(lambda: server.room.names() == (), what="an empty room")
    assert bots.stop()  # again: nothing to do
    with pytest.raises(RuntimeError):
        bots.resize(1)


def test_a_taken_name_is_skipped(server, make_bots):
    with json_client(server.port, "ada"), json_client(server.port, "GRACE"):
        bots = make_bots(server.port)
        bots.resize(3)
        wait_for(
            lambda: room_is(server, ("ada", "GRACE", "alan", "linus", "guido")),
            what="bots under other names",
        )
        wait_for(lambda: bots.joined == 3, what="three bots in")
        assert bots.count == 3
        assert bots.problem == ""


def test_a_kicked_bot_leaves_the_crowd(server, make_bots):
    bots = make_bots(server.port)
    bots.resize(2)
    wait_for(lambda: bots.joined == 2, what="two bots in")
    assert server.room.kick("alan", "enough")
    wait_for(lambda: bots.count == 1, what="the crowd to notice")
    assert "kicked" in bots.problem
    assert server.room.names() == ("ada",)


def test_bots_give_the_room_password():
    with running_server(password="sesame") as server:
        with Bots("127.0.0.1", server.port, password="sesame") as bots:
            bots.resize(2)
            wait_for(lambda: bots.joined == 2, what="two bots in")
        with Bots("127.0.0.1", server.port) as bots:
            bots.resize(2)
            wait_for(lambda: bots.count == 0, what="the bots to give up")
            assert "password" in bots.problem


def test_bots_join_a_tls_server_with_its_fingerprint(make_bots):
    cert = str(ROOT / "tests" / "data" / "localhost.pem")
    key = str(ROOT / "tests" / "data" / "localhost.key")
    with running_server(tls_cert=cert, tls_key=key) as server:
        bots = make_bots(server.port, fingerprint=file_fingerprint(cert))
        bots.resize(2)
        wait_for(lambda: bots.joined == 2, what="two bots in over TLS")
        assert bots.stop()


def test_bots_give_up_when_nothing_listens(make_bots):
    bots = make_bots(free_port())
    bots.resize(2)
    wait_for(lambda: bots.count == 0, what="the bots to give up")
    assert "refused" in bots.problem


@pytest.mark.parametrize("n", [-1, MAX_BOTS + 1])
def test_resize_refuses_a_crowd_out_of_bounds(make_bots, n):
    bots = make_bots(free_port())
    with pytest.raises(ValueError, match=f"0 to {MAX_BOTS}"):
        bots.resize(n)
    assert bots.count == 0


@pytest.mark.parametrize("rate", [0, -1, MAX_RATE + 0.1])
def test_the_rate_is_bounded(rate):
    with pytest.raises(ValueError, match="rate"):
        Bots("127.0.0.1", 1, rate=rate)


def test_resize_returns_at_its_timeout_and_goes_on_in_the_background(server, make_bots):
    bots = make_bots(server.port)
    started = time.monotonic()
    bots.resize(100, timeout=0.2)  # the console's operator must not wait long
    assert time.monotonic() - started < 1.0
    wait_for(
        lambda: len(server.room.names()) == 100,
        timeout=4 * DEADLINE,
        what="a hundred bots in",
    )
    assert bots.resize(0, timeout=4 * DEADLINE)
    wait_for(lambda: server.room.names() == (), what="an empty room")


# -- what they say, and their names -------------------------------------------


@pytest.mark.parametrize(
    ("speaker", "recent", "may_reply_to"),
    [
        ("ada", [], set()),
        ("ada", ["ada", "ADA"], set()),  # never to oneself
        ("ada", ["alan", "ada", "student_1"], {"alan", "student_1"}),
    ],
)
def test_compose_says_something_and_replies_to_others(speaker, recent, may_reply_to):
    rng = random.Random(1)
    said = [compose(rng, speaker, recent) for _ in range(500)]
    replies = {text.split()[0][1:] for text, _ in said if text.startswith("@")}
    assert replies == may_reply_to
    assert all(text.strip() and len(text) < 200 for text, _ in said)
    assert {text for text, action in said if action} == set(ACTIONS)


def test_compose_greets_a_newcomer():
    text, action = compose(random.Random(1), "ada", ["alan"], newcomer="student")
    assert text.startswith("@student ") and not action


def test_compose_does_not_repeat_what_was_said_lately():
    rng = random.Random(2)
    said_lately = PHRASES[:-1]
    plain = [compose(rng, "ada", said_lately=said_lately) for _ in range(100)]
    assert {text for text, action in plain if not action} == {PHRASES[-1]}


def test_compose_is_repeatable():
    first = [compose(random.Random(3), "ada", ["bob"]) for _ in range(20)]
    again = [compose(random.Random(3), "ada", ["bob"]) for _ in range(20)]
    assert first == again


def test_bot_names_are_valid_and_distinct():
    names = list(itertools.islice(bot_names(), 2 * MAX_BOTS))
    assert tuple(names[:5]) == FIRST_FIVE
    assert names[len(NAMES)] == "ada2"
    assert len({name_key(name) for name in names}) == len(names)
    for name in names:
        assert check_name(name) == name
        assert len(name) <= MAX_NAME_CHARS


# -- python -m chat.bots ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_bots(*args: str, timeout: float = 3 * DEADLINE):
    return subprocess.run(
        [sys.executable, "-m", "chat.bots", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_runs_for_the_seconds_given(server):
    done = run_bots("3", "--port", str(server.port), "--rate", "3", "--seconds", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"All 3 bots are in the room at 127.0.0.1:{server.port}" in done.stdout
    assert "Stopped. The bots said" in done.stdout
    wait_for(lambda: server.room.names() == (), what="the bots' byes")


def test_cli_says_why_no_bot_could_join():
    done = run_bots("2", "--port", str(free_port()), "--seconds", "30")
    assert done.returncode == 1
    assert "No bot could join" in done.stdout
    assert "refused" in done.stdout


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["0"], "out of range"),
        ([str(MAX_BOTS + 1)], "out of range"),
        (["2", "--rate", "9"], "out of range"),
        (["2", "--seconds", "0"], "out of range"),
        (["2", "--port", "70000"], "not a port"),
    ],
)
def test_cli_refuses_bad_numbers(args, complaint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(args)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_cli_stops_cleanly_on_ctrl_c(server):
    process = subprocess.Popen(
        [sys.executable, "-m", "chat.bots", "4", "--port", str(server.port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert "bots are in the room" in read_until(process, b"in the room")
        wait_for(lambda: len(server.room.names()) == 4, what="four bots in")
        process.send_signal(signal.SIGINT)
        assert process.wait(DEADLINE) == 0
        assert "Stopped. The bots said" in read_until(process, b"Stopped")
        wait_for(lambda: server.room.names() == (), what="the bots' byes")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)
        process.stdout.close()


def read_until(
    process: subprocess.Popen, fragment: bytes, timeout: float = DEADLINE
) -> str:
    """Read the child's output until ``fragment`` shows; all read so far, as text."""
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while fragment not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {fragment!r} within {timeout} s: {seen!r}")
            if selector.select(remaining):
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"output ended without {fragment!r}: {seen!r}")
                seen += chunk
    return seen.decode("utf-8", "replace")


# -- found in review: what a teacher would have seen ---------------------------


def test_a_bot_turned_away_reports_what_the_server_said(make_bots):
    """A full server says why before it hangs up.  That is the problem
    reported, not the way the connection ended ("connection reset")."""
    with running_server(max_clients=2) as server:
        bots = make_bots(server.port)
        bots.resize(4)
        wait_for(lambda: bots.count == 2, what="two bots turned away")
        assert "full" in bots.problem, bots.problem
        assert bots.stop()


def test_a_servers_control_characters_never_reach_the_terminal(make_bots, caplog):
    """Bots may be pointed at anyone's server: what it says is shown escaped."""
    hostile = b'{"type":"error","code":"bad_password","text":"\\u001b[2J\\u0007gone"}\n'
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            with LineClient.accept(listener) as peer:
                peer.next_line()  # the hello
                peer.send_raw(hostile)

        fake = threading.Thread(target=answer, name="fake server", daemon=True)
        fake.start()
        bots = make_bots(listener.getsockname()[1])
        bots.resize(1)
        wait_for(lambda: bots.count == 0 and bots.problem, what="the bot to give up")
        fake.join(DEADLINE)
    assert "\\x1b[2J\\x07gone" in bots.problem
    shown = bots.problem + caplog.text
    assert "\x1b" not in shown and "\x07" not in shown


def test_a_bot_that_cannot_be_started_again_does_not_end_the_crowd(
    server, make_bots, monkeypatch
):
    """Out of threads when a taken name is tried again: that bot gives up and
    says why, as when the crowd grows; the others stay, and resize still works."""
    real_start = Bots._start

    def start(self: Bots, name: str):
        if name == "grace":  # the name tried after "ada", taken
            raise RuntimeError("can't start new thread")
        return real_start(self, name)

    monkeypatch.setattr(Bots, "_start", start)
    with json_client(server.port, "ada"):
        bots = make_bots(server.port)
        bots.resize(2)
        wait_for(lambda: bots.count == 1, what="the bot with no thread to give up")
        assert "can't start new thread" in bots.problem
        wait_for(lambda: room_is(server, ("ada", "alan")), what="alan to stay")
        monkeypatch.undo()
        assert bots.resize(3, timeout=DEADLINE)
        wait_for(lambda: bots.joined == 3, what="three bots in")


def test_cli_does_not_say_no_bot_could_join_once_they_had(server):
    """Every bot kicked out after joining: that is what it says, not that
    none could join."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chat.bots", "2", "--port", str(server.port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        read_until(process, b"in the room")
        wait_for(lambda: len(server.room.names()) == 2, what="two bots in")
        for name in server.room.names():
            server.room.kick(name, "enough")
        output = read_until(process, b"Stopped")
        assert process.wait(DEADLINE) == 1
        assert "No bot could join" not in output
        assert "kicked" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)
        process.stdout.close()


def test_a_bot_with_no_welcome_gives_up(make_bots, monkeypatch):
    """Pointed at something that accepts but never welcomes (an echo server,
    a silent port), a bot gives up and says so, rather than wait forever."""
    monkeypatch.setattr("chat.client.WELCOME_TIMEOUT", 0.5)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        bots = make_bots(listener.getsockname()[1])
        bots.resize(1)
        with LineClient.accept(listener) as peer:
            peer.next_line()  # the hello, never answered
            wait_for(lambda: bots.count == 0, what="the bot to give up")
    assert "no welcome" in bots.problem
