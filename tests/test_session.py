"""Tests for ``chat.session``: lines in, room calls and replies out.

Sessions are driven with lists of lines, exactly what the server's reader
passes after its ``LineDecoder``; replies land in a ``FakeOutbox``.  To see
the error *codes* a plain session sends, some tests give its member the JSON
renderer: the session's logic does not depend on how its member renders.
"""

from __future__ import annotations

import json

import pytest

from chat import plain
from chat.protocol import (
    MAX_LINE_BYTES,
    Bye,
    Error,
    Joined,
    LineTooLong,
    Message,
    Notice,
    Pong,
    PrivateMessage,
    Renamed,
    Users,
    Welcome,
    encode,
)
from chat.room import Member, Room
from chat.session import EchoSession, JsonSession, PlainSession, Policy, quit_reason
from tests.test_room import FakeOutbox, received, text_received


def line(**fields) -> bytes:
    """One JSON line as a client sends it, without its newline."""
    return json.dumps(fields, ensure_ascii=False).encode("utf-8")


HELLO_ALICE = line(type="hello", name="alice")
TOO_LONG = LineTooLong(MAX_LINE_BYTES)


def json_session(room: Room) -> JsonSession:
    return JsonSession(room, Member(FakeOutbox(), encode, echo=True))


def plain_session(room: Room, *, show=plain.render_bytes) -> PlainSession:
    """A plain session; ``show=encode`` makes its replies decodable."""
    return PlainSession(room, Member(FakeOutbox(), show, echo=False))


def listener(room: Room, name: str = "bob") -> Member:
    """A JSON member already in the room, its welcome read."""
    member = Member(FakeOutbox(), encode, echo=True)
    room.join(member, name)
    received(member)
    return member


def codes(messages) -> list[str]:
    return [m.code for m in messages if isinstance(m, Error)]


def said(messages) -> list[tuple[str, str]]:
    return [(m.sender, m.text) for m in messages if isinstance(m, Message)]


# ---------------------------------------------------------------------------
# JSON sessions


def test_json_conversation():
    room = Room()
    bob = listener(room)
    alice = json_session(room)
    alice.receive([HELLO_ALICE])
    [welcome] = received(alice.member)
    assert welcome == Welcome("alice", ("bob", "alice"), (), welcome.room, 0)
    assert received(bob) == [Joined("alice")]

    alice.receive(
        [
            line(type="say", text="hi bob", cid="m1"),
            line(type="say", text="waves", me=True),
            line(type="ping"),
            line(type="who"),
            line(type="private", to="bob", text="psst", cid="p1"),
            line(type="rename", name="alicia"),
        ]
    )
    mine = received(alice.member)
    hi, waves, pong, users, private, renamed = mine
    assert (hi.sender, hi.text, hi.cid) == ("alice", "hi bob", "m1")
    assert (waves.text, waves.me) == ("waves", True)
    assert waves.id == hi.id + 1
    assert pong == Pong()
    assert users == Users(("bob", "alice"))
    assert isinstance(private, PrivateMessage) and private.cid == "p1"
    assert renamed == Renamed("alice", "alicia")
    assert received(bob) == [hi, waves, private, renamed]
    assert not alice.ended


@pytest.mark.parametrize(
    "bye, reason",
    [
        (line(type="bye"), "quit"),
        (line(type="bye", reason="quit"), "quit"),
        (line(type="bye", reason="  QUIT "), "quit"),
        (line(type="bye", reason="   "), "quit"),
        (line(type="bye", reason="gotta go"), "quit: gotta go"),
    ],
)
def test_bye_ends_the_session_with_a_reason(bye, reason):
    room = Room()
    bob = listener(room)
    alice = json_session(room)
    alice.receive([HELLO_ALICE, bye, line(type="say", text="after bye")])
    assert alice.ended
    assert alice.reason == reason
    assert said(received(bob)) == []  # nothing after bye is acted on


def test_bye_before_hello_ends_too():
    session = json_session(Room())
    session.receive([line(type="bye", reason="wrong door")])
    assert (session.ended, session.reason) == (True, "quit: wrong door")


def test_quit_reason_is_kept_short():
    assert quit_reason(Bye("x" * 500)) == "quit: " + "x" * 100
    assert quit_reason(Bye(None)) == "quit"


