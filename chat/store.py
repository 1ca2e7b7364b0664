"""The room's history on disk: SQLite from the standard library, in WAL mode.

The room never waits for the disk.  It hands every new message to ``add``,
which only puts it on a queue; one thread (``history writer``) owns the
database connection, takes what is queued and writes it in one transaction,
committed within about ``COMMIT_INTERVAL`` seconds of the first of them.  So
a ``kill -9`` loses about the last tenth of a second, and a row, once
written, is never rewritten.

At start, ``Store.open`` checks the file (damaged? locked by another server?
read-only?) and raises ``StoreError`` with a sentence for people; ``load``
returns the last messages and the highest id ever given, so ids keep
increasing across restarts and never come back (``AUTOINCREMENT`` remembers
them even after ``/clear``).  If the disk fills up while running, that is
logged once and the room carries on in memory.

The file is held with an exclusive lock for as long as the server runs: a
second server on the same file would hand out the same ids.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import queue
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .protocol import Message, PrivateMessage

log = logging.getLogger("chat.store")

COMMIT_INTERVAL = 0.1  # seconds: the most a kill -9 can lose
#: After a server was killed, ids go on from this much further, so that none
#: given in its last unsaved moment is given again (gaps are allowed).
CRASH_GAP = 100_000
APP_FOLDER = "classchat"
MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- given by the room; never reused
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    ts REAL NOT NULL,
    me INTEGER,
    cid TEXT,
    recipient TEXT  -- NULL for the room; a name for a private line
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

Stored = Message | PrivateMessage

#: A batch goes into SQLite as a few multi-row ``INSERT``s of up to this many
#: rows (7 parameters each: 896, under the 999 of the oldest SQLite), each
#: one step of SQLite's with the GIL let go.  ``executemany`` steps once per
#: row, and lets go of the GIL and takes it back each time: under a busy room
#: that cost more than the insert itself.  Measured on a batch of 650 rows
#: (``--db :memory:``): 4.7 us a row this way, 7.8 with ``executemany``, 8.5
#: through one ``json_each`` over the batch as a JSON array.
ROWS_PER_INSERT = 128


@functools.cache
def _insert(rows: int) -> str:
    """The ``INSERT`` of ``rows`` rows.  Batches are cut into power-of-two
    chunks (``_chunks``), so there are only 8 of these, each prepared once."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT OR IGNORE INTO messages "
        f"(id, sender, text, ts, me, cid, recipient) VALUES {values}"
    )


def _chunks(rows: list[tuple]) -> Iterator[list[tuple]]:
    """``rows`` in runs of ``ROWS_PER_INSERT``, then 64, 32 ... 1 as needed."""
    start, size = 0, ROWS_PER_INSERT
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        yield rows[start : start + size]
        start += size


# Before /clear deletes the messages: the highest id it deletes, so that a
# client reconnecting after a restart is told some lines are gone.
_FORGET = (
    "INSERT INTO meta (key, value) "
    "SELECT 'forgotten', CAST(top AS TEXT) "
    "FROM (SELECT max(id) AS top FROM messages) WHERE top IS NOT NULL "
    "ON CONFLICT (key) DO UPDATE SET value = "
    "max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))"
)
# The highest id given to a line that is not stored (ids only increase).
_GIVEN = (
    "INSERT INTO meta (key, value) VALUES ('last_id', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = "
    "max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))"
)


class StoreError(Exception):
    """The database cannot be used: the message says what, where, what to do."""


def default_path() -> Path:
    """This user's history file, in the platform's usual data folder."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / APP_FOLDER / "history.db"


@dataclass
class _Clear:
    """A request, on the writer's queue, to delete every stored message."""

    done: threading.Event


@dataclass
class _Given:
    """An id given to a line that is not stored (a private one): recorded so
    that it is never given again after a restart."""

    id: int


