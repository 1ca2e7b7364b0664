"""One connection's conversation with the room, after framing, before sockets.

The server's reader thread feeds each session the lines its ``LineDecoder``
produced; the session answers through the member's outbox and acts on the
room.  There are three kinds: with ``--echo`` every connection gets an
``EchoSession``; otherwise the connection's first line chooses the other two:

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

import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import plain
from .limits import FloodGuard
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
    check_name,
    decode_client,
)
from .room import Member, Room

log = logging.getLogger("chat.session")

Lines = Sequence["bytes | LineTooLong"]

#: Wrong passwords on one connection before it is closed (the last of them
#: closes it).
MAX_PASSWORD_TRIES = 3


@dataclass
class Policy:
    """The server's rules a session applies (from the server's options).

    ``password``: the room password, or ``None``.  ``flood_rate`` lines per
    second after a burst of ``flood_burst`` (``flood_rate`` 0: no limit).
    ``password_delay``: seconds a wrong password waits before it is refused.
    ``clock`` and ``sleep`` are injectable for tests.
    """

    password: str | None = None
    flood_rate: float = 0.0
    flood_burst: int = 20
    password_delay: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def flood_guard(self) -> FloodGuard | None:
        """A new guard for one connection, or ``None`` with no flood limit."""
        if self.flood_rate <= 0:
            return None
        return FloodGuard(self.flood_rate, self.flood_burst, self.clock)


class Session:
    """What every kind of session has: a member, a room, rules, and an end.

    ``receive`` is called by one reader thread only.  When the peer asked to
    leave (or must go), ``ended`` becomes true and ``reason`` says why.
    """

    def __init__(
        self, room: Room, member: Member, policy: Policy | None = None
    ) -> None:
        self.room = room
        self.member = member
        self.policy = policy or Policy()
        self.ended = False
        self.reason = "connection lost"
        self.lines_in = 0
        self._flood = self.policy.flood_guard()
        self._bad_passwords = 0

    def receive(self, lines: Lines) -> None:
        """Act on the lines of one read, in order (the reader thread only).

        Answers go to the outbox; the peer's mistakes are answered, not
        raised.  Blocks only to delay a wrong password (``password_delay``).
        """
        raise NotImplementedError

    def tell(self, message: ServerMessage) -> None:
        """Send one message to this connection alone.  Never blocks."""
        self.member.outbox.put(self.member.render(message))

    def end(self, reason: str) -> None:
        """Mark the session over: its reader stops, and the connection closes
        once what is queued for it is sent."""
        self.ended = True
        self.reason = reason

    def _admit(self) -> bool:
        """Flood control for one more line: False if it must be refused.

        Raises nothing; ends the session when the refusals are used up.
        """
        self.lines_in += 1
        if self._flood is None:
            return True
        verdict = self._flood.check()
        if verdict == "disconnect":
            self.tell(Error("flood", "You kept sending too fast: disconnecting."))
            self.end("flooding")
        return verdict == "ok"

    def _check_password(self, given: str | None) -> None:
        """Compare in constant time; a wrong one waits, then is refused."""
        wanted = self.policy.password
        if wanted is None:
            return
        if given is not None and hmac.compare_digest(
            given.encode("utf-8"), wanted.encode("utf-8")
        ):
            return
        self.policy.sleep(self.policy.password_delay)  # slows down guessing
        self._bad_passwords += 1
        if self._bad_passwords >= MAX_PASSWORD_TRIES:
            self.end("bad password")
        if given is None:
            raise ProtocolError("bad_password", "This room needs a password.")
        raise ProtocolError("bad_password", "That is not the room's password.")


def quit_reason(bye: Bye) -> str:
    """The ``left`` reason for a ``bye``: ``quit`` or ``quit: <their words>``."""
    words = (bye.reason or "").strip()
    if not words or words.lower() == "quit":
        return "quit"
    return f"quit: {words[:100]}"


def _flood_error(cid: str | None = None) -> ProtocolError:
    return ProtocolError("flood", "Too many messages too fast; not sent.", cid)


class JsonSession(Session):
    """The JSON protocol.  Says from one read are broadcast as one batch."""

    def receive(self, lines: Lines) -> None:
        batch: list[Say] = []
        for line in lines:
            if self.ended:
                break
            if not isinstance(line, LineTooLong) and not line.strip():
                continue  # blank lines are keep-alives: free, and never errors
            admitted = self._admit()
            if self.ended:
                break
            message = None
            try:
                message = self._decode(line)
                if not admitted:
                    raise _flood_error(getattr(message, "cid", None))
                if isinstance(message, Say) and self.member.name is not None:
                    batch.append(self._check_say(message))
                    continue
                self._flush(batch)
                self.handle(message)
            except ProtocolError as exc:
                self._flush(batch)
                cid = exc.cid or getattr(message, "cid", None)
                self.tell(Error(exc.code, exc.text, cid))
        self._flush(batch)

    def _decode(self, line: bytes | LineTooLong) -> ClientMessage:
        if isinstance(line, LineTooLong):
            raise ProtocolError("too_long", f"a line may be at most {line.limit} bytes")
        return decode_client(line)

    def _check_say(self, say: Say) -> Say:
        if not say.text.strip():
            raise ProtocolError("empty", "there is no text to send", say.cid)
        return say

    def _flush(self, batch: list[Say]) -> None:
        """Broadcast the batch; if the room refuses it, each line is told so.

        Raises nothing: a refusal (muted, kicked meanwhile) is the answer to
        those lines only, and the lines after them in the same read still
        get theirs.
        """
        if not batch:
            return
        try:
            self.room.say(self.member, batch)
        except ProtocolError as exc:
            for say in batch:
                self.tell(Error(exc.code, exc.text, say.cid))
        finally:
            batch.clear()

    def handle(self, message: ClientMessage) -> None:
        """Act on one message other than a ``say`` in a batch."""
        room, member = self.room, self.member
        if isinstance(message, Hello):
            if member.name is not None:
                raise ProtocolError("already_registered", "you are already in")
            self._check_password(message.password)
            room.join(member, message.name, message.since, message.room)
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
    """A person typing lines: a name (and the room's password), then chat."""

    def __init__(
        self, room: Room, member: Member, policy: Policy | None = None
    ) -> None:
        super().__init__(room, member, policy)
        self._wanted_name: str | None = None  # chosen, waiting for the password

    def receive(self, lines: Lines) -> None:
        batch: list[Say] = []
        for line in lines:
            if self.ended:
                break
            try:
                text = self._text(line)
                if text is None:
                    continue
                admitted = self._admit()
                if self.ended:
                    break
                if not admitted:
                    raise _flood_error()
                if self.member.name is None:
                    self._flush(batch)
                    self._register(text)
                    continue
                # Names and passwords stay exactly as typed (a DEL in a name is
                # refused); what is said is what the person meant to type.
                parsed = plain.parse_input(plain.erase(text))
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
                if self.member.name is None and not self.ended:
                    self._ask_again(exc)
        self._flush(batch)

    def _text(self, line: bytes | LineTooLong) -> str | None:
        """The line as text, ``None`` if blank.  A line that cannot be text
        still counts for flood control (``_admit``), as in the JSON protocol."""
        if isinstance(line, LineTooLong):
            self._admit()
            raise ProtocolError(
                "too_long", f"Line too long (over {line.limit} bytes); not sent."
            )
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            self._admit()
            raise ProtocolError(
                "bad_utf8", "That line is not valid UTF-8; it was not sent."
            ) from None
        if not text.replace("\x00", "").strip():  # blank, even with NULs and CRs
            return None
        return text

    def _register(self, text: str) -> None:
        """A line before joining: the name, or (if the room has one) the password."""
        if text.strip().lower() == "exit":
            self.end("quit")
            return
        if self.policy.password is None:
            self.room.join(self.member, text.strip())
            return
        if self._wanted_name is None:
            self._wanted_name = check_name(text.strip())
            self.tell(Notice("This room has a password. Type it:"))
            return
        name, self._wanted_name = self._wanted_name, None
        self._check_password(text)
        self.room.join(self.member, name)

    def _ask_again(self, exc: ProtocolError) -> None:
        if exc.code == "bad_password":
            self.tell(Notice("Type your name, then the password:"))
        elif self._wanted_name is not None:
            # The name was fine, but the password line could not be read (too
            # long, not UTF-8) or came too fast: ask for the password again.
            self.tell(Notice("This room has a password. Type it:"))
        elif exc.code != "flood":
            self.tell(Notice("Choose another name:"))


class EchoSession(Session):
    """The echo server of the tutorials: each line goes back to its sender.

    Lines go back byte for byte; what the server itself says (a line too
    long, goodbye) is plain text, as the member's ``render`` is the plain one.
    """

    def receive(self, lines: Lines) -> None:
        for line in lines:
            self.lines_in += 1  # no flood control: an echo server is a mirror
            if isinstance(line, LineTooLong):
                text = f"Line too long (over {line.limit} bytes)."
                self.tell(Error("too_long", text))
            else:
                self.member.outbox.put(line + b"\n")
