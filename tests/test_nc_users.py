"""People on ``nc`` and ``telnet``, over real sockets: what their clients send.

A terminal and a telnet client put more than text on the wire: telnet
commands (``IAC`` = byte 255) when you press Ctrl+C or when the client
negotiates options, and Backspace/Delete bytes when the client sends
characters as they are typed.  None of that may cost a person their line,
reach the others, or leave their screen frozen.
"""

from __future__ import annotations

import time

import pytest

from chat.plain import TelnetFilter
from tests.helpers import DEADLINE, LineClient, plain_client, running_server

IAC, DONT, DO, WONT, WILL, SB, SE, IP, NOP = 255, 254, 253, 252, 251, 250, 240, 244, 241
TIMING_MARK, NAWS, TTYPE, SGA, ECHO = 6, 31, 24, 3, 1


def telnet(*codes: int) -> bytes:
    return bytes(codes)


def raw_until(client: LineClient, fragment: bytes, timeout: float = DEADLINE) -> bytes:
    """Every byte received (lines and the unfinished rest) once ``fragment``
    is among them; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        seen = b"\n".join([*client.lines, client._buffer])
        if fragment in seen:
            return seen
        if not client._fill(deadline):
            raise AssertionError(f"closed without {fragment!r}; got {seen!r}")


def test_telnet_ctrl_c_gets_its_timing_mark_and_the_next_line_is_kept():
    """Ctrl+C in telnet sends IAC IP IAC DO TIMING-MARK, and the client then
    throws away everything the server says until the mark is answered: the
    person saw nothing more, ever, and their next line was refused."""
    with (
        running_server() as server,
        plain_client(server.port, "alice") as alice,
        plain_client(server.port, "bob") as bob,
    ):
        alice.expect_text("* bob joined")
        bob.send_raw(telnet(IAC, IP, IAC, DO, TIMING_MARK) + b"still here\r\n")
        assert alice.expect_text("bob:") == "bob: still here"
        alice.send_line("can you hear me?")
        received = raw_until(bob, b"alice: can you hear me?")
        mark = received.find(telnet(IAC, WILL, TIMING_MARK))
        assert 0 <= mark < received.find(b"alice: can you hear me?")
        assert b"not valid UTF-8" not in received


def test_telnet_ctrl_c_is_answered_at_once_without_enter():
    """Until the mark is answered telnet shows nothing: an answer that waited
    for the person's next Enter lost everything said meanwhile."""
    with (
        running_server() as server,
        plain_client(server.port, "alice") as alice,
        plain_client(server.port, "bob") as bob,
    ):
        alice.expect_text("* bob joined")
        bob.send_raw(telnet(IAC, IP, IAC, DO, TIMING_MARK))  # no newline after
        raw_until(bob, telnet(IAC, WILL, TIMING_MARK))
        alice.send_line("said meanwhile")
        raw_until(bob, b"alice: said meanwhile")


# (bytes in, text kept, answer): fed whole, then one byte at a time.
FILTER_CASES = [
    (b"plain text\n", b"plain text\n", b""),
    (telnet(IAC, IP, IAC, DO, TIMING_MARK), b"", telnet(IAC, WILL, TIMING_MARK)),
    (b"a" + telnet(IAC, DO, ECHO) + b"b", b"ab", telnet(IAC, WONT, ECHO)),
    (telnet(IAC, WILL, NAWS) + b"x", b"x", telnet(IAC, DONT, NAWS)),
    (telnet(IAC, DONT, ECHO, IAC, WONT, ECHO) + b"y", b"y", b""),
    (b"s" + telnet(IAC, SB, NAWS, 0, 10, 0, IAC, IAC, 24, IAC, SE) + b"t", b"st", b""),
    (b"b" + telnet(IAC, IAC) + b"b", b"b\xffb", b""),  # an escaped 255
    (b"b\xffb\n", b"b\xffb\n", b""),  # 255 starting no command: data
    (b"\xff", b"", b""),  # held: the start of a command, perhaps
]


@pytest.mark.parametrize(("data", "kept", "answer"), FILTER_CASES)
def test_the_telnet_filter_whole_and_byte_by_byte(data, kept, answer):
    assert TelnetFilter().feed(data) == (kept, answer)
    telnet_filter, got_kept, got_answer = TelnetFilter(), b"", b""
    for byte in data:
        more, reply = telnet_filter.feed(bytes([byte]))
        got_kept, got_answer = got_kept + more, got_answer + reply
    assert (got_kept, got_answer) == (kept, answer)


def test_json_clients_bytes_are_never_filtered():
    """A program speaking JSON owns its bytes: a 255 there is bad UTF-8."""
    with running_server() as server, LineClient(server.port) as program:
        program.send_json(type="hello", name="prog")
        assert program.next_json()["type"] == "welcome"
        program.send_raw(b'{"type":"say","text":"x"}' + telnet(IAC, NOP) + b"\n")
        assert program.expect_json("error")["code"] == "bad_utf8"


def test_telnet_option_negotiation_is_not_part_of_the_name():
    """A telnet client (PuTTY, Windows telnet) may open with option
    negotiation; the name typed after it is still the name, and each offer
    is refused so that the client does not wait for an answer."""
    with running_server() as server, LineClient(server.port) as carol:
        carol.send_raw(
            telnet(IAC, WILL, NAWS, IAC, WILL, TTYPE, IAC, DO, SGA, IAC, DO, ECHO)
            + telnet(IAC, SB, NAWS, 0, 80, 0, 24, IAC, SE)
            + b"carol\r\n"
        )
        received = raw_until(carol, b"* Welcome, carol!")
        assert b"not valid UTF-8" not in received
        for answer in (
            telnet(IAC, DONT, NAWS),
            telnet(IAC, DONT, TTYPE),
            telnet(IAC, WONT, SGA),
            telnet(IAC, WONT, ECHO),
        ):
            assert answer in received


def test_telnet_commands_inside_a_line_never_reach_the_others():
    with (
        running_server() as server,
        plain_client(server.port, "alice") as alice,
        plain_client(server.port, "bob") as bob,
    ):
        alice.expect_text("* bob joined")
        bob.send_raw(b"ab" + telnet(IAC, WONT, ECHO) + b"cd\r\n")
        assert alice.expect_text("bob:") == "bob: abcd"


def test_backspace_and_delete_erase_what_was_typed():
    """A client that sends keys as they are typed sends Backspace (^H) and
    Delete (^?) too: the others must read the corrected line, not
    ``hellp\\x08o``."""
    with (
        running_server() as server,
        plain_client(server.port, "alice") as alice,
        plain_client(server.port, "bob") as bob,
    ):
        alice.expect_text("* bob joined")
        bob.send_raw(b"hellp\x08o\r\n")
        assert alice.expect_text("bob:") == "bob: hello"
        bob.send_raw(b"\x08wrld\x7f\x7f\x7forld\r\n")
        assert alice.expect_text("bob:") == "bob: world"
        bob.send_raw(b"/me wavf\x7fes\r\n")  # commands too
        assert alice.expect_text("* bob") == "* bob waves"