class Store:
    """One history database.  See the module docstring.

    Life cycle: ``Store.open(path)`` (checks, may raise ``StoreError``),
    ``load()``, ``start()`` the writer thread (``history writer``, a daemon),
    ``add()`` from any thread, ``stop()`` to write what is left and close.
    ``add`` and ``given`` never block; ``clear`` waits for the writer thread.
    """

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        # The connection is used by the thread that opened it until start(),
        # then by the writer thread alone (check_same_thread=False), and by
        # stop() once that thread has ended.
        self._db = connection
        self.path = path
        self._queue: queue.SimpleQueue[Stored | _Given | _Clear | None] = (
            queue.SimpleQueue()
        )
        self._failed = False  # the disk refused a write: carry on in memory
        self._stopping = threading.Event()  # stop(): write now, do not gather
        #: The last server on this file stopped without saving (kill -9).
        self.crashed = False
        self._thread = threading.Thread(
            target=self._run, name="history writer", daemon=True
        )

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open (or create) the database at ``path`` and check it can be used.

        Takes the file's exclusive lock.  Raises ``StoreError`` (a sentence
        for the operator) if the file cannot be used.
        """
        where = str(path)
        if where != MEMORY:
            _check_writable(Path(where))
        try:
            db = sqlite3.connect(
                where, timeout=0.5, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise StoreError(_explain(exc, where)) from None
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            # Before anything is written to it: a database of another program
            # is refused as it is, not half turned into ours.
            if not _ours_or_new(db):
                db.close()
                raise StoreError(
                    f"The history database {where} belongs to another program "
                    "(its tables are not a chat history). Choose another file "
                    "with --db PATH."
                )
            if where != MEMORY:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # safe from a kill -9
            if db.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed")
            db.executescript(_SCHEMA)
            db.execute("BEGIN IMMEDIATE")  # take the lock for as long as we run
            row = db.execute("SELECT value FROM meta WHERE key = 'clean'").fetchone()
            # "0" until a stop() that wrote everything says "1".
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('clean', '0')")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(_explain(exc, where)) from None
        store = cls(db, where)
        store.crashed = row is not None and row[0] == "0"
        return store

    def load(self, count: int) -> tuple[int, list[Stored]]:
        """The highest id ever given, and the last ``count`` messages, oldest
        first.  Call before ``start``."""
        row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'messages'"
        ).fetchone()
        last_id = row[0] if row else 0
        given = self._meta("last_id")
        if given is not None:
            last_id = max(last_id, int(given))
        if self.crashed:
            last_id += CRASH_GAP
            # Kept at once: a clean stop before any new id must not lose it.
            self._db.execute(_GIVEN, (str(last_id),))
            log.warning(
                "The last server on %s stopped without saving its last moments "
                "(killed?): message ids go on from %d, so that none is given twice.",
                self.path,
                last_id + 1,
            )
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM messages ORDER BY id DESC LIMIT ?", (count,)
        ).fetchall()
        return last_id, [_stored(row) for row in reversed(rows)]

    def with_cids(self, since: float, count: int) -> list[Stored]:
        """The last ``count`` messages with a ``cid`` said at ``since`` (a
        time) or later, oldest first: so a resend is known across a restart,
        however many lines came after it.  Call before ``start``."""
        found: list[Stored] = []
        cursor = self._db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE cid IS NOT NULL ORDER BY id DESC"
        )
        try:
            for row in cursor:  # newest first: stop at the first too old
                if row[3] < since or len(found) >= count:
                    break
                found.append(_stored(row))
        finally:
            cursor.close()
        return found[::-1]

    def forgotten(self) -> int:
        """The highest id ``/clear`` deleted (0: never cleared)."""
        return int(self._meta("forgotten") or 0)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,))
        found = row.fetchone()
        return found[0] if found else None

    def room_token(self) -> str:
        """This history's name, made once and kept: clients count ids in it."""
        token = self._meta("room")
        if token is not None:
            return token
        token = secrets.token_hex(8)
        self._db.execute("INSERT INTO meta (key, value) VALUES ('room', ?)", (token,))
        return token

    def count(self) -> int:
        """How many messages are stored (call before ``start``)."""
        return self._db.execute("SELECT count(*) FROM messages").fetchone()[0]

    # -- running: start and stop are the owner's; the rest any thread's ----

    def start(self) -> None:
        """Start the writer thread, once, after ``load``."""
        self._thread.start()

    def add(self, message: Stored) -> None:
        """Queue a message to be written.  Never blocks."""
        self._queue.put(message)

    def given(self, id_: int) -> None:
        """Record an id given to a line that is not stored.  Never blocks."""
        self._queue.put(_Given(id_))

    def clear(self, timeout: float = 2.0) -> bool:
        """Delete every stored message (ids are not reused).

        Blocks until the writer thread has done it, at most ``timeout``
        seconds: True if it was done.  Never call it with the room's lock held.
        """
        done = threading.Event()
        self._queue.put(_Clear(done))
        return done.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued, commit, close; join the writer thread.

        The owner's thread, after the last ``add``.  Blocks for at most
        ``timeout`` seconds; if the thread has not ended by then, the
        database is left open (and not marked as cleanly stopped).
        """
        if self._thread.is_alive():
            self._stopping.set()
            self._queue.put(None)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            if not self._failed:  # everything was written: the next start can trust it
                try:
                    self._db.execute("UPDATE meta SET value = '1' WHERE key = 'clean'")
                except sqlite3.Error:
                    pass
            self._db.close()

    # -- the writer thread ------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]  # sleep until there is something
            if batch[0] is not None:
                # Let the batch gather: one wake-up per commit, not one per
                # message (each wake-up takes the GIL from the room).
                self._stopping.wait(COMMIT_INTERVAL / 2)
            deadline = time.monotonic() + COMMIT_INTERVAL / 2
            while batch[-1] is not None and time.monotonic() < deadline:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is None
            self._write([item for item in batch if item is not None])
            if stop:
                return

    def _write(self, batch: list[Stored | _Given | _Clear]) -> None:
        rows = []
        for item in batch:
            if isinstance(item, _Given):
                rows.append(item)
            elif isinstance(item, _Clear):
                self._commit(rows)
                rows = []
                self._execute([(_FORGET, [()]), ("DELETE FROM messages", [()])])
                item.done.set()
            elif isinstance(item, Message):
                rows.append(
                    (item.id, item.sender, item.text, item.ts, item.me, item.cid, None)
                )
            else:
                rows.append(
                    (item.id, item.sender, item.text, item.ts, None, item.cid, item.to)
                )
        self._commit(rows)

    def _commit(self, rows: list[tuple | _Given]) -> None:
        if not rows or self._failed:
            return
        given = [row.id for row in rows if isinstance(row, _Given)]
        stored = [row for row in rows if not isinstance(row, _Given)]
        steps = [
            (_insert(len(chunk)), [tuple(itertools.chain.from_iterable(chunk))])
            for chunk in _chunks(stored)
        ]
        if given:
            steps.append((_GIVEN, [(str(max(given)),)]))
        self._execute(steps)

    def _execute(self, steps: list[tuple[str, list[tuple]]]) -> None:
        """Run each (statement, rows) in one transaction."""
        try:
            self._db.execute("BEGIN")
            for sql, rows in steps:
                self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if not self._failed:  # say it once, then carry on in memory
                self._failed = True
                log.error(
                    "The history can no longer be saved to %s (%s). The room "
                    "carries on; new messages are kept in memory only.",
                    self.path,
                    exc,
                )


def _check_writable(path: Path) -> None:
    """Make the folder and check the file can be written, before SQLite does:
    it opens a read-only file read-only and then fails with "disk I/O error"."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"The history database {path} cannot be created: its folder "
            f"{path.parent} cannot be made ({exc.strerror or exc}). "
            "Choose another file with --db PATH."
        ) from None
    if path.is_file():
        try:
            os.close(os.open(path, os.O_RDWR))
        except OSError as exc:
            raise StoreError(
                f"The history database {path} cannot be written "
                f"({exc.strerror or exc}). Fix its permissions, or choose "
                "another file with --db PATH."
            ) from None


