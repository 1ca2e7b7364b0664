"""Who may come in and who may speak: the room password, bans and mutes.

The password is tested against a real server whose ``Policy.sleep`` is a
list's ``append``: a wrong password must *ask* for the delay that slows
guessing down, and the test need not wait for it.  Bans and mutes are typed
into the operator's console (``Operator.handle``), as a teacher would, and
watched from raw clients on 127.0.0.1.  The last tests run the real programs:
``python server.py --password`` with ``python -m chat --password``, and the
window asking again for a password it was told is wrong.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import tkinter as tk

import pytest

from chat import session as session_module
from chat.__main__ import ConsoleView
from chat.client import ChatClient, Disconnected
from chat.console import Operator
from chat.gui.app import ChatApp
from chat.gui.settings import Settings
from chat.plain import PROMPT
from chat.protocol import Error, Welcome
from tests.helpers import (
    DEADLINE,
    LineClient,
    json_client,
    plain_client,
    running_server,
    wait_for,
)
from tests.test_client import next_event, run_console_client
from tests.test_console import running_launcher
from tests.test_gui import pump_until

PASSWORD = "correct horse 42"  # with spaces: a plain line keeps them
GUESS = "tr0ub4dor&3"
DELAY = 0.25  # what the tests configure; nobody really waits for it
ASK_PASSWORD = "* This room has a password. Type it:"
WRONG = "That is not the room's password."


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def delays() -> list[float]:
    """Every delay the locked server asked for, in seconds."""
    return []


@pytest.fixture
def locked(delays):
    """A server with a room password whose delay after a wrong one is recorded."""
    with running_server(password=PASSWORD) as server:
        server.policy.password_delay = DELAY
        server.policy.sleep = delays.append
        yield server


@pytest.fixture
def said() -> list[str]:
    """What the operator's console printed."""
    return []


@pytest.fixture
def operator(server, said):
    """The operator's console for the ``server`` fixture, its thread not started."""
    return Operator(server, lambda: None, said.append)


def closed_with(client: LineClient) -> list[dict]:
    """The JSON messages a client got before the server closed the connection."""
    return [json.loads(line) for line in client.expect_closed()]


# ---------------------------------------------------------------------------
# The password, in JSON


def test_the_right_password_lets_you_in_at_once(locked, delays):
    with LineClient(locked.port) as alice:
        alice.send_json(type="hello", name="alice", password=PASSWORD)
        welcome = alice.next_json()
    assert (welcome["type"], welcome["name"]) == ("welcome", "alice")
    assert delays == []


@pytest.mark.parametrize(
    "given",
    [GUESS, PASSWORD.upper(), PASSWORD + " ", "", None],
    ids=["wrong", "other case", "trailing space", "empty", "missing"],
)
def test_a_wrong_or_missing_password_is_refused_after_the_delay(locked, delays, given):
    with LineClient(locked.port) as alice:
        password = {} if given is None else {"password": given}
        alice.send_json(type="hello", name="alice", **password)
        assert alice.next_json() == {
            "type": "error",
            "code": "bad_password",
            "text": "This room needs a password." if given is None else WRONG,
        }
        assert delays == [DELAY]
        assert locked.room.names() == ()
        # The connection stays open for another try.
        alice.send_json(type="hello", name="alice", password=PASSWORD)
        assert alice.next_json()["type"] == "welcome"
    assert delays == [DELAY]


def test_three_wrong_passwords_end_the_connection(locked, delays, caplog):
    caplog.set_level(logging.DEBUG, logger="chat")
    with LineClient(locked.port) as mallory:
        for guess in ("guess one", "guess two"):
            mallory.send_json(type="hello", name="mallory", password=guess)
            assert mallory.next_json()["code"] == "bad_password"
        # The third wrong one and the right one in a single write: the right
        # one comes too late to be heard.
        mallory.send_raw(
            b"".join(
                json.dumps(
                    {"type": "hello", "name": "mallory", "password": given}
                ).encode()
                + b"\n"
                for given in ("guess three", PASSWORD)
            )
        )
        assert [m["code"] for m in closed_with(mallory)] == ["bad_password"]
    assert delays == [DELAY] * 3
    assert locked.room.names() == ()
    wait_for(
        lambda: "closed: bad password" in caplog.text, what="the reason in the log"
    )


