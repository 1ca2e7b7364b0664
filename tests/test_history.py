"""Tests of ``chat.history``: what the room remembers, replays and recognises.

``History`` is driven directly, with a fake clock for the cid window.  A
``RecordingStore`` stands in for the database where only what is handed to
it matters; the real ``Store`` on a ``tmp_path`` file is used where a
restart is the point.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chat import history as history_module
from chat.history import CID_WINDOW, SINCE_CAP, History
from chat.protocol import Message, PrivateMessage
from chat.store import Store

T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingStore:
    """What ``History`` needs of a ``Store``, keeping what it is given."""

    def __init__(
        self,
        last_id: int = 0,
        lines: tuple = (),
        token: str = "r00m",
        forgotten: int = 0,
    ) -> None:
        self.added: list = []
        self.given_ids: list[int] = []
        self._loaded = (last_id, list(lines))
        self._token = token
        self._forgotten = forgotten

    def room_token(self) -> str:
        return self._token

    def forgotten(self) -> int:
        return self._forgotten

    def load(self, count: int) -> tuple[int, list]:
        last_id, lines = self._loaded
        return last_id, lines[-count:]

    def with_cids(self, since: float, count: int) -> list:
        lines = [line for line in self._loaded[1] if line.cid and line.ts >= since]
        return lines[-count:]

    def add(self, line) -> None:
        self.added.append(line)

    def given(self, id_: int) -> None:
        self.given_ids.append(id_)


def said(id_: int, sender: str = "ada", *, cid: str | None = None, ts: float = T0):
    return Message(id_, sender, f"line {id_}", ts, None, cid)


def whispered(id_: int, sender: str, to: str, *, cid: str | None = None, ts=T0):
    return PrivateMessage(sender, to, f"private {id_}", ts, cid, id_)


def filled(history: History, *lines) -> History:
    for line in lines:
        history.add(line)
    return history


def ids(lines) -> list[int]:
    return [line.id for line in lines]


# -- recent: what a newcomer without "since" sees -----------------------------


def test_recent_is_the_last_lines_said_to_the_room_oldest_first():
    history = filled(
        History(size=3, keep_private=True),
        said(1),
        said(2),
        whispered(3, "ada", "bob"),
        said(4),
        whispered(5, "bob", "ada"),
        said(6),
    )
    assert ids(history.recent()) == [2, 4, 6]
    assert all(isinstance(line, Message) for line in history.recent())


def test_recent_with_fewer_lines_than_its_size():
    assert History(size=5).recent() == ()
    assert ids(filled(History(size=5), said(1), said(2)).recent()) == [1, 2]


def test_size_zero_replays_nothing():
    assert filled(History(size=0), said(1)).recent() == ()


# -- since: exactly what was missed -------------------------------------------

CONVERSATION = (
    said(1, "ada"),
    whispered(2, "ada", "bob"),
    said(3, "bob"),
    whispered(4, "carol", "dan"),
    whispered(5, "Bob", "ADA"),  # names are matched as the room matches them
    said(6, "carol"),
)


@pytest.mark.parametrize(
    ("last_seen", "name", "expected"),
    [
        (0, "ada", [1, 2, 3, 5, 6]),
        (0, "bob", [1, 2, 3, 5, 6]),
        (0, "carol", [1, 3, 4, 6]),
        (0, "DAN", [1, 3, 4, 6]),
        (0, "eve", [1, 3, 6]),
        (1, "ada", [2, 3, 5, 6]),
        (3, "Ada", [5, 6]),
        (4, "eve", [6]),
        (5, "ada", [6]),
        (6, "ada", []),
        (99, "ada", []),
    ],
)
def test_since_gives_the_room_s_lines_and_one_s_own_private_ones(
    last_seen, name, expected
):
    history = filled(History(keep_private=True), *CONVERSATION)
    lines, left_out, gone = history.since(last_seen, name)
    assert ids(lines) == expected
    assert (left_out, gone) == (0, False)


def test_since_leaves_out_the_oldest_beyond_the_cap():
    history = filled(History(size=10, cap=3), *(said(i) for i in range(1, 8)))
    assert history.since(0, "ada") == ((said(5), said(6), said(7)), 4, False)
    assert history.since(4, "ada") == ((said(5), said(6), said(7)), 0, False)
    assert history.since(5, "ada") == ((said(6), said(7)), 0, False)


@pytest.mark.parametrize(
    ("last_seen", "expected", "gone"),
    [
        (0, [3, 4, 5], True),
        (1, [3, 4, 5], True),
        (2, [3, 4, 5], False),
        (4, [5], False),
    ],
)
def test_since_says_when_memory_no_longer_reaches_back(last_seen, expected, gone):
    history = filled(History(size=3, cap=3), *(said(i) for i in range(1, 6)))
    lines, left_out, was_gone = history.since(last_seen, "ada")
    assert (ids(lines), left_out, was_gone) == (expected, 0, gone)


def test_ids_taken_by_private_lines_never_kept_are_not_a_loss():
    """Private lines take ids but are not kept: a gap in the ids is no loss."""
    history = History(size=3, cap=3)
    filled(history, said(1), whispered(2, "ada", "bob"), said(3), said(4))
    filled(history, said(5))  # 1 falls out of memory; 2 was never in it
    assert history.since(1, "carol") == ((said(3), said(4), said(5)), 0, False)
    assert history.since(0, "carol")[2] is True  # 1 is gone


def test_a_full_window_loaded_at_start_may_have_older_lines_behind_it():
    stored = tuple(said(i) for i in range(11, 14))
    history = History(size=3, cap=3, store=RecordingStore(13, stored))
    assert history.since(9, "ada") == (stored, 0, True)  # 10 may be in the file
    assert history.since(10, "ada") == (stored, 0, False)


def test_a_window_loaded_whole_has_nothing_behind_it():
    stored = (said(11), said(12))
    history = History(size=3, cap=3, store=RecordingStore(12, stored))
    assert history.since(0, "ada") == (stored, 0, False)


def test_lines_cleared_before_a_restart_are_still_reported_gone():
    store = RecordingStore(9, (said(8), said(9)), forgotten=7)
    history = History(store=store)
    assert history.since(5, "ada") == ((said(8), said(9)), 0, True)
    assert history.since(7, "ada") == ((said(8), said(9)), 0, False)


def test_an_empty_history_has_nothing_gone():
    assert History().since(0, "ada") == ((), 0, False)


def test_memory_reaches_back_the_cap_whatever_the_size():
    history = filled(History(size=2), *(said(i) for i in range(1, SINCE_CAP + 11)))
    lines, left_out, gone = history.since(0, "ada")
    assert ids(lines) == list(range(11, SINCE_CAP + 11))
    assert (left_out, gone) == (0, True)
    assert ids(history.recent()) == [SINCE_CAP + 9, SINCE_CAP + 10]


# -- private lines: kept or not -------------------------------------------------


def test_private_lines_are_not_kept_by_default_but_their_cid_is():
    store = RecordingStore()
    history = History(store=store, clock=Clock())
    private = whispered(history.next_id(), "ada", "bob", cid="p-1")
    public = said(history.next_id(), cid="s-1")
    filled(history, private, public)
    assert history.since(0, "ada") == ((public,), 0, False)
    assert history.since(0, "bob") == ((public,), 0, False)
    assert store.added == [public]
    assert store.given_ids == [private.id]  # its id is still recorded
    assert history.repeat("ada", "p-1") == private  # a resend is still caught


def test_kept_private_lines_are_stored_and_replayed_to_the_two_only():
    store = RecordingStore()
    history = History(store=store, keep_private=True)
    private = whispered(1, "ada", "bob", cid="p-1")
    history.add(private)
    assert store.added == [private]
    assert history.since(0, "ada")[0] == (private,)
    assert history.since(0, "BOB")[0] == (private,)
    assert history.since(0, "carol")[0] == ()
    assert history.recent() == ()


# -- repeat: a line sent again is recognised ------------------------------------


def test_repeat_finds_a_cid_from_the_same_name_within_the_window():
    clock = Clock()
    history = History(clock=clock)
    first = said(1, "Ada", cid="c-1", ts=clock.now)
    history.add(first)
    assert history.repeat("ada", "c-1") == first
    assert history.repeat("ADA", "c-1") == first
    assert history.repeat("bob", "c-1") is None  # another person's cid
    assert history.repeat("ada", "c-2") is None
    assert history.repeat("ada", None) is None
    assert history.repeat("ada", "") is None
    clock.now += CID_WINDOW
    assert history.repeat("ada", "c-1") == first  # the window's last moment
    clock.now += 0.01
    assert history.repeat("ada", "c-1") is None
    clock.now -= 1.0
    assert history.repeat("ada", "c-1") is None  # forgotten, not hidden


def test_lines_without_a_cid_are_never_a_repeat():
    history = filled(History(), said(1), said(2))
    assert history.repeat("ada", None) is None


def test_the_window_forgets_old_cids_and_keeps_young_ones():
    clock = Clock()
    history = History(clock=clock)
    history.add(said(1, cid="old", ts=clock.now))
    clock.now += CID_WINDOW / 2
    history.add(said(2, cid="young", ts=clock.now))
    clock.now += CID_WINDOW / 2 + 1
    assert history.repeat("ada", "old") is None
    assert history.repeat("ada", "young") == said(2, cid="young", ts=T0 + 300)


def test_the_cids_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(history_module, "MAX_CIDS", 3)
    history = History(clock=Clock())
    filled(history, *(said(i, cid=f"c-{i}") for i in range(1, 5)))
    assert history.repeat("ada", "c-1") is None  # the oldest made room
    assert [history.repeat("ada", f"c-{i}").id for i in (2, 3, 4)] == [2, 3, 4]


def test_clear_forgets_lines_and_cids_but_not_the_ids():
    history = History(clock=Clock())
    filled(history, said(history.next_id(), cid="c-1"), said(history.next_id()))
    assert history.repeat("ada", "c-1") is not None
    history.clear()
    assert history.recent() == ()
    assert history.since(0, "ada") == ((), 0, True)  # they are gone: say so
    assert history.since(2, "ada") == ((), 0, False)  # nothing missed
    assert history.repeat("ada", "c-1") is None
    assert history.next_id() == 3


# -- ids and the room's name ------------------------------------------------------


def test_ids_start_at_one_and_only_go_up():
    history = History()
    assert [history.next_id() for _ in range(3)] == [1, 2, 3]


def test_ids_continue_from_the_store():
    history = History(store=RecordingStore(last_id=41))
    assert history.next_id() == 42


def test_each_history_without_a_store_is_a_new_room():
    assert History().token != History().token


def test_the_room_is_named_by_its_store():
    assert History(store=RecordingStore(token="abc123")).token == "abc123"


# -- with a real store: a restart ------------------------------------------------


def restarted(path: Path, **options) -> tuple[History, Store]:
    """The history as a server started on ``path`` would have it."""
    store = Store.open(path)
    history = History(store=store, **options)
    store.start()
    return history, store


def test_a_restart_brings_back_the_lines_the_ids_and_the_room(tmp_path):
    path = tmp_path / "h.db"
    history, store = restarted(path, size=2, keep_private=True)
    token = history.token
    lines = [
        said(history.next_id(), cid="c-1"),
        whispered(history.next_id(), "ada", "bob", cid="c-2"),
        said(history.next_id(), "bob"),
        said(history.next_id(), "carol"),
    ]
    filled(history, *lines)
    store.stop()
    history, store = restarted(path, size=2, keep_private=True)
    try:
        assert history.token == token
        assert history.recent() == (lines[2], lines[3])
        assert history.since(0, "bob") == (tuple(lines), 0, False)
        assert history.since(1, "carol") == ((lines[2], lines[3]), 0, False)
        assert history.next_id() == 5
    finally:
        store.stop()


def test_the_cid_window_is_rebuilt_from_the_stored_lines(tmp_path):
    path = tmp_path / "h.db"
    clock = Clock()
    history, store = restarted(path)
    filled(
        history,
        said(1, "Ada", cid="early", ts=clock.now),
        said(2, "bob", cid="b-1", ts=clock.now + 100),
        said(3, "ada", cid="late", ts=clock.now + 200),
    )
    store.stop()
    clock.now += CID_WINDOW + 50  # "early" is too old now; the rest are not
    history, store = restarted(path, clock=clock)
    try:
        assert history.repeat("ada", "early") is None
        assert history.repeat("bob", "b-1") == said(2, "bob", cid="b-1", ts=T0 + 100)
        assert history.repeat("ADA", "late") == said(3, "ada", cid="late", ts=T0 + 200)
        assert history.repeat("bob", "late") is None
    finally:
        store.stop()


def test_ids_go_on_after_a_cleared_history_is_reopened(tmp_path):
    path = tmp_path / "h.db"
    history, store = restarted(path)
    filled(history, *(said(history.next_id()) for _ in range(3)))
    history.clear()
    assert store.clear()
    store.stop()
    history, store = restarted(path)
    try:
        assert history.recent() == ()
        assert history.next_id() == 4
    finally:
        store.stop()


def test_a_resend_is_known_after_a_restart_however_many_lines_came_after(tmp_path):
    """The cids come back from the whole window in the file, not only from
    the lines kept in memory (here 3)."""
    path = tmp_path / "h.db"
    store = Store.open(path)
    first = History(size=3, cap=3, store=store, clock=Clock())
    store.start()
    first.add(said(first.next_id(), cid="ada-1"))
    for _ in range(10):
        first.add(said(first.next_id(), "bob"))
    store.stop()
    store = Store.open(path)
    try:
        later = Clock(T0 + CID_WINDOW / 2)
        again = History(size=3, cap=3, store=store, clock=later)
        assert ids(again.recent()) == [9, 10, 11]
        assert again.repeat("ada", "ada-1") == said(1, cid="ada-1")
        later.now = T0 + CID_WINDOW + 1  # and the window still closes
        assert again.repeat("ada", "ada-1") is None
    finally:
        store.stop()
