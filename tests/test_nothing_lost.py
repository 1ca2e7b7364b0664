"""Nothing lost, nothing doubled (issue 8), end to end on real sockets.

Servers run in this process on a ``tmp_path`` database and are stopped and
started again on it; the ``kill -9`` case and the console run the real
``server.py`` in a subprocess.  ``serving`` is ``helpers.running_server``
with one addition: something can be said in the room before the first
connection is accepted, so what a returning client finds there is decided
by the test, not by a race.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat import client as client_module
from chat.client import Disconnected
from chat.protocol import Message, Welcome
from chat.server import ChatServer, ServerConfig
from tests.helpers import (
    DEADLINE,
    LineClient,
    json_client,
    plain_client,
    wait_for,
)
from tests.test_client import next_event
from tests.test_console import Launcher, launched
from tests.test_store import on_disk

ROOT = Path(__file__).resolve().parent.parent
#: Long enough for a client's reconnect attempts (shortened below) to find
#: a server that was down, on a loaded machine.
COMEBACK = 3 * DEADLINE

_cids = itertools.count(1)


@contextlib.contextmanager
def serving(
    port: int = 0, before: Callable[[ChatServer], None] | None = None, **options: Any
) -> Iterator[ChatServer]:
    """A ``ChatServer`` on 127.0.0.1 that runs ``before(server)`` first.

    The port is listening from the start, so a client that connects early
    waits in the backlog until ``before`` is done.
    """
    options.setdefault("flood_rate", 0)
    server = ChatServer(ServerConfig(host="127.0.0.1", port=port, **options))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test accept"
    )
    try:
        if before is not None:
            before(server)
        thread.start()
        yield server
    finally:
        if thread.is_alive():
            server.shutdown()
            thread.join(DEADLINE)
        server.server_close()


@pytest.fixture
def clients(monkeypatch, make_client):
    """Start real ``ChatClient``s (``make_client``); each is closed at the end.

    Their reconnect delays are shortened: the back-off schedule is tested in
    test_client.py, and here it would only make the tests slow.
    """
    monkeypatch.setattr(client_module, "BACKOFF", (0.1, 0.2, 0.5))
    return make_client


# -- raw JSON clients ----------------------------------------------------------


def hello(port: int, name: str, **fields: Any) -> tuple[LineClient, dict]:
    """A raw JSON client that said hello with ``fields``; it and its welcome."""
    client = LineClient(port)
    client.send_json(type="hello", name=name, **fields)
    welcome = client.next_json()
    assert welcome["type"] == "welcome", welcome
    client.welcome = welcome  # type: ignore[attr-defined]  # as json_client does
    return client, welcome


def answer(client: LineClient, kind: str, cid: str) -> dict:
    """Skip lines until the ``kind`` line from ``client`` that carries ``cid``
    (another person's line may carry the same cid)."""
    name = client.welcome["name"]  # type: ignore[attr-defined]
    deadline = time.monotonic() + DEADLINE
    while True:
        line = client.expect_json(kind, max(deadline - time.monotonic(), 0.001))
        if line.get("cid") == cid and line["from"] == name:
            return line


def say(client: LineClient, text: str, cid: str | None = None) -> dict:
    """``client`` says ``text``; returns the line as the room numbered it."""
    cid = cid or f"cid-{next(_cids)}"
    client.send_json(type="say", text=text, cid=cid)
    return answer(client, "message", cid)


def whisper(client: LineClient, to: str, text: str, cid: str | None = None) -> dict:
    """A private line; returns the sender's copy (the room's confirmation)."""
    cid = cid or f"cid-{next(_cids)}"
    client.send_json(type="private", to=to, text=text, cid=cid)
    return answer(client, "private", cid)


def lines_until(client: LineClient, text: str) -> list[dict]:
    """Every chat line ``client`` receives, up to the one saying ``text``."""
    seen: list[dict] = []
    deadline = time.monotonic() + DEADLINE
    while not seen or seen[-1]["text"] != text:
        line = client.next_json(max(deadline - time.monotonic(), 0.001))
        if line["type"] in ("message", "private"):
            seen.append(line)
    return seen


def received(client: LineClient) -> list[dict]:
    """Every chat line ``client`` has received so far, read or not."""
    lines = [json.loads(line) for line in client.lines]
    return [line for line in lines if line["type"] in ("message", "private")]


def texts(lines) -> list[str]:
    return [line["text"] if isinstance(line, dict) else line.text for line in lines]


# -- a client that loses its server ------------------------------------------


def test_lines_typed_while_the_server_is_down_arrive_once_in_order(tmp_path, clients):
    db = str(tmp_path / "h.db")
    with serving(db=db) as first:
        port = first.port
        ada = clients(port, "ada")
        next_event(ada, Welcome)
        ada.say("before")
        before = next_event(ada, Message)
        assert before.text == "before"
    next_event(ada, Disconnected)
    typed = ["one", "two", "three"]
    cids = [ada.say(text) for text in typed]
    assert ada.unconfirmed() == cids

    def missed(server: ChatServer) -> None:
        server.room.announce("while you were away")

    with (
        serving(port=port, db=db, before=missed) as second,
        LineClient(second.port) as bob,
    ):
        bob.send_json(type="hello", name="bob")  # races with ada, on purpose
        welcome = next_event(ada, Welcome, COMEBACK)
        assert texts(welcome.history) == ["while you were away"]
        arrived = [next_event(ada, Message) for _ in typed]
        assert texts(arrived) == typed
        ids = [before.id, welcome.history[0].id] + [m.id for m in arrived]
        assert ids == sorted(set(ids)), ids  # after the history, in order
        assert ada.unconfirmed() == []
        ada.say("marker")
        assert next_event(ada, Message).text == "marker"  # no copy came between

        bob_welcome = bob.next_json()
        assert bob_welcome["type"] == "welcome"
        seen = texts(bob_welcome["history"]) + texts(lines_until(bob, "marker"))
        assert [text for text in seen if text in typed] == typed  # each once
        assert [m.text for m in second.room.history()] == [
            "before",
            "while you were away",
            *typed,
            "marker",
        ]


def test_a_client_that_comes_back_gets_exactly_what_it_missed(tmp_path, clients):
    db = str(tmp_path / "h.db")
    with serving(db=db) as first:
        port = first.port
        ada = clients(port, "ada")
        next_event(ada, Welcome)
        with json_client(port, "bob") as bob:
            seen = say(bob, "seen by ada")
            assert next_event(ada, Message).id == seen["id"]
    next_event(ada, Disconnected)
    room = ada.room
    assert ada.last_id == seen["id"]
    # While ada is away, the conversation goes on (a server elsewhere, on
    # the same history): nothing of it can reach her by another way.
    with (
        serving(db=db) as elsewhere,
        json_client(elsewhere.port, "bob") as bob,
        json_client(elsewhere.port, "carol") as carol,
    ):
        missed = [say(bob, "m1"), say(carol, "m2"), say(bob, "m3")]
    with serving(port=port, db=db):
        welcome = next_event(ada, Welcome, COMEBACK)
        assert [m.id for m in welcome.history] == [m["id"] for m in missed]
        assert texts(welcome.history) == ["m1", "m2", "m3"]
        assert (ada.room, ada.last_id) == (room, missed[-1]["id"])


def test_a_client_that_saw_no_line_yet_still_comes_back_without_a_gap(
    tmp_path, clients
):
    """With ``--history 0`` a newcomer is shown nothing, so it has seen no id:
    the welcome's ``last_id`` is where its comeback starts, so what was said
    while it was away comes, and what was said before it came does not."""
    db = str(tmp_path / "h.db")
    with serving(db=db, history=0) as first:
        port = first.port
        with json_client(port, "bob") as bob:
            said_before = say(bob, "before ada came")
            ada = clients(port, "ada")
            welcome = next_event(ada, Welcome)
            assert welcome.history == () and welcome.last_id == said_before["id"]
    next_event(ada, Disconnected)
    with (
        serving(db=db, history=0) as elsewhere,
        json_client(elsewhere.port, "bob") as bob,
    ):
        missed = [say(bob, "m1"), say(bob, "m2")]
    with serving(port=port, db=db, history=0):
        welcome = next_event(ada, Welcome, COMEBACK)
        assert texts(welcome.history) == ["m1", "m2"]
        assert ada.last_id == missed[-1]["id"] == welcome.last_id


def test_since_replays_exactly_the_lines_missed_on_a_running_server(tmp_path):
    with (
        serving(db=str(tmp_path / "h.db"), store_private=True) as server,
        json_client(server.port, "bob") as bob,
        json_client(server.port, "carol") as carol,
    ):
        ada, welcome = hello(server.port, "ada")
        room = welcome["room"]
        say(bob, "seen")
        for_ada = whisper(bob, "ada", "for ada, seen")
        assert lines_until(ada, "for ada, seen")[-1]["id"] == for_ada["id"]
        ada.close()
        assert bob.expect_json("left")["name"] == "ada"
        missed = [
            say(bob, "m1"),
            whisper(bob, "carol", "not for ada"),
            say(carol, "m2"),
            say(bob, "m3"),
        ]
        back, welcome = hello(server.port, "ada", since=for_ada["id"], room=room)
        with back:
            assert [(m["type"], m["id"]) for m in welcome["history"]] == [
                ("message", missed[0]["id"]),
                ("message", missed[2]["id"]),
                ("message", missed[3]["id"]),
            ]
            say(bob, "live")
            assert back.next_json()["text"] == "live"  # no note, nothing else


def test_since_counts_only_in_its_own_history(tmp_path):
    with (
        serving(db=str(tmp_path / "h.db"), history=2) as server,
        json_client(server.port, "bob") as bob,
    ):
        for text in ("one", "two", "three"):
            say(bob, text)
        room = bob.welcome["room"]
        cases = [
            ({}, ["two", "three"]),  # a newcomer: the last lines
            ({"since": 0, "room": room}, ["one", "two", "three"]),
            ({"since": 2, "room": room}, ["three"]),
            ({"since": 0, "room": "another"}, ["two", "three"]),  # ignored
            ({"since": 0}, ["two", "three"]),  # no room: ignored
        ]
        for number, (fields, expected) in enumerate(cases):
            client, welcome = hello(server.port, f"guest{number}", **fields)
            with client:
                assert welcome["room"] == room
                assert texts(welcome["history"]) == expected, fields


def test_since_from_another_history_is_ignored_and_the_client_starts_over(
    tmp_path, clients
):
    with serving(db=str(tmp_path / "h.db")) as first:
        port = first.port
        ada = clients(port, "ada")
        next_event(ada, Welcome)
        with json_client(port, "bob") as bob:
            for text in ("a", "b", "c"):
                say(bob, text)
            wait_for(lambda: ada.last_id == 3, what="ada to see line 3")
    next_event(ada, Disconnected)
    old_room = ada.room

    def fresh(server: ChatServer) -> None:
        server.room.announce("new 1")  # ids 1 and 2: not after ada's 3
        server.room.announce("new 2")

    with serving(port=port, before=fresh):  # --db :memory:: another history
        welcome = next_event(ada, Welcome, COMEBACK)
        assert welcome.room not in (None, old_room)
        assert texts(welcome.history) == ["new 1", "new 2"]
        assert (ada.room, ada.last_id) == (welcome.room, 2)


# -- a line sent twice is said once ---------------------------------------------


def test_a_line_sent_again_with_its_cid_is_said_once(server):
    with json_client(server.port, "ada") as ada, json_client(server.port, "bob") as bob:
        first = say(ada, "only once", cid="c-1")
        ada.send_json(type="say", text="only once", cid="c-1")
        assert ada.next_json() == first  # the first line again, same id
        said_by_bob = say(bob, "mine is another line", cid="c-1")
        assert said_by_bob["id"] > first["id"]
        say(ada, "next", cid="c-2")
        lines_until(bob, "next")
        assert texts(received(bob)) == [
            "only once",
            "mine is another line",
            "next",
        ]
        assert [m.text for m in server.room.history()] == [
            "only once",
            "mine is another line",
            "next",
        ]


def test_a_private_line_sent_again_with_its_cid_is_delivered_once(server):
    with json_client(server.port, "ada") as ada, json_client(server.port, "bob") as bob:
        first = whisper(ada, "bob", "psst", cid="p-1")
        ada.send_json(type="private", to="bob", text="psst", cid="p-1")
        assert ada.next_json() == first
        marker = say(ada, "marker")
        assert lines_until(bob, "marker") == [first, marker]  # the private once


def test_the_same_cid_twice_in_one_read_is_said_once(server):
    with json_client(server.port, "ada") as ada, json_client(server.port, "bob") as bob:
        line = json.dumps({"type": "say", "text": "once", "cid": "c-1"}) + "\n"
        ada.send_raw((line + line).encode())
        say(ada, "marker")
        assert texts(lines_until(bob, "marker")) == ["once", "marker"]


def test_a_resend_among_new_lines_is_answered_in_its_place(server):
    """new, resent, new in one read: the answers come in that order."""
    with json_client(server.port, "ada") as ada:
        first = say(ada, "first", cid="c-1")
        lines = [("second", "c-2"), ("first", "c-1"), ("third", "c-3")]
        ada.send_raw(
            "".join(
                json.dumps({"type": "say", "text": text, "cid": cid}) + "\n"
                for text, cid in lines
            ).encode()
        )
        answers = [ada.expect_json("message") for _ in lines]
        assert [m["text"] for m in answers] == ["second", "first", "third"]
        assert answers[1] == first
        assert answers[0]["id"] < answers[2]["id"]


def test_a_resend_after_a_server_restart_is_recognised(tmp_path):
    db = str(tmp_path / "h.db")
    with serving(db=db) as first, json_client(first.port, "ada") as ada:
        said = say(ada, "once", cid="c-1")
    with (
        serving(db=db) as second,
        json_client(second.port, "bob") as bob,
        json_client(second.port, "ADA") as ada,
    ):
        assert texts(bob.welcome["history"]) == ["once"]
        ada.send_json(type="say", text="once", cid="c-1")
        assert ada.next_json() == said
        say(ada, "marker")
        assert texts(lines_until(bob, "marker")) == ["marker"]


# -- private lines -----------------------------------------------------------------


@pytest.mark.parametrize("store_private", [False, True], ids=["default", "stored"])
def test_private_lines_are_kept_only_when_asked_and_only_for_the_two(
    tmp_path, store_private
):
    db = str(tmp_path / "h.db")
    with (
        serving(db=db, store_private=store_private) as first,
        json_client(first.port, "ada") as ada,
        json_client(first.port, "bob") as bob,
        json_client(first.port, "carol"),
    ):
        room = ada.welcome["room"]
        say(ada, "public")
        private = whisper(ada, "bob", "psst")
        assert bob.expect_json("private") == private
    kept = [("message", "public"), ("private", "psst")]
    expected = {
        "ada": kept if store_private else kept[:1],
        "bob": kept if store_private else kept[:1],
        "carol": kept[:1],
    }
    with serving(db=db, store_private=store_private) as second:
        for name, lines in expected.items():
            client, welcome = hello(second.port, name, since=0, room=room)
            with client:
                got = [(m["type"], m["text"]) for m in welcome["history"]]
                assert got == lines, name
        newcomer, welcome = hello(second.port, "dave")
        with newcomer:
            assert texts(welcome["history"]) == ["public"]  # never privates


def test_the_id_of_an_unkept_private_line_is_never_given_again(tmp_path):
    db = str(tmp_path / "h.db")
    with (
        serving(db=db) as first,
        json_client(first.port, "ada") as ada,
        json_client(first.port, "bob"),
    ):
        room = ada.welcome["room"]
        say(ada, "public")
        private = whisper(ada, "bob", "psst")
    with serving(db=db) as second:
        with json_client(second.port, "carol") as carol:
            after = say(carol, "after the restart")
        back, welcome = hello(second.port, "ada", since=private["id"], room=room)
        with back:
            assert after["id"] > private["id"]
            assert texts(welcome["history"]) == ["after the restart"]


# -- the real server, killed -----------------------------------------------------


@contextlib.contextmanager
def unattended(*args: str) -> Iterator[Launcher]:
    """``server.py ARGS`` with nobody at its keyboard: its input ends at once.

    A pipe closed at once rather than ``DEVNULL``: what the server reads is
    then certain, even on a machine where /dev/null is not the device.
    """
    with launched(*args) as server:
        server.process.stdin.close()
        yield server


def test_kill_9_mid_conversation_keeps_the_history_and_the_ids(tmp_path):
    db = tmp_path / "h.db"
    args = ("--port", "0", "--db", str(db))
    with unattended(*args) as server:
        port = server.wait_for_port()
        assert server.expect("History:") == f"History: {db} (not private lines)"
        with plain_client(port, "pat") as pat, json_client(port, "jo") as jo:
            pat.send_line("hello from nc")
            lines_until(jo, "hello from nc")  # two connections: keep the order
            say(jo, "hi pat")
            pat.send_line("/me waves")
            lines_until(jo, "waves")
            say(jo, "last line")
            said = received(jo)
            assert texts(said) == ["hello from nc", "hi pat", "waves", "last line"]
            # A line is on disk within COMMIT_INTERVAL: wait until it is,
            # looking at what a kill -9 would leave behind.
            ids = [line["id"] for line in said]
            wait_for(
                lambda: [row[0] for row in on_disk(db, tmp_path / "copy") or []] == ids,
                what="every line on disk",
            )
            os.kill(server.process.pid, signal.SIGKILL)
            assert server.process.wait(DEADLINE) == -signal.SIGKILL
    assert Path(f"{db}-wal").stat().st_size > 0  # left for the next start to use
    with unattended(*args) as again:
        port = again.wait_for_port()
        again.expect("History:")
        with json_client(port, "newcomer") as newcomer:
            history = newcomer.welcome["history"]
            assert [(m["id"], m["from"], m["text"]) for m in history] == [
                (m["id"], m["from"], m["text"]) for m in said
            ]
            assert history[2].get("me") is True
            assert say(newcomer, "after the crash")["id"] > max(ids)


# -- the console ------------------------------------------------------------------


def start_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "server.py", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=6 * DEADLINE,  # a bound for a loaded machine, not a wait
        input="",  # nobody at the keyboard (see unattended)
    )