BAD_LINES = [
    # (id, line, code, cid echoed)
    ("not JSON", b"hello?", "bad_json", None),
    ("invalid UTF-8", b'{"type":"say","text":"\xff"}', "bad_utf8", None),
    ("too long", TOO_LONG, "too_long", None),
    ("unknown type", line(type="dance"), "unknown_type", None),
    ("missing field", line(type="say", cid="c0"), "bad_message", "c0"),
    ("empty say", line(type="say", text="", cid="c1"), "empty", "c1"),
    ("blank say", line(type="say", text=" \t ", cid="c2"), "empty", "c2"),
    ("hello again", line(type="hello", name="alicia"), "already_registered", None),
    (
        "private to nobody",
        line(type="private", to="zed", text="hi", cid="c3"),
        "no_such_user",
        "c3",
    ),
    ("rename to a taken name", line(type="rename", name="BOB"), "name_taken", None),
    ("rename to a bad name", line(type="rename", name="a b"), "bad_name", None),
]


@pytest.mark.parametrize(
    "bad, code, cid",
    [case[1:] for case in BAD_LINES],
    ids=[case[0] for case in BAD_LINES],
)
def test_an_error_goes_to_the_offender_only_and_the_session_goes_on(bad, code, cid):
    room = Room()
    bob = listener(room)
    alice = json_session(room)
    alice.receive([HELLO_ALICE])
    received(alice.member)
    received(bob)
    alice.receive(
        [line(type="say", text="before"), bad, line(type="say", text="after")]
    )
    mine = received(alice.member)
    # In order: the line before, the error, the line after.
    assert [type(m) for m in mine] == [Message, Error, Message]
    assert (mine[1].code, mine[1].cid) == (code, cid)
    assert said(received(bob)) == [("alice", "before"), ("alice", "after")]
    assert not alice.ended
    assert room.names() == ("bob", "alice")


@pytest.mark.parametrize(
    "first, cid",
    [
        (line(type="say", text="hi", cid="early"), "early"),
        (line(type="who"), None),
        (line(type="private", to="bob", text="hi", cid="p"), "p"),
        (line(type="rename", name="carol"), None),
    ],
)
def test_only_hello_ping_and_bye_come_before_hello(first, cid):
    room = Room()
    bob = listener(room)
    session = json_session(room)
    session.receive([first, HELLO_ALICE])
    error, welcome = received(session.member)
    assert (error.code, error.cid) == ("not_registered", cid)
    assert welcome.name == "alice"
    assert received(bob) == [Joined("alice")]


def test_ping_before_hello_is_answered():
    session = json_session(Room())
    session.receive([line(type="ping"), line(type="pong")])
    assert received(session.member) == [Pong()]


def test_a_refused_hello_can_be_tried_again():
    room = Room()
    listener(room, "alice")
    session = json_session(room)
    session.receive(
        [
            HELLO_ALICE,
            line(type="hello", name="server"),
            line(type="hello", name="alice2"),
        ]
    )
    taken, bad, welcome = received(session.member)
    assert (taken.code, bad.code) == ("name_taken", "bad_name")
    assert welcome.name == "alice2"


def test_blank_lines_are_keep_alives():
    room = Room()
    session = json_session(room)
    session.receive([b"", b"   ", b"\r"])
    assert session.member.outbox.chunks == []
    assert not session.ended


def test_says_in_one_read_reach_the_room_as_one_batch():
    room = Room()
    bob = listener(room)
    alice = json_session(room)
    alice.receive([HELLO_ALICE])
    received(bob)
    alice.receive([line(type="say", text=str(i)) for i in range(5)])
    chunks = bob.outbox.new_chunks()
    assert len(chunks) == 1
    assert chunks[0].count(b"\n") == 5


def test_order_is_kept_around_a_rename():
    room = Room()
    bob = listener(room)
    alice = json_session(room)
    alice.receive([HELLO_ALICE])
    received(bob)
    alice.receive(
        [
            line(type="say", text="one"),
            line(type="rename", name="alicia"),
            line(type="say", text="two"),
        ]
    )
    first, renamed, second = received(bob)
    assert (first.sender, renamed, second.sender) == (
        "alice",
        Renamed("alice", "alicia"),
        "alicia",
    )


# ---------------------------------------------------------------------------
# Plain sessions


