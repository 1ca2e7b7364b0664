"""End-to-end tests of ``chat.server``: real sockets on 127.0.0.1, port 0.

Each test starts a server in this process (the ``server`` fixture, or
``running_server(**options)`` for other settings) and talks to it with raw
line clients, the way ``nc`` or a program would.  Nothing sleeps to wait:
reads have deadlines and conditions are polled with ``wait_for``.

To show that something did *not* reach a client, a test makes one more event
happen and checks that it is the very next line the client reads.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

import chat.server
from chat.outbox import Outbox
from chat.plain import PROMPT
from chat.protocol import LineDecoder
from chat.server import GOODBYE, ChatHandler, ChatServer, ServerConfig
from tests.helpers import (
    DEADLINE,
    LineClient,
    json_client,
    plain_client,
    running_server,
    wait_for,
)

# ---------------------------------------------------------------------------
# Helpers for this file


def handler_for(server: ChatServer, client: LineClient):
    """The server's handler for ``client``'s connection (waits until it is set up)."""
    address = client.sock.getsockname()

    def find():
        for handler in server.connections():
            if handler.client_address == address:
                return handler
        return None

    return wait_for(find, what=f"the handler for {address}")


def send_byte_by_byte(server: ChatServer, client: LineClient, line: bytes) -> None:
    """Send ``line`` one byte per ``send``, each read by the server on its own.

    After every byte but the last (the newline) the test waits until the
    server's decoder holds it, so the server really gets one byte per ``recv``.
    """
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    decoder = handler_for(server, client).decoder
    start = decoder.buffered
    for count, byte in enumerate(line, start=1):
        client.send_raw(bytes([byte]))
        if count < len(line):
            wait_for(
                lambda count=count: decoder.buffered == start + count,
                what=f"the server to read byte {count}",
            )


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("reader ")]


def reset(client: LineClient) -> None:
    """Close with a TCP reset (RST), as a crashed machine or a firewall would."""
    linger = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    client.close()


def person(port: int, name: str) -> LineClient:
    """A plain client that is in the room and has read its whole welcome."""
    client = plain_client(port, name)
    assert client.next_text() == "* Type /help for commands."
    return client


def say(client: LineClient, text: str) -> None:
    client.send_json(type="say", text=text)


def expect_said(client: LineClient, sender: str, text: str) -> dict:
    """The client's next line must be ``sender`` saying ``text``."""
    message = client.next_json()
    assert (message["type"], message["from"], message["text"]) == (
        "message",
        sender,
        text,
    ), message
    return message


# ---------------------------------------------------------------------------
# The room: broadcast, joins and leaves, names, private lines, history


def test_broadcast_reaches_everyone_with_the_senders_name(server):
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        assert alice.next_json() == {"type": "joined", "name": "bob"}
        with json_client(server.port, "carol") as carol:
            assert carol.welcome["users"] == ["alice", "bob", "carol"]
            for client in (alice, bob):
                assert client.next_json() == {"type": "joined", "name": "carol"}
            say(bob, "hello, room")
            received = [
                expect_said(c, "bob", "hello, room") for c in (alice, bob, carol)
            ]
            assert len({m["id"] for m in received}) == 1  # one message, one id


def test_leaving_is_announced_with_the_reason(server):
    with json_client(server.port, "alice") as alice:
        with json_client(server.port, "bob") as bob:
            assert alice.next_json() == {"type": "joined", "name": "bob"}
            bob.send_json(type="bye", reason="off to lunch")
            assert bob.expect_closed() == []
        left = alice.next_json()
        assert left == {"type": "left", "name": "bob", "reason": "quit: off to lunch"}
        assert server.room.names() == ("alice",)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", "bad_name"),
        ("a" * 25, "bad_name"),
        ("two words", "bad_name"),
        ("bell\x07", "bad_name"),
        ("tab\tname", "bad_name"),
        ("server", "bad_name"),
        ("SERVER", "bad_name"),
        ("alice", "name_taken"),
        ("ALICE", "name_taken"),
    ],
    ids=[
        "empty",
        "25 chars",
        "space",
        "control char",
        "tab",
        "reserved",
        "reserved upper",
        "taken",
        "taken other case",
    ],
)
def test_a_refused_name_gets_an_error_and_may_try_again(server, name, code):
    with json_client(server.port, "alice"), LineClient(server.port) as newcomer:
        newcomer.send_json(type="hello", name=name)
        error = newcomer.next_json()
        assert (error["type"], error["code"]) == ("error", code), error
        newcomer.send_json(type="hello", name="b" * 24)  # the longest allowed
        welcome = newcomer.next_json()
        assert welcome["type"] == "welcome"
        assert welcome["users"] == ["alice", "b" * 24]


