"""Attacks that got through the earlier reviews, one test each.

Every test here failed on the code before its fix.  Each names what a hostile
client does and what must hold anyway.  Servers run in-process on 127.0.0.1,
port 0; every loop that sends is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

from pathlib import Path

from chat import plain
from chat.protocol import Say, encode, escape_text
from chat.room import Member, Room
from tests.helpers import (
    DEADLINE,
    plain_client,
)
from tests.test_console import running_launcher

ROOT = Path(__file__).resolve().parent.parent

#: The worst line for a plain client: every byte of it becomes a 4-byte escape.
CONTROLS = "\x01" * 8192


class CountingOutbox:
    """Keeps what the room put, like the writer would get it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def put(self, data: bytes) -> None:
        self.chunks.append(data)

    def hang_up(self) -> None:
        pass


def counting_member(render) -> tuple[Member, list[int]]:
    """A member whose every rendering is counted (bytes made, per call)."""
    made: list[int] = []

    def counted(message):
        data = render(message)
        made.append(len(data))
        return data

    return Member(CountingOutbox(), counted, echo=True), made


def filled_room(lines: int = 500) -> tuple[Room, Member]:
    room = Room()
    filler = Member(CountingOutbox(), encode, echo=True)
    room.join(filler, "filler")
    for _ in range(lines):
        room.say(filler, [Say(CONTROLS)])
    return room, filler


# ---------------------------------------------------------------------------
# A history of control characters made every join cost seconds under the
# room's lock: the welcome was rendered again and again, a quarter shorter
# each time, until it fitted (and each plain rendering escaped every byte).
# (How long a join takes is a benchmark's business; the tests count the
# bytes rendered, which is what the time follows.)


def test_a_welcome_costs_about_its_own_size_however_long_the_history():
    room, _ = filled_room()
    cases = ((plain.render_bytes, None), (encode, 0), (encode, None))
    for number, (render, since) in enumerate(cases):
        newcomer, made = counting_member(render)
        room.join(newcomer, f"newcomer{number}", since, room._history.token)
        sent = sum(len(chunk) for chunk in newcomer.outbox.chunks)
        assert sent <= room.max_welcome_bytes + 200  # it still fits, and says so
        # Rendering (escaping, encoding) is the cost: a bounded multiple of
        # what a welcome may hold, not of the history's length.
        assert sum(made) <= 3 * room.max_welcome_bytes, (render, since, made)


def test_fast_escaping_escapes_exactly_what_it_did():
    import re

    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)

    def one(match: re.Match[str]) -> str:
        char = match.group()
        named = {"\n": "\\n", "\r": "\\r"}
        if char in named:
            return named[char]
        code = ord(char)
        if code < 0x100:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    # What escape_text escaped before it was made fast, written out as it was.
    before = re.compile(
        "[\x00-\x08\x0a-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f"
        "\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
        "\U000110bd\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e007f]"
    )
    assert escape_text(every) == before.sub(one, every)


# ---------------------------------------------------------------------------
# A console that cannot show every character (PYTHONIOENCODING=ascii, a
# Windows console redirected to a file: cp1252) got a logging traceback on
# stderr for every line of a peer whose name or text it could not encode.


def test_a_name_the_console_cannot_encode_prints_no_traceback(monkeypatch):
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")  # the launcher's child gets it
    with running_launcher() as (server, port):
        with plain_client(port, "José") as jose:
            jose.send_line("olá")
            assert server.expect(": ol").endswith("Jos\\xe9: ol\\xe1")
            jose.send_line("/quit")
            jose.expect_closed()
        server.type("/quit")
        server.process.wait(DEADLINE)
        errors = server.process.stderr.read().decode("utf-8", "replace")
    assert "Traceback" not in errors, errors
