"""Tests of ``chat.store``: the room's history in an SQLite file.

Every test uses its own file under ``tmp_path``.  While a store runs, it holds
its file under an exclusive lock, so nobody else can read it; to see what is
really on disk at a given moment, ``on_disk`` copies the file and its WAL (as
a ``kill -9`` would leave them) and opens the copy.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from chat import store as store_module
from chat.protocol import Message, PrivateMessage
from chat.store import (
    COMMIT_INTERVAL,
    MEMORY,
    ROWS_PER_INSERT,
    Store,
    StoreError,
    _chunks,
)
from tests.helpers import wait_for

_connect = sqlite3.connect  # the real one, whatever a test patches


def said(id_: int, text: str = "", **fields) -> Message:
    fields.setdefault("sender", "ada")
    return Message(id_, text=text or f"line {id_}", ts=1_700_000_000.0 + id_, **fields)


def opened(path: Path) -> Store:
    """A store on ``path``, loaded and writing, as the server starts it."""
    store = Store.open(path)
    store.load(500)
    store.start()
    return store


def reopened(path: Path, count: int = 500) -> tuple[int, list]:
    """What a restarted server would load from ``path``."""
    store = Store.open(path)
    try:
        return store.load(count)
    finally:
        store.stop()


def on_disk(path: Path, copies: Path) -> list[tuple] | None:
    """The rows a ``kill -9`` at this moment would leave in ``path``, or
    ``None`` if the copy caught a write half done."""
    copies.mkdir(exist_ok=True)
    copy = copies / "snapshot.db"
    for old in copies.iterdir():
        old.unlink()
    shutil.copyfile(path, copy)
    wal = Path(f"{path}-wal")
    if wal.exists():
        shutil.copyfile(wal, Path(f"{copy}-wal"))
    try:
        db = _connect(copy)
        try:
            return db.execute(
                "SELECT id, sender, text, recipient FROM messages ORDER BY id"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None


# -- what goes in comes out ---------------------------------------------------


def test_messages_and_private_lines_come_back_as_they_went_in(tmp_path):
    path = tmp_path / "h.db"
    lines = [
        said(1, "hello, café ☕ 👋 \"quoted\" 'single'", cid="c-1"),
        said(2, "waves", sender="bob", me=True),
        PrivateMessage("ada", "Bob", "psst, only you", 1_700_000_003.5, "c-3", 3),
        said(4, "no cid, no me"),
        PrivateMessage("bob", "ada", "back at you", 1_700_000_005.0, None, 5),
    ]
    store = opened(path)
    for line in lines:
        store.add(line)
    store.stop()
    assert reopened(path) == (5, lines)


def test_load_gives_the_last_lines_oldest_first(tmp_path):
    path = tmp_path / "h.db"
    store = opened(path)
    for id_ in range(1, 11):
        store.add(said(id_))
    store.stop()
    last_id, lines = reopened(path, count=3)
    assert last_id == 10
    assert [line.id for line in lines] == [8, 9, 10]


def test_a_new_file_starts_empty(tmp_path):
    assert reopened(tmp_path / "deep" / "er" / "h.db") == (0, [])


def test_memory_keeps_nothing_and_needs_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = opened(MEMORY)
    store.add(said(1))
    store.stop()
    assert reopened(MEMORY) == (0, [])
    assert list(tmp_path.iterdir()) == []


def test_ids_continue_after_a_reopen(tmp_path):
    path = tmp_path / "h.db"
    store = opened(path)
    for id_ in (1, 2, 3):
        store.add(said(id_))
    store.stop()
    store = Store.open(path)
    last_id, _ = store.load(500)
    store.start()
    store.add(said(last_id + 1))
    store.stop()
    last_id, lines = reopened(path)
    assert last_id == 4
    assert [line.id for line in lines] == [1, 2, 3, 4]


def test_a_cleared_history_keeps_its_ids(tmp_path):
    path = tmp_path / "h.db"
    store = opened(path)
    for id_ in (1, 2, 3):
        store.add(said(id_))
    assert store.clear()
    store.stop()
    assert reopened(path) == (3, [])  # AUTOINCREMENT remembers 3


def test_clear_deletes_only_what_came_before_it(tmp_path):
    path = tmp_path / "h.db"
    store = opened(path)
    store.add(said(1))
    store.add(said(2))
    assert store.clear()
    store.add(said(3))
    store.stop()
    assert reopened(path) == (3, [said(3)])


def test_clear_remembers_the_highest_id_it_deleted(tmp_path):
    """So a client that reconnects after a restart is told lines are gone."""
    path = tmp_path / "h.db"
    store = opened(path)
    assert store.clear()  # nothing to delete: nothing remembered, no failure
    store.stop()
    store = Store.open(path)
    assert store.forgotten() == 0
    store.load(10)
    store.start()
    for id_ in (1, 2, 3):
        store.add(said(id_))
    assert store.clear()
    store.add(said(4))
    assert store.clear()
    store.stop()
    again = Store.open(path)
    try:
        assert again.forgotten() == 4
        assert again.load(10) == (4, [])
    finally:
        again.stop()


def test_the_room_token_is_kept_with_the_file(tmp_path):
    first = Store.open(tmp_path / "a.db")
    token = first.room_token()
    assert token == first.room_token()
    first.stop()
    again = Store.open(tmp_path / "a.db")
    other = Store.open(tmp_path / "b.db")
    try:
        assert again.room_token() == token
        assert other.room_token() != token
    finally:
        again.stop()
        other.stop()


def test_each_memory_store_is_a_new_room():
    first, second = Store.open(MEMORY), Store.open(MEMORY)
    try:
        assert first.room_token() != second.room_token()
    finally:
        first.stop()
        second.stop()


# -- the writer thread: on disk soon, and everything by stop() ----------------


def test_a_line_is_on_disk_within_the_commit_interval(tmp_path):
    path = tmp_path / "h.db"
    store = opened(path)
    try:
        store.add(said(1, "kept"))
        started = time.monotonic()
        rows = wait_for(lambda: on_disk(path, tmp_path / "copy"), what="the row")
        took = time.monotonic() - started
        assert rows == [(1, "ada", "kept", None)]
        # The contract is COMMIT_INTERVAL; ten times that leaves room for a
        # loaded machine, and still fails a writer that waits for stop().
        assert took < 10 * COMMIT_INTERVAL
    finally:
        store.stop()


class EndlessTalk:
    """The writer's queue in a room that never pauses: there is always one
    more line, however long the writer waits.  ``None`` (from ``stop``)
    ends it."""

    def __init__(self) -> None:
        self.given = 0
        self.stopping = threading.Event()

    def put(self, item) -> None:
        if item is None:
            self.stopping.set()

    def get(self, timeout: float | None = None):
        if self.stopping.wait(0.001):  # a line every millisecond
            return None
        self.given += 1
        return said(self.given)

    def get_nowait(self):
        return self.get()


def test_a_conversation_without_pauses_is_committed_while_it_goes_on(tmp_path):
    """The writer must not wait for a quiet moment to commit."""
    path = tmp_path / "h.db"
    store = Store.open(path)
    store.load(500)
    talk = EndlessTalk()
    store._queue = talk  # type: ignore[assignment]
    store.start()
    try:
        rows = wait_for(lambda: on_disk(path, tmp_path / "copy"), what="rows")
        assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
        assert not talk.stopping.is_set()
    finally:
        store.stop()


def test_stop_writes_everything_queued_joins_the_writer_and_closes(tmp_path):
    path = tmp_path / "h.db"
    store = opened(path)
    writer = [t for t in threading.enumerate() if t.name == "history writer"]
    assert len(writer) == 1 and writer[0].daemon
    for id_ in range(1, 201):
        store.add(said(id_))
    store.stop()
    assert not writer[0].is_alive()
    with pytest.raises(sqlite3.ProgrammingError):
        store.count()  # the connection is closed
    last_id, lines = reopened(path)  # and the file is free again
    assert (last_id, len(lines)) == (200, 200)


def test_stop_without_start_closes_the_file(tmp_path):
    store = Store.open(tmp_path / "h.db")
    store.stop()
    reopened(tmp_path / "h.db")  # not locked any more


# -- files that cannot be used: one sentence each ----------------------------


def test_a_second_store_on_the_same_file_is_told_it_is_in_use(tmp_path):
    path = tmp_path / "h.db"
    first = opened(path)
    try:
        with pytest.raises(StoreError) as refused:
            Store.open(path)
        assert "in use by another program" in str(refused.value)
        assert str(path) in str(refused.value)
        first.add(said(1))  # the first one is not disturbed
    finally:
        first.stop()
    assert reopened(path) == (1, [said(1)])


@pytest.mark.parametrize(
    "content",
    [b"this is not a database\n" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "bad header"],
)
def test_a_file_that_is_not_a_database_is_called_damaged(tmp_path, content):
    path = tmp_path / "h.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as refused:
        Store.open(path)
    assert "is damaged" in str(refused.value)
    assert path.read_bytes() == content  # left as it was, for its owner


def test_a_database_damaged_inside_is_called_damaged(tmp_path):
    path = tmp_path / "h.db"
    store = opened(path)
    for id_ in range(1, 500):
        store.add(said(id_, "x" * 200))
    store.stop()
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 4] = b"\xa5" * 8192  # scribble over two pages
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as refused:
        Store.open(path)
    assert "is damaged" in str(refused.value)


@pytest.fixture
def read_only(monkeypatch):
    """Call it, and from then on SQLite opens every file read-only, as it
    does a file that is not ours.

    The tests run as root, which ignores file permissions; ``mode=ro`` makes
    SQLite itself refuse to write, which is the real error path.
    """

    def connect(where, *args, **kwargs):
        return _connect(f"file:{where}?mode=ro", *args, uri=True, **kwargs)

    return lambda: monkeypatch.setattr(store_module.sqlite3, "connect", connect)


def test_a_read_only_new_file_cannot_be_written(tmp_path, read_only):
    path = tmp_path / "h.db"
    path.touch()
    read_only()
    with pytest.raises(StoreError) as refused:
        Store.open(path)
    assert "cannot be written" in str(refused.value)


def test_a_read_only_history_cannot_be_written(tmp_path, read_only):
    path = tmp_path / "h.db"
    store = opened(path)
    store.add(said(1))
    store.stop()
    read_only()
    with pytest.raises(StoreError) as refused:
        Store.open(path)
    assert "cannot be written" in str(refused.value)


def test_a_folder_in_place_of_the_file_cannot_be_opened(tmp_path):
    path = tmp_path / "h.db"
    path.mkdir()
    with pytest.raises(StoreError) as refused:
        Store.open(path)
    assert "cannot be opened or created" in str(refused.value)


def test_a_file_in_place_of_the_folder_is_a_store_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(StoreError) as refused:
        Store.open(tmp_path / "notes.txt" / "h.db")
    assert "notes.txt" in str(refused.value)


# -- a disk that fills up while the room runs --------------------------------


def test_a_full_disk_is_logged_once_and_the_room_carries_on(tmp_path, caplog):
    path = tmp_path / "h.db"
    store = Store.open(path)
    store.load(500)
    # The database may not grow by a single page: a short line still fits in
    # the page it has, a long one makes SQLite say "database or disk is full".
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    store.start()
    caplog.set_level(logging.ERROR, logger="chat.store")
    try:
        store.add(said(1, "short"))
        wait_for(lambda: on_disk(path, tmp_path / "copy"), what="the short line")
        store.add(said(2, "long " * 5000))
        wait_for(lambda: caplog.records, what="the error to be logged")
        for id_ in range(3, 30):
            store.add(said(id_, "more " * 2000))  # neither raises nor logs
            store.add(said(id_ + 100, "tiny"))
    finally:
        store.stop()  # writes (or fails to write) everything queued first
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert str(path) in record.getMessage()
    assert "full" in record.getMessage()
    assert "memory only" in record.getMessage()
    assert reopened(path)[1] == [said(1, "short")]  # what was written stays


# -- after a crash --------------------------------------------------------------


def crashed_after_line_1(tmp_path: Path) -> Path:
    """What a kill -9 leaves once line 1 is on disk (and line 2 is not yet)."""
    path = tmp_path / "h.db"
    store = opened(path)
    try:
        store.add(said(1))
        wait_for(lambda: on_disk(path, tmp_path / "copy"), what="line 1 on disk")
    finally:
        store.stop()
    return tmp_path / "copy" / "snapshot.db"


def test_ids_given_just_before_a_crash_are_never_given_again(tmp_path):
    """A kill -9 can lose the last tenth of a second: the ids of those lines
    may have reached clients, so the next start skips far ahead."""
    crash = crashed_after_line_1(tmp_path)
    again = Store.open(crash)
    try:
        assert again.crashed
        last_id, lines = again.load(10)
        assert [line.id for line in lines] == [1]
        assert last_id >= 1 + store_module.CRASH_GAP
    finally:
        again.stop()


def test_a_clean_stop_lets_the_next_start_go_on_from_the_last_id(tmp_path):
    path = tmp_path / "h.db"
    store = opened(path)
    store.add(said(1))
    store.add(said(2))
    store.stop()
    again = Store.open(path)
    try:
        assert not again.crashed
        assert again.load(10)[0] == 2
    finally:
        again.stop()
    assert reopened(path)[0] == 2  # a start that gave nothing stopped cleanly too


def test_every_field_comes_back_as_written(tmp_path):
    """Awkward text, floats, flags, cids and private lines all come back."""
    path = tmp_path / "h.db"
    store = Store.open(path)
    store.load(500)
    lines = [
        said(1, 'quotes " and \\ backslash', cid="c-1"),
        said(2, "emoji 👋 and 世界, a tab\there", me=True),
        said(3, "new\nline and \x1b[31m escape"),
        Message(4, "bob", "ts with many digits", 1_795_365_677.6270328),
        PrivateMessage("ada", "bob", "a private line ✉", 1_700_000_005.5, "p-1", 5),
    ]
    store.start()
    for line in lines:
        store.add(line)
    store.stop()
    db = _connect(path)
    try:
        rows = db.execute(
            "SELECT id, sender, text, ts, me, cid, recipient FROM messages ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    expected = [
        (1, "ada", 'quotes " and \\ backslash', 1_700_000_001.0, None, "c-1", None),
        (2, "ada", "emoji 👋 and 世界, a tab\there", 1_700_000_002.0, 1, None, None),
        (3, "ada", "new\nline and \x1b[31m escape", 1_700_000_003.0, None, None, None),
        (4, "bob", "ts with many digits", 1_795_365_677.6270328, None, None, None),
        (5, "ada", "a private line ✉", 1_700_000_005.5, None, "p-1", "bob"),
    ]
    assert rows == expected


@pytest.mark.parametrize("count", [1, 2, 127, 128, 129, 300, 1000])
def test_a_batch_of_any_size_is_stored_whole_and_in_order(tmp_path, count):
    """A batch goes in as a few multi-row INSERTs (128, 64 ... 1 rows each)."""
    path = tmp_path / "h.db"
    store = Store.open(path)
    store.load(500)
    store._write([said(n, f"line {n}") for n in range(1, count + 1)])
    store.stop()
    db = _connect(path)
    try:
        rows = db.execute("SELECT id, text FROM messages ORDER BY id").fetchall()
    finally:
        db.close()
    assert rows == [(n, f"line {n}") for n in range(1, count + 1)]


def test_batches_are_cut_into_few_statement_shapes():
    shapes = set()
    for count in range(600):
        rows = [(n,) for n in range(count)]
        chunks = list(_chunks(rows))
        assert [row for chunk in chunks for row in chunk] == rows
        sizes = [len(chunk) for chunk in chunks]
        assert all(size & (size - 1) == 0 for size in sizes)  # powers of two
        assert sizes == sorted(sizes, reverse=True)
        assert len(sizes) <= count // ROWS_PER_INSERT + 7
        shapes.update(sizes)
    assert shapes == {1, 2, 4, 8, 16, 32, 64, 128}


def test_the_jump_after_a_crash_survives_a_clean_stop_that_gave_no_id(tmp_path):
    """A start after a crash that says nothing and stops cleanly must not take
    the jump back: the ids lost in the crash may have reached clients."""
    crash = crashed_after_line_1(tmp_path)
    after_crash = reopened(crash)[0]  # then a clean stop, no id given
    assert after_crash >= 1 + store_module.CRASH_GAP
    assert reopened(crash)[0] == after_crash


def test_a_database_of_another_program_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
        db.execute("INSERT INTO messages (body) VALUES ('theirs')")
        db.commit()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="belongs to another program"):
        Store.open(path)
    assert path.read_bytes() == before  # not turned into WAL, no table added


def test_the_cids_of_a_window_come_back_oldest_first(tmp_path):
    path = tmp_path / "h.db"
    store = opened(path)
    for id_, ts, cid in [(1, 100.0, "old"), (2, 200.0, "a"), (3, 210.0, None)]:
        store.add(Message(id_, "ada", f"line {id_}", ts, None, cid))
    store.add(Message(4, "ada", "line 4", 220.0, None, "b"))
    store.stop()
    store = Store.open(path)
    try:
        assert [m.cid for m in store.with_cids(150.0, 10)] == ["a", "b"]
        assert [m.cid for m in store.with_cids(150.0, 1)] == ["b"]
    finally:
        store.stop()