def test_rename_is_announced_and_the_new_name_is_used(server):
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.next_json()  # bob joined
        alice.send_json(type="rename", name="Alicia")
        for client in (alice, bob):
            assert client.next_json() == {
                "type": "renamed",
                "old": "alice",
                "new": "Alicia",
            }
        alice.send_json(type="rename", name="BOB")
        assert alice.next_json()["code"] == "name_taken"
        say(alice, "call me Alicia")
        for client in (alice, bob):
            expect_said(client, "Alicia", "call me Alicia")
        bob.send_json(type="who")
        assert bob.next_json() == {"type": "users", "users": ["Alicia", "bob"]}


def test_private_message_reaches_only_the_two_people_concerned(server):
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
        json_client(server.port, "carol") as carol,
    ):
        alice.send_json(type="private", to="BOB", text="psst")
        for client in (bob, alice):  # alice gets a copy as confirmation
            private = client.expect_json("private")
            assert (private["from"], private["to"], private["text"]) == (
                "alice",
                "bob",
                "psst",
            )
        say(bob, "back to everyone")
        expect_said(carol, "bob", "back to everyone")  # carol saw nothing before
        alice.send_json(type="private", to="nobody", text="hello?")
        assert alice.expect_json("error")["code"] == "no_such_user"


def test_who_lists_everyone_in_order_of_arrival(server):
    with (
        json_client(server.port, "zoe"),
        json_client(server.port, "adam"),
        json_client(server.port, "mia") as mia,
    ):
        mia.send_json(type="who")
        assert mia.next_json() == {"type": "users", "users": ["zoe", "adam", "mia"]}


@pytest.mark.parametrize(
    ("options", "sent", "kept"),
    [({}, 55, 50), ({"history": 3}, 5, 3), ({"history": 0}, 5, 0)],
    ids=["default 50", "history 3", "history off"],
)
def test_a_newcomer_gets_the_last_messages_in_its_welcome(options, sent, kept):
    with (
        running_server(**options) as server,
        plain_client(server.port, "alice") as alice,
        json_client(server.port, "witness") as witness,
    ):
        alice.send_raw(b"".join(f"line {n}\n".encode() for n in range(1, sent + 1)))
        for n in range(1, sent + 1):
            assert witness.next_json()["text"] == f"line {n}"
        with json_client(server.port, "bob") as bob:
            history = bob.welcome["history"]
            expected = [f"line {n}" for n in range(sent - kept + 1, sent + 1)]
            assert [m["text"] for m in history] == expected
            assert all(m["from"] == "alice" for m in history)


# ---------------------------------------------------------------------------
# Framing: any chunking of the bytes gives the same messages


def test_a_message_sent_one_byte_at_a_time_arrives_whole(server):
    text = "héllo 🎉 wörld"  # two- and four-byte UTF-8 sequences, split apart
    line = json.dumps({"type": "say", "text": text}, ensure_ascii=False)
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.next_json()  # bob joined
        send_byte_by_byte(server, alice, line.encode("utf-8") + b"\n")
        expect_said(bob, "alice", text)
        expect_said(alice, "alice", text)


def test_a_hello_sent_one_byte_at_a_time_is_still_json(server):
    # The first line decides JSON or plain: it must be whole before deciding.
    with LineClient(server.port) as zoe:
        send_byte_by_byte(server, zoe, b'{"type": "hello", "name": "zo\xc3\xab"}\n')
        welcome = zoe.next_json()
        assert (welcome["type"], welcome["name"]) == ("welcome", "zoë")


def test_a_plain_client_typing_one_byte_at_a_time(server):
    with json_client(server.port, "bob") as bob, LineClient(server.port) as alice:
        alice.send_raw(b"alice\n")
        alice.expect_text("Welcome, alice!")
        assert bob.next_json() == {"type": "joined", "name": "alice"}
        send_byte_by_byte(server, alice, "café ☕\r\n".encode())
        expect_said(bob, "alice", "café ☕")


