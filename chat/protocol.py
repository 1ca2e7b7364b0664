"""The chat wire protocol, with no I/O in it.

Bytes go in, messages come out, and messages turn back into bytes.  Nothing here
touches a socket, a thread or a window, so every rule of the protocol can be
tested by feeding it bytes (see ``tests/test_protocol.py``).

The wire format (``docs/protocol.md`` has the full story):

* UTF-8 text, one JSON object per line, each line ending in ``\\n``.
* Every object has a ``"type"``; the other fields depend on it.
* A line holds at most ``MAX_LINE_BYTES`` bytes, not counting its ``\\n``.

Three layers, each usable on its own:

``LineDecoder``
    framing: bytes in any chunking -> complete lines, with a hard length limit.
``decode_client`` / ``decode_server``
    one line -> one message object, checked field by field.
``encode``
    one message object -> one line of bytes, ready to send.

Errors come in two kinds, as in h11: ``ProtocolError`` means the *peer* sent
something we will not accept (answer or drop that one peer); any other
exception raised here is a bug in our own code.
"""

from __future__ import annotations

import json
import re
import typing
import unicodedata
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Union

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345

#: Longest accepted line in bytes, not counting the terminating ``\n``.
MAX_LINE_BYTES = 8 * 1024
#: A line still without a newline after this many bytes ends the connection:
#: the peer is not speaking a line protocol at all.
MAX_UNTERMINATED_BYTES = 1024 * 1024
#: Names are 1..MAX_NAME_CHARS characters long.
MAX_NAME_CHARS = 24
#: Names nobody may take (compared with ``name_key``).
RESERVED_NAMES = frozenset({"server"})