def refused_with_one_sentence(done: subprocess.CompletedProcess, words: str) -> None:
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    [sentence] = done.stdout.splitlines()
    assert sentence.startswith("The history database ")
    assert words in sentence


def test_a_folder_given_as_the_history_is_refused_in_a_sentence(tmp_path):
    done = start_server("--db", str(tmp_path))
    refused_with_one_sentence(done, "cannot be opened or created")


def test_a_damaged_history_is_refused_in_a_sentence(tmp_path):
    db = tmp_path / "h.db"
    db.write_bytes(b"this is not a database\n" * 100)
    done = start_server("--db", str(db))
    refused_with_one_sentence(done, "is damaged")


def test_a_history_in_use_by_another_server_is_refused_in_a_sentence(tmp_path):
    db = str(tmp_path / "h.db")
    with unattended("--port", "0", "--db", db) as other:
        other.wait_for_port()
        done = start_server("--db", db)
        refused_with_one_sentence(done, "in use by another program")
        assert other.process.poll() is None  # the first one serves on


def test_a_file_in_place_of_the_history_folder_is_refused_in_a_sentence(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    done = start_server("--db", str(tmp_path / "notes.txt" / "h.db"))
    refused_with_one_sentence(done, "notes.txt")


def test_clear_asks_first_then_empties_the_history_and_ids_go_on(tmp_path):
    args = ("--port", "0", "--db", str(tmp_path / "h.db"))
    with launched(*args) as server:
        port = server.wait_for_port()
        with json_client(port, "ada") as ada:
            said = [say(ada, "one"), say(ada, "two")]
        server.type("/clear")
        server.expect("This deletes every stored message")
        server.expect("Type /clear yes to do it.")  # the log may come between
        with json_client(port, "bob") as bob:
            assert texts(bob.welcome["history"]) == ["one", "two"]  # not yet
        server.type("/clear yes")
        server.expect("The history is cleared.")
        with json_client(port, "carol") as carol:
            assert carol.welcome["history"] == []
            after = say(carol, "three")
            assert after["id"] > said[-1]["id"]
        os.kill(server.process.pid, signal.SIGTERM)
        assert server.process.wait(DEADLINE) == 0
    with launched(*args) as server:
        port = server.wait_for_port()
        with json_client(port, "dave") as dave:
            assert texts(dave.welcome["history"]) == ["three"]
            assert say(dave, "four")["id"] > after["id"]
