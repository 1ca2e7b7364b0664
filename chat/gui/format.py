"""What the window shows for each event, as (text, tags) pieces.  No Tk here.

The message view inserts the pieces in order with their tags; the tags carry
all the styling (colours, bold, italics), which ``view.py`` configures.  The
pieces are built by splitting strings, never by counting characters, so a
character outside the Basic Multilingual Plane (Tk counts an emoji as two
positions) can never shift a highlight.

Everything a peer wrote is shown through ``escape_text``, as on the server's
console: an escape sequence, a right-to-left override or a zero-width space
is shown as ``\\x1b``, ``\\u202e``, ``\\u200b``, so nothing can hide, reorder
or disguise text (and students see exactly what was sent).
"""

from __future__ import annotations

import functools
import re
import time
import zlib
from dataclasses import dataclass

from ..protocol import (
    Error,
    Joined,
    Left,
    Message,
    Notice,
    PrivateMessage,
    Renamed,
    ServerMessage,
    Users,
    Welcome,
    escape_text,
)

#: Colours for people's names: readable on white, told apart at a glance.
NAME_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bc6c00",
    "#3b5ba5",
    "#7f7f00",
)

Piece = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class Line:
    """One line of the message view: its pieces, and what kind of line it is.

    ``kind`` is ``chat``, ``own``, ``private``, ``notice`` or ``error``;
    ``mention`` is true when someone else's line names you; ``plain`` is the
    line as text, for the transcript.
    """

    pieces: tuple[Piece, ...]
    kind: str
    mention: bool = False

    @property
    def plain(self) -> str:
        return "".join(text for text, _ in self.pieces)


def name_colour_tag(name: str) -> str:
    """The tag that colours ``name``; the same name gets the same colour always."""
    return f"name{zlib.crc32(name.casefold().encode('utf-8')) % len(NAME_COLOURS)}"


def stamp(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


def mentions(text: str, my_name: str) -> bool:
    """Does ``text`` name me (``alice`` or ``@alice``, as a whole word)?"""
    return bool(my_name) and _mention_pattern(my_name).search(text) is not None


@functools.lru_cache(maxsize=64)
def _mention_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w@])@?{re.escape(name)}(?!\w)", re.IGNORECASE)


def _text_pieces(text: str, my_name: str, base: tuple[str, ...]) -> list[Piece]:
    """``text``, escaped, cut around mentions of me (tagged ``mention``)."""
    text = escape_text(text)
    if not my_name:
        return [(text, base)]
    pieces: list[Piece] = []
    position = 0
    for match in _mention_pattern(my_name).finditer(text):
        if match.start() > position:
            pieces.append((text[position : match.start()], base))
        pieces.append((match.group(), (*base, "mention")))
        position = match.end()
    if position < len(text) or not pieces:
        pieces.append((text[position:], base))
    return pieces


def message_line(message: Message, my_name: str) -> Line:
    own = message.sender == my_name
    kind = "own" if own else "chat"
    # Names are escaped too: another program's server may send any name.
    who = (escape_text(message.sender), ("name", name_colour_tag(message.sender)))
    time_piece = (f"{stamp(message.ts)} ", ("time",))
    if message.me:
        body = _text_pieces(f" {message.text}", "" if own else my_name, ("action",))
        pieces = [time_piece, ("* ", ("action",)), who, *body]
    else:
        body = _text_pieces(message.text, "" if own else my_name, ())
        pieces = [time_piece, who, (": ", ()), *body]
    mention = not own and mentions(message.text, my_name)
    return Line(tuple(pieces), kind, mention)


def chat_line(message: Message | PrivateMessage, my_name: str) -> Line:
    """A line said to the room, or a private one (a history holds both)."""
    if isinstance(message, PrivateMessage):
        return private_line(message, my_name)
    return message_line(message, my_name)


def private_line(message: PrivateMessage, my_name: str) -> Line:
    outgoing = message.sender == my_name
    other = escape_text(message.to if outgoing else message.sender)
    arrow = f"to {other}" if outgoing else f"from {other}"
    pieces = [
        (f"{stamp(message.ts)} ", ("time",)),
        (f"[private {arrow}] ", ("private",)),
        *_text_pieces(message.text, "", ("private",)),
    ]
    return Line(tuple(pieces), "private", mention=not outgoing)


def pending_line(text: str, me: bool, to: str | None, my_name: str) -> Line:
    """A line typed but not yet confirmed by the server: grey, with a clock."""
    if to is not None:
        body = (f"[private to {to}] {escape_text(text)}", ("pending",))
    elif me:
        body = (f"* {my_name} {escape_text(text)}", ("pending",))
    else:
        body = (f"{my_name}: {escape_text(text)}", ("pending",))
    clock = (f"{time.strftime('%H:%M')} ⏲ ", ("time", "pending"))
    return Line((clock, body), "pending")


def divider_line(text: str) -> Line:
    """A line across the view, such as "while you were away"."""
    return Line(((f"──── {text} ────", ("divider",)),), "divider")


def notice_line(text: str, kind: str = "notice") -> Line:
    piece = (escape_text(text), (kind,))
    return Line(((f"{time.strftime('%H:%M')} ", ("time",)), piece), kind)


def lines_for(event: ServerMessage, my_name: str) -> list[Line]:
    """The lines to add to the view for one server message (maybe none)."""
    if isinstance(event, (Message, PrivateMessage)):
        return [chat_line(event, my_name)]
    if isinstance(event, Welcome):
        lines = [chat_line(m, event.name) for m in event.history]
        count = len(event.users)
        others = [u for u in event.users if u != event.name]
        who = ", ".join(others) if others else "nobody else yet"
        lines.append(
            notice_line(
                f"Welcome, {event.name}! {count} here ({who}). /help for commands."
            )
        )
        return lines
    if isinstance(event, Joined):
        return [notice_line(f"{event.name} joined")]
    if isinstance(event, Left):
        return [notice_line(f"{event.name} left ({event.reason})")]
    if isinstance(event, Renamed):
        return [notice_line(f"{event.old} is now known as {event.new}")]
    if isinstance(event, Users):
        return [notice_line(f"Here now ({len(event.users)}): {', '.join(event.users)}")]
    if isinstance(event, Notice):
        return [notice_line(event.text)]
    if isinstance(event, Error):
        return [notice_line(event.text, "error")]
    return []
