"""One connection's conversation with the room, after framing, before sockets.

The server's reader thread feeds each session the lines its ``LineDecoder``
produced; the session answers through the member's outbox and acts on the
room.  There are three kinds, chosen by the connection's first line:

``JsonSession``
    speaks the JSON protocol (``docs/protocol.md``);
``PlainSession``
    a person on ``nc`` or ``telnet``: the first line is a name, then text
    lines and slash commands, answered with readable lines;
``EchoSession``
    the classic echo server: every line goes straight back.

No sockets and no threads here: ``tests/test_session.py`` drives sessions
with a list standing in for the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from . import plain
from .protocol import (
    Bye,
    ClientMessage,
    Error,
    Hello,
    LineTooLong,
    Notice,
    Ping,
    Pong,
    Private,
    ProtocolError,
    Rename,
    Say,
    ServerMessage,
    Who,
    decode_client,
)
from .room import Member, Room

log = logging.getLogger("chat.session")

Lines = Sequence["bytes | LineTooLong"]


class Session:
    """What every kind of session has: a member, a room, and an end.

    ``receive`` is called by one reader thread only.  When the peer asked to
    leave, ``ended`` becomes true and ``reason`` says why.
    """

    def __init__(self, room: Room, member: Member) -> None:
        self.room = room
        self.member = member
        self.ended = False
        self.reason = "connection lost"
        self.lines_in = 0

    def receive(self, lines: Lines) -> None:
        raise NotImplementedError

    def tell(self, message: ServerMessage) -> None:
        self.member.outbox.put(self.member.render(message))

    def end(self, reason: str) -> None:
        self.ended = True
        self.reason = reason


def quit_reason(bye: Bye) -> str:
    """The ``left`` reason for a ``bye``: ``quit`` or ``quit: <their words>``."""
    words = (bye.reason or "").strip()
    if not words or words.lower() == "quit":
        return "quit"
    return f"quit: {words[:100]}"


class JsonSession(Session):
    """The JSON protocol.  Says from one read are broadcast as one batch."""

    def receive(self, lines: Lines) -> None:
        batch: list[Say] = []
        for line in lines:
            if self.ended:
                break
            self.lines_in += 1
            message = None
            try:
                message = self._decode(line)
                if message is None:
                    continue
                if isinstance(message, Say) and self.member.name is not None:
                    batch.append(self._check_say(message))
                    continue
                self._flush(batch)
                self.handle(message)
            except ProtocolError as exc:
                self._flush(batch)
                cid = exc.cid or getattr(message, "cid", None)
                self.tell(Error(exc.code, exc.text, cid))
        self._flush_reporting(batch)

    def _decode(self, line: bytes | LineTooLong) -> ClientMessage | None:
        if isinstance(line, LineTooLong):
            raise ProtocolError("too_long", f"a line may be at most {line.limit} bytes")
        if not line.strip():
            return None  # blank lines are keep-alives, not errors
        return decode_client(line)

    def _check_say(self, say: Say) -> Say:
        if not say.text.strip():
            raise ProtocolError("empty", "there is no text to send", say.cid)
        return say

    def _flush_reporting(self, batch: list[Say]) -> None:
        """The last flush of a read: a refusal (kicked meanwhile) goes to the peer."""
        try:
            self._flush(batch)
        except ProtocolError as exc:
            self.tell(Error(exc.code, exc.text))

    def _flush(self, batch: list[Say]) -> None:
        if batch:
            try:
                self.room.say(self.member, batch)
            finally:
                batch.clear()

    def handle(self, message: ClientMessage) -> None:
        """Act on one message other than a ``say`` in a batch."""
        room, member = self.room, self.member
        if isinstance(message, Hello):
            if member.name is not None:
                raise ProtocolError("already_registered", "you are already in")
            room.join(member, message.name)
        elif isinstance(message, Ping):
            self.tell(Pong())
        elif isinstance(message, Pong):
            pass
        elif isinstance(message, Bye):
            self.end(quit_reason(message))
        elif member.name is None:
            raise ProtocolError("not_registered", "send hello with your name first")
        elif isinstance(message, Say):
            room.say(member, [self._check_say(message)])
        elif isinstance(message, Private):
            if not message.text.strip():
                raise ProtocolError("empty", "there is no text to send", message.cid)
            room.private(member, message.to, message.text, message.cid)
        elif isinstance(message, Rename):
            room.rename(member, message.name)
        elif isinstance(message, Who):
            room.who(member)
        else:  # a type in CLIENT_TYPES that nobody handles: our bug
            raise AssertionError(f"unhandled {message!r}")


class PlainSession(JsonSession):
    """A person typing lines: first a name, then text and slash commands."""

    def receive(self, lines: Lines) -> None:
        batch: list[Say] = []
        for line in lines:
            if self.ended:
                break
            self.lines_in += 1
            try:
                text = self._text(line)
                if text is None:
                    continue
                if self.member.name is None:
                    self._flush(batch)
                    self._choose_name(text)
                    continue
                parsed = plain.parse_input(text)
                if parsed is None:
                    continue
                if isinstance(parsed, tuple):  # help, usage: for this person only
                    for message in parsed:
                        self.tell(message)
                elif isinstance(parsed, Say):
                    batch.append(parsed)
                else:
                    self._flush(batch)
                    self.handle(parsed)
            except ProtocolError as exc:
                self._flush(batch)
                self.tell(Error(exc.code, exc.text))
                if self.member.name is None:
                    self.tell(Notice("Choose another name:"))
        self._flush_reporting(batch)

    def _text(self, line: bytes | LineTooLong) -> str | None:
        if isinstance(line, LineTooLong):
            raise ProtocolError(
                "too_long", f"Line too long (over {line.limit} bytes); not sent."
            )
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            raise ProtocolError(
                "bad_utf8", "That line is not valid UTF-8; it was not sent."
            ) from None
        if text.strip() == "" or text.strip("\x00") == "":
            return None
        return text

    def _choose_name(self, text: str) -> None:
        name = text.strip()
        if name.lower() == "exit":
            self.end("quit")
            return
        self.room.join(self.member, name)


class EchoSession(Session):
    """The echo server of the tutorials: each line goes back to its sender.

    Lines go back byte for byte; what the server itself says (a line too
    long, goodbye) is plain text, as the member's ``render`` is the plain one.
    """

    def receive(self, lines: Lines) -> None:
        for line in lines:
            self.lines_in += 1
            if isinstance(line, LineTooLong):
                text = f"Line too long (over {line.limit} bytes)."
                self.tell(Error("too_long", text))
            else:
                self.member.outbox.put(line + b"\n")
