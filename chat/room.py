"""The room: who is here, what was said, and who gets which bytes.

No sockets here.  Each member has an *outbox* (``put(bytes)`` and ``hang_up()``);
the room encodes every message once per wire format and hands the same bytes
object, with the outboxes of everyone of that format, to ``deliver``
(``Writer.broadcast`` in the server: one append, however many members).
Sending is someone else's job (``chat.outbox``), so a member who stops
reading can never slow the room down.

One lock, ``Room._lock``, guards the members, the names and the history.
Every put and broadcast of the room's events happens under it, which is what
gives every member the same order of events; neither blocks.  Only ``tell``
(a reply to one member) puts without it.  Logging happens after the lock is
released.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from .history import History
from .protocol import (
    Joined,
    Left,
    Message,
    Notice,
    PrivateMessage,
    ProtocolError,
    Renamed,
    Say,
    ServerMessage,
    Users,
    Welcome,
    check_name,
    escape_text,
    name_key,
)

log = logging.getLogger("chat.room")

DEFAULT_HISTORY = 50
SERVER_NAME = "server"
#: A welcome (history included) is kept under this many bytes, so that a long
#: history can never make a newcomer look like a slow consumer.
DEFAULT_WELCOME_BYTES = 512 * 1024


class Outbox(Protocol):
    """What the room needs of a member's outbox (``chat.outbox.Outbox``)."""

    def put(self, data: bytes) -> None:
        """Queue bytes for sending; never blocks."""

    def hang_up(self) -> None:
        """Send what is queued, then end the connection."""


Render = Callable[[ServerMessage], bytes]
#: Gives the bytes to every outbox in the tuple but the one excluded; must not
#: block.  ``Writer.broadcast`` does it in one step, whatever the number.
Deliver = Callable[[tuple[Outbox, ...], bytes, "Outbox | None"], None]


def put_each(
    outboxes: tuple[Outbox, ...], data: bytes, exclude: Outbox | None = None
) -> None:
    """The plain way to deliver: one ``put`` per outbox."""
    for outbox in outboxes:
        if outbox is not exclude:
            outbox.put(data)


class Member:
    """One connection, as the room sees it.

    The server creates it when a connection opens; ``name`` is ``None`` until
    ``Room.join`` succeeds.  ``render`` turns a message into this member's
    wire format (JSON or plain lines); ``echo`` says whether the member gets
    its own messages back (JSON clients do, plain clients do not).
    """

    def __init__(
        self, outbox: Outbox, render: Render, *, echo: bool, address: str = ""
    ) -> None:
        self.outbox = outbox
        self.render = render
        self.echo = echo
        self.address = address
        self.name: str | None = None
        self.connected_at = time.time()
        # For /stats, guarded by the room's lock: the room's fan-out count
        # when this member joined, and what was sent to it alone.
        self.fanned_at_join = 0
        self.direct_out = 0

    def __repr__(self) -> str:
        return f"<Member {self.name or '(no name)'} {self.address}>"


