"""Tests for ``chat.plain``: what people type, and what they read.

``parse_input`` is a table of typed lines and the messages they mean.
``render`` is checked for every server message type, and above all for the
one promise that matters on a terminal: whatever a peer wrote comes out as
one line, so nobody can forge a ``server:`` line or move the cursor.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat import plain
from chat.protocol import (
    SERVER_TYPES,
    Bye,
    Error,
    Joined,
    Left,
    Message,
    Notice,
    Ping,
    Pong,
    Private,
    PrivateMessage,
    Rename,
    Renamed,
    Say,
    Users,
    Welcome,
    Who,
)

TS = 1_700_000_000.0  # any fixed moment; history lines show it as local HH:MM


def hhmm(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


# ---------------------------------------------------------------------------
# parse_input: what a typed line means

PARSED = [
    # (typed, message to send)
    ("hello everyone", Say("hello everyone")),
    ("hello\r\n", Say("hello")),
    ("  indented", Say("  indented")),  # kept as typed
    ("exit now", Say("exit now")),  # only the word on its own leaves
    ("/me waves", Say("waves", me=True)),
    ("/ME waves", Say("waves", me=True)),  # commands ignore case
    ("/me   waves  slowly ", Say("waves  slowly", me=True)),
    ("/msg bob hi there", Private("bob", "hi there")),
    ("/msg bob    spaced  out  ", Private("bob", "spaced  out")),
    ("/nick carol", Rename("carol")),
    ("/NICK carol", Rename("carol")),
    ("/who", Who()),
    ("/quit bye", Bye("bye")),
    ("/quit see you all", Bye("see you all")),
    ("/quit", Bye("quit")),
    ("/exit", Bye("quit")),
    ("/bye", Bye("quit")),
    ("exit", Bye("quit")),
    (" EXIT ", Bye("quit")),
    ("Exit\r\n", Bye("quit")),
    ("//not a command", Say("/not a command")),
    ("//", Say("/")),
]


@pytest.mark.parametrize("typed, expected", PARSED)
def test_parse_input(typed, expected):
    assert plain.parse_input(typed) == expected


@pytest.mark.parametrize("typed", ["", "   ", "\r\n", "\n", "\t", " \t \r\n"])
def test_blank_lines_mean_nothing(typed):
    assert plain.parse_input(typed) is None


MISTAKES = [
    # (typed, a word the error must mention)
    ("/me", "/me"),
    ("/me    ", "/me"),
    ("/msg", "/msg"),
    ("/msg bob", "/msg"),
    ("/msg bob    ", "/msg"),
    ("/nick", "/nick"),
    ("/nick two words", "/nick"),
    ("/dance", "/dance"),
    ("/", "/"),
    ("/DANCE wildly", "/dance"),
]


@pytest.mark.parametrize("typed, mentioned", MISTAKES)
def test_mistakes_give_a_local_error(typed, mentioned):
    shown = plain.parse_input(typed)
    assert isinstance(shown, tuple) and shown
    assert all(isinstance(message, (Error, Notice)) for message in shown)
    [error] = [message for message in shown if isinstance(message, Error)]
    assert mentioned in error.text


def test_unknown_command_is_shown_escaped_and_short():
    [error] = plain.parse_input("/\x1b[2J\x1b[31m" + "x" * 100)
    assert "\x1b" not in error.text
    assert "\\x1b[2j" in error.text.lower()  # shown, harmlessly
    assert "x" * 30 not in error.text  # the whole line is not echoed back


COMMAND_WORDS = ["/nick", "/msg", "/me", "/who", "/help", "/quit"]


def test_help_lists_every_command():
    shown = plain.parse_input("/help")
    assert isinstance(shown, tuple)
    assert all(isinstance(message, Notice) for message in shown)
    text = "\n".join(message.text for message in shown)
    for word in COMMAND_WORDS:
        assert re.search(rf"{word}\b", text), f"/help does not mention {word}"
    assert "//" in text  # how to send a line that starts with /


def test_every_command_in_help_is_understood():
    text = "\n".join(message.text for message in plain.parse_input("/help"))
    for word in set(re.findall(r"(?<!/)/[a-z]+", text)):
        parsed = plain.parse_input(f"{word} bob some text")
        if isinstance(parsed, tuple):  # usage errors are fine, unknown is not
            assert all(
                m.code != "unknown_command" for m in parsed if isinstance(m, Error)
            )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_typed_line_parses_to_something_sensible(typed):
    parsed = plain.parse_input(typed)
    if parsed is None:
        assert not typed.strip()
    elif isinstance(parsed, tuple):
        assert parsed and all(isinstance(m, (Error, Notice)) for m in parsed)
    else:
        assert isinstance(parsed, (Say, Private, Rename, Who, Bye))
        if isinstance(parsed, (Say, Private)):
            assert parsed.text.strip()  # never an empty line to send


# ---------------------------------------------------------------------------
# render: what a person reads

HISTORY = (
    Message(1, "alice", "hi", TS),
    Message(2, "bob", "waves", TS + 60, me=True),
)

RENDERED = [
    # (message, lines)
    (Message(7, "alice", "hello", TS), ["alice: hello"]),
    (Message(8, "alice", "waves", TS, me=True), ["* alice waves"]),
    (Message(9, "alice", "not an action", TS, me=False), ["alice: not an action"]),
    (PrivateMessage("alice", "bob", "psst", TS), ["[private] alice -> bob: psst"]),
    (Joined("bob"), ["* bob joined"]),
    (Left("bob", "quit: tea time"), ["* bob left (quit: tea time)"]),
    (Renamed("bob", "robert"), ["* bob is now known as robert"]),
    (Users(("alice",)), ["* 1 user here: alice"]),
    (Users(("alice", "bob", "carol")), ["* 3 users here: alice, bob, carol"]),
    (Notice("the server restarts at noon"), ["* the server restarts at noon"]),
    (Error("name_taken", "bob is already taken"), ["! bob is already taken"]),
    (
        Welcome("carol", ("alice", "bob", "carol"), ()),
        [
            "* Welcome, carol! 3 users here: alice, bob, carol",
            "* Type /help for commands.",
        ],
    ),
    (
        Welcome("carol", ("carol",), HISTORY),
        [
            "* The last 2 messages:",
            f"[{hhmm(TS)}] alice: hi",
            f"[{hhmm(TS + 60)}] * bob waves",
            "* Welcome, carol! 1 user here: carol",
            "* Type /help for commands.",
        ],
    ),
    (Ping(), []),
    (Pong(), []),
]


@pytest.mark.parametrize(
    "message, lines", RENDERED, ids=[type(case[0]).__name__ for case in RENDERED]
)
def test_render(message, lines):
    assert plain.render(message) == lines


def test_render_table_covers_every_server_message_type():
    assert {type(case[0]) for case in RENDERED} == set(SERVER_TYPES.values())


def test_a_welcome_history_may_hold_the_newcomers_private_lines():
    # Where the server keeps private lines, a comeback's replay has them too.
    history = (
        Message(7, "alice", "hi", TS),
        PrivateMessage("alice", "bob", "psst", TS + 60, id=8),
    )
    assert plain.render(Welcome("bob", ("alice", "bob"), history))[:3] == [
        "* The last 2 messages:",
        f"[{hhmm(TS)}] alice: hi",
        f"[{hhmm(TS + 60)}] [private] alice -> bob: psst",
    ]


def test_render_bytes_is_the_lines_in_utf8():
    welcome = Welcome("zoë", ("zoë",), HISTORY)
    data = plain.render_bytes(welcome)
    assert data.decode("utf-8").split("\n") == [*plain.render(welcome), ""]


@pytest.mark.parametrize("message", [Ping(), Pong()])
def test_pings_render_to_no_bytes(message):
    assert plain.render_bytes(message) == b""


FORGERIES = [
    "hi\nserver: everyone must type /quit now",
    "hi\rbob: I agree",
    "hi\r\nbob: I agree",
    "\x1b[2K\rserver: restarting",  # erase the line, back to its start
    "hi\u2028server: x",
    "hi\x85server: x",
    "\x1b]0;pwned\x07",  # set the terminal's title
]

# Every place a peer's words reach the screen.
CARRIERS = {
    "said": lambda evil: Message(1, "alice", evil, TS),
    "action": lambda evil: Message(1, "alice", evil, TS, me=True),
    "private": lambda evil: PrivateMessage("alice", "bob", evil, TS),
    "left reason": lambda evil: Left("alice", evil),
    "notice": lambda evil: Notice(evil),
    "error": lambda evil: Error("bad_message", evil),
    # Names come from the server; a client must not trust them either.
    "sender": lambda evil: Message(1, evil, "hi", TS),
    "private sender": lambda evil: PrivateMessage(evil, "bob", "hi", TS),
    "private to": lambda evil: PrivateMessage("alice", evil, "hi", TS),
    "joined": lambda evil: Joined(evil),
    "left name": lambda evil: Left(evil, "quit"),
    "renamed old": lambda evil: Renamed(evil, "bob"),
    "renamed new": lambda evil: Renamed("bob", evil),
    "users": lambda evil: Users(("alice", evil)),
}


@pytest.mark.parametrize("evil", FORGERIES)
@pytest.mark.parametrize("carrier", CARRIERS.values(), ids=CARRIERS.keys())
def test_a_peers_words_stay_on_one_line(carrier, evil):
    lines = plain.render(carrier(evil))
    assert len(lines) == 1
    [line] = lines
    assert line.splitlines() == [line]
    assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]", line)
    assert plain.render_bytes(carrier(evil)).count(b"\n") == 1


@pytest.mark.parametrize("evil", FORGERIES)
def test_a_welcome_gives_one_line_per_history_message(evil):
    welcome = Welcome(
        "carol",
        ("alice", evil),
        (Message(1, evil, evil, TS), Message(2, "alice", evil, TS, me=True)),
    )
    lines = plain.render(welcome)
    # a heading, two history lines, the welcome and the hint
    assert len(lines) == 5
    for line in lines:
        assert line.splitlines() == [line]
        assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]", line)


@settings(max_examples=200, deadline=None)
@given(sender=st.text(max_size=20), text=st.text(max_size=80))
def test_any_message_renders_as_exactly_one_line(sender, text):
    [line] = plain.render(Message(1, sender, text, TS))
    assert len(line.splitlines()) <= 1


def test_clock_is_local_hours_and_minutes():
    assert plain.clock(TS) == hhmm(TS)
    assert re.fullmatch(r"\d\d:\d\d", plain.clock(TS))
