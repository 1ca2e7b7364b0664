"""Sending: one bounded outbox per connection, one writer thread for them all.

Why one writer and not one per connection: a thread per connection costs a
wake-up, a GIL hand-off and a small ``send`` for every delivery, and measured
16 times slower (``docs/architecture.md``).  Here any thread may ``put`` bytes
on an outbox; that only appends to a list.  The writer wakes once for many
puts, joins everything pending for a connection and hands it to the kernel in
one non-blocking ``send``.  When the same pieces are pending for many
connections (a broadcast), they are joined once and the same bytes go to all.

A connection that stops reading fills its kernel buffer; the writer then
parks its unsent bytes and waits (with ``selectors``) for it to become
writable, while it goes on serving everyone else.  Once more than ``limit``
bytes wait, the connection is ended as a *slow consumer*.

Ownership of the socket: the connection's reader thread only calls ``recv``.
Every other socket call (send, shutdown, close) happens on the writer thread,
so a socket is never closed under another thread's feet.  The reader calls
``Outbox.close()`` when it is done; the writer then sends what is left (for
at most ``LINGER`` seconds) and closes the socket.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("chat.outbox")

DEFAULT_LIMIT = 1024 * 1024
#: An outbox holding more than this is "behind".  When most are behind, the
#: room as a whole is sending faster than it can deliver, and the readers wait
#: (``Writer.wait_for_room``).  A minority behind slows nobody down.
HIGH_WATER = 256 * 1024
#: How long a closing or hung-up connection may take to accept its last bytes.
LINGER = 1.0

_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class Outbox:
    """The bytes waiting to go to one connection.  Made by ``Writer.open``.

    ``put``, ``hang_up``, ``abort`` and ``close`` may be called from any thread
    and never block.  ``end_reason`` says why the writer ended the connection
    (``"slow consumer"``, ``"connection lost"``), or is ``None``.
    """

    def __init__(self, writer: Writer, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.limit = limit
        #: Applied by the writer to the bytes it is about to send (TLS
        #: encryption).  Set it before anything is put on the outbox.
        self.transform: Callable[[bytes], bytes] | None = None
        self._writer = writer
        # Guarded by writer._lock:
        self._chunks: list[bytes] = []
        self._queued = 0  # bytes put and not yet taken by the kernel
        self._scheduled = False  # on writer._ready
        self._hang_up = False  # shut down once everything queued is sent
        self._closing = False  # the reader is done: close once sent
        self._ended = False  # no more puts are accepted
        self._behind = False  # counted in writer._behind
        self.end_reason: str | None = None
        # Writer thread only:
        self._backlog = bytearray()  # unsent bytes, waiting for the socket
        self._backlog_start = 0  # how much of _backlog is already sent
        self._shut = False  # shutdown() done
        self._deadline = 0.0  # when a hang-up or close stops waiting
        self._sent = 0  # bytes sent, not yet subtracted from _queued

    @property
    def queued(self) -> int:
        """Bytes waiting to be sent."""
        with self._writer._lock:
            return self._queued

    def put(self, data: bytes) -> None:
        """Queue ``data``.  Past the limit, the connection is ended instead."""
        self._writer.deliver(((self, data),))

    def hang_up(self) -> None:
        """Send everything queued so far, then shut the connection down."""
        self._request(hang_up=True)

    def abort(self, reason: str) -> None:
        """Drop what is queued and shut the connection down now."""
        self._request(reason=reason)

    def close(self) -> None:
        """The reader is done with the socket: send what is left, then close it."""
        self._request(close=True)

    def _request(self, hang_up=False, reason: str | None = None, close=False) -> None:
        writer = self._writer
        with writer._lock:
            if close:
                self._ended = self._closing = True
            elif self._ended:
                return
            elif reason:
                self._end(reason)
            else:
                self._ended = self._hang_up = True
            writer._note_level(self)  # an ending outbox is never "behind"
            wake = writer._schedule(self)
        if wake:
            writer._wake()

    def _end(self, reason: str) -> None:  # with writer._lock held
        self._ended = True
        self.end_reason = reason
        self._chunks.clear()
        self._writer._note_level(self)


class Writer:
    """The thread that sends for every outbox.

    Owned by the server: ``start()`` it, ``open()`` an outbox per connection,
    and ``stop()`` it last, after every reader has called ``Outbox.close()``.
    Readers call ``wait_for_room`` before reading more from their client.
    """

    def __init__(self, name: str = "writer") -> None:
        self._lock = threading.Lock()
        # Guarded by _lock:
        self._ready: list[Outbox] = []  # outboxes with something new
        self._sleeping = False  # the thread waits in select(): wake it
        self._stopping = False
        self._connections = 0  # outboxes opened and not yet finished
        self._behind = 0  # outboxes holding more than HIGH_WATER
        self._room = threading.Condition(self._lock)  # notified when _behind drops
        # Writer thread only:
        self._open: set[Outbox] = set()
        self._waiting: set[Outbox] = set()  # registered for EVENT_WRITE
        self._unsettled: list[Outbox] = []  # sent bytes not yet accounted
        self._last_chunks: list[bytes] = []  # what _join joined last, and into
        self._last_data = b""
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- owner's side -----------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def open(self, sock: socket.socket, limit: int = DEFAULT_LIMIT) -> Outbox:
        """A new outbox for ``sock``; the writer closes ``sock`` in the end."""
        with self._lock:
            self._connections += 1
        return Outbox(self, sock, limit)

    def wait_for_room(self, timeout: float) -> bool:
        """Block while most connections are behind (at most ``timeout`` s).

        Called by a reader before it reads more from its client.  When more
        than half of all connections hold over ``HIGH_WATER`` unsent bytes, the
        room is at capacity: reading more would only fill every outbox until
        everyone is dropped as a slow consumer.  Waiting here slows the
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
        return self._behind * 2 <= self._connections

    def _note_level(self, outbox: Outbox) -> None:
        """Recount ``outbox`` as behind or not (``_lock`` held).

        It falls behind above ``HIGH_WATER`` and catches up below half of it,
        so a level near the mark does not flap.
        """
        if outbox._ended:
            behind = False
        elif outbox._behind:
            behind = outbox._queued > HIGH_WATER // 2
        else:
            behind = outbox._queued > HIGH_WATER
        if behind != outbox._behind:
            outbox._behind = behind
            self._behind += 1 if behind else -1
            if not behind:
                self._room.notify_all()

    def stop(self, timeout: float = 3 * LINGER) -> None:
        """Finish the outboxes still closing, then end the thread and join it."""
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

    def deliver(self, pairs: Iterable[tuple[Outbox, bytes]]) -> None:
        """Queue each ``data`` on its outbox, taking the lock once for all.

        A broadcast hands its whole list here (``Room``), so one message to a
        hundred members costs one lock, not a hundred.  Never blocks.
        """
        wake = False
        with self._lock:
            ready = self._ready
            for outbox, data in pairs:
                if outbox._ended:
                    continue
                outbox._chunks.append(data)
                queued = outbox._queued = outbox._queued + len(data)
                if queued > outbox.limit:
                    outbox._end("slow consumer")
                elif queued > HIGH_WATER and not outbox._behind:
                    self._note_level(outbox)
                if not outbox._scheduled:
                    outbox._scheduled = True
                    ready.append(outbox)
            if ready and self._sleeping:
                wake, self._sleeping = True, False
        if wake:
            self._wake()

    def _schedule(self, outbox: Outbox) -> bool:
        """Put ``outbox`` on the ready list (``_lock`` held).  Wake the thread?"""
        if outbox._scheduled:
            return False
        outbox._scheduled = True
        self._ready.append(outbox)
        wake, self._sleeping = self._sleeping, False
        return wake

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
            work, stopping = self._collect()
            for outbox, chunks, flags in work:
                self._open.add(outbox)
                if chunks:
                    self._send(outbox, self._join(chunks))
                if flags is not None:
                    self._settle(outbox, flags)
            if stopping:
                if not self._open:
                    break
                give_up_at = give_up_at or time.monotonic() + 2 * LINGER
                if time.monotonic() > give_up_at:
                    log.warning("closing %d connections unfinished", len(self._open))
                    break
            self._wait(poll_only=bool(work))
        for outbox in list(self._open):
            self._finish(outbox)

    def _collect(self):
        """Take every ready outbox's new pieces and flags; settle the accounts."""
        with self._lock:
            for outbox in self._unsettled:
                outbox._queued -= outbox._sent
                outbox._sent = 0
                if outbox._behind:
                    self._note_level(outbox)
            self._unsettled.clear()
            ready, self._ready = self._ready, []
            work = []
            for outbox in ready:
                outbox._scheduled = False
                chunks, outbox._chunks = outbox._chunks, []
                # Flags matter only once an outbox is ending: most never are.
                flags = self._flags(outbox) if outbox._ended else None
                work.append((outbox, chunks, flags))
            return work, self._stopping

    def _flags(self, outbox: Outbox) -> tuple[bool, bool, bool]:
        """(hang up, closing, aborted), read with ``_lock`` held."""
        aborted = outbox.end_reason is not None and not outbox._hang_up
        return outbox._hang_up, outbox._closing, aborted

    def _join(self, chunks: list[bytes]) -> bytes:
        # A broadcast leaves the same pieces on many outboxes: join them once.
        if len(chunks) == 1:
            return chunks[0]
        if chunks != self._last_chunks:
            self._last_chunks, self._last_data = chunks, b"".join(chunks)
        return self._last_data

    def _send(self, outbox: Outbox, data: bytes) -> None:
        if outbox._shut:
            return
        if outbox.transform is not None:
            try:
                data = outbox.transform(data)
            except Exception:  # a TLS failure: this connection cannot go on
                log.exception("could not encrypt for %s", outbox.sock)
                self._lost(outbox)
                return
        if outbox._backlog:  # already waiting for room: keep the order
            outbox._backlog += data
            return
        try:
            sent = outbox.sock.send(data, _MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost(outbox)
            return
        self._count_sent(outbox, sent)
        if sent < len(data):  # the socket is full: park the rest, wait for room
            outbox._backlog += memoryview(data)[sent:]
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
        self._count_sent(outbox, sent)
        start += sent
        if start == len(backlog):
            backlog.clear()
            start = 0
            self._stop_waiting(outbox)
        elif start > len(backlog) // 2:
            del backlog[:start]  # compact now and then, not on every send
            start = 0
        outbox._backlog_start = start

    def _count_sent(self, outbox: Outbox, sent: int) -> None:
        if sent:
            if not outbox._sent:
                self._unsettled.append(outbox)
            outbox._sent += sent

    def _settle(self, outbox: Outbox, flags: tuple[bool, bool, bool]) -> None:
        """Carry out a hang-up, an abort or a close, once its time has come."""
        hang_up, closing, aborted = flags
        now = time.monotonic()
        if (hang_up or closing) and not outbox._deadline:
            outbox._deadline = now + LINGER
        drained = not outbox._backlog
        late = outbox._deadline and now > outbox._deadline
        if not outbox._shut and (aborted or late or (hang_up and drained)):
            self._shutdown(outbox)
        if closing and (drained or outbox._shut):
            self._finish(outbox)

    def _shutdown(self, outbox: Outbox) -> None:
        outbox._shut = True
        outbox._backlog.clear()
        outbox._backlog_start = 0
        self._stop_waiting(outbox)
        try:
            outbox.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the peer is already gone

    def _lost(self, outbox: Outbox) -> None:
        with self._lock:
            if outbox.end_reason is None:
                outbox.end_reason = "connection lost"
            outbox._ended = True
            outbox._chunks.clear()
            self._note_level(outbox)
        self._shutdown(outbox)

    def _finish(self, outbox: Outbox) -> None:
        with self._lock:
            self._connections -= 1
            outbox._ended = True
            self._note_level(outbox)
            self._room.notify_all()
        self._stop_waiting(outbox)
        self._open.discard(outbox)
        outbox._backlog.clear()
        outbox.sock.close()

    def _stop_waiting(self, outbox: Outbox) -> None:
        if outbox in self._waiting:
            self._waiting.discard(outbox)
            self._selector.unregister(outbox.sock)

    def _wait(self, poll_only: bool) -> None:
        """Sleep until woken, a socket has room, or a deadline is due."""
        timeout = 0.0 if poll_only else self._next_timeout()
        if timeout:
            with self._lock:
                if self._ready or self._stopping:
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
                self._settle_locked(key.data)
        now = time.monotonic()
        for outbox in [o for o in self._waiting if o._deadline and now > o._deadline]:
            self._settle_locked(outbox)

    def _settle_locked(self, outbox: Outbox) -> None:
        with self._lock:
            flags = self._flags(outbox)
        self._settle(outbox, flags)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _next_timeout(self) -> float:
        deadlines = [o._deadline for o in self._waiting if o._deadline]
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, min(deadlines) - time.monotonic()) + 0.001)
