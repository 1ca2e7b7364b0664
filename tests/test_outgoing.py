"""Tests of ``chat.outgoing``: a client's lines, in order, kept until confirmed.

The table-like tests drive ``Outgoing`` the way the client's threads do:
``take`` then ``sent`` for the writer, ``restart``/``pause``/``confirm`` for the
reader.  A hypothesis state machine then tries random interleavings against
a model of the contract: nothing kept is lost, nothing is reordered,
nothing confirmed goes again.
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from chat.outgoing import MAX_KEPT, Entry, Outgoing
from tests.helpers import DEADLINE

NOW = 0.0  # take() with this timeout answers at once


def send_all(outgoing: Outgoing) -> list[bytes]:
    """Play the writer thread until nothing is left to send: what went out."""
    out = []
    for _ in range(10_000):  # bounded: a bug must not hang the test
        taken = outgoing.take(NOW)
        if taken is None:
            return out
        entry, generation = taken
        out.append(entry.data)
        outgoing.sent(entry, generation)
    raise AssertionError(f"still sending after {len(out)} entries")


def ready(*lines: tuple[bytes, str | None]) -> Outgoing:
    """An ``Outgoing`` on a fresh connection, holding ``lines``."""
    outgoing = Outgoing()
    for data, cid in lines:
        outgoing.add(data, cid)
    outgoing.restart()
    return outgoing


def test_nothing_goes_before_the_first_connection():
    outgoing = Outgoing()
    outgoing.add(b"early", "c-1")
    assert outgoing.take(NOW) is None
    outgoing.restart()
    assert send_all(outgoing) == [b"early"]


def test_entries_go_in_the_order_they_were_added():
    outgoing = ready((b"a", "c-a"), (b"pong", None), (b"b", "c-b"), (b"c", "c-c"))
    assert send_all(outgoing) == [b"a", b"pong", b"b", b"c"]
    assert send_all(outgoing) == []  # each once per connection


def test_entries_without_a_cid_are_dropped_once_sent():
    outgoing = ready((b"pong", None), (b"line", "c-1"), (b"rename", None))
    send_all(outgoing)
    assert outgoing.unconfirmed() == ["c-1"]
    outgoing.restart()
    assert send_all(outgoing) == [b"line"]  # the pong and the rename went


def test_a_restart_sends_what_is_kept_again_from_the_top_in_order():
    outgoing = ready((b"one", "c-1"), (b"two", "c-2"), (b"three", "c-3"))
    assert send_all(outgoing) == [b"one", b"two", b"three"]
    assert outgoing.confirm("c-2")
    outgoing.pause()  # the connection is lost
    outgoing.add(b"typed while away", "c-4")
    outgoing.add(b"pong", None)
    assert outgoing.take(NOW) is None  # nothing goes while paused
    outgoing.restart()
    assert send_all(outgoing) == [b"one", b"three", b"typed while away", b"pong"]
    assert outgoing.unconfirmed() == ["c-1", "c-3", "c-4"]


def test_a_restart_in_the_middle_starts_again_from_the_top():
    outgoing = ready((b"one", "c-1"), (b"two", "c-2"), (b"three", "c-3"))
    entry, generation = outgoing.take(NOW)
    outgoing.sent(entry, generation)
    outgoing.restart()
    assert send_all(outgoing) == [b"one", b"two", b"three"]


def test_a_sent_from_an_old_connection_is_ignored():
    outgoing = ready((b"pong", None), (b"line", "c-1"))
    entry, old = outgoing.take(NOW)
    outgoing.restart()  # the connection was replaced while it was sending
    outgoing.sent(entry, old)
    # Not dropped, not counted as sent on the new connection: it goes again.
    assert send_all(outgoing) == [b"pong", b"line"]


def test_a_sent_for_an_entry_confirmed_meanwhile_is_harmless():
    outgoing = ready((b"one", "c-1"), (b"two", "c-2"))
    entry, generation = outgoing.take(NOW)
    assert outgoing.confirm("c-1")  # the echo came before the writer said sent
    outgoing.sent(entry, generation)
    assert send_all(outgoing) == [b"two"]


@pytest.mark.parametrize(
    ("confirmed", "then"),
    [
        ("c-1", [b"three", b"four"]),  # before the position
        ("c-2", [b"three", b"four"]),  # the last one sent
        ("c-3", [b"four"]),  # the next one
        ("c-4", [b"three"]),  # further on
        ("c-9", [b"three", b"four"]),  # unknown: nothing changes
    ],
)
def test_confirm_anywhere_keeps_the_position_right(confirmed, then):
    outgoing = ready((b"one", "c-1"), (b"two", "c-2"), (b"three", "c-3"))
    outgoing.add(b"four", "c-4")
    for _ in range(2):
        entry, generation = outgoing.take(NOW)
        outgoing.sent(entry, generation)
    assert outgoing.confirm(confirmed) is (confirmed != "c-9")
    assert outgoing.confirm(confirmed) is False  # only once
    assert send_all(outgoing) == then


def test_pause_makes_take_wait_and_restart_wakes_it():
    outgoing = ready((b"one", "c-1"))
    outgoing.pause()
    started = time.monotonic()
    assert outgoing.take(0.05) is None
    assert time.monotonic() - started >= 0.05  # it waited its timeout
    taken: list = []
    writer = threading.Thread(
        target=lambda: taken.append(outgoing.take(DEADLINE)), name="test writer"
    )
    writer.start()
    try:
        outgoing.restart()
    finally:
        writer.join(DEADLINE)
    assert not writer.is_alive()
    [(entry, _)] = taken
    assert entry.data == b"one"


def test_an_add_wakes_a_waiting_take():
    outgoing = ready()
    taken: list = []
    writer = threading.Thread(
        target=lambda: taken.append(outgoing.take(DEADLINE)), name="test writer"
    )
    writer.start()
    try:
        outgoing.add(b"hello", "c-1")
    finally:
        writer.join(DEADLINE)
    assert taken[0][0].data == b"hello"


def test_close_lets_what_is_queued_go_then_take_returns_none_at_once():
    outgoing = ready((b"bye", None))
    outgoing.close()
    assert send_all(outgoing) == [b"bye"]
    started = time.monotonic()
    assert outgoing.take(DEADLINE) is None
    assert time.monotonic() - started < DEADLINE / 2


def test_close_wakes_a_waiting_take():
    outgoing = Outgoing()  # never connected: take would wait its whole timeout
    taken: list = []
    writer = threading.Thread(
        target=lambda: taken.append(outgoing.take(DEADLINE)), name="test writer"
    )
    writer.start()
    started = time.monotonic()
    try:
        outgoing.close()
    finally:
        writer.join(DEADLINE)
    assert taken == [None]
    assert time.monotonic() - started < DEADLINE / 2


def test_wait_sent_returns_once_everything_went():
    outgoing = ready((b"one", "c-1"), (b"pong", None))
    assert outgoing.wait_sent(NOW) is False
    writer = threading.Thread(target=send_all, args=(outgoing,), name="test writer")
    writer.start()
    try:
        assert outgoing.wait_sent(DEADLINE) is True
    finally:
        writer.join(DEADLINE)
    assert outgoing.unconfirmed() == ["c-1"]  # sent is not confirmed


def test_wait_sent_gives_up_at_once_without_a_connection():
    outgoing = ready((b"one", "c-1"))
    outgoing.pause()
    started = time.monotonic()
    assert outgoing.wait_sent(DEADLINE) is False
    assert time.monotonic() - started < DEADLINE / 2


def test_beyond_the_limit_the_oldest_kept_line_is_given_up():
    outgoing = ready((b"pong", None))
    outgoing.limit = 3
    cids = [f"c-{i}" for i in range(5)]
    for cid in cids:
        outgoing.add(cid.encode(), cid)
    assert outgoing.unconfirmed() == cids[2:]
    assert send_all(outgoing) == [b"pong", b"c-2", b"c-3", b"c-4"]


def test_the_limit_does_not_count_entries_without_a_cid():
    outgoing = Outgoing(limit=2)
    for _ in range(5):
        outgoing.add(b"pong")
    outgoing.add(b"a", "c-a")
    outgoing.add(b"b", "c-b")
    outgoing.restart()
    assert send_all(outgoing) == [b"pong"] * 5 + [b"a", b"b"]


def test_drop_longer_gives_up_only_the_long_lines_and_keeps_the_place():
    outgoing = ready((b"aa\n", "c-a"), (b"b" * 10 + b"\n", "c-b"), (b"cc\n", "c-c"))
    entry, generation = outgoing.take(NOW)
    outgoing.sent(entry, generation)  # "aa" went; the long one is next
    dropped = outgoing.drop_longer(5)
    assert [e.cid for e in dropped] == ["c-b"]
    assert outgoing.unconfirmed() == ["c-a", "c-c"]
    assert send_all(outgoing) == [b"cc\n"]  # "aa" is not sent twice


def test_the_limit_counts_an_empty_cid_as_a_cid():
    """The count and the choice of the oldest agree on what is kept."""
    outgoing = Outgoing(limit=1)
    outgoing.add(b"a", "")
    outgoing.add(b"b", "")
    assert outgoing.unconfirmed() == [""]
    outgoing.restart()
    assert send_all(outgoing) == [b"b"]


def test_the_default_limit():
    assert Outgoing().limit == MAX_KEPT == 1000


# -- random interleavings against a model -------------------------------------


class OutgoingMachine(RuleBasedStateMachine):
    """``Outgoing`` against a plain list that states the contract.

    The model: ``held`` is every entry still held, in the order added; ``at``
    is how many of them went out on the current connection.  A ``take`` must
    give ``held[at]``; ``sent`` drops it (no cid) or moves past it; a restart
    goes back to the top.  Beyond the model, the history of what went out is
    checked for the three promises directly.
    """

    LIMIT = 4

    @initialize()
    def start(self) -> None:
        self.outgoing = Outgoing(limit=self.LIMIT)
        self.held: list[tuple[bytes, str | None]] = []
        self.at = 0
        self.open = False
        self.count = 0
        self.order: dict[bytes, int] = {}  # data -> when it was added
        self.confirmed: set[str] = set()
        self.given_up: set[str | None] = set()
        self.went_out: list[bytes] = []  # on the current connection
        self.stale: tuple[Entry, int] | None = None  # taken, never reported
        self._restart()  # connected: where the interesting things happen

    # -- what the front end and the reader thread do -------------------------

    @rule(with_cid=st.booleans())
    def add(self, with_cid: bool) -> None:
        self.count += 1
        data = f"line {self.count}".encode()
        cid = f"c-{self.count}" if with_cid else None
        self.order[data] = self.count
        self.outgoing.add(data, cid)
        self.held.append((data, cid))
        kept = [i for i, (_, c) in enumerate(self.held) if c is not None]
        if len(kept) > self.LIMIT:  # the oldest kept line is given up
            self.given_up.add(self.held[kept[0]][1])
            self._drop(kept[0])

    @precondition(lambda self: any(c is not None for _, c in self.held))
    @rule(pick=st.integers(min_value=0, max_value=100))
    def confirm_a_held_line(self, pick: int) -> None:
        kept = [c for _, c in self.held if c is not None]
        self._confirm(kept[pick % len(kept)])

    @rule(pick=st.integers(min_value=0, max_value=100))
    def confirm_any_cid(self, pick: int) -> None:
        """Often one already confirmed or given up, or never used."""
        self._confirm(f"c-{pick % (self.count + 2)}")

    @rule(event=st.sampled_from(["restart", "pause", "restart mid-send"]))
    def the_connection_changes(self, event: str) -> None:
        if event == "pause":  # lost: hold everything
            self.outgoing.pause()
            self.open = False
        elif event == "restart":  # a new connection is ready
            self._restart()
        elif self.stale is None:
            # The writer has taken an entry when the connection is replaced:
            # its late "sent" (report_the_stale_send) must change nothing.
            self.stale = self.outgoing.take(NOW)
            if self.stale is not None:
                entry = self.stale[0]
                assert (entry.data, entry.cid) == self.held[self.at]
            self._restart()

    # -- what the writer thread does ------------------------------------------

    @rule(count=st.integers(min_value=1, max_value=3))
    def send(self, count: int) -> None:
        for _ in range(count):
            self._take_and_send()

    @precondition(lambda self: self.stale is not None)
    @rule()
    def report_the_stale_send(self) -> None:
        entry, generation = self.stale
        self.stale = None
        self.outgoing.sent(entry, generation)  # from a connection now gone

    # -- the promises ----------------------------------------------------------

    @invariant()
    def nothing_kept_is_lost_or_reordered(self) -> None:
        expected = [c for _, c in self.held if c is not None]
        assert self.outgoing.unconfirmed() == expected
        assert [self.order[d] for d, _ in self.held] == sorted(
            self.order[d] for d, _ in self.held
        )

    def teardown(self) -> None:
        """At the end, one more connection sends exactly what is held."""
        if not hasattr(self, "outgoing"):
            return
        self.stale = None
        self._restart()
        assert send_all(self.outgoing) == [d for d, _ in self.held]

    def _take_and_send(self) -> None:
        taken = self.outgoing.take(NOW)
        if not (self.open and self.at < len(self.held)):
            assert taken is None
            return
        assert taken is not None
        entry, generation = taken
        assert (entry.data, entry.cid) == self.held[self.at]
        assert entry.cid not in self.confirmed, "a confirmed line went again"
        assert entry.cid not in self.given_up, "a given-up line went again"
        if self.went_out:  # in order on this connection
            assert self.order[entry.data] > self.order[self.went_out[-1]]
        self.went_out.append(entry.data)
        self.outgoing.sent(entry, generation)
        if entry.cid is None:
            self._drop(self.at)
        else:
            self.at += 1

    def _restart(self) -> None:
        self.outgoing.restart()
        self.at = 0
        self.open = True
        self.went_out = []

    def _confirm(self, cid: str) -> None:
        index = next((i for i, (_, c) in enumerate(self.held) if c == cid), None)
        assert self.outgoing.confirm(cid) is (index is not None)
        if index is not None:
            self._drop(index)
            self.confirmed.add(cid)

    def _drop(self, index: int) -> None:
        del self.held[index]
        if index < self.at:
            self.at -= 1


OutgoingMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None
)
test_outgoing_keeps_its_promises = OutgoingMachine.TestCase