def test_two_messages_in_one_segment_arrive_as_two(server):
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.next_json()  # bob joined
        alice.send_raw(b'{"type":"say","text":"one"}\n{"type":"say","text":"two"}\n')
        first = expect_said(bob, "alice", "one")
        second = expect_said(bob, "alice", "two")
        assert second["id"] == first["id"] + 1


# ---------------------------------------------------------------------------
# Bad input: the offender hears about it, everyone else carries on

BAD_LINES = [
    (b"{not json\n", "bad_json"),
    (b"[1, 2, 3]\n", "bad_json"),
    (b'{"type": "say", "text": "caf\xe9"}\n', "bad_utf8"),
    (b'{"type": "dance"}\n', "unknown_type"),
    (b'{"type": "say"}\n', "bad_message"),
    (b'{"type": "say", "text": 42}\n', "bad_message"),
    (b'{"type": "say", "text": "   "}\n', "empty"),
    (b'{"type": "hello", "name": "again"}\n', "already_registered"),
    (b'{"type": "say", "text": "' + b"x" * 9000 + b'"}\n', "too_long"),
]


@pytest.mark.parametrize(
    ("line", "code"), BAD_LINES, ids=[code for _, code in BAD_LINES]
)
def test_a_bad_line_gets_an_error_to_the_offender_only(server, line, code):
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.next_json()  # bob joined
        bob.send_raw(line)
        error = bob.next_json()
        assert (error["type"], error["code"]) == ("error", code), error
        # Bob is still connected and heard; alice never saw the error.
        say(bob, "still here")
        expect_said(bob, "bob", "still here")
        expect_said(alice, "bob", "still here")


def test_saying_anything_before_hello_is_refused(server):
    with LineClient(server.port) as early:
        say(early, "me first")
        error = early.next_json()
        assert (error["type"], error["code"]) == ("error", "not_registered")
        early.send_json(type="hello", name="early")
        assert early.next_json()["type"] == "welcome"
        assert server.room.history() == ()


def test_a_plain_client_is_told_about_bad_lines_and_stays(server):
    with (
        plain_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.expect_text("* bob joined")
        alice.send_raw(b"caf\xe9\n")
        assert alice.next_text() == "! That line is not valid UTF-8; it was not sent."
        alice.send_raw(b"y" * 9000 + b"\n")
        assert alice.next_text().startswith("! Line too long (over 8192 bytes)")
        alice.send_line("fine now")
        expect_said(bob, "alice", "fine now")


class RecordingDecoder(LineDecoder):
    """A ``LineDecoder`` that remembers how much it was fed and held at most."""

    instances: ClassVar[list[RecordingDecoder]] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fed = 0
        self.most_buffered = 0
        RecordingDecoder.instances.append(self)

    def feed(self, data: bytes):
        self.fed += len(data)
        try:
            return super().feed(data)
        finally:
            self.most_buffered = max(self.most_buffered, self.buffered)


def test_a_stream_without_newlines_is_dropped_with_memory_bounded(server, monkeypatch):
    RecordingDecoder.instances.clear()
    monkeypatch.setattr(chat.server, "LineDecoder", RecordingDecoder)
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "flood") as flood,
    ):
        alice.next_json()  # flood joined
        chunk = b"A" * 65536
        try:
            for _ in range(48):  # 3 MiB, no newline
                flood.send_raw(chunk)
        except OSError:
            pass  # the server may hang up before we finish: that is the point
        lines = [json.loads(line) for line in flood.expect_closed()]
        codes = [m["code"] for m in lines if m["type"] == "error"]
        assert codes and set(codes) == {"too_long"}, lines
        left = alice.next_json()
        assert left["type"] == "left" and left["name"] == "flood", left
        assert left["reason"].startswith("no end of line")
        say(alice, "carrying on")
        expect_said(alice, "alice", "carrying on")
    decoder = RecordingDecoder.instances[-1]
    assert decoder.fed > 1024 * 1024  # the server read past the limit...
    assert decoder.most_buffered <= 8192  # ...and never held more than one line


@pytest.mark.parametrize(
    ("hang_up", "reason"),
    [(reset, "connection lost"), (LineClient.close, "connection closed")],
    ids=["reset", "closed"],
)
def test_a_client_gone_mid_line_leaves_and_the_rest_carry_on(server, hang_up, reason):
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.next_json()  # bob joined
        carol = json_client(server.port, "carol")
        for client in (alice, bob):
            client.next_json()  # carol joined
        carol.send_raw(b'{"type": "say", "text": "half a li')
        wait_for(lambda: handler_for(server, carol).decoder.buffered > 0)
        hang_up(carol)
        for client in (alice, bob):
            assert client.next_json() == {
                "type": "left",
                "name": "carol",
                "reason": reason,
            }
        say(alice, "as I was saying")  # the half line was never said
        expect_said(bob, "alice", "as I was saying")
        assert server.room.names() == ("alice", "bob")