class ProtocolError(Exception):
    """The peer sent something we do not accept.

    ``code`` is a short machine-readable word (it becomes the ``code`` of an
    ``error`` message); ``text`` explains it to a person; ``cid`` names the
    client's line that was refused, when it had one.
    """

    def __init__(self, code: str, text: str, cid: str | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.cid = cid


# ---------------------------------------------------------------------------
# Framing


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """Stands in, in the decoder's output, for a line that passed the limit.

    The line's bytes were dropped as they arrived; ``limit`` is the limit.
    """

    limit: int


class LineDecoder:
    """Split a byte stream into lines, never holding more than one line's limit.

    Feed it whatever ``recv`` returned; it returns the complete lines (without
    their ``\\n``) in order.  A line longer than ``max_line_bytes`` is noticed
    as soon as the buffered part passes the limit: it comes out as one
    ``LineTooLong`` marker and the rest of it, up to the next newline, is
    skipped without being stored.  If that line goes on for more than
    ``max_unterminated_bytes``, ``feed`` raises ``ProtocolError("too_long")``:
    the stream cannot be trusted any more.  Whether it raises does not depend
    on the chunking (the lines before it may or may not have been returned).

    Not thread-safe: one decoder belongs to one reader.
    """

    def __init__(
        self,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_unterminated_bytes: int = MAX_UNTERMINATED_BYTES,
    ) -> None:
        if max_line_bytes < 1 or max_unterminated_bytes < max_line_bytes:
            raise ValueError("need 1 <= max_line_bytes <= max_unterminated_bytes")
        self.max_line_bytes = max_line_bytes
        self.max_unterminated_bytes = max_unterminated_bytes
        self._buffer = b""
        self._skipping = False  # inside an over-long line, dropping bytes
        self._skipped = 0  # bytes of that line seen so far

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line (never more than the limit)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        """Add received bytes; return the lines they complete, in order."""
        out: list[bytes | LineTooLong] = []
        if self._skipping:
            end = data.find(b"\n")
            # The bytes before the newline belong to the long line too: the
            # hard limit must not depend on where the chunks were cut.
            self._note_skipped(len(data) if end < 0 else end)
            if end < 0:
                return out
            self._skipping = False
            data = data[end + 1 :]
        if b"\n" not in data:  # the common case for byte-at-a-time input
            self._buffer += data
        else:
            lines = (self._buffer + data).split(b"\n")
            self._buffer = lines.pop()
            limit = self.max_line_bytes
            for line in lines:
                if len(line) <= limit:
                    out.append(line)
                else:  # complete, but it would have passed the hard limit
                    self._check_hard_limit(len(line))
                    out.append(LineTooLong(limit))
        if len(self._buffer) > self.max_line_bytes:
            out.append(LineTooLong(self.max_line_bytes))
            self._skipping = True
            self._skipped = 0
            self._note_skipped(len(self._buffer))
            self._buffer = b""
        return out

    def _note_skipped(self, count: int) -> None:
        self._skipped += count
        self._check_hard_limit(self._skipped)

    def _check_hard_limit(self, line_bytes: int) -> None:
        if line_bytes > self.max_unterminated_bytes:
            self._buffer = b""  # the stream is refused: keep nothing of it
            raise ProtocolError(
                "too_long",
                f"no end of line after {self.max_unterminated_bytes} bytes",
            )


# ---------------------------------------------------------------------------
# Messages.  One frozen dataclass per message type; ``type`` is the wire name.
# A field called ``sender`` travels as ``"from"`` (a Python keyword).
# Optional fields (default ``None``) are left out of the JSON when unset.


@dataclass(frozen=True, slots=True)
class Hello:
    """Client -> server, first message: join the room as ``name``."""

    type: ClassVar[str] = "hello"
    name: str
    password: str | None = None
    since: int | None = None  # the last message id seen, when coming back
    room: str | None = None  # the welcome's room, which ``since`` counts in


@dataclass(frozen=True, slots=True)
class Say:
    """Client -> server: a line for everyone.  ``me`` marks an action (/me)."""

    type: ClassVar[str] = "say"
    text: str
    me: bool | None = None
    cid: str | None = None


@dataclass(frozen=True, slots=True)
class Private:
    """Client -> server: a line for one user."""

    type: ClassVar[str] = "private"
    to: str
    text: str
    cid: str | None = None


@dataclass(frozen=True, slots=True)
class Rename:
    """Client -> server: change my name."""

    type: ClassVar[str] = "rename"
    name: str


@dataclass(frozen=True, slots=True)
class Who:
    """Client -> server: ask for the user list (answered with ``users``)."""

    type: ClassVar[str] = "who"


@dataclass(frozen=True, slots=True)
class Ping:
    """Either direction: are you there?  Answer with ``pong``."""

    type: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class Pong:
    """Either direction: the answer to ``ping``."""

    type: ClassVar[str] = "pong"


@dataclass(frozen=True, slots=True)
class Bye:
    """Client -> server: I am leaving (the server closes the connection)."""

    type: ClassVar[str] = "bye"
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """Server -> everyone: a line said in the room, in the room's one order."""

    type: ClassVar[str] = "message"
    id: int
    sender: str
    text: str
    ts: float
    me: bool | None = None
    cid: str | None = None


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """Server -> the two people concerned: a private line.

    ``id`` comes from the same sequence as the messages' ids (so a client
    can put it in order and drop a duplicate); a server may leave it out.
    """

    type: ClassVar[str] = "private"
    sender: str
    to: str
    text: str
    ts: float
    cid: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """Server -> a newcomer: you are in, as ``name``; who is here; what was said.

    ``history`` holds chat lines, and the newcomer's own private lines where
    the server keeps them, oldest first.
    """

    type: ClassVar[str] = "welcome"
    name: str
    users: tuple[str, ...]
    history: tuple[Message | PrivateMessage, ...]
    room: str | None = None  # names this history: ids count within it
    # The newest id in that history as the newcomer came in: where a later
    # ``since`` starts for one who has seen no line of it yet.
    last_id: int | None = None
    # The longest line this server takes, in bytes, when not MAX_LINE_BYTES
    # (``--max-line-bytes``): a longer one would be refused without its cid.
    max_line: int | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    """Server -> the others: someone came in."""

    type: ClassVar[str] = "joined"
    name: str


@dataclass(frozen=True, slots=True)
class Left:
    """Server -> everyone: someone went, and why (``quit``, ``connection lost``...)."""

    type: ClassVar[str] = "left"
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Renamed:
    """Server -> everyone: ``old`` is now called ``new``."""

    type: ClassVar[str] = "renamed"
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Users:
    """Server -> one client: everyone in the room, in order of arrival."""

    type: ClassVar[str] = "users"
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Notice:
    """Server -> one client or everyone: information for people, not programs."""

    type: ClassVar[str] = "notice"
    text: str


@dataclass(frozen=True, slots=True)
class Error:
    """Server -> one client: a message was refused, or the connection was.

    ``code`` is one of ``ERROR_CODES``; ``cid`` names the refused line, when
    it had one (an error may come after later lines were sent).
    """

    type: ClassVar[str] = "error"
    code: str
    text: str
    cid: str | None = None


ClientMessage = Union[Hello, Say, Private, Rename, Who, Ping, Pong, Bye]
ServerMessage = Union[
    Welcome,
    Message,
    PrivateMessage,
    Joined,
    Left,
    Renamed,
    Users,
    Notice,
    Error,
    Ping,
    Pong,
]

CLIENT_TYPES: dict[str, type] = {
    cls.type: cls for cls in (Hello, Say, Private, Rename, Who, Ping, Pong, Bye)
}
SERVER_TYPES: dict[str, type] = {
    cls.type: cls
    for cls in (
        Welcome,
        Message,
        PrivateMessage,
        Joined,
        Left,
        Renamed,
        Users,
        Notice,
        Error,
        Ping,
        Pong,
    )
}

#: The ``code`` values of ``error`` messages, and what they mean.
ERROR_CODES = {
    "bad_utf8": "the line is not valid UTF-8",
    "bad_json": "the line is not a JSON object",
    "bad_message": "a field is missing or has the wrong type",
    "unknown_type": "no message has that type",
    "too_long": "the line is longer than the limit",
    "empty": "there is no text to send",
    "not_registered": "send hello first",
    "already_registered": "hello was already accepted",
    "bad_name": "the name breaks the name rules",
    "name_taken": "someone here already has that name",
    "no_such_user": "nobody here has that name",
    "bad_password": "the room password is wrong",
    "flood": "too many messages too fast",
    "muted": "the operator has muted you",
    "banned": "the operator has banned you",
    "server_full": "the server takes no more connections",
    "too_many_connections": "too many connections from your address",
    "register_timeout": "no name was given in time",
    # Never sent as JSON: what a client shows for a mistyped command (and
    # what a server says, in words, to a plain client).
    "usage": "a command was typed without what it needs",
    "unknown_command": "no command has that name",
}

_WIRE_NAMES = {"sender": "from"}
_HISTORY = tuple[Message | PrivateMessage, ...]
_HISTORY_TYPES = frozenset({Message.type, PrivateMessage.type})


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str  # attribute name
    wire: str  # JSON key
    kind: Any  # the field's type, without "| None"
    optional: bool


def _field_table(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    table = []
    for attr in (f.name for f in fields(cls)):
        kind = hints[attr]
        optional = type(None) in typing.get_args(kind)
        if optional:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        table.append(_Field(attr, _WIRE_NAMES.get(attr, attr), kind, optional))
    return tuple(table)


_FIELDS: dict[type, tuple[_Field, ...]] = {
    cls: _field_table(cls) for cls in {*CLIENT_TYPES.values(), *SERVER_TYPES.values()}
}


# ---------------------------------------------------------------------------
# Encoding


def to_dict(message: Any) -> dict[str, Any]:
    """The JSON object for ``message`` (optional fields left out when unset)."""
    out: dict[str, Any] = {"type": message.type}
    for f in _FIELDS[type(message)]:
        value = getattr(message, f.attr)
        if value is None:
            continue
        if f.kind == _HISTORY:
            value = [to_dict(item) for item in value]
        out[f.wire] = value
    return out


def encode(message: Any) -> bytes:
    """One message as one line of UTF-8 JSON, ending in ``\\n``."""
    if type(message) is Message:  # the one sent most, by far: a faster path
        return _encode_message(message)
    text = json.dumps(to_dict(message), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


# json's own C string escaper, as json.dumps(ensure_ascii=False) uses it.
_json_str = json.encoder.encode_basestring


def _encode_message(m: Message) -> bytes:
    """``encode`` for a ``Message``, byte for byte, without building a dict."""
    line = (
        f'{{"type":"message","id":{m.id},"from":{_json_str(m.sender)},'
        f'"text":{_json_str(m.text)},"ts":{m.ts!r}'
    )
    if m.me is not None:
        line += ',"me":true' if m.me else ',"me":false'
    if m.cid is not None:
        line += f',"cid":{_json_str(m.cid)}'
    return (line + "}\n").encode("utf-8")


# ---------------------------------------------------------------------------
# Decoding

_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError("bad_message", f"{where} must be a string")
    if not value.isascii() and _SURROGATE.search(value):
        raise ProtocolError("bad_message", f"{where} holds a lone surrogate")
    return value


def _convert(value: Any, kind: Any, where: str) -> Any:
    if kind is str:
        return _check_str(value, where)
    if kind is bool:
        if not isinstance(value, bool):
            raise ProtocolError("bad_message", f"{where} must be true or false")
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError("bad_message", f"{where} must be an integer")
        return value
    if kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ProtocolError("bad_message", f"{where} must be a number")
        return float(value)
    if kind == tuple[str, ...]:
        if not isinstance(value, list):
            raise ProtocolError("bad_message", f"{where} must be a list")
        return tuple(_check_str(item, where) for item in value)
    if kind == _HISTORY:
        # Only chat lines: a "joined" here would reach code that reads .ts.
        if not isinstance(value, list) or not all(
            isinstance(item, dict) and item.get("type") in _HISTORY_TYPES
            for item in value
        ):
            raise ProtocolError("bad_message", f"{where} must be a list of messages")
        return tuple(from_dict(item, SERVER_TYPES) for item in value)
    raise TypeError(f"no converter for {kind!r}")  # our bug, not the peer's


def from_dict(obj: Any, types: dict[str, type]) -> Any:
    """Build the message an already-parsed JSON object describes.

    ``types`` is ``CLIENT_TYPES`` (on a server) or ``SERVER_TYPES`` (on a
    client).  Unknown extra fields are ignored, so newer peers can add some.
    """
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", "a message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", 'a message needs a string "type"')
    cls = types.get(kind)
    if cls is None:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:40]!r}")
    values = {}
    try:
        for f in _FIELDS[cls]:
            value = obj.get(f.wire)
            if value is None:
                if not f.optional:
                    raise ProtocolError("bad_message", f"{kind} needs {f.wire!r}")
                continue
            values[f.attr] = _convert(value, f.kind, f"{kind}.{f.wire}")
    except ProtocolError as exc:
        # Name the refused line, so that its sender can mark it as failed.
        cid = obj.get("cid")
        if exc.cid is None and isinstance(cid, str) and not _SURROGATE.search(cid):
            exc.cid = cid
        raise
    return cls(**values)


def parse_json_line(line: bytes) -> Any:
    """UTF-8 JSON text of one line -> Python value (raises ``ProtocolError``)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad_utf8", "the line is not valid UTF-8") from None
    if text[:1] == "{":  # the usual line: json's C scanner, without the wrapper
        try:
            value, end = _scan_json(text, 0)
        except (StopIteration, ValueError, RecursionError):
            pass  # json.loads below says what is wrong
        else:
            if end == len(text) or not text[end:].strip():
                return value
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "the line is not valid JSON") from None


# The C scanner under json.loads: one call parses one value.  (It keeps no
# state between calls, so all threads may share it.)
_scan_json = json.JSONDecoder().scan_once


def decode_client(line: bytes) -> ClientMessage:
    """One line from a client -> the message it holds."""
    obj = parse_json_line(line)
    if type(obj) is dict and obj.get("type") == "say":  # most lines: a faster path
        say = _say_from(obj)
        if say is not None:
            return say
    return from_dict(obj, CLIENT_TYPES)


def _say_from(obj: dict) -> Say | None:
    """A plain ``say`` (just a type and a text) the quick way; else ``None``,
    and ``from_dict`` does the full check (and the error messages)."""
    text = obj.get("text")
    if len(obj) != 2 or type(text) is not str:
        return None
    if not text.isascii() and _SURROGATE.search(text):
        return None
    return Say(text)


def decode_server(line: bytes) -> ServerMessage:
    """One line from the server -> the message it holds."""
    return from_dict(parse_json_line(line), SERVER_TYPES)


def looks_like_json(line: bytes) -> bool:
    """Does this first line open a JSON object?  (It decides JSON vs plain.)"""
    return line.lstrip()[:1] == b"{"


# ---------------------------------------------------------------------------
# Names and text

_NAME_PUNCTUATION = frozenset("-_.")
#: Characters a name may not hold although Unicode calls them letters or
#: marks: they draw nothing, so "alice" and "alice" plus one of them would
#: look the same.  Hangul fillers; the combining grapheme joiner; Khmer's
#: inherent vowels; Mongolian and all other variation selectors.
_INVISIBLE_LETTERS = frozenset(
    "\u115f\u1160\u3164\uffa0\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)


def check_name(name: str) -> str:
    """Return ``name`` in its normal form, or raise ``ProtocolError("bad_name")``.

    Rules: 1 to ``MAX_NAME_CHARS`` characters after NFKC normalisation;
    letters, digits, combining marks and ``- _ .``, but no letter that draws
    nothing (``_INVISIBLE_LETTERS``); starting with a letter, digit or ``_``;
    not a reserved name such as ``server``.
    """
    name = unicodedata.normalize("NFKC", name)
    if not name:
        raise ProtocolError("bad_name", "a name needs at least one character")
    if len(name) > MAX_NAME_CHARS:
        raise ProtocolError(
            "bad_name", f"a name has at most {MAX_NAME_CHARS} characters"
        )
    for position, char in enumerate(name):
        category = unicodedata.category(char)
        if char in _INVISIBLE_LETTERS:
            pass  # a "letter" that draws nothing: an invisible name
        elif category[0] in "LN" or char == "_":
            continue
        elif category[0] == "M" or char in _NAME_PUNCTUATION:
            if position:
                continue
            raise ProtocolError(
                "bad_name", "a name must start with a letter, a digit or _"
            )
        visible = char.isprintable() and char not in _INVISIBLE_LETTERS
        shown = repr(char) if visible else f"the invisible character U+{ord(char):04X}"
        raise ProtocolError(
            "bad_name", f"a name may not contain {shown} (use letters, digits, - _ .)"
        )
    if name_key(name) in RESERVED_NAMES:
        raise ProtocolError("bad_name", f"the name {name!r} is reserved")
    return name


def name_key(name: str) -> str:
    """What two names are compared by: case and compatibility forms folded.

    ``Alice``, ``ALICE`` and ``ａｌｉｃｅ`` (full width) all give ``alice``.
    """
    folded = unicodedata.normalize("NFKC", name).casefold()
    return unicodedata.normalize("NFKC", folded)


# Characters that must never reach a terminal raw: C0 and C1 controls (escape
# sequences, BEL, CR, LF, 0x9b CSI), DEL, and invisible format characters that
# reorder or hide text (bidi overrides, zero-width space, BOM).  Tab is kept.
# The zero-width joiner and non-joiner are kept: emoji sequences and Persian
# script need them, and they cannot move or hide other text.
_UNSAFE_RANGES = (  # (first, last) code points
    (0x00, 0x08), (0x0A, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD),
    (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70F, 0x70F),
    (0x180E, 0x180E), (0x200B, 0x200B), (0x200E, 0x200F), (0x2028, 0x202E),
    (0x2060, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE007F),
)  # fmt: skip
#: Finds them (``escape_text`` leaves a text without any untouched).
_UNSAFE = re.compile(
    "[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _UNSAFE_RANGES) + "]"
)

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r"}


def _escape(code: int) -> str:
    char = chr(code)
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


# Each of them -> its escape, for ``str.translate``: one lookup per character,
# in C.  A line made only of control characters is escaped ten times faster
# than by a callback per match, and the room escapes every line for its plain
# members under its lock.
_ESCAPES = {c: _escape(c) for a, b in _UNSAFE_RANGES for c in range(a, b + 1)}


def escape_text(text: str) -> str:
    """``text`` with every control or invisible character written as an escape.

    Safe to print to a terminal or send to a plain client as part of one
    line: a newline inside ``"hi\\nbob: x"`` comes out as the two characters
    ``\\n``, so it cannot start a forged ``bob:`` line.
    """
    if _UNSAFE.search(text) is None:
        return text
    return text.translate(_ESCAPES)
