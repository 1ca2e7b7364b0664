"""What the room remembers: recent lines, replays, and lines sent twice.

``History`` keeps the last ``cap`` lines in memory (500 by default), which is
all a welcome ever replays, so a join never reads the disk.  Behind it, an
optional ``Store`` (``chat.store``) writes every line to SQLite, and at start
``History`` is filled from it: the history and the ids survive a restart.

A client may name each line it sends (a ``cid``).  If the same name sends the
same ``cid`` again within ``CID_WINDOW`` seconds, that is a resend after a
reconnect, not a new line: ``repeat`` finds the first one, and the room sends
that back instead of saying it twice.  The window is rebuilt from the stored
lines at start, so a resend after a server restart is caught too.

Not thread-safe: the room's lock guards it.  No I/O once made (only ``__init__``
talks to the database): ``Store.add`` and ``Store.given`` only put on a queue.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from .protocol import Message, PrivateMessage, name_key
from .store import Store

#: The most lines a welcome replays after ``since``.
SINCE_CAP = 500
#: How long a client's ``cid`` is remembered (seconds).
CID_WINDOW = 600.0
#: The most ``cid``s remembered, whatever their age (memory stays bounded).
MAX_CIDS = 100_000

Line = Message | PrivateMessage


class History:
    """The room's memory.  See the module docstring."""

    def __init__(
        self,
        size: int = 50,
        store: Store | None = None,
        *,
        cap: int = SINCE_CAP,
        keep_private: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.size = size  # lines a newcomer without ``since`` gets
        self.cap = cap
        self.keep_private = keep_private
        self._store = store
        self._clock = clock
        self._lines: deque[Line] = deque(maxlen=max(size, cap, 1))
        # (name key, cid) -> (when, the line): oldest first, for pruning.
        self._cids: OrderedDict[tuple[str, str], tuple[float, Line]] = OrderedDict()
        self.last_id = 0
        #: The highest id of a line once kept and no longer in memory (pushed
        #: out by newer ones, cleared, or left in the database at start).  A
        #: client that saw less than this may have missed something for good.
        self._forgotten = 0
        #: Names this history (and so the count of its ids) for clients.
        self.token = secrets.token_hex(8)
        if store is not None:
            self.token = store.room_token()
            self.last_id, stored = store.load(self._lines.maxlen or 1)
            self._forgotten = store.forgotten()
            if stored and len(stored) == self._lines.maxlen:  # older ones may
                self._forgotten = max(self._forgotten, (stored[0].id or 1) - 1)
            self._lines.extend(stored)
            # Resends are known by cid for CID_WINDOW: also those of lines
            # further back than the ones kept in memory.
            for line in store.with_cids(clock() - CID_WINDOW, MAX_CIDS):
                self._remember(line)

    def next_id(self) -> int:
        """The id for the next line: one more than any ever given."""
        self.last_id += 1
        return self.last_id

    def add(self, line: Line) -> None:
        """Keep a line (a private one only with ``keep_private``) and store it."""
        if line.cid:
            self._remember(line)
        if isinstance(line, PrivateMessage) and not self.keep_private:
            if self._store is not None and line.id is not None:
                self._store.given(line.id)  # so the id is never given again
            return
        if len(self._lines) == self._lines.maxlen:  # the oldest falls out
            self._forgotten = max(self._forgotten, self._lines[0].id or 0)
        self._lines.append(line)
        if self._store is not None:
            self._store.add(line)

    def recent(self) -> tuple[Message, ...]:
        """The last ``size`` lines said to the room, oldest first."""
        picked: list[Message] = []
        for line in reversed(self._lines):
            if len(picked) >= self.size:
                break
            if isinstance(line, Message):
                picked.append(line)
        return tuple(reversed(picked))

    def since(self, last_seen: int, name: str) -> tuple[tuple[Line, ...], int, bool]:
        """What ``name`` missed after id ``last_seen``: the room's lines and
        their own private ones, oldest first, at most ``cap``.

        Returns (lines, how many were left out beyond the cap, whether some
        are gone: a line after ``last_seen`` is no longer in memory).  Ids
        skipped by private lines that were never kept are not a loss.
        """
        key = name_key(name)
        gone = self._forgotten > last_seen
        missed = [
            line
            for line in self._lines
            if line.id is not None
            and line.id > last_seen
            and (
                isinstance(line, Message)
                or key in (name_key(line.sender), name_key(line.to))
            )
        ]
        left_out = max(len(missed) - self.cap, 0)
        return tuple(missed[left_out:]), left_out, gone

    def repeat(self, name: str, cid: str | None) -> Line | None:
        """The line ``name`` already sent with ``cid`` lately, if any."""
        if not cid:
            return None
        self._prune()
        found = self._cids.get((name_key(name), cid))
        return found[1] if found else None

    def clear(self) -> None:
        """Forget every line (ids go on increasing).  The store is cleared by
        the caller, outside the room's lock: ``Store.clear`` waits."""
        self._lines.clear()
        self._cids.clear()
        self._forgotten = self.last_id

    def _remember(self, line: Line) -> None:
        assert line.cid is not None
        self._cids[(name_key(line.sender), line.cid)] = (line.ts, line)
        if len(self._cids) > MAX_CIDS:
            self._cids.popitem(last=False)

    def _prune(self) -> None:
        too_old = self._clock() - CID_WINDOW
        while self._cids:
            when, _ = next(iter(self._cids.values()))
            if when >= too_old:
                break
            self._cids.popitem(last=False)