def test_passwords_are_compared_in_constant_time(locked, monkeypatch):
    compared = []
    real_compare = hmac.compare_digest

    def spy(a, b):
        compared.append({a, b})
        return real_compare(a, b)

    monkeypatch.setattr(session_module.hmac, "compare_digest", spy)
    with LineClient(locked.port) as alice:
        alice.send_json(type="hello", name="alice", password=GUESS)
        assert alice.next_json()["code"] == "bad_password"
        alice.send_json(type="hello", name="alice", password=PASSWORD)
        assert alice.next_json()["type"] == "welcome"
    assert compared == [{GUESS.encode(), PASSWORD.encode()}, {PASSWORD.encode()}]


def test_the_chat_client_sends_the_password_and_gives_up_on_a_wrong_one(
    locked, make_client
):
    right = make_client(locked.port, "ada", password=PASSWORD)
    assert next_event(right, Welcome).name == "ada"
    wrong = make_client(locked.port, "bob", password=GUESS)
    assert next_event(wrong, Error).code == "bad_password"
    gone = next_event(wrong, Disconnected)
    assert gone.retry_in is None  # the same password again cannot help
    assert locked.room.names() == ("ada",)


# ---------------------------------------------------------------------------
# The password, for a person on nc


def test_a_person_is_asked_for_the_password_after_the_name(locked, delays):
    with LineClient(locked.port) as bob:
        bob.send_line("bob")
        assert bob.next_text() == ASK_PASSWORD
        bob.send_line(PASSWORD)
        assert bob.next_text() == "* Welcome, bob! 1 user here: bob"
    assert delays == []


def test_a_wrong_password_starts_again_from_the_name(locked, delays):
    with LineClient(locked.port) as bob:
        bob.send_line("bob")
        assert bob.next_text() == ASK_PASSWORD
        bob.send_line(GUESS)
        assert bob.next_text() == f"! {WRONG}"
        assert bob.next_text() == "* Type your name, then the password:"
        assert delays == [DELAY]
        bob.send_line("bob")
        assert bob.next_text() == ASK_PASSWORD
        bob.send_line(PASSWORD)
        assert bob.next_text().startswith("* Welcome, bob!")
    assert delays == [DELAY]


@pytest.mark.parametrize("typed", ["exit", "  EXIT "])
def test_exit_at_the_password_prompt_leaves(locked, delays, typed):
    with LineClient(locked.port) as bob:
        bob.send_line("bob")
        assert bob.next_text() == ASK_PASSWORD
        bob.send_line(typed)
        assert bob.expect_closed() == []
    assert delays == []  # leaving is not a wrong password


def test_the_password_never_appears_in_a_reply_or_the_log(locked, caplog):
    caplog.set_level(logging.DEBUG, logger="chat")
    with (
        LineClient(locked.port) as watcher,
        LineClient(locked.port) as program,
        LineClient(locked.port) as person,
    ):
        watcher.send_json(type="hello", name="watcher", password=PASSWORD)
        assert watcher.next_json()["type"] == "welcome"
        program.send_json(type="hello", name="program", password=GUESS)
        assert program.next_json()["code"] == "bad_password"
        program.send_json(type="hello", name="program", password=PASSWORD)
        assert program.next_json()["type"] == "welcome"
        for typed in ("person", GUESS, "person", PASSWORD):
            person.send_line(typed)
        person.expect_text("* Welcome, person!")
        person.send_line("/who")
        person.expect_text("users here")
        person.send_line("that was the last line")
        assert watcher.expect_json("message")["text"] == "that was the last line"
        replies = watcher.lines + program.lines + person.lines
    for secret in (PASSWORD, GUESS):
        assert not [line for line in replies if secret.encode() in line]
        assert secret not in caplog.text
    assert "* person joined" in caplog.text  # the log was captured