class Room:
    """Members, names, history and fan-out.  Every method is thread-safe.

    Methods raise ``ProtocolError`` for a request the room refuses (a taken
    name, an unknown user); the caller reports it to that one member.
    """

    def __init__(
        self,
        history_size: int = DEFAULT_HISTORY,
        max_welcome_bytes: int = DEFAULT_WELCOME_BYTES,
        deliver: Deliver | None = None,
        history: History | None = None,
        max_line: int | None = None,
    ) -> None:
        self.max_welcome_bytes = max_welcome_bytes
        self.max_line = max_line  # told in every welcome, when not None
        self._deliver = deliver or put_each
        self._lock = threading.Lock()
        # Everything below is guarded by _lock.
        self._members: dict[str, Member] = {}  # name_key -> member, in join order
        # The members' outboxes by wire format, made again after any change
        # to _members: a broadcast then hands one tuple to the writer.
        self._outboxes: dict[Render, tuple[Outbox, ...]] | None = None
        self._history = history or History(history_size)
        self._fanned = 0  # events sent to (nearly) everyone so far, for /stats
        # Name keys the operator silenced -> which /mute did it: the names
        # one muted person went by since (see rename) share its number, so
        # one /unmute lifts them together.
        self._muted: dict[str, int] = {}
        self._mutes = itertools.count(1)
        self._banned: set[str] = set()  # name keys nobody may take

    # -- membership -------------------------------------------------------

    def join(
        self,
        member: Member,
        name: str,
        since: int | None = None,
        room: str | None = None,
    ) -> None:
        """Take ``name`` for ``member``, send it the welcome, tell the others.

        The welcome replays the last lines, or, with ``since`` (the last id
        the client saw, in the history called ``room``), every line after it
        that is still kept.  ``since`` from another history means nothing.
        Raises ``ProtocolError`` for a bad, taken or banned name, or a member
        already in.
        """
        name = check_name(name)
        key = name_key(name)
        with self._lock:
            if member.name is not None:
                raise ProtocolError("already_registered", "you are already in")
            if key in self._banned:
                raise ProtocolError("banned", f"the name {name} is banned here")
            if key in self._members:
                raise ProtocolError("name_taken", f"{name} is already taken")
            member.name = name
            member.fanned_at_join = self._fanned
            self._members[key] = member
            self._outboxes = None
            if room != self._history.token:
                since = None
            member.outbox.put(self._welcome(member, name, since))
            self._fan_out((Joined(name),), exclude=member)
        log.info("* %s joined from %s", name, member.address)

    def leave(self, member: Member, reason: str) -> None:
        """Forget ``member`` (if it had joined) and tell the others why it left."""
        with self._lock:
            name = member.name
            if name is None or self._members.get(name_key(name)) is not member:
                return
            del self._members[name_key(name)]
            self._outboxes = None
            self._fan_out((Left(name, reason),))
        log.info("* %s left (%s)", name, escape_text(reason))

    def rename(self, member: Member, new_name: str) -> None:
        """Change ``member``'s name and tell everyone."""
        new_name = check_name(new_name)
        new_key = name_key(new_name)
        with self._lock:
            old_name = self._require_joined(member)
            old_key = name_key(old_name)
            if new_key in self._members and new_key != old_key:
                raise ProtocolError("name_taken", f"{new_name} is already taken")
            if new_key in self._banned:
                raise ProtocolError("banned", f"the name {new_name} is banned here")
            if new_name == old_name:
                member.outbox.put(member.render(Notice(f"You are already {new_name}.")))
                return
            # Keep the join order: rebuild the dict with the new key in place.
            self._members = {
                (new_key if key == old_key else key): m
                for key, m in self._members.items()
            }
            self._outboxes = None
            if old_key in self._muted:  # a new name is no way out of a mute,
                self._muted[new_key] = self._muted[old_key]  # nor the old one
            member.name = new_name
            self._fan_out((Renamed(old_name, new_name),))
        log.info("* %s is now known as %s", old_name, new_name)

    def kick(self, name: str, reason: str) -> bool:
        """Remove a member by name; it sees why, then its connection ends.

        False if nobody here has that name.
        """
        with self._lock:
            member = self._members.pop(name_key(name), None)
            if member is None:
                return False
            self._outboxes = None
            assert member.name is not None
            self._fan_out((Left(member.name, f"kicked: {reason}"),), extra=member)
            member.outbox.hang_up()
        log.info("* %s was kicked (%s)", member.name, escape_text(reason))
        return True

    def close(self, text: str) -> None:
        """Tell everyone ``text`` and hang up on every member (server shutdown)."""
        with self._lock:
            self._fan_out((Notice(text),))
            members, self._members = list(self._members.values()), {}
            self._outboxes = None
            for member in members:
                member.outbox.hang_up()

    # -- talking ----------------------------------------------------------

    def say(self, member: Member, lines: Sequence[Say]) -> None:
        """Broadcast ``member``'s lines (one batch from one read) to everyone.

        Each line gets the next message id; all of them are encoded once per
        wire format and handed to ``deliver`` as one piece (a resend in the
        batch splits it there).  Raises ``ProtocolError`` if ``member`` has
        not joined or is muted: then none of the lines is said.
        """
        if not lines:
            return
        with self._lock:
            sender = self._require_joined(member)
            self._require_voice(sender)
            said: list[Message] = []
            fresh: list[Say] = []
            cids = set()  # a cid twice in one batch is said once
            for line in lines:
                if line.cid in cids:
                    continue
                first = self._history.repeat(sender, line.cid)
                if first is None:
                    fresh.append(line)
                    if line.cid:
                        cids.add(line.cid)
                    continue
                # A resend: the lines before it go first, then the first
                # copy of this one goes back (to the sender only).
                said += self._say_now(member, sender, fresh)
                fresh = []
                if member.echo:
                    member.outbox.put(member.render(first))
            said += self._say_now(member, sender, fresh)
        if log.isEnabledFor(logging.INFO):
            for message in said:
                shape = "* %s %s" if message.me else "%s: %s"  # /me, as people see it
                log.info(shape, sender, escape_text(message.text))

    def _say_now(
        self, member: Member, sender: str, lines: Sequence[Say]
    ) -> tuple[Message, ...]:
        """Stamp ``lines`` and give them to everyone (lock held)."""
        messages = self._stamp(sender, lines)
        if messages:
            self._fan_out(messages, exclude=None if member.echo else member)
        return messages

    def announce(self, text: str) -> None:
        """A line from the operator, shown to everyone as from ``server``."""
        with self._lock:
            messages = self._stamp(SERVER_NAME, (Say(text),))
            self._fan_out(messages)
        log.info("%s: %s", SERVER_NAME, escape_text(text))

    def private(
        self, member: Member, to: str, text: str, cid: str | None = None
    ) -> None:
        """Send a line to one user; the sender gets a copy as confirmation."""
        with self._lock:
            sender = self._require_joined(member)
            self._require_voice(sender)
            first = self._history.repeat(sender, cid)
            if first is not None:  # a resend: confirm the first one again
                member.outbox.put(member.render(first))
                return
            target = self._members.get(name_key(to))
            if target is None:
                shown = escape_text(to[:40])
                raise ProtocolError("no_such_user", f"nobody here is called {shown}")
            assert target.name is not None
            message = PrivateMessage(
                sender, target.name, text, time.time(), cid, self._history.next_id()
            )
            self._history.add(message)
            target.outbox.put(target.render(message))
            target.direct_out += 1
            if target is not member:
                member.outbox.put(member.render(message))
                member.direct_out += 1
        log.info("[private] %s -> %s: %s", sender, target.name, escape_text(text))

    def tell(self, member: Member, message: ServerMessage) -> None:
        """Send one message to one member (a reply, an error).

        Takes no lock: a reply has no place among the room's events to keep.
        """
        member.outbox.put(member.render(message))

    def who(self, member: Member) -> None:
        """Send ``member`` the user list, in its place among the room's events."""
        with self._lock:
            self._require_joined(member)
            member.outbox.put(member.render(Users(self._names())))

    def notice(self, text: str) -> None:
        """A notice to everyone (not a chat line: not numbered, not kept)."""
        with self._lock:
            self._fan_out((Notice(text),))

    # -- the operator's powers ---------------------------------------------

    def mute(self, name: str) -> bool:
        """Silence a member: its lines are refused with ``muted``."""
        with self._lock:
            member = self._members.get(name_key(name))
            if member is None:
                return False
            self._muted.setdefault(name_key(name), next(self._mutes))
        self.tell(member, Notice("The operator has muted you."))
        log.info("* %s was muted", name)
        return True

    def unmute(self, name: str) -> bool:
        """Let ``name`` speak again, and the names its person was muted under
        before a rename (one mute); False if it was not muted."""
        with self._lock:
            mute = self._muted.pop(name_key(name), None)
            found = mute is not None
            for key in [key for key, m in self._muted.items() if m == mute]:
                del self._muted[key]
            member = self._members.get(name_key(name))
        if member is not None and found:
            self.tell(member, Notice("You may speak again."))
        return found

    def ban_name(self, name: str) -> None:
        """Nobody may take ``name`` (or a look-alike) any more."""
        with self._lock:
            self._banned.add(name_key(name))

    def unban_name(self, name: str) -> bool:
        """``name`` may be taken again; False if it was not banned."""
        with self._lock:
            found = name_key(name) in self._banned
            self._banned.discard(name_key(name))
            return found

    # -- questions --------------------------------------------------------

    def names(self) -> tuple[str, ...]:
        """Everyone's name, in order of arrival."""
        with self._lock:
            return self._names()

    def members(self) -> list[Member]:
        """A snapshot of the members, in order of arrival."""
        with self._lock:
            return list(self._members.values())

    def find(self, name: str) -> Member | None:
        """The member called ``name`` (or a look-alike), or ``None``."""
        with self._lock:
            return self._members.get(name_key(name))

    def lines_out(self, member: Member) -> int:
        """About how many events the room has sent ``member`` (for /stats)."""
        with self._lock:
            return self._fanned - member.fanned_at_join + member.direct_out

    def history(self) -> tuple[Message, ...]:
        """The lines a newcomer would be shown, oldest first."""
        with self._lock:
            return self._history.recent()

    def clear_history(self) -> None:
        """Forget every line said so far (ids keep increasing).

        Only in memory: the caller clears the store too, outside the lock
        (``Store.clear`` waits).
        """
        with self._lock:
            self._history.clear()

    # -- inside the lock --------------------------------------------------

    def _names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self._members.values() if m.name)

    def _welcome(self, member: Member, name: str, since: int | None) -> bytes:
        """The welcome for ``member``, rendered, with as much history as fits."""
        notes = []
        if since is None:
            history: tuple = self._history.recent()
        else:
            history, left_out, gone = self._history.since(since, name)
            if left_out:
                # Beyond those left out, some are no longer kept: how many,
                # no one can say (ids are not all lines), but more were missed.
                more = "More than " if gone else ""
                notes.append(
                    f"{more}{left_out} earlier messages were missed; only the "
                    f"last {self._history.cap} are shown."
                )
            elif gone:
                notes.append("Some earlier messages are no longer kept.")
        whole = len(history)
        token = self._history.token
        names, last, limit = self._names(), self._history.last_id, self.max_line
        history = self._fitting(member, history, names)
        data = member.render(Welcome(name, names, history, token, last, limit))
        while history and len(data) > self.max_welcome_bytes:  # rarely, if ever
            history = history[max(len(history) // 4, 1) :]  # drop the oldest
            data = member.render(Welcome(name, names, history, token, last, limit))
        if len(history) < whole:
            dropped = whole - len(history)
            notes.append(f"{dropped} earlier messages were too long to replay.")
        return data + b"".join(member.render(Notice(text)) for text in notes)

    #: Bytes a line takes in a welcome beyond its own rendering: the plain
    #: ``[HH:MM] `` and the heading, a JSON comma.
    _WELCOME_LINE_EXTRA = 16

    def _fitting(self, member: Member, history: tuple, names: tuple) -> tuple:
        """The newest lines of ``history`` whose welcome fits the limit (lock held).

        Each line is rendered once, newest first, until the limit is reached:
        a join costs about the welcome's limit, however long the history and
        however costly its lines are to render (control characters, escaped).
        """
        budget = self.max_welcome_bytes - sum(len(n) * 4 + 4 for n in names) - 512
        # Most welcomes fit by far: at most 10 bytes a character (an escape
        # such as \U000e0001) and 200 a line of fields and names.
        most = sum(10 * len(line.text) + 200 for line in history)
        if most <= budget:
            return history
        kept = 0
        for line in reversed(history):
            budget -= len(member.render(line)) + self._WELCOME_LINE_EXTRA
            if budget < 0:
                break
            kept += 1
        return history[len(history) - kept :]

    def _require_joined(self, member: Member) -> str:
        # Compare the member, not just the name: a kicked member keeps its
        # name, and someone else may have taken it since.
        name = member.name
        if name is None or self._members.get(name_key(name)) is not member:
            raise ProtocolError("not_registered", "send hello first")
        return name

    def _require_voice(self, name: str) -> None:
        if name_key(name) in self._muted:
            raise ProtocolError("muted", "The operator has muted you; not sent.")

    def _stamp(self, sender: str, lines: Iterable[Say]) -> tuple[Message, ...]:
        now = time.time()
        messages = []
        history = self._history
        for line in lines:
            me = line.me or None  # "me": false means the same as no "me"
            message = Message(history.next_id(), sender, line.text, now, me, line.cid)
            history.add(message)
            messages.append(message)
        return tuple(messages)

    def _fan_out(
        self,
        messages: Sequence[ServerMessage],
        exclude: Member | None = None,
        extra: Member | None = None,
    ) -> None:
        """Give ``messages`` to every member (but ``exclude``), and to ``extra``.

        Encoded once per wire format; everyone of one format gets the very
        same bytes object, in one call to ``deliver`` for all of them.
        """
        self._fanned += len(messages)
        groups = self._outboxes
        if groups is None:
            grouped: dict[Render, list[Outbox]] = {}
            for member in self._members.values():
                grouped.setdefault(member.render, []).append(member.outbox)
            groups = {render: tuple(each) for render, each in grouped.items()}
            self._outboxes = groups
        skip = exclude.outbox if exclude is not None else None
        for render, outboxes in groups.items():
            if outboxes == (skip,):
                continue
            data = b"".join(render(m) for m in messages)
            if data:
                self._deliver(outboxes, data, skip)
        if extra is not None:
            data = b"".join(extra.render(m) for m in messages)
            if data:
                extra.outbox.put(data)