def test_a_half_closed_client_is_heard_and_then_let_go(server):
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.next_json()  # bob joined
        say(bob, "last words")
        bob.sock.shutdown(socket.SHUT_WR)  # like `printf ... | nc -N`
        assert [json.loads(line) for line in bob.expect_closed()][-1]["text"] == (
            "last words"
        )
        expect_said(alice, "bob", "last words")
        assert alice.next_json() == {
            "type": "left",
            "name": "bob",
            "reason": "connection closed",
        }


# ---------------------------------------------------------------------------
# Many clients, slow clients


def test_the_listen_backlog_holds_a_burst_of_connections():
    # Nobody accepts here: every connection must wait in the listen queue.
    # socketserver's default backlog of 5 would leave most of them hanging.
    server = ChatServer(ServerConfig(host="127.0.0.1", port=0))
    sockets = []
    try:
        for _ in range(50):
            sockets.append(
                socket.create_connection(("127.0.0.1", server.port), timeout=2.0)
            )
        assert len(sockets) == 50
    finally:
        for sock in sockets:
            sock.close()
        server.server_close()


def test_fifty_clients_join_at_once_and_all_hear_one_broadcast(server):
    clients = []
    try:
        for number in range(50):
            client = LineClient(server.port)
            clients.append(client)
            client.send_json(type="hello", name=f"user{number}")
        for number, client in enumerate(clients):
            assert client.expect_json("welcome")["name"] == f"user{number}"
        assert len(server.room.names()) == 50
        assert len(reader_threads()) == 50  # one named reader thread per client
        say(clients[7], "hello, all fifty")
        for client in clients:
            message = client.expect_json("message")
            assert (message["from"], message["text"]) == ("user7", "hello, all fifty")
    finally:
        for client in clients:
            client.close()


def test_a_client_that_never_reads_is_dropped_and_delays_nobody():
    limit = 64 * 1024
    with (
        running_server(max_outbox_bytes=limit) as server,
        json_client(server.port, "stalled") as stalled,
        plain_client(server.port, "flood") as flood,
        json_client(server.port, "reader") as reader,
    ):
        # stalled never reads again; flood never gets its own lines back.
        text = "x" * 1000
        dropped = None
        for batch in range(3000):  # at most 30 MB: far more than buffers hold
            flood.send_raw(
                b"".join(f"{batch}.{n} {text}\n".encode() for n in range(10))
            )
            for n in range(10):
                message = reader.next_json()  # 5 s deadline: promptly, or fail
                if message["type"] == "left":
                    dropped = message
                    message = reader.next_json()
                assert (message["from"], message["text"]) == (
                    "flood",
                    f"{batch}.{n} {text}",
                )
            if dropped:
                break
        assert dropped == {"type": "left", "name": "stalled", "reason": "slow consumer"}
        assert server.room.names() == ("flood", "reader")
        # Everyone else goes on as before.
        flood.send_line("after the drop")
        assert reader.next_json()["text"] == "after the drop"
        # The stalled client's connection was really ended.
        stalled.expect_closed(timeout=2 * DEADLINE)


def test_accepted_sockets_have_nagle_turned_off(server):
    with (
        json_client(server.port, "alice") as alice,
        plain_client(server.port, "bob") as bob,
    ):
        for client in (alice, bob):
            sock = handler_for(server, client).request
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# ---------------------------------------------------------------------------
# Who gets in, and how they are greeted


def test_past_max_clients_a_connection_is_told_why_and_closed():
    with (
        running_server(max_clients=2) as server,
        json_client(server.port, "alice"),
        json_client(server.port, "bob") as bob,
    ):
        with LineClient(server.port) as third:
            [line] = third.expect_closed()
            refusal = json.loads(line)
            assert (refusal["type"], refusal["code"]) == ("error", "server_full")
            assert "full" in refusal["text"]
        bob.close()

        def a_newcomer_gets_in():
            with LineClient(server.port) as newcomer:
                try:
                    newcomer.send_json(type="hello", name="carol")
                except OSError:
                    return False
                try:
                    return newcomer.next_json()["type"] == "welcome"
                except (AssertionError, OSError):  # refused and closed
                    return False

        wait_for(a_newcomer_gets_in, what="bob's place to be free")