# ---------------------------------------------------------------------------
# Bans


def test_ban_by_name_kicks_them_and_keeps_their_address_out(server, operator, said):
    with json_client(server.port, "alice") as alice:
        operator.handle("/ban alice spamming")
        assert closed_with(alice) == [
            {"type": "left", "name": "alice", "reason": "kicked: spamming"}
        ]
    assert said == ["Banned alice (127.0.0.1): 1 connection(s) closed."]
    with LineClient(server.port) as again:
        refused = closed_with(again)
    assert [(m["type"], m["code"]) for m in refused] == [("error", "banned")]
    operator.handle("/bans")
    assert said[-1] == "Banned addresses: 127.0.0.1"
    assert server.room.names() == ()


def test_a_banned_chat_client_does_not_come_back(server, operator, make_client):
    client = make_client(server.port, "ada")
    next_event(client, Welcome)
    operator.handle("/ban ada")
    gone = next_event(client, Disconnected)
    assert gone.retry_in is None
    assert "kicked: banned" in gone.reason


def test_ban_by_address_closes_every_connection_from_it(server, operator, said):
    with (
        json_client(server.port, "alice") as alice,
        plain_client(server.port, "bob") as bob,
        LineClient(server.port) as nameless,
    ):
        assert nameless.next_text() == PROMPT
        operator.handle("/ban 127.0.0.1")
        kicked = {"type": "left", "name": "alice", "reason": "kicked: banned"}
        assert kicked in closed_with(alice)
        assert b"* bob left (kicked: banned)" in bob.expect_closed()
        assert nameless.expect_closed() == [b"* You are banned from this server."]
    assert said == ["Banned 127.0.0.1: 3 connection(s) closed."]
    operator.handle("/bans")
    operator.handle("/unban 127.0.0.1")
    operator.handle("/bans")
    assert said[1:] == [
        "Banned addresses: 127.0.0.1",
        "127.0.0.1 may come back.",
        "Banned addresses: none",
    ]
    with json_client(server.port, "alice"):
        assert server.room.names() == ("alice",)


def test_an_address_is_banned_however_it_is_spelled(server, operator, said):
    # As a dual-stack server sees an IPv4 client: "::ffff:127.0.0.1".
    operator.handle("/ban ::ffff:127.0.0.1")
    with LineClient(server.port) as refused:
        [refusal] = refused.expect_closed()
        assert json.loads(refusal)["code"] == "banned"
    operator.handle("/bans")
    operator.handle("/unban 127.0.0.1")
    assert said[-2:] == ["Banned addresses: 127.0.0.1", "127.0.0.1 may come back."]
    with json_client(server.port, "alice"):
        assert server.room.names() == ("alice",)


@pytest.mark.parametrize("name", ["alice", "ALICE", "Alice", "ａｌｉｃｅ"])
def test_a_banned_name_cannot_be_taken_in_any_form(server, operator, name):
    with json_client(server.port, "alice") as alice:
        operator.handle("/ban alice")
        alice.expect_closed()
    operator.handle("/unban 127.0.0.1")  # the address may come back, the name not
    with LineClient(server.port) as program:
        program.send_json(type="hello", name=name)
        assert program.next_json()["code"] == "banned"
        program.send_json(type="hello", name="zed")
        assert program.next_json()["type"] == "welcome"
        program.send_json(type="rename", name=name)
        assert program.next_json()["code"] == "banned"
        assert server.room.names() == ("zed",)
    with LineClient(server.port) as person:
        person.send_line(name)
        refusal = person.next_text()
        assert refusal.startswith("! the name ")
        assert refusal.endswith(" is banned here")
        assert person.next_text() == "* Choose another name:"


