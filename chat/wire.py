"""What went over the wire, made readable: chunks in, display records out.

Sans-I/O, like ``protocol``: no socket, thread or Tk.  Whoever watches a
connection (``ChatClient.wire``) hands each chunk that one ``recv`` returned,
or one send sent, to a ``WireLog``; it returns a ``WireRecord`` saying what a
student should see:

* the direction (``→`` sent, ``←`` received), the time and the byte count;
* the text, with every invisible character made visible: a newline is ``⏎``,
  a carriage return ``\\r``, a tab ``\\t``, other controls ``\\x1b``, invisible
  Unicode ``\\u200b``; printable characters (``é``, ``世``, ``👋``) as
  themselves; a byte that is not UTF-8 there as ``\\xff``.  (So ``⏎`` is a
  newline byte, while the ``\\n`` inside a JSON string is two characters of
  text.)  Spaces stay spaces: the hex shows them (``20``);
* ``┃`` after each newline: where a line decoder splits the stream;
* a character cut between two chunks, marked in both: ``⟨f0 9f…⟩`` ends the
  first chunk and ``⟨…91 8b⟩👋`` begins the next.  TCP keeps no message
  boundaries, so this happens: a reader must keep the bytes and wait;
* the bytes in hex, in groups of eight.

Only the first ``max_shown`` bytes of a chunk are rendered; the rest is
counted (``… (744 more bytes)``), so a 64 KiB chunk costs no more to show
than a short one.  ``format_record`` turns a record into lines for a
terminal (``python -m chat --wire``); ``chat.gui.wire`` draws the same
records in a window.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import NamedTuple

#: Directions, as ``ChatClient.wire`` names them.
OUT = "out"
IN = "in"
ARROWS = {OUT: "→", IN: "←"}

#: Bytes of a chunk that are rendered; the rest is only counted.
MAX_SHOWN = 256

# What a span of the rendering stands for (also the window's tag names).
TEXT = "text"  # printable characters, as themselves
ESCAPE = "escape"  # an invisible character made visible: ⏎ \r \t \x1b \u200b
SPLIT = "split"  # ┃ after a newline: a line ends here (stands for no bytes)
CUT = "cut"  # the bytes of a character cut between two chunks
BAD = "bad"  # a byte that is not UTF-8 where it is: \xff
NOTE = "note"  # words about the chunk: more bytes not shown, end of stream

NEWLINE_MARK = "⏎"
SPLIT_MARK = "┃"

_NAMED = {"\n": NEWLINE_MARK, "\r": "\\r", "\t": "\\t"}
_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e]+")
# Printable to Python, yet drawn as nothing: Unicode's default-ignorable
# letters and marks (fillers, variation selectors) and the blank braille
# cell.  Shown as themselves, they could hide text in a line that looks
# empty, or bytes inside an emoji.  (The letters among them are the ones
# ``protocol`` refuses in names; this module imports nothing, so they are
# written out again here.)
_INVISIBLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164"
    "\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)


class Chunk(NamedTuple):
    """One chunk as it was seen: ``(direction, data, time)``.

    ``time`` is ``time.time()`` when the hook saw it.  A hook only builds
    one of these and puts it on a queue; the reader of the queue feeds it to
    a ``WireLog`` (``log.feed(*chunk)``).
    """

    direction: str
    data: bytes
    time: float


@dataclass(frozen=True, slots=True)
class Span:
    """A piece of the rendering: ``text`` shown for ``shown[start:end]``.

    ``kind`` is one of ``TEXT``, ``ESCAPE``, ``SPLIT``, ``CUT``, ``BAD`` and
    ``NOTE``.  ``SPLIT`` and ``NOTE`` spans stand for no bytes
    (``start == end``), and so do the ``BAD`` mark ``⟨…never finished⟩`` and
    the character completed at the start of a chunk: that one is shown after
    the ``CUT`` span of the bytes that finish it.
    ``text`` never holds a control character, so it is always one line.
    """

    kind: str
    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class WireRecord:
    """One chunk, ready to show.  Made by ``WireLog.feed``.

    ``shown`` is the part of the chunk that ``spans`` render (its first
    ``max_shown`` bytes, give or take the end of a character); ``size`` is
    the whole chunk's length.  ``line_ends`` are the offsets, in the whole
    chunk, just after each ``\\n``: a line decoder splits there.
    ``head_cut`` counts the bytes at the start that finish (or continue) a
    character begun in an earlier chunk; ``tail_cut`` the bytes at the end
    that begin a character the next chunk must finish.  A chunk that lies
    wholly inside one character has both equal to its size.
    """

    direction: str
    time: float
    size: int
    spans: tuple[Span, ...]
    shown: bytes
    line_ends: tuple[int, ...]
    head_cut: int = 0
    tail_cut: int = 0

    @property
    def arrow(self) -> str:
        """``→`` for what was sent, ``←`` for what was received."""
        return ARROWS[self.direction]

    @property
    def clock(self) -> str:
        """The local time, ``HH:MM:SS.mmm``."""
        return clock(self.time)

    @property
    def hidden(self) -> int:
        """Bytes of the chunk past the part rendered."""
        return self.size - len(self.shown)

    @property
    def text(self) -> str:
        """The whole rendering as one line of text."""
        return "".join(span.text for span in self.spans)

    @property
    def hex(self) -> str:
        """The shown bytes in hex, grouped by eight, with ``┃`` after newlines."""
        return "".join(text for text, _ in hex_pieces(self))


def clock(when: float) -> str:
    """``when`` (seconds since the epoch) as local ``HH:MM:SS.mmm``."""
    millis = int(when * 1000) % 1000
    return time.strftime("%H:%M:%S", time.localtime(when)) + f".{millis:03d}"


def hex_pieces(record: WireRecord) -> list[tuple[str, str]]:
    """The hex of ``record.shown`` as ``(text, kind)`` pieces, span by span.

    Each byte is two hex digits; bytes are separated by a space and groups of
    eight by two.  A ``SPLIT`` span gives ``┃`` and hidden bytes ``…``, so the
    hex can be coloured like the text it sits under.  The space before each
    piece is a piece of its own, of kind ``""``.
    """
    pieces = []
    shown = record.shown
    for span in record.spans:
        if span.kind == SPLIT:
            pieces += [(" ", ""), (SPLIT_MARK, SPLIT)]
        elif span.start < span.end:
            if span.start:
                pieces.append((_hex_gap(span.start), ""))
            digits = f"{shown[span.start]:02x}" + "".join(
                f"{_hex_gap(i)}{shown[i]:02x}" for i in range(span.start + 1, span.end)
            )
            pieces.append((digits, span.kind))
    if record.hidden:
        pieces += [(" ", ""), ("…", NOTE)]
    return pieces


def _hex_gap(offset: int) -> str:
    """What goes before the byte at ``offset`` in hex: two spaces between groups."""
    return "  " if offset % 8 == 0 else " "


def format_record(record: WireRecord, hex_per_line: int = 16) -> list[str]:
    """Lines for a terminal: what the chunk says, then its bytes in hex.

    ``→ 14:02:01.123     31 B  {"type":"hello","name":"ada"}⏎┃``, then the
    hex indented under the text, ``hex_per_line`` bytes (a multiple of 8) a
    line.
    """
    head = f"{record.arrow} {record.clock} {record.size:>6} B  "
    indent = " " * len(head)
    groups = record.hex.split("  ")  # two spaces: between groups of eight
    step = max(hex_per_line // 8, 1)
    hex_lines = ["  ".join(groups[i : i + step]) for i in range(0, len(groups), step)]
    return [head + record.text, *(indent + line for line in hex_lines if line)]


class WireLog:
    """Turns the chunks of one connection, both directions, into records.

    It remembers, per direction, the bytes of a character cut at the end of
    the last chunk, so that the next chunk in that direction can show it
    finished.  Not thread-safe: one log belongs to one reader (the window's
    Tk thread, or the console's main loop), which is fed in order.
    """

    def __init__(self, max_shown: int = MAX_SHOWN) -> None:
        if max_shown < 1:
            raise ValueError("max_shown must be at least 1")
        self.max_shown = max_shown
        self._carry = {OUT: b"", IN: b""}  # a cut character's first bytes

    def reset(self) -> None:
        """Forget cut characters: a new connection starts a new stream."""
        self._carry = {OUT: b"", IN: b""}

    def feed(self, direction: str, data: bytes, when: float) -> WireRecord:
        """The record for one chunk; ``b""`` is the end of that direction's stream.

        Raises ``ValueError`` for a direction other than ``"in"`` or ``"out"``
        (a bug in the caller).  Never raises for any ``data``.
        """
        if direction not in ARROWS:
            raise ValueError(f"direction must be {IN!r} or {OUT!r}, not {direction!r}")
        carry, self._carry[direction] = self._carry[direction], b""
        if not data:
            words = "end of stream, inside a character" if carry else "end of stream"
            return WireRecord(
                direction, when, 0, (Span(NOTE, f"({words})", 0, 0),), b"", ()
            )
        spans: list[Span] = []
        head = 0
        if carry:
            head, completed = _continue(carry, data)
            if completed is not None:
                spans.append(Span(CUT, f"⟨…{_hex(data[:head])}⟩", 0, head))
                spans.append(_char_span(completed, head, head))
            elif head == len(data):  # still not finished: all of it is inside
                self._carry[direction] = carry + data
                spans.append(Span(CUT, f"⟨…{_hex(data)}…⟩", 0, head))
                return WireRecord(
                    direction, when, head, tuple(spans), data, (), head, head
                )
            else:
                spans.append(Span(BAD, "⟨…never finished⟩", 0, 0))
        tail = _incomplete_tail(data, head)
        body_end = len(data) - tail
        if tail:
            self._carry[direction] = data[body_end:]
        shown_end = _render(data, head, body_end, self.max_shown, spans)
        if tail and shown_end == body_end:
            spans.append(Span(CUT, f"⟨{_hex(data[body_end:])}…⟩", body_end, len(data)))
            shown_end = len(data)
        hidden = len(data) - shown_end
        if hidden:
            more = "1 more byte" if hidden == 1 else f"{hidden} more bytes"
            spans.append(Span(NOTE, f" … ({more})", shown_end, shown_end))
        line_ends = tuple(m.end() for m in re.finditer(b"\n", data))
        return WireRecord(
            direction,
            when,
            len(data),
            tuple(spans),
            data[:shown_end],
            line_ends,
            head,
            tail,
        )


# ---------------------------------------------------------------------------
# UTF-8, byte by byte


def _sequence_length(lead: int) -> int:
    """How many bytes a character starting with ``lead`` has; 0 if none can."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # a continuation byte, an overlong lead (c0 c1), or past U+10FFFF


def _second_byte_range(lead: int) -> tuple[int, int]:
    """The bytes that may follow ``lead``: no overlong forms, no surrogates."""
    return {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF)}.get(
        lead, (0x80, 0x8F) if lead == 0xF4 else (0x80, 0xBF)
    )