def test_a_web_browser_gets_a_readable_refusal(server):
    with LineClient(server.port) as browser:
        browser.send_raw(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        lines = browser.expect_closed()
        assert lines[0] == b"HTTP/1.0 400 Bad Request\r"
        assert lines[-1].startswith(b"This is a chat server")
        assert b"not HTTP" in lines[-1]


def test_a_tls_client_gets_a_readable_refusal(server):
    with LineClient(server.port) as tls:
        tls.send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32))
        [line] = tls.expect_closed()
        assert line.startswith(b"This is a chat server") and b"not TLS" in line


def test_a_person_who_waits_gets_a_prompt_then_plain_lines(server):
    with LineClient(server.port) as someone:
        assert someone.next_text() == PROMPT  # nothing was sent: a person waits
        someone.send_line("alice")
        assert someone.expect_text("Welcome") == "* Welcome, alice! 1 user here: alice"
        assert server.room.names() == ("alice",)


def test_a_json_hello_after_the_prompt_is_still_json(server):
    with LineClient(server.port) as program, json_client(server.port, "bob") as bob:
        assert program.next_text() == PROMPT
        program.send_json(type="hello", name="slowpoke")
        welcome = program.next_json()
        assert (welcome["type"], welcome["users"]) == ("welcome", ["bob", "slowpoke"])
        say(bob, "hi")
        expect_said(program, "bob", "hi")


# ---------------------------------------------------------------------------
# Plain-text clients (nc, telnet)