def test_unban_by_name_lets_them_back_in(server, operator, said):
    with json_client(server.port, "alice") as alice:
        operator.handle("/ban alice")
        alice.expect_closed()
    operator.handle("/unban alice")
    assert said[-1] == "alice may come back."
    with LineClient(server.port) as alice:
        alice.send_json(type="hello", name="alice")
        assert alice.next_json()["type"] == "welcome"


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("/ban", "Usage: /ban NAME|ADDRESS [REASON]"),
        ("/ban nobody", "Nobody here is called nobody, and it is not an address."),
        ("/unban", "Usage: /unban NAME|ADDRESS"),
        ("/unban nobody", "nobody was not banned."),
        ("/bans", "Banned addresses: none"),
        ("/mute", "Usage: /mute NAME"),
        ("/mute nobody", "Nobody here is called nobody."),
        ("/unmute", "Usage: /unmute NAME"),
        ("/unmute nobody", "nobody was not muted."),
    ],
)
def test_operator_answers_about_bans_and_mutes(operator, said, typed, shown):
    operator.handle(typed)
    assert said == [shown]


# ---------------------------------------------------------------------------
# Mutes


def test_a_muted_member_is_refused_and_nobody_else_sees_a_thing(server, operator, said):
    with (
        json_client(server.port, "bob") as bob,
        json_client(server.port, "carol") as carol,
        plain_client(server.port, "dave") as dave,
    ):
        for name in ("carol", "dave"):
            assert bob.expect_json("joined")["name"] == name
        assert carol.expect_json("joined")["name"] == "dave"
        dave.expect_text("Type /help")
        operator.handle("/mute bob")
        assert said == ["bob is muted."]
        assert bob.next_json() == {
            "type": "notice",
            "text": "The operator has muted you.",
        }
        bob.send_json(type="say", text="can you hear me?", cid="s1")
        assert bob.next_json()["code"] == "muted"
        bob.send_json(type="private", to="carol", text="psst", cid="p1")
        assert bob.next_json() == {
            "type": "error",
            "code": "muted",
            "text": "The operator has muted you; not sent.",
            "cid": "p1",
        }
        # Each stream is in order: the next thing anyone gets is carol's line.
        carol.send_json(type="say", text="quiet in here")
        for client in (bob, carol):
            message = client.next_json()
            assert (message["from"], message["text"]) == ("carol", "quiet in here")
        assert dave.next_text() == "carol: quiet in here"
    assert [m.text for m in server.room.history()] == ["quiet in here"]


def test_a_muted_person_on_nc_is_told_why(server, operator):
    with plain_client(server.port, "dave") as dave:
        dave.expect_text("Type /help")
        operator.handle("/mute dave")
        assert dave.next_text() == "* The operator has muted you."
        for typed in ("hello?", "/me waves", "/msg dave hi"):
            dave.send_line(typed)
            assert dave.next_text() == "! The operator has muted you; not sent."


def test_unmute_gives_the_voice_back(server, operator, said):
    with (
        json_client(server.port, "bob") as bob,
        json_client(server.port, "carol") as carol,
    ):
        bob.expect_json("joined")
        operator.handle("/mute bob")
        assert bob.next_json()["text"] == "The operator has muted you."
        operator.handle("/unmute BOB")
        assert said == ["bob is muted.", "BOB may speak again."]
        assert bob.next_json() == {"type": "notice", "text": "You may speak again."}
        bob.send_json(type="say", text="thank you", cid="t1")
        message = carol.next_json()
        assert (message["from"], message["text"]) == ("bob", "thank you")
        assert bob.next_json()["cid"] == "t1"


def test_a_refused_say_names_its_cid(server, operator):
    with json_client(server.port, "bob") as bob:
        operator.handle("/mute bob")
        assert bob.next_json()["type"] == "notice"
        bob.send_json(type="say", text="can you hear me?", cid="s1")
        assert bob.next_json() == {
            "type": "error",
            "code": "muted",
            "text": "The operator has muted you; not sent.",
            "cid": "s1",
        }