def _is_valid_prefix(sequence: bytes) -> bool:
    """Is ``sequence`` the start (or all) of one valid UTF-8 character?"""
    length = _sequence_length(sequence[0])
    if length < 2 or len(sequence) > length:
        return False
    if len(sequence) > 1:
        low, high = _second_byte_range(sequence[0])
        if not low <= sequence[1] <= high:
            return False
    return all(0x80 <= byte <= 0xBF for byte in sequence[2:])


def _continue(carry: bytes, data: bytes) -> tuple[int, str | None]:
    """How the start of ``data`` goes on with the cut character ``carry``.

    Returns ``(bytes used, the character)`` when ``data`` finishes it,
    ``(len(data), None)`` when all of ``data`` continues it and more is still
    to come, and ``(0, None)`` when ``data`` does not continue it.
    """
    missing = _sequence_length(carry[0]) - len(carry)
    used = 0
    while used < min(missing, len(data)) and _is_valid_prefix(carry + data[: used + 1]):
        used += 1
    if used == missing:
        return used, (carry + data[:used]).decode("utf-8")
    if used == len(data):
        return used, None
    return 0, None


def _incomplete_tail(data: bytes, start: int) -> int:
    """The length of the unfinished character that ends ``data``, or 0."""
    for back in (1, 2, 3):
        at = len(data) - back
        if at < start:
            break
        if _sequence_length(data[at]) > back and _is_valid_prefix(data[at:]):
            return back
    return 0