def test_a_plain_client_reads_the_room_as_lines(server):
    with (
        person(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
        person(server.port, "carol") as carol,
    ):
        assert alice.next_text() == "* bob joined"
        assert alice.next_text() == "* carol joined"
        bob.expect_json("joined")
        say(bob, "hi all \x1b[31m")
        assert alice.next_text() == "bob: hi all \\x1b[31m"
        assert carol.next_text() == "bob: hi all \\x1b[31m"
        alice.send_line("hello from nc")
        assert carol.next_text() == "alice: hello from nc"
        bob.expect_json("message")
        bob.expect_json("message")
        alice.send_line("/me waves")
        assert carol.next_text() == "* alice waves"
        assert bob.next_json()["me"] is True
        # alice got none of her own lines back: bob's is the next she reads.
        say(bob, "next")
        assert alice.next_text() == "bob: next"
        carol.next_text()
        bob.next_json()


def test_plain_client_commands(server):
    with (
        person(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.next_text()  # bob joined
        alice.send_line("/who")
        assert alice.next_text() == "* 2 users here: alice, bob"
        alice.send_line("/msg bob psst")
        assert alice.next_text() == "[private] alice -> bob: psst"
        private = bob.next_json()
        assert (private["type"], private["text"]) == ("private", "psst")
        alice.send_line("/help")
        assert alice.next_text() == "* Commands:"
        assert alice.expect_text("/nick NAME").startswith("*   /nick NAME")
        alice.send_line("/nick Alicia")
        assert alice.expect_text("known as") == "* alice is now known as Alicia"
        assert bob.next_json() == {"type": "renamed", "old": "alice", "new": "Alicia"}
        alice.send_line("/dance")
        assert alice.next_text() == "! Unknown command /dance; /help lists them."
        alice.send_line("//slash")
        expect_said(bob, "Alicia", "/slash")


def test_a_plain_client_whose_name_is_taken_may_choose_again(server):
    with json_client(server.port, "alice"), LineClient(server.port) as someone:
        someone.send_line("Alice")
        assert someone.expect_text("!") == "! Alice is already taken"
        assert someone.next_text() == "* Choose another name:"
        someone.send_line("server")
        assert someone.next_text().startswith("! the name 'server' is reserved")
        assert someone.next_text() == "* Choose another name:"
        someone.send_line("bob")
        assert someone.expect_text("Welcome") == (
            "* Welcome, bob! 2 users here: alice, bob"
        )


@pytest.mark.parametrize(
    ("typed", "reason"),
    [("/quit", "quit"), ("exit", "quit"), ("/quit see you", "quit: see you")],
)
def test_a_plain_client_leaves(server, typed, reason):
    with (
        person(server.port, "alice") as alice,
        person(server.port, "bob") as bob,
    ):
        alice.next_text()  # bob joined
        bob.send_line(typed)
        assert bob.expect_closed() == []
        assert alice.next_text() == f"* bob left ({reason})"


# ---------------------------------------------------------------------------
# Echo mode


def test_echo_mode_sends_each_line_back_to_its_sender_only():
    with (
        running_server(echo=True) as server,
        LineClient(server.port) as first,
        LineClient(server.port) as second,
    ):
        first.send_raw(b"Hello, server!\n")
        assert first.next_line() == b"Hello, server!"  # no greeting before it
        second.send_raw(b"alice\n")  # not taken as a name
        assert second.next_line() == b"alice"
        first.send_raw(b"again\n")
        assert first.next_line() == b"again"  # not second's line
        assert server.room.names() == ()


def test_echo_mode_keeps_crlf_long_lines_and_split_bytes():
    with running_server(echo=True) as server, LineClient(server.port) as client:
        client.send_raw(b"one\r\ntwo\r\n")
        assert client.next_line() == b"one\r"
        assert client.next_line() == b"two\r"
        long_line = ("0123456789" * 820)[:8192].encode()  # exactly the limit
        client.send_raw(long_line + b"\n")
        assert client.next_line() == long_line
        client.send_raw(b"z" * 9000 + b"\n")
        assert client.next_line() == b"! Line too long (over 8192 bytes)."
        send_byte_by_byte(server, client, "🎉!\n".encode())
        assert client.next_text() == "🎉!"


def test_echo_mode_answers_a_client_that_half_closes():
    # printf 'Hello, server!\n' | nc -N 127.0.0.1 PORT
    with running_server(echo=True) as server, LineClient(server.port) as client:
        client.send_raw(b"Hello, server!\n")
        client.sock.shutdown(socket.SHUT_WR)
        assert client.expect_closed() == [b"Hello, server!"]


# ---------------------------------------------------------------------------
# The operator's actions, and shutting down


def test_a_kicked_member_is_told_why_and_disconnected(server):
    with (
        json_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        alice.next_json()  # bob joined
        assert server.room.kick("BOB", "spam") is True
        kicked = {"type": "left", "name": "bob", "reason": "kicked: spam"}
        assert [json.loads(line) for line in bob.expect_closed()] == [kicked]
        assert alice.next_json() == kicked
        assert server.room.kick("bob", "again") is False
        say(alice, "peace at last")  # and bob's leaving was announced once
        expect_said(alice, "alice", "peace at last")
        assert server.room.names() == ("alice",)


def test_a_muted_member_whose_say_comes_with_a_bad_line_stays_connected(server):
    # Regression: the refusal of the say escaped the session, and the server
    # hung up as if the stream could not be trusted.
    with json_client(server.port, "alice") as alice:
        assert server.room.mute("alice")
        alice.expect_json("notice")
        alice.send_raw(b'{"type":"say","text":"hi","cid":"c1"}\nnot json\n')
        muted, bad = alice.next_json(), alice.next_json()
        assert (muted["code"], muted["cid"]) == ("muted", "c1")
        assert bad["code"] == "bad_json"
        alice.send_json(type="ping")
        assert alice.next_json() == {"type": "pong"}
        assert server.room.names() == ("alice",)


def test_shutdown_says_goodbye_to_everyone_and_frees_the_port():
    with contextlib.ExitStack() as clients:
        with running_server() as server:
            port = server.port
            alice = clients.enter_context(json_client(port, "alice"))
            bob = clients.enter_context(plain_client(port, "bob"))
            unnamed = clients.enter_context(LineClient(port))
            assert unnamed.next_text() == PROMPT
        # server_close() has returned: every reader thread has been joined.
        assert json.loads(alice.expect_closed()[-1]) == {
            "type": "notice",
            "text": GOODBYE,
        }
        assert bob.expect_closed()[-1] == f"* {GOODBYE}".encode()
        assert unnamed.expect_closed() == [f"* {GOODBYE}".encode()]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
    # A restart binds the same port at once, although the old connections
    # are in TIME_WAIT on the server's side (it closed first).
    with running_server(port=port) as restarted, json_client(port, "again") as again:
        assert (restarted.port, again.welcome["users"]) == (port, ["again"])


def test_a_port_in_use_raises_and_leaves_nothing_running():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as raised:
            ChatServer(ServerConfig(host="127.0.0.1", port=port))
        assert raised.value.errno == errno.EADDRINUSE


def test_a_connection_hung_up_before_its_tls_handshake_hears_nothing_in_clear():
    # Regression: hang_up() put a plain-text notice on the outbox before the
    # handshake had set its encryption, and the writer sent it in the clear.
    data = Path(__file__).parent / "data"
    cert, key = str(data / "localhost.pem"), str(data / "localhost.key")
    with (
        running_server(tls_cert=cert, tls_key=key) as server,
        LineClient(server.port) as raw,  # says nothing: the handshake waits
    ):
        [handler] = wait_for(server.connections, what="the connection")
        assert handler.outbox.transform is None
        handler.hang_up(GOODBYE)
        assert raw.expect_closed() == []


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc")
def test_bad_certificate_files_raise_and_leave_nothing_running(tmp_path):
    # Regression: the history writer thread and the writer's socket pair,
    # made before the TLS context, were left behind.
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n", encoding="ascii")
    threads, fds = set(threading.enumerate()), set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):  # ssl.SSLError included
        ChatServer(ServerConfig(host="127.0.0.1", port=0, tls_cert=str(garbage)))
    assert [t.name for t in threading.enumerate() if t not in threads] == []
    assert set(os.listdir("/proc/self/fd")) - fds == set()


def test_shutdown_does_not_wait_long_for_a_client_that_never_reads():
    with contextlib.ExitStack() as clients:
        # A huge outbox limit: the stalled client is never dropped as slow.
        with running_server(max_outbox_bytes=64 * 1024 * 1024) as server:
            stalled = clients.enter_context(json_client(server.port, "stalled"))
            flood = clients.enter_context(plain_client(server.port, "flood"))
            outbox = handler_for(server, stalled).outbox
            lines = b"".join(b"%d %s\n" % (n, b"x" * 1000) for n in range(50))
            for _ in range(160):  # 8 MB: twice what the kernel's buffers hold
                flood.send_raw(lines)
            wait_for(lambda: outbox.queued > 2_000_000, what="a backlog")
            started = time.monotonic()
        stopped_in = time.monotonic() - started
        assert stopped_in < 4.0  # the writer gives up on it after LINGER (1 s)
        stalled.expect_closed(timeout=2 * DEADLINE)


def test_a_connection_set_up_during_shutdown_is_hung_up_too(monkeypatch):
    # A connection accepted just before shutdown() may reach the handler's
    # setup() only once server_close() has begun.  Make that happen every time.
    closing = threading.Event()
    setup = ChatHandler.setup

    def late_setup(handler):
        closing.wait(DEADLINE)
        setup(handler)

    monkeypatch.setattr(ChatHandler, "setup", late_setup)
    with contextlib.ExitStack() as clients:
        with running_server() as server:
            close_room = server.room.close

            def close_room_then_set_up(text):
                close_room(text)
                closing.set()

            monkeypatch.setattr(server.room, "close", close_room_then_set_up)
            late = clients.enter_context(LineClient(server.port))
            wait_for(reader_threads, what="the connection to be accepted")
            started = time.monotonic()
        # A reader left waiting would cost server_close() its 2 s join timeout.
        assert time.monotonic() - started < 2.0
        [line] = late.expect_closed()
        assert GOODBYE in line.decode()


def test_a_person_at_the_prompt_is_said_goodbye_in_plain_text(monkeypatch):
    # The person may see the prompt before the reader thread goes on: shut
    # the server down in exactly that moment, every time.
    closing = threading.Event()
    put = Outbox.put

    def put_then_wait_after_the_prompt(outbox, data):
        put(outbox, data)
        if data == PROMPT.encode() + b"\n":
            closing.wait(DEADLINE)

    monkeypatch.setattr(Outbox, "put", put_then_wait_after_the_prompt)
    with contextlib.ExitStack() as clients:
        with running_server() as server:
            close_room = server.room.close

            def close_room_then_go_on(text):
                close_room(text)
                closing.set()

            monkeypatch.setattr(server.room, "close", close_room_then_go_on)
            someone = clients.enter_context(LineClient(server.port))
            assert someone.next_text() == PROMPT
        assert someone.expect_closed() == [f"* {GOODBYE}".encode()]


# ---------------------------------------------------------------------------
# Found in review


@pytest.mark.parametrize("before", [b"\n", b"   \r\n", b"x" * 9000 + b"\n"])
def test_blank_or_long_lines_before_hello_do_not_make_a_plain_client(server, before):
    with LineClient(server.port) as client:
        client.send_raw(before + b'{"type":"hello","name":"ada"}\n')
        message = client.next_json()
        if message["type"] == "error":  # the long line is refused first
            assert message["code"] == "too_long"
            message = client.next_json()
        assert message["type"] == "welcome"
        assert message["name"] == "ada"


def test_echo_mode_speaks_plain_text_when_it_speaks_for_itself():
    with (
        running_server(echo=True, max_unterminated_bytes=100_000) as echo,
        LineClient(echo.port) as client,
    ):
        client.send_line("hi")
        assert client.next_line() == b"hi"
        client.send_raw(b"x" * 200_000)
        said = client.expect_closed()
    assert said and said[-1].startswith(b"! ")
    assert not said[-1].startswith(b"{")


def test_a_long_history_does_not_drop_newcomers():
    with (
        running_server(history=50, max_outbox_bytes=64 * 1024) as small,
        plain_client(small.port, "loud") as loud,  # plain: no echoes to read
    ):
        loud.send_raw(b"".join(b"\x01" * 1300 + b"\n" for _ in range(50)))
        wait_for(lambda: len(small.room.history()) == 50, what="the history")
        with json_client(small.port, "newcomer") as newcomer:
            assert 0 < len(newcomer.welcome["history"]) < 50
            loud.send_line("still here?")
            assert newcomer.expect_json("message")["text"] == "still here?"


def test_echo_clients_are_said_goodbye_in_plain_text_too():
    with running_server(echo=True) as echo, LineClient(echo.port) as client:
        client.send_line("hi")
        assert client.next_line() == b"hi"
        echo.shutdown()
        echo.server_close()
        assert client.expect_closed() == [b"* Server shutting down. Goodbye!"]


# -- how a stream ended ----------------------------------------------------------


def ended_pair(reset: bool) -> socket.socket:
    """Our end of a TCP connection whose peer has gone: with a reset, or closed."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=DEADLINE)
        theirs, _ = listener.accept()
    if reset:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    theirs.close()
    chat.server.Readable(ours).wait(DEADLINE)  # the reset or the close is here
    return ours


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="Linux's TCP_INFO")
def test_a_reset_is_told_from_a_close_even_after_a_send_took_its_error():
    ours = ended_pair(reset=True)
    with pytest.raises(OSError):  # as the writer's send would: it takes the error
        ours.send(b"too late")
    assert ours.recv(100) == b""  # so the reader sees only an end of stream
    assert chat.server.was_reset(ours)
    ours.close()


def test_a_close_is_not_a_reset():
    ours = ended_pair(reset=False)
    assert ours.recv(100) == b""
    assert not chat.server.was_reset(ours)
    ours.close()


def test_a_stream_of_blank_lines_does_not_outlast_the_registration_timeout():
    """Blank lines are free (flood control) and give no name: a client that
    keeps the socket full of them used to dodge the clock for good."""
    with running_server(register_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(DEADLINE)
            deadline = time.monotonic() + 10 * DEADLINE
            with contextlib.suppress(OSError):  # the server hangs up on it
                while time.monotonic() < deadline:  # bounded: 64 KiB a send
                    sock.sendall(b"\n" * 65536)
            assert time.monotonic() < deadline, "never hung up on"
        wait_for(lambda: not server.connections(), what="the connection gone")


@pytest.mark.parametrize("typed", [b"GET \n", b"POST \r\n", b"HEAD \n"])
def test_a_person_called_like_an_http_method_is_no_browser(server, typed):
    with LineClient(server.port) as person:
        person.send_raw(typed)
        name = typed.strip().decode()
        assert person.expect_text(f"Welcome, {name}!").startswith("* Welcome")


def test_a_reader_thread_that_cannot_start_is_refused_and_not_counted(monkeypatch):
    real_start = threading.Thread.start

    def out_of_threads(thread):
        if thread.name.startswith("reader"):
            raise RuntimeError("can't start new thread")
        return real_start(thread)

    with running_server(max_per_address=1) as server:
        monkeypatch.setattr(threading.Thread, "start", out_of_threads)
        with LineClient(server.port) as refused:
            [line] = refused.expect_closed()
            assert json.loads(line)["code"] == "server_full"
        monkeypatch.setattr(threading.Thread, "start", real_start)
        assert server.connections_from("127.0.0.1") == 0
        with json_client(server.port, "ann"):  # the address is not used up
            assert server.room.names() == ("ann",)