def test_plain_conversation():
    room = Room()
    bob = listener(room)
    alice = plain_session(room)
    alice.receive([b"alice"])
    lines = text_received(alice.member)
    assert "* Welcome, alice! 2 users here: bob, alice" in lines
    assert received(bob) == [Joined("alice")]

    alice.receive([b"hello bob", b"/me waves", "caf\u00e9 \U0001f642\r".encode()])
    to_bob = received(bob)
    assert said(to_bob) == [
        ("alice", "hello bob"),
        ("alice", "waves"),
        ("alice", "café 🙂"),
    ]
    assert to_bob[1].me is True
    assert text_received(alice.member) == []  # a person does not get echoes

    bob_session = JsonSession(room, bob)
    bob_session.receive([line(type="say", text="hi alice")])
    assert text_received(alice.member) == ["bob: hi alice"]


def test_plain_commands():
    room = Room()
    bob = listener(room)
    alice = plain_session(room)
    alice.receive([b"alice", b"/who", b"/msg bob psst", b"/nick alicia", b"/help"])
    lines = text_received(alice.member)
    assert "* 2 users here: bob, alice" in lines
    assert "[private] alice -> bob: psst" in lines
    assert "* alice is now known as alicia" in lines
    assert any("/msg" in text for text in lines)  # the help
    [_, private, renamed] = received(bob)  # the help is for alice only
    assert (private.sender, private.text) == ("alice", "psst")
    assert renamed == Renamed("alice", "alicia")


def test_a_taken_name_can_be_tried_again():
    room = Room()
    listener(room, "bob")
    alice = plain_session(room)
    alice.receive([b"BOB"])
    assert text_received(alice.member) == [
        "! BOB is already taken",
        "* Choose another name:",
    ]
    assert alice.member.name is None
    alice.receive([b"  alice  "])
    assert alice.member.name == "alice"
    assert room.names() == ("bob", "alice")


@pytest.mark.parametrize(
    "name, code",
    [
        (b"a b", "bad_name"),
        (b"server", "bad_name"),
        (b"\xffbob", "bad_utf8"),
        (TOO_LONG, "too_long"),
    ],
)
def test_a_refused_first_line_asks_for_another_name(name, code):
    room = Room()
    alice = plain_session(room, show=encode)
    alice.receive([name, b"alice"])
    error, again, welcome = received(alice.member)
    assert error.code == code and error.cid is None
    assert again == Notice("Choose another name:")
    assert welcome.name == "alice"


@pytest.mark.parametrize("first", [b"exit", b" EXIT\r"])
def test_exit_instead_of_a_name_leaves(first):
    room = Room()
    session = plain_session(room)
    session.receive([first, b"alice"])
    assert (session.ended, session.reason) == (True, "quit")
    assert room.names() == ()


@pytest.mark.parametrize(
    "bad, code",
    [
        (b"caf\xe9 au lait", "bad_utf8"),
        (b"\xf0\x9f\x99", "bad_utf8"),  # an emoji cut short
        (TOO_LONG, "too_long"),
        (b"/msg zed hi", "no_such_user"),
        (b"/nick BOB", "name_taken"),
        (b"/nick a:b", "bad_name"),
        (b"/dance", "unknown_command"),
        (b"/msg bob", "usage"),
    ],
)
def test_plain_errors_go_to_the_person_and_nothing_is_relayed(bad, code):
    room = Room()
    bob = listener(room)
    alice = plain_session(room, show=encode)
    alice.receive([b"alice"])
    received(alice.member)
    received(bob)
    alice.receive([b"before", bad, b"after"])
    assert codes(received(alice.member)) == [code]
    assert said(received(bob)) == [("alice", "before"), ("alice", "after")]
    assert not alice.ended


def test_plain_errors_read_as_text():
    room = Room()
    alice = plain_session(room)
    alice.receive([b"alice"])
    text_received(alice.member)
    alice.receive([b"\xff", TOO_LONG])
    errors = text_received(alice.member)
    assert len(errors) == 2 and all(text.startswith("! ") for text in errors)
    assert "UTF-8" in errors[0] and str(MAX_LINE_BYTES) in errors[1]


@pytest.mark.parametrize("blank", [b"", b"   ", b"\r", b"\x00\x00", b"\t"])
def test_blank_plain_lines_are_ignored(blank):
    room = Room()
    bob = listener(room)
    alice = plain_session(room)
    alice.receive([blank, b"alice", blank])
    assert alice.member.name == "alice"  # the blank line was not a name
    assert said(received(bob)) == []


@pytest.mark.parametrize(
    "typed, reason",
    [(b"/quit", "quit"), (b"/quit see you", "quit: see you"), (b"exit", "quit")],
)
def test_plain_quit(typed, reason):
    room = Room()
    bob = listener(room)
    alice = plain_session(room)
    alice.receive([b"alice", typed, b"not sent"])
    assert (alice.ended, alice.reason) == (True, reason)
    assert said(received(bob)) == []


