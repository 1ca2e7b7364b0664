"""What a client has to send: in order, and kept until the server confirms it.

A line a person typed must never be lost, nor said twice, nor overtaken:

* every entry waits in one list, in the order it was added;
* an entry with a ``cid`` (a chat line) stays there until the server echoes
  that ``cid`` back (or refuses it with an error naming it): ``confirm``;
  only ``MAX_KEPT`` and ``drop_longer`` ever give one up before that;
* an entry without one (a pong, a rename) is dropped once it has been sent;
* after a reconnect, ``restart`` sends everything still kept again, from
  the top, in the first order.  A line that had in fact arrived is ignored
  by the server (same ``cid``), so resending is always safe.

No sockets here; one ``threading.Condition`` guards it all.  The client's
writer thread ``take``s an entry, sends it, and reports it ``sent`` (or calls
``pause``, when the send failed); the reader thread calls ``restart``,
``pause``, ``confirm`` and ``drop_longer``; anyone may ``add``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

#: The most chat lines kept unconfirmed; beyond, the oldest are given up
#: (a server that never confirms would otherwise grow the list forever).
MAX_KEPT = 1000


@dataclass(eq=False)
class Entry:
    """Bytes to send, and the ``cid`` that confirms them (or ``None``)."""

    data: bytes
    cid: str | None = None


class Outgoing:
    """See the module docstring.  Every method is thread-safe."""

    def __init__(self, limit: int = MAX_KEPT) -> None:
        self.limit = limit
        self._cond = threading.Condition()
        # Guarded by _cond:
        self._entries: list[Entry] = []
        self._next = 0  # the first entry not yet sent on this connection
        self._generation = 0  # counts connections, so a late "sent" is ignored
        self._open = False  # a connection is ready to take lines
        self._closing = False

    def add(self, data: bytes, cid: str | None = None) -> None:
        """Queue ``data``; with a ``cid``, keep it until confirmed."""
        with self._cond:
            self._entries.append(Entry(data, cid))
            kept = sum(1 for e in self._entries if e.cid is not None)
            if kept > self.limit:  # give up the oldest unconfirmed line
                oldest = next(
                    i for i, e in enumerate(self._entries) if e.cid is not None
                )
                self._remove(oldest)
            self._cond.notify_all()

    def restart(self) -> int:
        """A new connection is ready: send everything kept, from the top.
        Returns the connection's number (what ``take`` gives with each entry)."""
        with self._cond:
            self._generation += 1
            self._next = 0
            self._open = True
            self._cond.notify_all()
            return self._generation

    def pause(self, generation: int | None = None) -> None:
        """The connection is gone: hold everything until ``restart``.

        With ``generation``, only if that connection is still the current one:
        a send that failed on an old connection must not stop the new one.
        """
        with self._cond:
            if generation is None or generation == self._generation:
                self._open = False

    def close(self) -> None:
        """No more sending after what is queued: ``take`` returns ``None``."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def take(self, timeout: float) -> tuple[Entry, int] | None:
        """The next entry to send and the connection's number, or ``None``
        after ``timeout`` seconds with nothing to send (at once when closing).

        Nothing is taken while no connection is ready (before ``restart``,
        after ``pause``): it waits."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._open and self._next < len(self._entries)):
                left = deadline - time.monotonic()
                if self._closing or left <= 0:
                    return None
                self._cond.wait(left)
            return self._entries[self._next], self._generation

    def sent(self, entry: Entry, generation: int) -> None:
        """``entry`` went out on connection ``generation``."""
        with self._cond:
            if generation != self._generation:
                return  # sent on a connection that has since been replaced
            try:
                index = self._entries.index(entry)
            except ValueError:
                return  # confirmed meanwhile
            if entry.cid is None:
                self._remove(index)
            else:
                self._next = max(self._next, index + 1)
            self._cond.notify_all()

    def confirm(self, cid: str) -> bool:
        """The server echoed (or refused) ``cid``: forget that line.
        Returns whether it was still kept."""
        with self._cond:
            for index, entry in enumerate(self._entries):
                if entry.cid == cid:
                    self._remove(index)
                    self._cond.notify_all()
                    return True
            return False

    def drop_longer(self, limit: int) -> list[Entry]:
        """Give up every entry over ``limit`` bytes (not counting its newline),
        for a server that takes no longer lines.  Returns those entries."""
        with self._cond:
            long = [e for e in self._entries if len(e.data) - 1 > limit]
            for entry in long:
                self._remove(self._entries.index(entry))
            return long

    def unconfirmed(self) -> list[str]:
        """The cids still waiting for the server, oldest first."""
        with self._cond:
            return [e.cid for e in self._entries if e.cid is not None]

    def wait_sent(self, timeout: float) -> bool:
        """Block until everything queued has been sent on this connection.

        Returns ``True`` then (at once if nothing is queued); ``False`` after
        ``timeout`` seconds, or at once if no connection is ready to send on
        (before ``restart``, after ``pause``).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._next < len(self._entries):
                left = deadline - time.monotonic()
                if left <= 0 or not self._open:
                    return False
                self._cond.wait(left)
            return True

    def _remove(self, index: int) -> None:  # with _cond held
        del self._entries[index]
        if index < self._next:
            self._next -= 1
