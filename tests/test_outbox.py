"""The writer and its outboxes, on socket pairs: order, backlogs, limits, endings.

Each test opens outboxes for one end of ``socket.socketpair()`` and reads
the other end, so every byte really goes through the kernel.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

import pytest

from chat import outbox as outbox_module
from chat.outbox import HIGH_WATER, Writer
from tests.helpers import DEADLINE, wait_for


@pytest.fixture
def writer():
    w = Writer()
    w.start()
    yield w
    w.stop()


class Pair:
    """An outbox on one end of a socket pair; the test reads the other end."""

    def __init__(self, writer: Writer, limit: int = outbox_module.DEFAULT_LIMIT):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.peer = theirs
        self.peer.settimeout(DEADLINE)
        self.outbox = writer.open(ours, limit)
        self.received = b""

    def shrink_buffers(self) -> None:
        """Small kernel buffers, so that backlogs appear after a little data."""
        self.outbox.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def read(self, count: int) -> bytes:
        """Read until ``count`` bytes in all have arrived."""
        while len(self.received) < count:
            data = self.peer.recv(65536)
            if not data:
                break
            self.received += data
        return self.received

    def read_to_end(self) -> bytes:
        while True:
            try:
                data = self.peer.recv(65536)
            except ConnectionResetError:
                return self.received
            if not data:
                return self.received
            self.received += data

    def watch(self) -> Watched:
        """Record the writer's sends from now on (see ``Watched``)."""
        self.outbox.sock = Watched(self.outbox.sock)
        return self.outbox.sock

    def close(self) -> None:
        self.outbox.close()
        self.peer.close()


