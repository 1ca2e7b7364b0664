"""Hostile input against a real server: the offender hears about it, nobody else does.

Every test starts a real server in this process (``running_server``, real
sockets on 127.0.0.1, port 0) with two *witnesses* already in the room: a
JSON client (jane) and a plain client (pat).  Then an offender (mallory)
sends something nasty, and the test checks two things:

* what the offender gets back (an error, nothing, or the door), and
* that the room did not notice: ``assert_room_unaffected`` has jane and pat
  exchange a line, and fails if anything but joins and leaves reached them
  before it, if a line pat ever received holds a raw control character, or
  if a line jane ever received is not JSON.

Nothing here sleeps to synchronise.  To make sure the server has *read* some
bytes before the next ones go (an emoji split across reads), the test asks
the kernel: the client's bytes are all acknowledged (``SIOCOUTQ``) and the
server's socket has nothing unread (``FIONREAD``).  To make sure the server
has *handled* everything an offender sent, the offender asks a question
(``ping``, ``/who``) and reads up to the answer.

Linux only (``/proc``, socket ioctls), like the machines the course runs on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import json
import logging
import os
import re
import socket
import ssl
import struct
import termios
import threading
import time
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chat.console import SafeFormatter
from chat.plain import PROMPT
from chat.protocol import MAX_LINE_BYTES, MAX_UNTERMINATED_BYTES
from chat.server import ChatServer, ServerConfig
from tests.helpers import (
    DEADLINE,
    LineClient,
    json_client,
    plain_client,
    running_server,
    wait_for,
)

KINDS = ("json", "plain")

# ---------------------------------------------------------------------------
# The witnesses, and the one check every test ends with


@dataclasses.dataclass
class Witnesses:
    """A server with jane (JSON) and pat (plain) in the room, both fully read."""

    server: ChatServer
    jane: LineClient
    pat: LineClient
    probes: int = 0


@contextlib.contextmanager
def watched_room(**options: Any) -> Iterator[Witnesses]:
    with (
        running_server(**options) as server,
        json_client(server.port, "jane") as jane,
        plain_client(server.port, "pat") as pat,
    ):
        assert pat.next_text() == "* Type /help for commands."
        assert jane.next_json() == {"type": "joined", "name": "pat"}
        yield Witnesses(server, jane, pat)


@pytest.fixture
def room() -> Iterator[Witnesses]:
    with watched_room() as witnesses:
        yield witnesses


def without_flood_control() -> dict[str, Any]:
    """Server options for a test that sends many chat lines quickly."""
    names = {field.name for field in dataclasses.fields(ServerConfig)}
    return {"flood_rate": 0} if "flood_rate" in names else {}


#: How a plain client is shown someone coming and going.
_PLAIN_MEMBERSHIP = {
    "joined": re.compile(r"\* \S+ joined"),
    "left": re.compile(r"\* \S+ left \(.*\)"),
}


def next_event(client: LineClient, skip: tuple[str, ...] = ("joined", "left")) -> Any:
    """The next line that is not a join or leave: a dict (JSON) or a str (plain).

    A server ``ping`` (sent to JSON clients quiet for a while) is skipped too.
    """
    deadline = time.monotonic() + DEADLINE
    while True:
        line = client.next_line(max(deadline - time.monotonic(), 0.001))
        if line.startswith(b"{"):
            event = json.loads(line)
            if event.get("type") not in (*skip, "ping"):
                return event
        else:
            text = line.decode("utf-8")
            if not any(_PLAIN_MEMBERSHIP[kind].fullmatch(text) for kind in skip):
                return text


def raw_controls(text: str) -> list[str]:
    """Characters that would act on a terminal or hide text, if printed raw.

    Written independently of ``chat.protocol.escape_text`` (which is under
    test): every control character but tab, and every invisible format
    character but the zero-width (non-)joiner that emoji and Persian need.
    """
    unsafe = []
    for char in text:
        category = unicodedata.category(char)
        if (category == "Cc" and char != "\t") or (
            category == "Cf" and char not in "\u200c\u200d"
        ):
            unsafe.append(char)
    return unsafe


def assert_room_unaffected(room: Witnesses) -> None:
    """jane and pat still talk normally, and nothing else reached them.

    Each must see the other's line as the very next thing after joins and
    leaves, with consecutive ids; pat has never been sent a raw control
    character; every line jane got is JSON without a raw control byte.
    """
    room.probes += 1
    said = f"probe {room.probes} from jane"
    room.jane.send_json(type="say", text=said)
    mine = next_event(room.jane)
    assert (mine["type"], mine["from"], mine["text"]) == ("message", "jane", said)
    assert next_event(room.pat) == f"jane: {said}"
    answer = f"probe {room.probes} from pat"
    room.pat.send_line(answer)
    heard = next_event(room.jane)
    assert (heard["type"], heard["from"], heard["text"]) == ("message", "pat", answer)
    assert heard["id"] == mine["id"] + 1
    assert {"jane", "pat"} <= set(room.server.room.names())
    for line in room.pat.lines:
        text = line.decode("utf-8")
        assert not raw_controls(text), f"raw control characters reached pat: {text!r}"
    for line in room.jane.lines:
        assert min(line, default=0x20) >= 0x20, f"a raw control byte in {line!r}"
        json.loads(line)


def expect_relayed(room: Witnesses, text: str, sender: str = "mallory") -> dict:
    """Both witnesses' next line, after joins and leaves, is ``sender``'s ``text``."""
    message = next_event(room.jane)
    assert (message["type"], message["from"], message["text"]) == (
        "message",
        sender,
        text,
    ), message
    assert next_event(room.pat) == f"{sender}: {text}"
    return message


# ---------------------------------------------------------------------------
# Offenders


def unprompted(lines: list[bytes]) -> list[bytes]:
    """``lines`` without the prompt a newcomer gets after 0.3 s of silence.

    A test's client may be that slow on a loaded machine; a program must then
    skip the prompt, as docs/protocol.md tells it to.
    """
    return lines[1:] if lines[:1] == [PROMPT.encode()] else lines


def first_json(client: LineClient) -> dict[str, Any]:
    """A newcomer's first JSON line (after the prompt, if it was slow to speak)."""
    line = client.next_line()
    return json.loads(line if line != PROMPT.encode() else client.next_line())


