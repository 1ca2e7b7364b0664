"""Sending: one bounded outbox per connection, one writer thread for them all.

Why one writer and not one per connection: a thread per connection costs a
wake-up, a GIL hand-off and a small ``send`` for every delivery, and measured
16 times slower (``docs/architecture.md``).

Everything to send goes on one ordered list of *events*, kept by the writer:
a piece of bytes for one connection (``Outbox.put``), a piece for many
(``Writer.broadcast``), or an ending (a hang-up, an abort, a close).  Putting
an event only appends to that list, whatever the number of connections it is
for, so a reader thread that broadcasts to a hundred members does one append,
not a hundred.  The writer wakes once for many events, takes them all, works
out what each connection gets, in order, and hands each connection's bytes to
the kernel in one non-blocking ``send``.  When a batch is the same broadcasts
for everyone (a busy room), the pieces are joined once and the same bytes go
to all; and a broadcast for them that comes while the writer is going round
them is taken in on the way (``Writer._fan_out``), so it need not wait for
the end of that round.

A connection that stops reading fills its kernel buffer; the writer then
parks its unsent bytes (its *backlog*) and waits (with ``selectors``) for it
to become writable, while it goes on serving everyone else.  Once more than
``limit`` bytes wait, or it has been behind for ``BEHIND_LIMIT`` seconds on
end, the connection is ended as a *slow consumer*.

Ownership of the socket: the connection's reader thread only calls ``recv``.
Every other socket call (send, shutdown, close) happens on the writer thread,
so a socket is never closed under another thread's feet.  The one exception
is a TLS handshake, which the reader does itself before it puts anything on
the outbox (``chat.tls``).  The reader calls
``Outbox.close()`` when it is done; the writer then sends what is left (for
at most ``LINGER`` seconds) and closes the socket.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("chat.outbox")

DEFAULT_LIMIT = 1024 * 1024
#: An outbox holding more than this is "behind".  When most are behind, the
#: room as a whole is sending faster than it can deliver, and the readers wait
#: (``Writer.wait_for_room``).  A minority behind slows nobody down.
HIGH_WATER = 256 * 1024
#: Seconds an outbox may stay behind without a break before it is ended as a
#: slow consumer, although under its limit: a few connections that never
#: read would otherwise hold a small room at capacity for good.
BEHIND_LIMIT = 10.0
#: Readers also wait while this many bytes of events are not yet taken by the
#: writer: the writer cannot keep up (it is starved of CPU), and more events
#: would only pile up in memory.
MAX_PENDING = 64 * 1024
#: How long a closing or hung-up connection may take to accept its last bytes.
LINGER = 1.0

_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

# The endings, as events.  An abort drops what is not yet sent.
_HANG_UP, _CLOSE, _ABORT = "hang up", "close", "abort"


class Outbox:
    """The bytes waiting to go to one connection.  Made by ``Writer.open``.

    ``put``, ``hang_up`` and ``abort`` may be called from any thread, and
    ``close`` by the reader when it is done; none of them blocks.
    ``end_reason`` says why the connection was ended (``"slow consumer"``,
    ``"connection lost"``, or what ``abort`` was given), or is ``None``.
    """

    def __init__(self, writer: Writer, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.limit = limit
        #: Applied by the writer to the bytes it is about to send (TLS
        #: encryption).  Set it before anything is put on the outbox.
        self.transform: Callable[[bytes], bytes] | None = None
        self._writer = writer
        # Guarded by writer._lock:
        self._queued = 0  # bytes put or parked, not yet sent, as last settled
        self._ended = False  # no more puts are accepted
        self._behind = False  # counted in writer._behind
        self._behind_since = 0.0  # when it last fell behind, or 0 if it is not
        self.end_reason: str | None = None
        # Writer thread only:
        self._done = False  # an ending was taken: later events skip it
        self._hang_up = False  # shut down once everything before it is sent
        self._closing = False  # the reader is done: close once sent
        self._aborted = False  # shut down now, unsent bytes dropped
        self._backlog = bytearray()  # unsent bytes, waiting for the socket
        self._backlog_start = 0  # how much of _backlog is already sent
        self._shut = False  # shutdown() done
        self._deadline = 0.0  # when a hang-up or close stops waiting
        self._change = 0  # change to _queued not yet settled
        self._finished = False  # the socket is closed

    @property
    def ended(self) -> bool:
        """Hung up, aborted, closed or lost: no more puts are accepted."""
        return self._ended  # set once, never cleared: a glance is enough

    @property
    def queued(self) -> int:
        """Bytes waiting to be sent (as of the writer's last round)."""
        with self._writer._lock:
            return self._queued

    def put(self, data: bytes) -> None:
        """Queue ``data``.  Past the limit, the connection is ended instead."""
        writer = self._writer
        with writer._lock:
            if self._ended:
                return
            queued = self._queued + len(data)
            if queued > self.limit:  # refused: never sent, so never counted
                self._end("slow consumer")
            else:
                self._queued = queued
                if queued > HIGH_WATER and not self._behind:
                    writer._note_level(self)
                writer._events.append((self, data, None))
                writer._pending += len(data)
            wake, writer._sleeping = writer._sleeping, False
        if wake:
            writer._wake()

    def hang_up(self) -> None:
        """Send everything queued so far, then shut the connection down."""
        self._request(_HANG_UP)

    def abort(self, reason: str) -> None:
        """Drop what is queued and shut the connection down now."""
        self._request(_ABORT, reason)

    def close(self) -> None:
        """The reader is done with the socket: send what is left, then close it."""
        self._request(_CLOSE)

    def _request(self, ending: str, reason: str | None = None) -> None:
        writer = self._writer
        with writer._lock:
            if ending == _CLOSE:
                self._ended = True
                writer._note_level(self)  # an ending outbox is never "behind"
                writer._events.append((self, None, _CLOSE))
            elif self._ended:
                return
            elif reason:
                self._end(reason)
            else:
                self._ended = True
                writer._note_level(self)
                writer._events.append((self, None, _HANG_UP))
            wake, writer._sleeping = writer._sleeping, False
        if wake:
            writer._wake()

    def _end(self, reason: str) -> None:  # with writer._lock held
        self._ended = True
        self.end_reason = reason
        self._writer._note_level(self)
        self._writer._events.append((self, None, _ABORT))


class Writer:
    """The thread that sends for every outbox (a daemon, ``writer`` by default).

    Owned by the server: ``start()`` it, ``open()`` an outbox per connection,
    and ``stop()`` it last, after every reader has called ``Outbox.close()``.
    Readers call ``wait_for_room`` before reading more from their client.
    """

    def __init__(self, name: str = "writer") -> None:
        self._lock = threading.Lock()
        # Guarded by _lock:
        self._events: list[tuple] = []  # (target, data, ending), in order
        self._pending = 0  # bytes in _events
        self._sleeping = False  # the thread waits in select(): wake it
        self._stopping = False
        self._connections = 0  # outboxes opened and not yet finished
        self._behind = 0  # outboxes holding more than HIGH_WATER
        self._room = threading.Condition(self._lock)  # notified when there is room
        # Writer thread only:
        self._open: set[Outbox] = set()  # given an event of their own
        self._waiting: set[Outbox] = set()  # registered for EVENT_WRITE
        self._unsettled: list[Outbox] = []  # with a _change to settle
        self._last_pieces: list[bytes] = []  # what _join joined last, and into
        self._last_data = b""
        self._carry: list[tuple] = []  # broadcasts owed after a _fan_out
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- owner's side -----------------------------------------------------

    def start(self) -> None:
        """Start the writer thread.  Call once."""
        self._thread.start()

    def open(self, sock: socket.socket, limit: int = DEFAULT_LIMIT) -> Outbox:
        """A new outbox for ``sock``; the writer closes ``sock`` in the end."""
        with self._lock:
            self._connections += 1
        return Outbox(self, sock, limit)

    def wait_for_room(self, timeout: float) -> bool:
        """Block while the room is at capacity (at most ``timeout`` s).

        Called by a reader before it reads more from its client.  At capacity
        means: more than half of all connections hold over ``HIGH_WATER``
        unsent bytes (reading more would only fill every outbox until
        everyone is dropped as a slow consumer), or the writer has not yet
        taken ``MAX_PENDING`` bytes of events.  Waiting here slows the
        senders down instead (TCP pushes back on them).  A slow *minority*
        never causes a wait: they are dropped at their limit.  True if there
        is room now.
        """
        if self._has_room():  # an unlocked glance first: the usual answer is yes,
            return True  # and every read of every reader asks (see below)
        with self._room:
            return self._room.wait_for(self._has_room, timeout)

    def _has_room(self) -> bool:
        # With _lock held, exact.  Without it (wait_for_room's first glance)
        # an int read may be a moment old; the worst is one read too many.
        return self._behind * 2 <= self._connections and self._pending <= MAX_PENDING

    def _note_level(self, outbox: Outbox) -> None:
        """Recount ``outbox`` as behind or not (``_lock`` held).

        It falls behind above ``HIGH_WATER`` and catches up below half of it,
        so a level near the mark does not flap.  The moment it falls behind
        starts its ``BEHIND_LIMIT`` (``_wait`` ends it when that passes).
        """
        if outbox._ended:
            behind = False
        elif outbox._behind:
            behind = outbox._queued > HIGH_WATER // 2
        else:
            behind = outbox._queued > HIGH_WATER
        if behind != outbox._behind:
            outbox._behind = behind
            outbox._behind_since = time.monotonic() if behind else 0.0
            self._behind += 1 if behind else -1
            if not behind:
                self._room.notify_all()

    def stop(self, timeout: float = 3 * LINGER) -> None:
        """Finish the outboxes still closing, then end the thread and join it.

        The owner's thread only.  Blocks for at most ``timeout`` seconds; if
        the thread is still running then, it is logged and left running.
        """
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("writer thread did not stop within %.1f s", timeout)
            return
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- producers' side --------------------------------------------------

    def broadcast(
        self, outboxes: tuple[Outbox, ...], data: bytes, exclude: Outbox | None = None
    ) -> None:
        """Queue ``data`` for every outbox in ``outboxes`` but ``exclude``.

        One append, whatever the number of outboxes: the writer thread works
        out who gets it.  An outbox whose hang-up, abort or close was asked
        for before this call, or whose connection was lost, gets nothing; one
        that ends after it still gets it first.  Never blocks.
        """
        with self._lock:
            self._events.append((outboxes, data, exclude))
            self._pending += len(data)
            wake, self._sleeping = self._sleeping, False
        if wake:
            self._wake()

    def _wake(self) -> None:
        # A one-byte, non-blocking write to our own socketpair: it cannot block,
        # so it is safe even where the caller holds the room's lock.
        try:
            self._wake_w.send(b"!", _MSG_DONTWAIT)
        except OSError:
            pass  # full (the thread is awake anyway) or closed (stopped)

    # -- the writer thread ------------------------------------------------

    def _run(self) -> None:
        give_up_at = 0.0
        while True:
            events, stopping = self._collect()
            if events:
                self._deliver(events)
            if stopping and not self._carry:
                if not self._open:
                    break
                give_up_at = give_up_at or time.monotonic() + 2 * LINGER
                if time.monotonic() > give_up_at:
                    log.warning("closing %d connections unfinished", len(self._open))
                    break
            self._wait(poll_only=bool(events))
        for outbox in list(self._open):
            self._finish(outbox)

    def _collect(self) -> tuple[list[tuple], bool]:
        """Take every event; settle the byte counts of the last round."""
        with self._lock:
            for outbox in self._unsettled:
                outbox._queued += outbox._change
                outbox._change = 0
                self._note_level(outbox)
            self._unsettled.clear()
            events, self._events = self._events, []
            self._took_all()
            stopping = self._stopping  # read with the events: none is left behind
        if self._carry:  # owed by the last _fan_out: they go first
            events[:0] = self._carry
            self._carry = []
        return events, stopping

    def _deliver(self, events: list[tuple]) -> None:
        """Send what ``events`` give each connection, then carry out endings."""
        first = events[0][0]
        if type(first) is tuple and all(
            target is first and exclude is None for target, _, exclude in events
        ):
            # The busy room's case: everyone gets the same pieces.
            self._fan_out(first, self._join([data for _, data, _ in events]))
            return
        pieces: dict[Outbox, list[bytes]] = {}  # in the order of first event
        endings: list[Outbox] = []
        for target, data, exclude in events:
            if type(target) is tuple:  # a broadcast
                for outbox in target:
                    if outbox is exclude or outbox._done:
                        continue
                    mine = pieces.get(outbox)
                    if mine is None:
                        pieces[outbox] = [data]
                    else:
                        mine.append(data)
                continue
            outbox = target
            self._open.add(outbox)
            if data is not None:  # counted in _queued when put
                self._adjust(outbox, -len(data))
                if not outbox._done:
                    pieces.setdefault(outbox, []).append(data)
            else:
                self._take_ending(outbox, exclude)
                endings.append(outbox)
                if outbox._aborted:
                    pieces.pop(outbox, None)
        for outbox, mine in pieces.items():
            self._send(outbox, self._join(mine))
        for outbox in endings:
            self._settle(outbox)

    def _fan_out(self, outboxes: tuple[Outbox, ...], data: bytes) -> None:
        """Send ``data`` to each of ``outboxes``, taking in more on the way.

        A broadcast to the same members may come while this runs (its reader
        got the GIL between two sends).  The members not yet sent to get it
        with ``data``, in the same ``send``; those already sent to get it
        from a broadcast to them alone, first thing next round.  So one
        message does not wait for the whole fan-out of the one before.
        """
        taking = True
        for index, outbox in enumerate(outboxes):
            if not outbox._done:
                self._send(outbox, data)
            if taking and self._events:  # a glance, without the lock
                more = self._take_more(outboxes)
                if more is None:  # something else is first in line: it waits
                    taking = False
                else:
                    self._carry.append((outboxes[: index + 1], more, None))
                    data += more
                    taking = len(data) < MAX_PENDING  # a bound on what is held

    def _take_more(self, outboxes: tuple[Outbox, ...]) -> bytes | None:
        """Take every event, joined, if all are broadcasts to ``outboxes``."""
        with self._lock:
            events = self._events
            for target, _, exclude in events:
                if target is not outboxes or exclude is not None:
                    return None
            self._events = []
            self._took_all()
        return b"".join([data for _, data, _ in events])

    def _took_all(self) -> None:  # with _lock held
        """Every event is taken: readers held back by ``MAX_PENDING`` go on."""
        if self._pending > MAX_PENDING:
            self._room.notify_all()
        self._pending = 0

    def _take_ending(self, outbox: Outbox, ending: str) -> None:
        outbox._done = True
        if ending == _HANG_UP:
            outbox._hang_up = True
        elif ending == _CLOSE:
            outbox._closing = True
        else:
            outbox._aborted = True

    def _join(self, pieces: list[bytes]) -> bytes:
        # A broadcast leaves the same pieces for many outboxes: join them once.
        if len(pieces) == 1:
            return pieces[0]
        if pieces != self._last_pieces:
            self._last_pieces, self._last_data = pieces, b"".join(pieces)
        return self._last_data

    def _adjust(self, outbox: Outbox, change: int) -> None:
        """Change ``outbox``'s queued count at the next ``_collect``."""
        if not outbox._change:
            self._unsettled.append(outbox)
        outbox._change += change

    def _send(self, outbox: Outbox, data: bytes) -> None:
        if outbox._shut:
            return
        if outbox.transform is not None:
            try:
                data = outbox.transform(data)
            except OSError as exc:  # its TLS is broken (a bad record came in)
                log.debug("could not encrypt for %s: %s", outbox.sock, exc)
                self._lost(outbox)
                return
            except Exception:  # our bug: this connection cannot go on either
                log.exception("could not encrypt for %s", outbox.sock)
                self._lost(outbox)
                return
        if outbox._backlog:  # already waiting for room: keep the order
            self._park(outbox, data)
            return
        try:
            sent = outbox.sock.send(data, _MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost(outbox)
            return
        if sent < len(data):  # the socket is full: park the rest, wait for room
            self._park(outbox, memoryview(data)[sent:])

    def _park(self, outbox: Outbox, data) -> None:
        """Keep unsent bytes until the socket has room; past the limit, end it."""
        outbox._backlog += data
        self._adjust(outbox, len(data))
        if len(outbox._backlog) - outbox._backlog_start > outbox.limit:
            self._lost(outbox, "slow consumer")
            return
        if outbox not in self._waiting:
            self._waiting.add(outbox)
            self._selector.register(outbox.sock, selectors.EVENT_WRITE, outbox)

    def _send_backlog(self, outbox: Outbox) -> None:
        """The socket has room again: send as much of the backlog as it takes."""
        backlog = outbox._backlog
        start = outbox._backlog_start
        try:
            with memoryview(backlog) as view:
                sent = outbox.sock.send(view[start:], _MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            self._lost(outbox)
            return
        self._adjust(outbox, -sent)
        start += sent
        if start == len(backlog):
            backlog.clear()
            start = 0
            self._stop_waiting(outbox)
        elif start > len(backlog) // 2:
            del backlog[:start]  # compact now and then, not on every send
            start = 0
        outbox._backlog_start = start

    def _settle(self, outbox: Outbox) -> None:
        """Carry out a hang-up, an abort or a close, once its time has come."""
        now = time.monotonic()
        if (outbox._hang_up or outbox._closing) and not outbox._deadline:
            outbox._deadline = now + LINGER
        drained = not outbox._backlog
        late = outbox._deadline and now > outbox._deadline
        if not outbox._shut and (
            outbox._aborted or late or (outbox._hang_up and drained)
        ):
            self._shutdown(outbox)
        if outbox._closing and (drained or outbox._shut):
            self._finish(outbox)

    def _shutdown(self, outbox: Outbox) -> None:
        outbox._shut = True
        self._adjust(outbox, -(len(outbox._backlog) - outbox._backlog_start))
        outbox._backlog.clear()
        outbox._backlog_start = 0
        self._stop_waiting(outbox)
        try:
            outbox.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the peer is already gone

    def _lost(self, outbox: Outbox, reason: str = "connection lost") -> None:
        with self._lock:
            if outbox.end_reason is None:
                outbox.end_reason = reason
            outbox._ended = True
            self._note_level(outbox)
        outbox._done = True
        self._open.add(outbox)
        self._shutdown(outbox)

    def _finish(self, outbox: Outbox) -> None:
        self._open.discard(outbox)
        if outbox._finished:  # closed twice: count it once
            return
        outbox._finished = True
        with self._lock:
            self._connections -= 1
            outbox._ended = True
            self._note_level(outbox)
            self._room.notify_all()
        self._stop_waiting(outbox)
        outbox._backlog.clear()
        outbox.sock.close()

    def _stop_waiting(self, outbox: Outbox) -> None:
        if outbox in self._waiting:
            self._waiting.discard(outbox)
            self._selector.unregister(outbox.sock)

    def _wait(self, poll_only: bool) -> None:
        """Sleep until woken, a socket has room, or a deadline is due.

        The deadlines: a hang-up's or a close's ``LINGER``, and the
        ``BEHIND_LIMIT`` of an outbox behind (which waits for its socket too).
        """
        timeout = 0.0 if poll_only else self._next_timeout()
        if timeout:
            with self._lock:
                if self._events or self._stopping:
                    timeout = 0.0
                else:
                    self._sleeping = True
        if timeout == 0.0 and not self._waiting:
            return
        events = self._selector.select(timeout)
        with self._lock:
            self._sleeping = False
        for key, _ in events:
            if key.fileobj is self._wake_r:
                self._drain_wake()
            else:
                self._send_backlog(key.data)
                self._settle(key.data)
        now = time.monotonic()
        for outbox in list(self._waiting):
            if outbox._deadline and now > outbox._deadline:
                self._settle(outbox)
            elif outbox._behind_since and now - outbox._behind_since > BEHIND_LIMIT:
                self._lost(outbox, "slow consumer")

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _next_timeout(self) -> float:
        deadlines = [o._deadline for o in self._waiting if o._deadline]
        deadlines += [
            o._behind_since + BEHIND_LIMIT for o in self._waiting if o._behind_since
        ]
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, min(deadlines) - time.monotonic()) + 0.001)