def _render(data: bytes, start: int, end: int, limit: int, spans: list[Span]) -> int:
    """Append the spans for ``data[start:end]`` to ``spans``; return where it
    stopped: at ``end``, or once ``limit`` bytes are done (a character that
    straddles the limit is finished first)."""
    at = start
    stop = min(end, limit)
    while at < stop:
        plain = _PRINTABLE_ASCII.match(data, at, stop)
        if plain:  # most of a chat line: one span for the whole run
            _add(spans, Span(TEXT, plain.group().decode("ascii"), at, plain.end()))
            at = plain.end()
            continue
        length = _sequence_length(data[at])
        sequence = data[at : at + length]
        if length == 1:
            _add(spans, _char_span(chr(data[at]), at, at + 1))
            if data[at] == 0x0A:
                spans.append(Span(SPLIT, SPLIT_MARK, at + 1, at + 1))
        elif len(sequence) == length > 1 and _is_valid_prefix(sequence):
            _add(spans, _char_span(sequence.decode("utf-8"), at, at + length))
        else:
            length = 1
            spans.append(Span(BAD, f"\\x{data[at]:02x}", at, at + 1))
        at += length
    return at


def _add(spans: list[Span], span: Span) -> None:
    """Append ``span``, joining it to the text just before it if both are text."""
    last = spans[-1] if spans else None
    if (
        span.kind == TEXT
        and last is not None
        and last.kind == TEXT
        and last.start < last.end == span.start  # not a completed cut character
    ):
        spans[-1] = Span(TEXT, last.text + span.text, last.start, span.end)
    else:
        spans.append(span)


def _char_span(char: str, start: int, end: int) -> Span:
    """A printable character as itself; anything else as a visible escape."""
    if char.isprintable() and not _INVISIBLE.match(char):
        return Span(TEXT, char, start, end)
    if char in _NAMED:
        return Span(ESCAPE, _NAMED[char], start, end)
    code = ord(char)
    if code < 0x80:
        escape = f"\\x{code:02x}"
    elif code < 0x10000:
        escape = f"\\u{code:04x}"
    else:
        escape = f"\\U{code:08x}"
    return Span(ESCAPE, escape, start, end)


def _hex(data: bytes) -> str:
    return data.hex(" ")