def join(port: int, kind: str, name: str = "mallory") -> LineClient:
    """A client of ``kind`` that is in the room and has read its whole welcome."""
    if kind == "json":
        return json_client(port, name)
    client = plain_client(port, name)
    assert client.next_text() == "* Type /help for commands."
    return client


def chat_line(kind: str, text: str) -> bytes:
    """The bytes a ``kind`` client sends to say ``text`` (newline included)."""
    if kind == "json":
        line = json.dumps({"type": "say", "text": text}, ensure_ascii=False)
        return line.encode("utf-8") + b"\n"
    return text.encode("utf-8") + b"\n"


def replies(client: LineClient, kind: str) -> list[Any]:
    """Everything ``client`` received before the answer to a question it asks now.

    The server handles a connection's lines in order, so once the answer to
    ``ping`` (JSON) or ``/who`` (plain, registered) is in, every earlier line
    has been dealt with.  JSON lines come back as dicts, plain ones as str.
    """
    if kind == "json":
        client.send_json(type="ping")
        before = []
        while (message := client.next_json()) != {"type": "pong"}:
            before.append(message)
        return before
    client.send_line("/who")
    before = []
    while not re.fullmatch(r"\* \d+ users? here: .*", text := client.next_text()):
        before.append(text)
    return before


def too_long(kind: str) -> Any:
    if kind == "json":
        text = f"a line may be at most {MAX_LINE_BYTES} bytes"
        return {"type": "error", "code": "too_long", "text": text}
    return f"! Line too long (over {MAX_LINE_BYTES} bytes); not sent."


def handler_socket(server: ChatServer, client: LineClient) -> socket.socket:
    """The server's socket for ``client``'s connection."""
    address = client.sock.getsockname()

    def find():
        for handler in server.connections():
            if handler.client_address == address:
                return handler.request
        return None

    return wait_for(find, what=f"the server's socket for {address}")


def _ioctl_int(sock: socket.socket, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0]


def wait_until_read(server_sock: socket.socket, client: LineClient) -> None:
    """Wait until the server process has read every byte ``client`` sent.

    First every byte has arrived (our ``SIOCOUTQ``, bytes not yet acknowledged
    by the server's kernel, is 0), then none is left unread in the server's
    socket (its ``FIONREAD`` is 0); in the other order, bytes arriving between
    the two looks would be missed.  A socket the server has closed counts as
    read: after its reset, our unacknowledged count never drains.
    """

    def all_read() -> bool:
        if server_sock.fileno() == -1:
            return True
        if _ioctl_int(client.sock, termios.TIOCOUTQ):
            return False
        try:
            return _ioctl_int(server_sock, termios.FIONREAD) == 0
        except OSError:  # closed meanwhile
            return True

    wait_for(all_read, what="the server to read what was sent")


def send_in_pieces(server: ChatServer, client: LineClient, pieces: list[bytes]):
    """Send each piece on its own, each read by the server before the next goes."""
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.send_raw(pieces[0])  # at once: a newcomer's first bytes, before a prompt
    server_sock = handler_socket(server, client)
    for piece in pieces[1:]:
        wait_until_read(server_sock, client)
        client.send_raw(piece)