_COLUMNS = "id, sender, text, ts, me, cid, recipient"


def _stored(row: tuple) -> Stored:
    id_, sender, text, ts, me, cid, recipient = row
    if recipient is None:
        return Message(id_, sender, text, ts, bool(me) or None, cid)
    return PrivateMessage(sender, recipient, text, ts, cid, id_)


def _ours_or_new(db: sqlite3.Connection) -> bool:
    """Is this database empty, or a chat history (ours)?"""
    tables = {
        name
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if not tables:
        return True
    if "messages" not in tables or "sqlite_sequence" not in tables:
        return False  # (AUTOINCREMENT makes sqlite_sequence: ids are never reused)
    columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
    return columns == _COLUMNS.split(", ")


def _explain(exc: sqlite3.Error, where: str) -> str:
    """A sentence for the operator: what is wrong with the file, what to do."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return (
            f"The history database {where} is in use by another program "
            "(another chat server?). Stop it, or give this server its own "
            "file with --db PATH (or --db :memory: to keep nothing)."
        )
    # A file SQLite could only open read-only fails when it is locked.
    cannot_lock = getattr(exc, "sqlite_errorname", "") == "SQLITE_IOERR_LOCK"
    if cannot_lock or "readonly" in text or "read-only" in text or "permission" in text:
        return (
            f"The history database {where} cannot be written (read-only, "
            "not yours, or on a disk that cannot lock files). Fix its "
            "permissions, or choose another file with --db PATH."
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"The history database {where} is damaged (not a readable SQLite "
            "file). Move it away (or delete it) to start a new history, or "
            "choose another file with --db PATH."
        )
    if "unable to open" in text:
        return (
            f"The history database {where} cannot be opened or created (is "
            "the folder there, and writable?). Choose another file with --db PATH."
        )
    return f"The history database {where} cannot be used: {exc}."