class Watched:
    """A socket that records each ``send`` the writer makes on it, and runs
    ``hooks[n]`` (on the writer thread) right after its n-th ``send``: as if
    a reader had broadcast just then, in the middle of a fan-out."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sends: list[bytes] = []
        self.hooks: dict[int, Callable[[], object]] = {}

    def send(self, data, flags: int = 0) -> int:
        sent = self._sock.send(data, flags)
        self.sends.append(bytes(data[:sent]))
        hook = self.hooks.pop(len(self.sends), None)
        if hook is not None:
            hook()
        return sent

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def test_pieces_arrive_whole_and_in_order(writer):
    pair = Pair(writer)
    pieces = [f"line {i}\n".encode() for i in range(1000)]
    for piece in pieces:
        pair.outbox.put(piece)
    assert pair.read(sum(map(len, pieces))) == b"".join(pieces)
    pair.close()


def test_one_broadcast_reaches_everyone_identically(writer):
    pairs = [Pair(writer) for _ in range(20)]
    data = [f"message {i}\n".encode() for i in range(200)]
    for piece in data:
        for pair in pairs:
            pair.outbox.put(piece)  # the same bytes object on every outbox
    expected = b"".join(data)
    for pair in pairs:
        assert pair.read(len(expected)) == expected
        pair.close()


def test_a_reader_that_pauses_gets_everything_later_in_order(writer):
    pair = Pair(writer)
    pair.shrink_buffers()
    pieces = [b"x" * 1000 + f" {i}\n".encode() for i in range(300)]  # ~300 KB
    for piece in pieces:
        pair.outbox.put(piece)
    wait_for(lambda: pair.outbox.queued > 0, what="a backlog to form")
    expected = b"".join(pieces)
    assert pair.read(len(expected)) == expected  # now it reads: all of it comes
    wait_for(lambda: pair.outbox.queued == 0, what="the backlog to drain")
    pair.close()


def test_a_reader_that_never_reads_is_dropped_as_a_slow_consumer(writer):
    stalled = Pair(writer, limit=64 * 1024)
    stalled.shrink_buffers()
    healthy = Pair(writer)
    piece = b"y" * 999 + b"\n"
    sent = 0
    while stalled.outbox.end_reason is None and sent < 10_000:  # bounded
        stalled.outbox.put(piece)
        healthy.outbox.put(piece)
        sent += 1
    assert stalled.outbox.end_reason == "slow consumer"
    assert sent < 500  # it took roughly the limit plus kernel buffers
    # The healthy one was never held up: all of it is there.
    assert healthy.read(sent * len(piece)) == piece * sent
    stalled.outbox.put(b"more")  # ignored once ended, and never blocks
    healthy.close()
    stalled.close()


def test_a_put_refused_at_the_limit_is_not_counted(writer):
    # Regression: the refused bytes were never sent, yet stayed in the count.
    pair = Pair(writer, limit=1000)
    pair.outbox.put(b"a" * 10)
    pair.outbox.put(b"b" * 5000)  # past the limit: refused, and the end of it
    assert pair.outbox.end_reason == "slow consumer"
    assert b"b" not in pair.read_to_end()  # the writer has shut it down
    wait_for(lambda: pair.outbox.queued == 0, what="the count to settle")
    pair.close()


def test_hang_up_sends_what_is_queued_then_ends_the_connection(writer):
    pair = Pair(writer)
    pair.outbox.put(b"last words\n")
    pair.outbox.hang_up()
    pair.outbox.put(b"too late\n")  # after a hang-up, nothing more is taken
    assert pair.read_to_end() == b"last words\n"
    pair.close()


def test_abort_drops_what_is_queued(writer):
    pair = Pair(writer)
    pair.shrink_buffers()
    for _ in range(200):
        pair.outbox.put(b"z" * 1000)
    pair.outbox.abort("kicked")
    assert len(pair.read_to_end()) < 200 * 1000
    assert pair.outbox.end_reason == "kicked"
    pair.close()


def test_close_sends_the_rest_then_closes_the_socket(writer):
    pair = Pair(writer)
    pair.outbox.put(b"goodbye\n")
    pair.outbox.close()
    assert pair.read_to_end() == b"goodbye\n"
    wait_for(lambda: pair.outbox.sock.fileno() == -1, what="the writer to close it")
    pair.peer.close()


def test_a_peer_that_vanishes_is_noticed(writer):
    pair = Pair(writer)
    pair.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    pair.peer.close()
    for _ in range(100):  # bounded: the first sends fail, the rest are ignored
        pair.outbox.put(b"anyone there?\n")
    wait_for(lambda: pair.outbox.end_reason is not None, what="the loss")
    assert pair.outbox.end_reason == "connection lost"
    pair.outbox.close()


def test_stop_closes_whatever_is_left(writer):
    pairs = [Pair(writer) for _ in range(3)]
    for pair in pairs:
        pair.outbox.put(b"bye\n")
        pair.outbox.close()
    writer.stop()
    for pair in pairs:
        assert pair.read_to_end() == b"bye\n"
        assert pair.outbox.sock.fileno() == -1
        pair.peer.close()


# -- the room at capacity ------------------------------------------------------


def fill(pair: Pair, amount: int) -> None:
    """Queue ``amount`` bytes that the peer does not read."""
    piece = b"w" * 4095 + b"\n"
    for _ in range(amount // len(piece) + 1):
        pair.outbox.put(piece)


def test_a_minority_behind_never_makes_readers_wait(writer):
    pairs = [Pair(writer, limit=16 * HIGH_WATER) for _ in range(5)]
    for pair in pairs[:2]:  # two of five are far behind
        pair.shrink_buffers()
        fill(pair, 2 * HIGH_WATER)
    wait_for(lambda: pairs[0].outbox.queued > HIGH_WATER, what="a backlog")
    started = time.monotonic()
    assert writer.wait_for_room(1.0)
    assert time.monotonic() - started < 0.5
    for pair in pairs:
        pair.close()


def test_most_behind_makes_readers_wait_until_they_catch_up(writer):
    pairs = [Pair(writer, limit=16 * HIGH_WATER) for _ in range(3)]
    for pair in pairs[:2]:  # two of three: the room is at capacity
        pair.shrink_buffers()
        fill(pair, 2 * HIGH_WATER)
    assert not writer.wait_for_room(0.2)  # it waits, then says "no room"
    room = []
    waiting = threading.Thread(
        target=lambda: room.append(writer.wait_for_room(DEADLINE)), name="a reader"
    )
    waiting.start()
    readers = [  # now they read, and fall below half the mark
        threading.Thread(target=pair.read, args=(2 * HIGH_WATER,), name="catching up")
        for pair in pairs[:2]
    ]
    for reader in readers:
        reader.start()
    waiting.join(DEADLINE)
    for reader in readers:
        reader.join(DEADLINE)
    assert room == [True]
    for pair in pairs:
        pair.close()


def test_an_ending_outbox_never_holds_the_room_up(writer):
    pairs = [Pair(writer, limit=16 * HIGH_WATER) for _ in range(2)]
    for pair in pairs:
        pair.shrink_buffers()
        fill(pair, 2 * HIGH_WATER)
    assert not writer.wait_for_room(0.1)
    for pair in pairs:
        pair.outbox.hang_up()  # a shutdown must not wait behind its own backlog
    assert writer.wait_for_room(DEADLINE)
    for pair in pairs:
        pair.close()


def test_an_outbox_behind_for_too_long_is_ended_even_under_its_limit(
    writer, monkeypatch
):
    # Regression: a few connections that never read, each under its limit,
    # could hold a small room at capacity for good.
    monkeypatch.setattr(outbox_module, "BEHIND_LIMIT", 0.3)
    stalled = Pair(writer, limit=16 * HIGH_WATER)
    stalled.shrink_buffers()
    fill(stalled, 2 * HIGH_WATER)  # and then nothing happens: no put, no read
    assert not writer.wait_for_room(0.1)
    wait_for(lambda: stalled.outbox.end_reason == "slow consumer", what="its end")
    assert writer.wait_for_room(DEADLINE)
    stalled.close()


# -- broadcasts: one event for many outboxes ---------------------------------


def test_a_broadcast_reaches_all_but_the_excluded_in_order_with_direct_puts(writer):
    pairs = [Pair(writer) for _ in range(4)]
    everyone = tuple(pair.outbox for pair in pairs)
    quiet = pairs[3].outbox
    expected = [b""] * 4
    for i in range(300):  # broadcasts and one-connection puts, interleaved
        line = f"all {i}\n".encode()
        writer.broadcast(everyone, line, exclude=quiet)
        for n in range(3):
            expected[n] += line
        if i % 7 == 0:
            direct = f"only for 0: {i}\n".encode()
            pairs[0].outbox.put(direct)
            expected[0] += direct
    pairs[3].outbox.put(b"the end\n")
    expected[3] += b"the end\n"
    for pair, want in zip(pairs, expected, strict=True):
        assert pair.read(len(want)) == want
        pair.close()


def test_a_broadcast_before_a_hang_up_is_sent_and_one_after_it_is_not(writer):
    pair = Pair(writer)
    other = Pair(writer)
    both = (pair.outbox, other.outbox)
    writer.broadcast(both, b"the server is shutting down\n")
    pair.outbox.hang_up()
    writer.broadcast(both, b"too late for the first\n")
    assert pair.read_to_end() == b"the server is shutting down\n"
    want = b"the server is shutting down\ntoo late for the first\n"
    assert other.read(len(want)) == want
    pair.close()
    other.close()


def test_an_abort_drops_broadcasts_not_yet_sent(writer):
    pair = Pair(writer)
    pair.shrink_buffers()
    for _ in range(200):
        writer.broadcast((pair.outbox,), b"z" * 1000)
    pair.outbox.abort("kicked")
    assert len(pair.read_to_end()) < 200 * 1000
    assert pair.outbox.end_reason == "kicked"
    pair.close()


def test_a_stalled_reader_of_broadcasts_is_dropped_and_nobody_waits(writer):
    stalled = Pair(writer, limit=64 * 1024)
    stalled.shrink_buffers()
    healthy = Pair(writer)
    both = (stalled.outbox, healthy.outbox)
    piece = b"b" * 999 + b"\n"
    sent = 0
    deadline = time.monotonic() + DEADLINE
    while stalled.outbox.end_reason is None and time.monotonic() < deadline:
        if sent < 2000:  # bounded: ~2 MB, twice the healthy one's share of it
            writer.broadcast(both, piece)
            sent += 1
        healthy.read(sent * len(piece))  # the healthy one keeps reading
    assert stalled.outbox.end_reason == "slow consumer"
    assert sent < 2000  # noticed near the limit, not at the end of the loop
    assert healthy.read(sent * len(piece)) == piece * sent
    stalled.close()
    healthy.close()


def test_readers_wait_while_the_writer_has_not_taken_its_events():
    writer = Writer()  # not started: nothing is taken
    pair = Pair(writer)
    writer.broadcast((pair.outbox,), b"p" * (outbox_module.MAX_PENDING + 1))
    assert not writer.wait_for_room(0.1)
    waiting = []
    reader = threading.Thread(
        target=lambda: waiting.append(writer.wait_for_room(DEADLINE)), name="a reader"
    )
    reader.start()
    writer.start()  # takes the events: the reader may go on
    reader.join(DEADLINE)
    assert waiting == [True]
    pair.close()
    writer.stop()


def test_closing_twice_counts_once_and_stop_does_not_wait_for_it():
    writer = Writer()
    writer.start()
    pair = Pair(writer)
    other = Pair(writer)
    pair.outbox.put(b"bye\n")
    pair.outbox.close()
    assert pair.read_to_end() == b"bye\n"
    wait_for(lambda: pair.outbox.sock.fileno() == -1, what="the writer to close it")
    pair.outbox.close()  # once more, after it is done: nothing more to do
    pair.outbox.put(b"too late\n")  # and this is refused, as before
    other.close()
    started = time.monotonic()
    writer.stop()
    assert time.monotonic() - started < outbox_module.LINGER  # nothing left open
    assert writer._connections == 0  # each outbox counted out once
    pair.peer.close()


# -- a broadcast that comes while the writer goes round the members ----------


def sends_of(pairs: list[Pair]) -> list[list[bytes]]:
    return [list(pair.outbox.sock.sends) for pair in pairs]


def watched(writer: Writer, count: int) -> tuple[list[Pair], tuple]:
    pairs = [Pair(writer) for _ in range(count)]
    for pair in pairs:
        pair.watch()
    return pairs, tuple(pair.outbox for pair in pairs)


def test_a_broadcast_during_a_fan_out_goes_with_it_to_those_not_yet_sent_to(writer):
    pairs, room = watched(writer, 8)
    pairs[2].outbox.sock.hooks[1] = lambda: writer.broadcast(room, b"B\n")
    writer.broadcast(room, b"A\n")
    for pair in pairs:
        assert pair.read(4) == b"A\nB\n"
    # The first three had A already: B follows on its own.  The other five
    # get both in one send.  (A send is recorded just after the peer may
    # have read it: wait for the record.)
    expected = [[b"A\n", b"B\n"]] * 3 + [[b"A\nB\n"]] * 5
    wait_for(lambda: sends_of(pairs) == expected, what=f"the sends {expected}")
    for pair in pairs:
        pair.close()


def test_what_waits_before_a_broadcast_keeps_its_place(writer):
    pairs, room = watched(writer, 6)

    def meanwhile() -> None:
        pairs[4].outbox.put(b"P\n")
        writer.broadcast(room, b"B\n")

    pairs[1].outbox.sock.hooks[1] = meanwhile
    writer.broadcast(room, b"A\n")
    assert pairs[4].read(6) == b"A\nP\nB\n"
    for pair in pairs[:4] + pairs[5:]:
        assert pair.read(4) == b"A\nB\n"
        pair.close()
    pairs[4].close()


def test_a_broadcast_with_someone_left_out_is_not_taken_in(writer):
    pairs, room = watched(writer, 6)
    left_out = pairs[4].outbox
    pairs[1].outbox.sock.hooks[1] = lambda: writer.broadcast(
        room, b"B\n", exclude=left_out
    )
    writer.broadcast(room, b"A\n")
    for pair in pairs[:4] + pairs[5:]:
        assert pair.read(4) == b"A\nB\n"
        pair.close()
    left_out.put(b"Z\n")
    assert pairs[4].read(4) == b"A\nZ\n"
    pairs[4].close()


def test_what_a_fan_out_takes_in_is_bounded(writer, monkeypatch):
    monkeypatch.setattr(outbox_module, "MAX_PENDING", 100)
    pairs, room = watched(writer, 8)
    big = b"b" * 99 + b"\n"
    pairs[1].outbox.sock.hooks[1] = lambda: writer.broadcast(room, big)
    pairs[3].outbox.sock.hooks[1] = lambda: writer.broadcast(room, b"C\n")
    writer.broadcast(room, b"A\n")
    for pair in pairs:
        assert pair.read(104) == b"A\n" + big + b"C\n"
    # With A and the big one joined, the limit is reached: C comes after.
    expected = [[b"A\n" + big, b"C\n"]] * 4
    wait_for(lambda: sends_of(pairs[4:]) == expected, what="C in a send of its own")
    for pair in pairs:
        pair.close()


def test_what_a_fan_out_took_in_is_sent_even_when_the_writer_is_stopping():
    writer = Writer()
    writer.start()
    pairs, room = watched(writer, 6)
    again = tuple(list(room))  # the same members in another tuple: not taken in
    stopper = threading.Thread(target=writer.stop, name="stopper")

    def stop_now() -> None:  # during A's round: C is next, then the end
        writer.broadcast(again, b"C\n")
        stopper.start()
        wait_for(lambda: writer._stopping, what="stop() to begin")

    pairs[0].outbox.sock.hooks[1] = stop_now
    # During C's round, the last round before stopping: D is taken in.
    pairs[3].outbox.sock.hooks[2] = lambda: writer.broadcast(again, b"D\n")
    writer.broadcast(room, b"A\n")
    for pair in pairs:
        assert pair.read(6) == b"A\nC\nD\n"
    stopper.join(DEADLINE)
    assert not stopper.is_alive()
    for pair in pairs:
        pair.outbox.sock.close()
        pair.peer.close()


class AfterTaking:
    """The writer's lock, running ``hook`` once on the writer thread right
    after the writer let go of it having taken every event: the moment when
    another thread may queue one more and call ``stop()``."""

    def __init__(self, writer: Writer, hook: Callable[[], object]) -> None:
        self._writer = writer
        self._lock = writer._lock
        self._hook: Callable[[], object] | None = hook

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        writer = self._writer
        hook = self._hook
        if hook and threading.current_thread() is writer._thread and not writer._events:
            self._hook = None
            hook()


def test_a_broadcast_queued_just_before_stop_is_still_sent():
    writer = Writer()
    pairs, room = watched(writer, 3)
    again = tuple(list(room))  # the same members in another tuple: not taken in

    def late_and_stop() -> None:  # what another thread may do just then
        writer.broadcast(again, b"F\n")
        with writer._room:  # stop()'s first step, without its join
            writer._stopping = True

    writer._lock = AfterTaking(writer, late_and_stop)
    writer.broadcast(room, b"A\n")
    writer.start()
    for pair in pairs:
        assert pair.read(4) == b"A\nF\n"
    writer.stop()
    for pair in pairs:
        pair.outbox.sock.close()
        pair.peer.close()


def test_a_broken_tls_connection_is_lost_quietly(writer, caplog):
    """A bad record from the peer breaks its TLS: encrypting for it raises.
    That is the peer's doing, not our bug: it is lost, with no traceback."""

    def broken(data: bytes) -> bytes:
        raise ssl.SSLEOFError("EOF occurred in violation of protocol")

    pair = Pair(writer)
    pair.outbox.transform = broken
    pair.outbox.put(b"for a broken connection\n")
    wait_for(lambda: pair.outbox.end_reason == "connection lost", what="its end")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    pair.close()