def reset(client: LineClient) -> None:
    """Close with a TCP reset (RST): SO_LINGER on with a zero timeout."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def text_of_bytes(size: int) -> str:
    """A text whose UTF-8 is exactly ``size`` bytes, with 2- and 4-byte characters."""
    unit = "é🎉x"  # 2 + 4 + 1 bytes
    text = unit * (size // 7)
    return text + "x" * (size - len(text.encode("utf-8")))


# ---------------------------------------------------------------------------
# Framing: any chunking, one byte at a time, many lines at once


@pytest.mark.parametrize("kind", KINDS)
def test_a_whole_session_sent_one_byte_per_read(room, kind):
    texts = ["héllo ☕ wörld 🎉", "second line"]
    if kind == "json":
        hello = b'{"type":"hello","name":"mallory"}\n'
        data = hello + b"".join(chat_line(kind, text) for text in texts)
    else:
        data = b"mallory\r\n" + b"".join(text.encode() + b"\r\n" for text in texts)
    with LineClient(room.server.port) as mallory:
        send_in_pieces(room.server, mallory, [bytes([byte]) for byte in data])
        for text in texts:
            expect_relayed(room, text)
        if kind == "json":
            assert first_json(mallory)["type"] == "welcome"
            assert [m["text"] for m in replies(mallory, kind)] == texts
        else:
            assert [line for line in replies(mallory, kind) if line != PROMPT] == [
                "* Welcome, mallory! 3 users here: jane, pat, mallory",
                "* Type /help for commands.",
            ]
    assert_room_unaffected(room)


@pytest.mark.parametrize("kind", KINDS)
def test_many_lines_in_one_send_and_a_line_across_two(kind):
    count = 50
    texts = [f"line {n:02d}" for n in range(count)]
    with watched_room(**without_flood_control()) as room:
        with join(room.server.port, kind) as mallory:
            tail = chat_line(kind, "the tail, split in two")
            burst = b"".join(chat_line(kind, text) for text in texts) + tail[:10]
            send_in_pieces(room.server, mallory, [burst, tail[10:]])
            texts.append("the tail, split in two")
            said = [next_event(room.jane) for _ in texts]
            assert [(m["from"], m["text"]) for m in said] == [
                ("mallory", text) for text in texts
            ]
            ids = [m["id"] for m in said]
            assert ids == list(range(ids[0], ids[0] + len(texts)))
            assert [next_event(room.pat) for _ in texts] == [
                f"mallory: {text}" for text in texts
            ]
            echoed = replies(mallory, kind)
            if kind == "json":  # JSON senders get their own lines back
                assert [m["text"] for m in echoed] == texts
            else:
                assert echoed == []
        assert_room_unaffected(room)


@pytest.mark.parametrize("kind", KINDS)
def test_an_emoji_split_across_reads_arrives_whole(room, kind):
    text = "party 🎉 time"
    with join(room.server.port, kind) as mallory:
        line = chat_line(kind, text)
        start = line.index("🎉".encode())
        cuts = [0, start + 1, start + 2, start + 3, len(line)]  # 4 bytes, 4 reads
        pieces = [line[a:b] for a, b in itertools.pairwise(cuts)]
        send_in_pieces(room.server, mallory, pieces)
        expect_relayed(room, text)
        echoed = replies(mallory, kind)
        assert [m["text"] for m in echoed] == ([text] if kind == "json" else [])
    assert_room_unaffected(room)


# ---------------------------------------------------------------------------
# Bytes that are not text


BAD_UTF8 = {
    "invalid byte": b"\xff",
    "lone continuation": b"\x80",
    "overlong slash": b"\xc0\xaf",
    "UTF-16 surrogate": b"\xed\xa0\x80",
    "truncated emoji": b"\xf0\x9f\x8e",
    "past U+10FFFF": b"\xf4\x90\x80\x80",
}


@pytest.mark.parametrize("bad", BAD_UTF8.values(), ids=BAD_UTF8.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_invalid_utf8_is_refused_and_not_relayed(room, kind, bad):
    with join(room.server.port, kind) as mallory:
        if kind == "json":
            mallory.send_raw(b'{"type":"say","text":"caf' + bad + b'"}\n')
            expected = {
                "type": "error",
                "code": "bad_utf8",
                "text": "the line is not valid UTF-8",
            }
        else:
            mallory.send_raw(b"caf" + bad + b"\n")
            expected = "! That line is not valid UTF-8; it was not sent."
        assert replies(mallory, kind) == [expected]
        mallory.send_raw(chat_line(kind, "still here"))
        expect_relayed(room, "still here")
    assert_room_unaffected(room)


JUNK = {
    "empty": b"\n",
    "CR LF": b"\r\n",
    "bare CRs": b"\r\r\r\r\n",
    "spaces and tabs": b" \t  \t\r\n",
    "NUL": b"\x00\n",
    "NULs and CR LF": b"\x00\x00\x00\r\n",
    "CR NUL (telnet)": b"\r\x00\r\n",
    "NULs among spaces": b" \x00 \x00 \n",
}


@pytest.mark.parametrize("junk", JUNK.values(), ids=JUNK.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_blank_nul_and_cr_lines_are_ignored(room, kind, junk):
    with join(room.server.port, kind) as mallory:
        mallory.send_raw(junk * 5)
        got = replies(mallory, kind)
        if kind == "json" and b"\x00" in junk:
            # Not blank to a JSON client (docs/protocol.md section 2): a NUL
            # line is bad JSON, answered once per line, never more.
            error = {"type": "error", "code": "bad_json"}
            assert [{k: m[k] for k in error} for m in got] == [error] * 5
        else:
            assert got == []
    assert_room_unaffected(room)


# ---------------------------------------------------------------------------
# Length limits


@pytest.mark.parametrize("kind", KINDS)
def test_a_line_at_the_limit_is_relayed_and_one_byte_more_is_not(room, kind):
    overhead = len(chat_line(kind, "")) - 1  # JSON around the text; no newline
    at_limit = text_of_bytes(MAX_LINE_BYTES - overhead)
    over = text_of_bytes(MAX_LINE_BYTES - overhead + 1)
    assert len(chat_line(kind, at_limit)) == MAX_LINE_BYTES + 1  # with "\n"
    with join(room.server.port, kind) as mallory:
        mallory.send_raw(chat_line(kind, at_limit))
        expect_relayed(room, at_limit)
        echoed = replies(mallory, kind)
        assert [m["text"] for m in echoed] == ([at_limit] if kind == "json" else [])

        mallory.send_raw(chat_line(kind, over))
        assert replies(mallory, kind) == [too_long(kind)]
        mallory.send_raw(chat_line(kind, "still here after that"))
        expect_relayed(room, "still here after that")
    assert_room_unaffected(room)


@pytest.mark.parametrize("kind", KINDS)
def test_a_100_kb_word_is_refused_once_and_the_sender_stays(room, kind):
    with join(room.server.port, kind) as mallory:
        mallory.send_raw(chat_line(kind, "w" * 100_000))
        assert replies(mallory, kind) == [too_long(kind)]  # one error, not twelve
        mallory.send_raw(chat_line(kind, "sorry about that"))
        expect_relayed(room, "sorry about that")
    assert_room_unaffected(room)


@pytest.mark.parametrize(
    ("kind", "newline"),
    [("json", b"\n"), ("plain", b"\n"), ("plain", b"\r\n")],
    ids=["json", "plain LF", "plain CRLF"],
)
def test_ten_thousand_newlines_are_ignored_quietly(room, kind, newline):
    with join(room.server.port, kind) as mallory:
        mallory.send_raw(newline * 10_000)
        assert replies(mallory, kind) == []  # no error storm: not one line
        mallory.send_raw(chat_line(kind, "and now a real line"))
        expect_relayed(room, "and now a real line")
    assert_room_unaffected(room)


def test_ten_thousand_newlines_before_hello_do_not_decide_the_kind(room):
    with LineClient(room.server.port) as mallory:
        mallory.send_raw(b"\n" * 10_000 + b'{"type":"hello","name":"mallory"}\n')
        welcome = first_json(mallory)  # not an error: blank lines were skipped
        assert (welcome["type"], welcome["name"]) == ("welcome", "mallory")
    assert_room_unaffected(room)


def vm_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def stream_without_newline(
    server: ChatServer, client: LineClient, total: int
) -> tuple[int, bool]:
    """Send up to ``total`` bytes with no newline; stop when the server cuts us.

    Paced: each chunk is read by the server before the next goes, so the bytes
    accepted are the bytes the server read (not what loopback buffers held).
    Returns (bytes accepted, whether the server closed the connection).
    """
    chunk = b"A" * 65536
    server_sock = handler_socket(server, client)
    accepted = 0
    deadline = time.monotonic() + 6 * DEADLINE
    while accepted < total and time.monotonic() < deadline:
        try:
            accepted += client.sock.send(chunk)
            wait_until_read(server_sock, client)
        except (BrokenPipeError, ConnectionResetError):
            return accepted, True
    return accepted, False


@pytest.mark.parametrize("who", ["json member", "plain member", "first line"])
def test_a_10_mb_line_without_newline_is_cut_off_early(room, who):
    why = f"no end of line after {MAX_UNTERMINATED_BYTES} bytes"
    rss_before = vm_rss_kib()
    if who == "first line":
        mallory = LineClient(room.server.port)
        mallory.send_raw(b"A")  # at once: this line decides the kind
        before = 1
    else:
        mallory = join(room.server.port, who.split()[0])
        before = 0
    with mallory:
        accepted, cut = stream_without_newline(room.server, mallory, 10 * 2**20)
        got = unprompted(mallory.expect_closed())
    assert cut, f"the server took all {accepted} bytes and is still connected"
    # Cut just past its limit (the sending is paced: accepted means read).
    assert MAX_UNTERMINATED_BYTES < before + accepted < 2 * 2**20
    assert vm_rss_kib() - rss_before < 50 * 1024

    soft = f"Line too long (over {MAX_LINE_BYTES} bytes); not sent."
    if who == "plain member":
        assert got == [too_long("plain").encode(), f"! {why}".encode()]
    elif not got[0].startswith(b"{"):  # prompted first (a slow start): plain
        assert got == [f"! {soft}".encode(), f"! {why}".encode()]
    elif who == "json member":
        hard = {"type": "error", "code": "too_long", "text": why}
        assert [json.loads(line) for line in got] == [too_long("json"), hard]
    else:  # before the first line: the soft error has its own words
        assert [json.loads(line) for line in got] == [
            {"type": "error", "code": "too_long", "text": soft},
            {"type": "error", "code": "too_long", "text": why},
        ]
    if who != "first line":
        gone = {"type": "left", "name": "mallory", "reason": why}
        assert next_event(room.jane, skip=("joined",)) == gone
        assert next_event(room.pat, skip=("joined",)) == f"* mallory left ({why})"
    assert_room_unaffected(room)


# ---------------------------------------------------------------------------
# Texts that try to act on a terminal, or to forge lines


# (what mallory sends, what jane gets: a message or a left, what pat reads)
FORGERIES = {
    "LF in a say": (
        {"type": "say", "text": "hi\nserver: the room moved to evil.example"},
        {"from": "mallory", "text": "hi\nserver: the room moved to evil.example"},
        "mallory: hi\\nserver: the room moved to evil.example",
    ),
    "CR in a say": (
        {"type": "say", "text": "x\rbob: I agree with mallory"},
        {"from": "mallory", "text": "x\rbob: I agree with mallory"},
        "mallory: x\\rbob: I agree with mallory",
    ),
    "CR LF in an action": (
        {"type": "say", "text": "waves\r\n* jane left (quit)", "me": True},
        {"from": "mallory", "text": "waves\r\n* jane left (quit)", "me": True},
        "* mallory waves\\r\\n* jane left (quit)",
    ),
    "LF in a private line": (
        {"type": "private", "to": "pat", "text": "psst\njane: pat is a bot"},
        None,  # jane is not told
        "[private] mallory -> pat: psst\\njane: pat is a bot",
    ),
    "LF in a goodbye": (
        {"type": "bye", "reason": "lunch\n* jane left (kicked: spam)"},
        {"name": "mallory", "reason": "quit: lunch\n* jane left (kicked: spam)"},
        "* mallory left (quit: lunch\\n* jane left (kicked: spam))",
    ),
}


@pytest.mark.parametrize(
    ("sent", "jane_gets", "pat_reads"), FORGERIES.values(), ids=FORGERIES.keys()
)
def test_a_newline_in_a_text_cannot_forge_a_line(room, sent, jane_gets, pat_reads):
    with join(room.server.port, "json") as mallory:
        mallory.send_json(**sent)
        skip = ("joined",) if sent["type"] == "bye" else ("joined", "left")
        assert next_event(room.pat, skip) == pat_reads  # one line, escaped
        if jane_gets is not None:
            got = next_event(room.jane, skip)
            assert got["type"] == ("left" if sent["type"] == "bye" else "message")
            assert {k: got.get(k) for k in jane_gets} == jane_gets
    assert_room_unaffected(room)  # the very next line pat reads is the probe


def test_a_cr_typed_by_a_plain_client_cannot_forge_a_line(room):
    with join(room.server.port, "plain") as mallory:
        mallory.send_raw(b"x\rjane: mallory is right\r\n")  # a CR, then CR LF
        message = next_event(room.jane)
        assert (message["from"], message["text"]) == (
            "mallory",
            "x\rjane: mallory is right",
        )
        assert next_event(room.pat) == "mallory: x\\rjane: mallory is right"
    assert_room_unaffected(room)


class Recorder(logging.Handler):
    """Keeps the formatted records (any thread may emit)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(SafeFormatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def room_log() -> Iterator[Recorder]:
    """What the server's console would print of the room, as in chat.console."""
    logger = logging.getLogger("chat.room")
    recorder = Recorder()
    level = logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)