def test_a_muted_member_stays_muted_after_a_rename(server, operator):
    with (
        json_client(server.port, "bob") as bob,
        json_client(server.port, "carol") as carol,
    ):
        bob.expect_json("joined")
        operator.handle("/mute bob")
        assert bob.next_json()["type"] == "notice"
        bob.send_json(type="rename", name="robert")
        assert bob.next_json()["type"] == "renamed"
        assert carol.next_json()["type"] == "renamed"
        bob.send_json(type="say", text="free at last", cid="f1")
        reply = bob.next_json()
        assert (reply["type"], reply.get("code")) == ("error", "muted")


# ---------------------------------------------------------------------------
# The real programs


def test_the_console_client_joins_with_the_password_and_explains_a_wrong_one():
    with running_launcher("--password", PASSWORD) as (server, port):
        server.expect("A password is needed to join.")
        right = run_console_client(
            *("--port", str(port), "--name", "ann", "--password", PASSWORD),
            stdin="hello, locked room\n",
        )
        assert right.returncode == 0, right.stdout
        server.expect("ann: hello, locked room")
        wrong = run_console_client(
            "--port", str(port), "--name", "bob", "--password", GUESS
        )
        assert wrong.returncode != 0
        assert f"! {WRONG}" in wrong.stdout.splitlines()
        assert "* Disconnected:" in wrong.stdout
        assert wrong.stderr == ""  # no traceback
        server.type("/quit")
        server.rest()
        assert server.process.wait(DEADLINE) == 0
        errors = server.process.stderr.read().decode()
    assert errors == ""
    printed = "\n".join(server.lines)
    assert "* ann joined" in printed
    for secret in (PASSWORD, GUESS):
        assert secret not in printed
        assert secret not in right.stdout + wrong.stdout


def test_the_console_client_never_prints_a_servers_escapes_in_its_reason():
    # Another program's server may put terminal escapes in its error text.
    client = ChatClient("127.0.0.1", 1, "ann")  # never started: only described
    hostile = "\x1b]0;owned\x07\x1b[2Jgone"
    for retry_in in (None, 2):
        [line, *_] = ConsoleView(client).lines(Disconnected(hostile, retry_in))
        assert "\x1b" not in line and "\x07" not in line
        assert "gone" in line


def test_the_console_client_says_why_it_stopped_in_one_clean_sentence():
    client = ChatClient("127.0.0.1", 1, "ann")  # never started: only described
    gone = Disconnected(WRONG, retry_in=None)
    assert ConsoleView(client).lines(gone) == [f"* Disconnected: {WRONG}"]


@pytest.fixture
def window(tmp_path):
    """A chat window on its own Tk root; closed, and its cycle collected, after."""
    root = tk.Tk()
    app = ChatApp(root, Settings(), settings_path=tmp_path / "settings.json")
    yield app
    app.close()
    # As in test_gui: collect the app/root cycle here, in the main thread.
    del app, root
    gc.collect()


def test_the_window_asks_again_for_a_wrong_password(locked, window):
    app = window
    app.connect("127.0.0.1", locked.port, "ada", password=GUESS)
    pump_until(
        app.root,
        lambda: app._dialog is not None and app._dialog.winfo_exists(),
        "the connect dialog, opened again",
    )
    dialog = app._dialog
    assert dialog.message.cget("text") == f"{WRONG} Try again:"
    assert dialog.focus_lastfor() is dialog.password
    pump_until(app.root, lambda: app.client is None, "the window to give up")
    assert locked.room.names() == ()
    dialog.password.insert(0, PASSWORD)
    dialog.submit()
    pump_until(
        app.root, lambda: app.client is not None and app.client.connected, "welcome"
    )
    assert locked.room.names() == ("ada",)
    assert PASSWORD not in app.view.contents()