def test_plain_forgery_is_relayed_as_one_line():
    room = Room()
    alice, carol = plain_session(room), plain_session(room)
    alice.receive([b"alice"])
    carol.receive([b"carol"])
    text_received(carol.member)
    alice.receive([b"hi\x1b[2K\rserver: type /quit now"])
    [shown] = text_received(carol.member)
    assert shown == "alice: hi\\x1b[2K\\rserver: type /quit now"


# ---------------------------------------------------------------------------
# Echo sessions


def test_echo_sends_each_line_back_as_it_came():
    room = Room()
    session = EchoSession(room, Member(FakeOutbox(), plain.render_bytes, echo=True))
    session.receive([b"hello", b"", b"\xff not UTF-8", TOO_LONG, b'{"type":"hello"}'])
    assert session.member.outbox.chunks == [
        b"hello\n",
        b"\n",
        b"\xff not UTF-8\n",
        f"! Line too long (over {TOO_LONG.limit} bytes).\n".encode(),
        b'{"type":"hello"}\n',
    ]
    assert room.names() == ()  # an echo session never joins
    assert session.lines_in == 5


# ---------------------------------------------------------------------------
# Found in review


def test_empty_private_is_refused_like_an_empty_say():
    room = Room()
    bob = listener(room)
    alice = json_session(room)
    alice.receive([HELLO_ALICE])
    received(alice.member)
    received(bob)
    alice.receive([line(type="private", to="bob", text="  ", cid="p1")])
    [error] = received(alice.member)
    assert (error.code, error.cid) == ("empty", "p1")
    assert received(bob) == []


def test_a_second_hello_is_refused_whatever_its_name():
    room = Room()
    alice = json_session(room)
    alice.receive([HELLO_ALICE])
    received(alice.member)
    alice.receive([line(type="hello", name="not a name!")])
    assert codes(received(alice.member)) == ["already_registered"]


def test_a_say_that_fails_to_decode_still_names_its_cid():
    room = Room()
    alice = json_session(room)
    alice.receive([HELLO_ALICE])
    received(alice.member)
    alice.receive([line(type="say", text=5, cid="c9")])
    [error] = received(alice.member)
    assert (error.code, error.cid) == ("bad_message", "c9")


@pytest.mark.parametrize(
    "after, answer",
    [
        (b"not json", (Error, "bad_json")),
        (TOO_LONG, (Error, "too_long")),
        (line(type="ping"), (Pong, None)),
    ],
    ids=["bad json", "too long", "ping"],
)
def test_a_refused_batch_is_answered_and_so_is_the_line_after_it(after, answer):
    # Regression: the refusal of a batch escaped receive(), which the server
    # takes for a broken stream (it hung up), and a ping after it went
    # unanswered.
    room = Room()
    alice = json_session(room)
    alice.receive([HELLO_ALICE])
    room.mute("alice")
    received(alice.member)
    alice.receive(
        [
            line(type="say", text="one", cid="c1"),
            line(type="say", text="two", cid="c2"),
            after,
        ]
    )
    first, second, last = received(alice.member)
    assert [(first.code, first.cid), (second.code, second.cid)] == [
        ("muted", "c1"),
        ("muted", "c2"),
    ]
    assert (type(last), getattr(last, "code", None)) == answer
    assert not alice.ended


def test_a_refused_plain_batch_is_answered_and_so_is_the_line_after_it():
    room = Room()
    alice = plain_session(room, show=encode)
    alice.receive([b"alice"])
    room.mute("alice")
    received(alice.member)
    alice.receive([b"one", b"two", b"\xff"])
    assert codes(received(alice.member)) == ["muted", "muted", "bad_utf8"]
    assert not alice.ended


def test_a_bad_password_line_asks_for_the_password_again_not_a_name():
    room = Room()
    carol = PlainSession(
        room, Member(FakeOutbox(), encode, echo=False), Policy(password="pw")
    )
    carol.receive([b"carol"])
    assert [m.text for m in received(carol.member)] == [
        "This room has a password. Type it:"
    ]
    carol.receive([b"\xff"])  # not UTF-8: refused, and the name still stands
    refused, asked = received(carol.member)
    assert refused.code == "bad_utf8"
    assert asked == Notice("This room has a password. Type it:")
    carol.receive([b"pw"])
    assert room.names() == ("carol",)