# (text, as a plain client and the server's log must show it)
ESCAPES = {
    "SGR colour": ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    "OSC title": ("\x1b]0;owned\x07 title", "\\x1b]0;owned\\x07 title"),
    "BEL": ("ding\x07dong", "ding\\x07dong"),
    "C1 CSI U+009B": ("csi\x9b2J", "csi\\x9b2J"),
    "RLO U+202E": ("abc\u202edcba", "abc\\u202edcba"),
    "ZWSP U+200B": ("zero\u200bwidth", "zero\\u200bwidth"),
    "NUL": ("nul\x00here", "nul\\x00here"),
    "all at once": (
        "\x1b[2J\x1b]0;x\x07\x07\x9b\u202e\u200b",
        "\\x1b[2J\\x1b]0;x\\x07\\x07\\x9b\\u202e\\u200b",
    ),
}


@pytest.mark.parametrize(("text", "escaped"), ESCAPES.values(), ids=ESCAPES.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_escape_sequences_reach_json_intact_and_plain_and_log_escaped(
    room, kind, text, escaped
):
    with room_log() as log, join(room.server.port, kind) as mallory:
        mallory.send_raw(chat_line(kind, text))
        line_number = len(room.jane.lines)
        message = next_event(room.jane)
        assert (message["from"], message["text"]) == ("mallory", text)  # intact
        raw = room.jane.lines[line_number:]
        assert all(min(line) >= 0x20 for line in raw), raw  # JSON escaped C0
        assert next_event(room.pat) == f"mallory: {escaped}"
        logged = wait_for(
            lambda: [line for line in log.lines if line.startswith("mallory: ")],
            what="the line in the server's log",
        )
        assert logged == [f"mallory: {escaped}"]
        assert all(not raw_controls(line) for line in log.lines), log.lines
    assert_room_unaffected(room)  # and checks every byte pat ever received


# ---------------------------------------------------------------------------
# Not a chat client at all


def tls_client_hello() -> bytes:
    """The first bytes a real TLS client sends: its ClientHello record."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HTTP_GET = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Mozilla/5.0\r\n"
    b"Accept: text/html\r\nConnection: keep-alive\r\n\r\n"
)


@pytest.mark.parametrize("split", [False, True], ids=["one segment", "byte, then rest"])
@pytest.mark.parametrize("what", ["HTTP", "TLS"])
def test_a_browser_or_tls_client_is_refused_fast_and_told_why(room, what, split):
    data = HTTP_GET if what == "HTTP" else tls_client_hello()
    assert data[:2] == (b"GE" if what == "HTTP" else b"\x16\x03")
    with LineClient(room.server.port) as stranger:
        started = time.monotonic()
        if split:
            send_in_pieces(room.server, stranger, [data[:1], data[1:]])
        else:
            stranger.send_raw(data)
        got = unprompted(stranger.expect_closed(timeout=1.0))
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    if what == "HTTP":
        assert got[0] == b"HTTP/1.0 400 Bad Request\r"
    assert (
        got[-1].startswith(b"This is a chat server")
        and f"not {what}".encode() in (got[-1])
    ), got
    assert room.server.room.names() == ("jane", "pat")
    assert_room_unaffected(room)


# ---------------------------------------------------------------------------
# Names


def name_line(kind: str, name: str) -> bytes:
    """What a ``kind`` client sends to ask for ``name``."""
    if kind == "json":
        hello = json.dumps({"type": "hello", "name": name}, ensure_ascii=False)
        return hello.encode("utf-8") + b"\n"
    return name.encode("utf-8") + b"\n"


def answer_to_name(client: LineClient, kind: str) -> str:
    """``welcome``, ``name_taken``, ``bad_name`` or ``bad_utf8``, as the server says.

    Plain replies carry no code, so their words are matched instead.
    """
    if kind == "json":
        reply = first_json(client)
        return "welcome" if reply["type"] == "welcome" else reply["code"]
    while True:
        text = client.next_text()
        if text == PROMPT or text.startswith(("[", "* The last")):
            continue  # the prompt of a slow start, the history
        if text.startswith("* Welcome, "):
            return "welcome"
        assert text.startswith("! ") and not raw_controls(text), text
        assert client.next_text() == "* Choose another name:"
        if text.endswith(" is already taken"):
            return "name_taken"
        if "not valid UTF-8" in text:
            return "bad_utf8"
        return "bad_name"


def test_two_clients_claiming_one_name_at_once_one_wins(room):
    pairings = [("json", "json"), ("plain", "plain"), ("json", "plain")]
    barrier = threading.Barrier(2, timeout=DEADLINE)

    def claim(client: LineClient, kind: str, name: str) -> str:
        barrier.wait()
        client.send_raw(name_line(kind, name))
        return answer_to_name(client, kind)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="claimant") as pool:
        for round_ in range(20):
            kinds = pairings[round_ % len(pairings)]
            claimed = (
                f"twin{round_}",
                f"TWIN{round_}" if round_ % 2 else f"twin{round_}",  # look-alike
            )
            with (
                LineClient(room.server.port) as first,
                LineClient(room.server.port) as second,
            ):
                claimants = zip((first, second), kinds, claimed, strict=True)
                futures = [pool.submit(claim, *claimant) for claimant in claimants]
                answers = sorted(future.result(2 * DEADLINE) for future in futures)
                assert answers == ["name_taken", "welcome"], (round_, kinds, answers)
                twins = [n for n in room.server.room.names() if n.lower() == claimed[0]]
                assert len(twins) == 1, room.server.room.names()
    wait_for(lambda: room.server.room.names() == ("jane", "pat"), what="twins gone")
    assert_room_unaffected(room)


LOOKALIKES = {
    "upper case": ("alice", "ALICE"),
    "full width": ("alice", "ＡＬＩＣＥ"),
    "mathematical bold": ("alice", "𝐚𝐥𝐢𝐜𝐞"),
    "mathematical script": ("alice", "𝒶𝓁𝒾𝒸ℯ"),
    "circled": ("alice", "ⓐⓛⓘⓒⓔ"),
    "superscript": ("alice", "ᵃˡⁱᶜᵉ"),
    "fi ligature": ("fiona", "ﬁona"),
    "sharp s": ("strasse", "Straße"),
}


@pytest.mark.parametrize(("holder", "claim"), LOOKALIKES.values(), ids=LOOKALIKES)
def test_a_look_alike_of_a_taken_name_is_taken(room, holder, claim):
    port = room.server.port
    with (
        join(port, "json", holder),
        join(port, "json", "bob") as bob,
        LineClient(port) as program,
        LineClient(port) as person,
    ):
        program.send_raw(name_line("json", claim))
        assert answer_to_name(program, "json") == "name_taken"
        person.send_raw(name_line("plain", claim))
        assert answer_to_name(person, "plain") == "name_taken"
        bob.send_json(type="rename", name=claim)
        assert next_event(bob) == {
            "type": "error",
            "code": "name_taken",
            "text": f"{unicodedata.normalize('NFKC', claim)} is already taken",
        }
        assert room.server.room.names() == ("jane", "pat", holder, "bob")
        assert_room_unaffected(room)  # and no "renamed" reached anyone


BAD_NAMES = {
    "space": "bob smith",
    "colon": "bob:",
    "colon inside": "a:b",
    "at sign": "bob@example",
    "leading at": "@bob",
    "ESC sequence": "bo\x1b[31mb",
    "BEL": "bob\x07",
    "DEL": "bob\x7f",
    "NUL": "bo\x00b",
    "RLO": "bob\u202eevil",
    "zero-width space": "bob\u200b",
    "Hangul filler": "bob\u3164",
    "25 characters": "a" * 25,
    "leading hyphen": "-x",
    "leading dot": ".bob",
}


@pytest.mark.parametrize("bad", BAD_NAMES.values(), ids=BAD_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_name_is_refused_and_a_good_one_then_accepted(room, kind, bad):
    with LineClient(room.server.port) as newcomer:
        newcomer.send_raw(name_line(kind, bad))
        assert answer_to_name(newcomer, kind) == "bad_name"
        newcomer.send_raw(name_line(kind, "x" * 24))  # the longest allowed
        assert answer_to_name(newcomer, kind) == "welcome"
        assert room.server.room.names() == ("jane", "pat", "x" * 24)
        for line in newcomer.lines:
            assert not raw_controls(line.decode("utf-8")), line
    assert_room_unaffected(room)


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_utf8_as_a_name_is_refused_and_a_good_one_then_accepted(room, kind):
    with LineClient(room.server.port) as newcomer:
        line = b'{"type":"hello","name":"b\xffb"}\n' if kind == "json" else b"b\xffb\n"
        newcomer.send_raw(line)
        assert answer_to_name(newcomer, kind) == "bad_utf8"
        newcomer.send_raw(name_line(kind, "bob"))
        assert answer_to_name(newcomer, kind) == "welcome"
    assert_room_unaffected(room)


# ---------------------------------------------------------------------------
# Connections that end badly, and many of them


def test_resets_in_the_middle_of_a_flood_cost_nobody_a_line():
    count, victims = 400, 5
    texts = [f"flood {n:03d} " + "x" * 60 for n in range(count)]
    chunks = [texts[start : start + 50] for start in range(0, count, 50)]
    with (
        watched_room(**without_flood_control()) as room,
        join(room.server.port, "json", "reader") as reader,
        join(room.server.port, "plain", "flood") as flood,
        contextlib.ExitStack() as stack,
    ):
        # The victims never read: bytes are on their way to them when they go.
        sitting = [
            stack.enter_context(join(room.server.port, "json", f"victim{n}"))
            for n in range(victims)
        ]
        for number, chunk in enumerate(chunks):
            flood.send_raw(b"".join(text.encode() + b"\n" for text in chunk))
            if number < victims:
                reset(sitting[number])  # while the server relays that chunk
        for client in (room.jane, reader):
            said, gone = [], []
            while len(said) < count:
                event = next_event(client, skip=("joined",))
                (gone if event["type"] == "left" else said).append(event)
            assert [(m["from"], m["text"]) for m in said] == [
                ("flood", text) for text in texts
            ]
            ids = [m["id"] for m in said]
            assert ids == list(range(ids[0], ids[0] + count))  # in order, no gaps
            gone += [
                next_event(client, skip=("joined",)) for _ in range(victims - len(gone))
            ]
            assert sorted(gone, key=lambda e: e["name"]) == [
                {"type": "left", "name": f"victim{n}", "reason": "connection lost"}
                for n in range(victims)
            ]
        heard = [next_event(room.pat, skip=("joined",)) for _ in range(count + victims)]
        assert [line for line in heard if line.startswith("flood: ")] == [
            f"flood: {text}" for text in texts
        ]
        assert sorted(line for line in heard if not line.startswith("flood: ")) == [
            f"* victim{n} left (connection lost)" for n in range(victims)
        ]
        assert_room_unaffected(room)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def reader_threads() -> int:
    return sum(t.name.startswith("reader ") for t in threading.enumerate())


def come_and_go(port: int, number: int) -> None:
    """One short visit, in one of five ways of arriving and leaving."""
    name = f"visitor{number}"
    with LineClient(port) as client:
        way = number % 5
        if way == 0:  # a person joins and quits
            client.send_line(name)
            client.expect_text(f"Welcome, {name}!")
            client.send_line("/quit")
            client.expect_closed()
        elif way == 1:  # a program says hello and bye
            client.send_json(type="hello", name=name)
            assert client.next_json()["type"] == "welcome"
            client.send_json(type="bye")
            client.expect_closed()
        elif way == 2:  # connects, says nothing, closes
            pass
        elif way == 3:  # connects and resets
            reset(client)
        else:  # joins, then resets
            client.send_json(type="hello", name=name)
            assert client.next_json()["type"] == "welcome"
            reset(client)


def settle(server: ChatServer, baseline_threads: int | None = None) -> None:
    """Wait until only the witnesses are connected (and their threads alone run)."""
    wait_for(lambda: len(server.connections()) == 2, 3 * DEADLINE, "visitors gone")
    wait_for(lambda: reader_threads() == 2, 3 * DEADLINE, "visitors' readers ended")
    if baseline_threads is not None:
        try:
            wait_for(lambda: threading.active_count() == baseline_threads, DEADLINE)
        except AssertionError:
            pass  # the assertion below reports the numbers


def visits(port: int, numbers: range) -> None:
    """Run visits a few at a time (not a thousand threads at once)."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="visitor") as pool:
        for finished in pool.map(come_and_go, [port] * len(numbers), numbers):
            assert finished is None


def test_a_thousand_visits_leak_no_thread_socket_or_memory(room):
    server = room.server
    visits(server.port, range(50))  # warm up: first-time allocations
    settle(server)
    assert_room_unaffected(room)  # read the warm-up's joins and leaves
    threads, fds, rss = threading.active_count(), open_fds(), vm_rss_kib()
    first_line = len(room.jane.lines)

    started = time.monotonic()
    visits(server.port, range(50, 1050))
    elapsed = time.monotonic() - started
    settle(server, threads)
    try:
        wait_for(lambda: abs(open_fds() - fds) <= 5, DEADLINE)
    except AssertionError:
        pass  # reported below
    after = threading.active_count(), open_fds(), vm_rss_kib()
    print(
        f"\n1,000 visits in {elapsed:.1f} s: threads {threads} -> {after[0]}, "
        f"fds {fds} -> {after[1]}, RSS {rss} -> {after[2]} KiB"
    )
    assert after[0] == threads
    assert abs(after[1] - fds) <= 5
    assert after[2] - rss < 20 * 1024
    assert server.room.names() == ("jane", "pat")
    assert_room_unaffected(room)
    seen = [json.loads(line)["type"] for line in room.jane.lines[first_line:]]
    # Three ways in five join the room: 600 joins, 600 leaves, and 2 probes.
    assert (seen.count("joined"), seen.count("left"), len(seen)) == (600, 600, 1202)
