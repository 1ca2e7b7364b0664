"""The load generator, and ``python -m chat.bench run``.

N clients connect to any chat server; S of them (clients 0..S-1) each send M
messages, at R messages per second in all or flat out (R = 0); every client
reads everything and checks it.  Three wire modes:

``json``   our protocol: ``hello``, then ``say`` lines (``server.py``);
``plain``  a name line, then text lines (``server.py`` as nc sees it);
``ncat``   text lines only (``ncat --chat``, which prefixes ``<userN> ``).

Every message carries a token, ``XB<run>.<sender>.<seq>.<sent_ns>#``, that
survives JSON, our plain lines and ncat's prefix.  Receivers find the tokens
anywhere in what they read, so a server may wrap them as it likes; a token
cut or mangled in transit counts as *malformed*.  The per-run number keeps
tokens from an earlier run (replayed in a welcome's history) out of the
count.  Latency is one way, send to receive, on ``time.monotonic_ns``, which
is the same clock in every process of one machine.

Latency is measured twice.  *When read* is when the generator got round to
reading the line: on a small machine the generator's own waits for a core
count in it.  *At arrival* is when the kernel took the line in (Linux stamps
every segment with ``SO_TIMESTAMPNS``): the server's part alone, or nearly.
For TCP that stamp is the arrival of the *last* segment of a read, so for the
earlier lines of a read it over-states their latency: it errs high, never
low.  A read that comes without a stamp counts as arriving when read; where
no read has one (not Linux), the arrival figures are None.

Before anyone sends, a roll call proves every client is really in the room:
client 0 says ``RC<run>`` until every other client has seen it.  Clients are
spread over ``--procs`` worker processes (one event loop each: ``epoll`` on
Linux, else ``selectors``), so the generator is not its own bottleneck:
``python -m chat.bench ceiling`` shows how far it goes against a server that
does no work.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import resource
import select
import selectors
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, replace

ROLL_MARK = b"RC"
NEWLINE = ord("\n")
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
EPOLL = hasattr(select, "epoll")  # Linux: the event loop uses it itself
#: Each read goes into one buffer kept for the whole run (``recv_into``): a
#: plain ``recv(256 KiB)`` makes CPython allocate, and glibc ``mmap``, a fresh
#: 256 KiB for every read, ten times the cost of the read itself when reads
#: are small (one line each, as at a fixed rate).  Measured before this was
#: fixed, that alone took 1.3 of this machine's 2 cores in shape 2.
RECV_BYTES = 262144
CONNECTS_PER_SECOND = 2000
ROLL_EVERY = 0.2
#: The most of one unfinished line kept: beyond it, the line is dropped (its
#: tokens counted as malformed), so a server that never sends a newline
#: cannot make the generator's memory grow without end.
MAX_PARTIAL = 1 << 20
#: A flat-out sender refills its buffer below this many unsent bytes.
SEND_LOW_WATER = 64 * 1024
#: Linux only: the kernel stamps each received segment with the real-time
#: clock, and ``recvmsg`` hands over the stamp of the last segment it read.
#: Python's socket module lacks the constant; 35 is its number
#: (SO_TIMESTAMPNS_OLD) on x86 and arm.  Elsewhere: no stamps.
SO_TIMESTAMPNS = (
    getattr(socket, "SO_TIMESTAMPNS", 35) if sys.platform.startswith("linux") else None
)
#: The stamp: a C ``struct timespec`` (two longs: 16 bytes on 64 bits).
TIMESPEC = struct.Struct("@ll")
STAMP_SPACE = socket.CMSG_SPACE(TIMESPEC.size) if SO_TIMESTAMPNS else 0
SOL_SOCKET = socket.SOL_SOCKET


@dataclass
class Config:
    """One run's shape.  ``stalled`` clients (the last ones) never read."""

    host: str = "127.0.0.1"
    port: int = 12345
    clients: int = 100
    senders: int = 10
    messages: int = 1000
    rate: float = 0.0  # messages per second in all; 0: flat out
    mode: str = "json"
    size: int = 40  # bytes of text per message, token included
    stalled: int = 0
    procs: int = 1
    timeout: float = 120.0
    idle: float = 3.0  # seconds of silence, after the sending, that end a run
    run_id: int = 0  # 0: a fresh one for every run (see run())


@dataclass
class Report:
    """What a run measured.  Latencies in milliseconds (None when n/a)."""

    sent: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    malformed: int = 0
    self_echoes: int = 0
    not_joined: int = 0
    stalled_dropped: int = 0
    deliveries_per_s: float = 0.0
    duration_s: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    # The same, at the kernel's arrival stamp (None without stamps: see above)
    arrival_p50_ms: float | None = None
    arrival_p90_ms: float | None = None
    arrival_p99_ms: float | None = None
    arrival_max_ms: float | None = None
    generator_cpu_pct: float = 0.0
    error: str = ""


# -- latency histogram: exact below 1024 us, then 1024 buckets per doubling --
# A bucket's index: the microseconds themselves below 1024; above, the top 10
# bits and how far they were shifted (so the error stays under 0.1 %).
HISTOGRAM_SIZE = 40 << 10  # up to 2**49 us: far beyond any timeout


def bucket(us: int) -> int:
    """The bucket of a latency of ``us`` microseconds (the hot loop inlines it)."""
    if us >= 1024:
        shift = us.bit_length() - 10
        return (shift << 10) | (us >> shift)
    return max(us, 0)


def bucket_floor(index: int) -> int:
    """The smallest latency (us) that falls in bucket ``index``."""
    if index < 1024:
        return index
    shift = index >> 10
    return (index & 1023) << shift


def percentile(histogram: list[int], total: int, fraction: float) -> float:
    """The latency (ms) below which ``fraction`` of the samples lie."""
    rank = max(int(total * fraction + 0.999999), 1)
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return bucket_floor(index) / 1000
    return 0.0


# -- the wire modes ------------------------------------------------------------


def hello_line(mode: str, index: int) -> bytes:
    if mode == "json":
        return b'{"type":"hello","name":"b%d"}\n' % index
    if mode == "plain":
        return b"b%d\n" % index
    return b""


def chat_line(mode: str, text: bytes) -> bytes:
    if mode == "json":
        return b'{"type":"say","text":"%s"}\n' % text
    return text + b"\n"


def token_text(run: int, sender: int, seq: int, size: int) -> bytes:
    text = b"XB%d.%d.%d.%d#" % (run, sender, seq, time.monotonic_ns())
    return text + b"." * (size - len(text)) if len(text) < size else text


# -- arrival stamps ------------------------------------------------------------


def stamp_arrivals(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what ``sock`` receives; False where it cannot."""
    if SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def realtime_offset(tries: int = 5) -> int:
    """``time.time_ns() - time.monotonic_ns()``: turns the kernel's stamps
    (real time) into the monotonic time the tokens carry.

    The two clocks run at the same rate (NTP slews both alike): they differ
    by more than this offset only once the real-time clock is *stepped* (set
    by hand, or an NTP step), which would shift that run's arrival latencies
    by the step.  The real time is read between two monotonic readings, the
    narrowest bracket of a few wins (a preemption can widen one), and the
    bracket's end is taken as the moment: arrivals may come out late by up
    to the bracket (a fraction of a microsecond), never early.
    """
    best_width, best = None, 0
    for _ in range(tries):
        before = time.monotonic_ns()
        real = time.time_ns()
        after = time.monotonic_ns()
        if best_width is None or after - before < best_width:
            best_width, best = after - before, real - after
    return best


# -- one worker process -------------------------------------------------------


class Client:
    __slots__ = (
        "closed",
        "due",
        "events",
        "gaps",
        "highest",
        "inbox",
        "index",
        "next_seq",
        "outbox",
        "seen_roll",
        "sender",
        "sock",
        "stalled",
    )  # fmt: skip

    def __init__(self, index: int, sock: socket.socket, sender: bool, stalled: bool):
        self.index = index
        self.sock = sock
        self.inbox = b""  # an incomplete last line
        self.outbox = bytearray()
        self.seen_roll = False
        self.sender = sender
        self.next_seq = 0
        self.due = 0.0
        self.stalled = stalled
        self.closed = ""
        self.events = 0  # what the event loop waits for: READ, WRITE, both
        self.highest: list[int] = []  # by sender: the highest seq seen
        self.gaps: list[set[int] | None] = []  # by sender: seqs skipped so far


class Worker:
    """The clients ``index % procs == number``, on one event loop."""

    def __init__(self, cfg: Config, number: int, shared: dict) -> None:
        self.cfg = cfg
        self.number = number
        self.shared = shared
        # The event loop: epoll itself where there is one (Linux).  selectors
        # makes a key and a tuple for every socket that is ready, which costs
        # about 0.3 us a read more, measured here: a few % of what the
        # generator spends on a read.
        self.epoll = select.epoll() if EPOLL else None
        self.selector = selectors.DefaultSelector() if self.epoll is None else None
        self.by_fd: dict[int, Client] = {}  # for epoll, which knows only fds
        self.buffer = bytearray(RECV_BYTES)
        self.buffers = [self.buffer]  # recvmsg_into's argument, built once
        self.view = memoryview(self.buffer)
        self.clients: list[Client] = []
        # Latencies (us) when read, and at arrival: each in its histogram,
        # and the largest (ns) apart (see count_tokens).
        self.histogram = [0] * HISTOGRAM_SIZE
        self.arrivals = [0] * HISTOGRAM_SIZE
        self.oldest = self.oldest_arrival = 0
        # Reads with an arrival stamp use recvmsg_into: with the stamp, and
        # the objects Python makes for it, some 1.3 us dearer a read than
        # recv_into here.  Only where the kernel can stamp, and only at a
        # fixed rate: flat out, latencies are queueing anyway, and there the
        # generator's every microsecond is taken from the server it measures.
        self.stamps = SO_TIMESTAMPNS is not None and cfg.rate > 0
        self.stamped = False  # has any read carried a stamp?
        self.clock_offset = realtime_offset()
        self.counts = dict.fromkeys(
            ("sent", "delivered", "duplicated", "out_of_order", "malformed", "self"), 0
        )
        self.first_send = 0
        self.last_delivery = 0
        self.run_bytes = b"%d." % cfg.run_id
        self.roll = ROLL_MARK + self.run_bytes
        # This run's tokens only: an earlier run's (from a history) are not
        # counted at all, neither as deliveries nor as malformed.
        self.mark = b"XB" + self.run_bytes
        self.token = re.compile(re.escape(self.mark) + rb"(\d+)\.(\d+)\.(\d+)#")
        # A token's sender, looked up as it is read: a third of int()'s cost.
        # A number that is no sender's is a mangled token.
        self.sender_of = {b"%d" % index: index for index in range(cfg.senders)}
        # Flat out, every 8th message of each sender is timed (millions come:
        # the percentiles do not move); at a fixed rate, every one.
        self.sample = 1 if cfg.rate else 8

    # -- phases ----------------------------------------------------------

    def run(self) -> dict:
        cfg = self.cfg
        deadline = time.monotonic() + cfg.timeout
        try:
            self.connect(deadline)
            self.roll_call(deadline)
            self.load(deadline)
            dropped = self.check_stalled()
        except OSError as exc:
            return {"error": f"worker {self.number}: {exc}"}
        finally:
            for client in self.clients:
                client.sock.close()
            (self.epoll or self.selector).close()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        return {
            **self.counts,
            "histogram": self.histogram,
            "oldest": bucket(self.oldest // 1000),
            "arrivals": self.arrivals,
            "oldest_arrival": bucket(self.oldest_arrival // 1000),
            "stamped": self.stamped,
            "first_send": self.first_send,
            "last_delivery": self.last_delivery,
            "not_joined": sum(1 for c in self.clients if not c.seen_roll),
            "stalled_dropped": dropped,
            "cpu": cpu.ru_utime + cpu.ru_stime,
            "error": "",
        }

    def connect(self, deadline: float) -> None:
        cfg = self.cfg
        first_stalled = cfg.clients - cfg.stalled
        pace = max(cfg.procs, 1) / CONNECTS_PER_SECOND
        for index in range(self.number, cfg.clients, cfg.procs):
            sock = socket.socket()
            if index >= first_stalled:
                # A small window, as a frozen laptop's: the server's side
                # fills, instead of loopback's megabytes of kernel buffers.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect((cfg.host, cfg.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.stamps:
                self.stamps = stamp_arrivals(sock)
            sock.setblocking(False)
            client = Client(index, sock, index < cfg.senders, index >= first_stalled)
            client.highest = [-1] * cfg.senders
            client.gaps = [None] * cfg.senders
            client.outbox += hello_line(cfg.mode, index)
            self.clients.append(client)
            self.watch(client, READ)
            self.flush(client)
            self.pump(0)
            time.sleep(pace)  # pacing the connects, as a class arrives
            if time.monotonic() > deadline:
                raise TimeoutError("connecting took too long")

    def roll_call(self, deadline: float) -> None:
        """Client 0 repeats ``RC<run>`` until every client has seen it."""
        cfg, shared = self.cfg, self.shared
        caller = next((c for c in self.clients if c.index == 0), None)
        if caller is not None and cfg.mode != "json":
            caller.seen_roll = True  # only JSON clients hear themselves
        next_call = 0.0
        while not shared["go"].is_set():
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError("roll call: not everyone joined")
            if caller is not None and now >= next_call:
                caller.outbox += chat_line(cfg.mode, b"RC" + self.run_bytes + b"x")
                self.flush(caller)
                next_call = now + ROLL_EVERY
            self.pump(0.02)
            if all(c.seen_roll for c in self.clients):
                shared["ready"][self.number] = 1

    def load(self, deadline: float) -> None:
        """Send the messages (senders) and read everything until the end."""
        cfg, shared = self.cfg, self.shared
        senders = [c for c in self.clients if c.sender]
        start = time.monotonic()
        spacing = cfg.senders / cfg.rate if cfg.rate else 0.0
        for client in senders:
            client.due = start + client.index / cfg.rate if cfg.rate else start
        for client in self.clients:
            if client.stalled:  # from now on it never reads
                self.watch(client, 0)
        done_sending = not senders
        next_due = start
        quiet_since = time.monotonic()
        expected = self.expected()
        # Our protocol echoes a sender's lines back to it: wait for those too,
        # or a worker whose readers have everything else may stop before its
        # own last lines come back.  (A server that does not echo ends the
        # run after ``idle`` seconds of quiet instead.)
        readers_of_own = [c for c in senders if not c.stalled]
        echoes = cfg.messages * len(readers_of_own) if cfg.mode == "json" else 0
        while True:
            now = time.monotonic()
            if now > deadline:
                break
            if not done_sending and (now >= next_due or not spacing):
                done_sending = self.send_due(senders, spacing, now)
                if done_sending:
                    with shared["senders_done"].get_lock():
                        shared["senders_done"].value += 1
                elif spacing:  # nothing to do for anyone until then
                    next_due = min(
                        (c.due for c in senders if c.next_seq < cfg.messages),
                        default=now,
                    )
            before = self.counts["delivered"]
            if done_sending:
                self.pump(0.05)
            else:  # wake for the next send, not later
                self.pump(min(max(next_due - time.monotonic(), 0.0), 0.001))
            if self.counts["delivered"] != before:
                quiet_since = time.monotonic()
            all_sent = shared["senders_done"].value >= shared["sender_workers"]
            counts = self.counts
            everything = counts["delivered"] >= expected and counts["self"] >= echoes
            if all_sent and everything:
                break
            if all_sent and time.monotonic() - quiet_since > cfg.idle:
                break

    def expected(self) -> int:
        """Deliveries this worker's readers should get."""
        cfg = self.cfg
        readers = [c for c in self.clients if not c.stalled]
        total = 0
        for reader in readers:
            others = cfg.senders - (1 if reader.sender else 0)
            total += others * cfg.messages
        return total

    def send_due(self, senders: list[Client], spacing: float, now: float) -> bool:
        """Queue what is due; True when every sender here has sent everything."""
        cfg = self.cfg
        finished = True
        for client in senders:
            if client.next_seq >= cfg.messages or client.closed:
                continue
            finished = False
            if spacing:
                while client.due <= now and client.next_seq < cfg.messages:
                    self.queue_message(client)
                    client.due += spacing
            else:
                while len(client.outbox) < SEND_LOW_WATER and (
                    client.next_seq < cfg.messages
                ):
                    self.queue_message(client)
            self.flush(client)
        return finished

    def queue_message(self, client: Client) -> None:
        cfg = self.cfg
        text = token_text(cfg.run_id, client.index, client.next_seq, cfg.size)
        client.outbox += chat_line(cfg.mode, text)
        client.next_seq += 1
        self.counts["sent"] += 1
        if not self.first_send:
            self.first_send = time.monotonic_ns()

    def check_stalled(self) -> int:
        """How many never-reading clients the server has dropped (EOF or reset)."""
        dropped = 0
        for client in self.clients:
            if not client.stalled:
                continue
            try:
                while True:
                    data = client.sock.recv(RECV_BYTES)
                    if not data:
                        dropped += 1
                        break
            except BlockingIOError:
                pass  # still connected, with nothing more to read
            except OSError:
                dropped += 1  # reset
        return dropped

    # -- the event loop ----------------------------------------------------

    def flush(self, client: Client) -> None:
        if not client.outbox or client.closed:
            return
        try:
            sent = client.sock.send(client.outbox)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            client.closed = str(exc)
            return
        del client.outbox[:sent]
        events = READ if not client.stalled else 0
        if client.outbox:
            events |= WRITE
        if events:
            self.watch(client, events)

    def watch(self, client: Client, events: int) -> None:
        """Wait for ``events`` on the client's socket: READ, WRITE, both, or 0
        (nothing: it leaves the event loop)."""
        if events == client.events:
            return
        sock = client.sock
        if self.epoll is None:
            if not client.events:
                self.selector.register(sock, events, client)
            elif events:
                self.selector.modify(sock, events, client)
            else:
                self.selector.unregister(sock)
        else:
            mask = (select.EPOLLIN if events & READ else 0) | (
                select.EPOLLOUT if events & WRITE else 0
            )
            fd = sock.fileno()
            if not client.events:
                self.epoll.register(fd, mask)
                self.by_fd[fd] = client
            elif events:
                self.epoll.modify(fd, mask)
            else:
                self.epoll.unregister(fd)
                del self.by_fd[fd]
        client.events = events

    def pump(self, timeout: float) -> None:
        """Write and read whatever is ready, waiting up to ``timeout`` s."""
        if self.epoll is None:
            for key, ready in self.selector.select(timeout):
                if ready & WRITE:
                    self.flush(key.data)
                if ready & READ:
                    self.receive(key.data)
            return
        # An error or a hang-up wakes both sides, as selectors does; epoll
        # reports them even for what is not watched: hence the tests of events.
        to_write = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
        to_read = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
        by_fd = self.by_fd
        for fd, mask in self.epoll.poll(timeout, max(len(by_fd), 1)):
            client = by_fd[fd]
            if mask & to_write and client.events & WRITE:
                self.flush(client)
            if mask & to_read and client.events & READ:
                self.receive(client)

    def receive(self, client: Client) -> None:
        """Read once from ``client`` and account for every whole line read.

        The hot path, with ``count_tokens``: it runs for every read, tens of
        thousands of times a second, and on a small machine every microsecond
        the generator spends here is one the server it measures does not get.
        """
        try:
            if self.stamps:
                size, ancillary, _, _ = client.sock.recvmsg_into(
                    self.buffers, STAMP_SPACE
                )
            else:
                size = client.sock.recv_into(self.buffer)
                ancillary = ()
        except BlockingIOError:
            return
        except OSError as exc:
            client.closed = str(exc)
            self.watch(client, 0)
            return
        if not size:
            client.closed = "closed by the server"
            self.watch(client, 0)
            return
        now = time.monotonic_ns()
        arrival = now  # without a stamp: when read
        for level, kind, stamp in ancillary:  # at most one: the stamp we asked for
            if kind == SO_TIMESTAMPNS and level == SOL_SOCKET:
                seconds, nanoseconds = TIMESPEC.unpack(stamp)
                arrival = seconds * 1_000_000_000 + nanoseconds - self.clock_offset
                # Nothing arrives after it is read: only the offset's error could
                # say so (see realtime_offset)
                if arrival > now:
                    arrival = now
                self.stamped = True
        buffer = self.buffer
        if not client.inbox and buffer[size - 1] == NEWLINE:
            # The usual case: whole lines and nothing left over from before.
            # They are read where they lie, in the buffer, without a copy.
            data, end, length = buffer, size, size
        else:
            data = client.inbox + self.view[:size]  # bytes, with any partial line
            end = data.rfind(b"\n") + 1
            client.inbox = data[end:]
            if len(client.inbox) > MAX_PARTIAL:  # a server that never ends a line
                self.counts["malformed"] += client.inbox.count(self.mark)
                client.inbox = b""
            length = len(data)
        # (The buffer is longer than this read: every search stops at its end.)
        if not client.seen_roll and data.find(self.roll, 0, length) >= 0:
            client.seen_roll = True
        marks = data.count(self.mark, 0, end)
        if marks:
            self.count_tokens(client, data, end, marks, now, arrival)

    def count_tokens(
        self,
        client: Client,
        data: bytes | bytearray,
        end: int,
        marks: int,
        now: int,
        arrival: int,
    ) -> None:
        """Account for every token in ``data[:end]``, read at ``now``, arrived
        at ``arrival`` (ns).  The hot loop: kept flat, so the bucketing of a
        latency (see ``bucket``) is written out in it."""
        found = self.token.findall(data, 0, end)
        counts = self.counts
        if marks != len(found):
            counts["malformed"] += marks - len(found)
        if found:  # the first token of a read is (nearly) its oldest: time it,
            sent = int(found[0][2])  # so the max is never missed
            if now - sent > self.oldest:
                self.oldest = now - sent
            if arrival - sent > self.oldest_arrival:
                self.oldest_arrival = arrival - sent
        histogram, arrivals = self.histogram, self.arrivals
        highest, gaps = client.highest, client.gaps
        me = client.index
        sample = self.sample
        sender_of = self.sender_of
        delivered = duplicated = late = own = 0
        for sender_b, seq_b, sent_b in found:
            try:
                sender = sender_of[sender_b]
            except KeyError:
                counts["malformed"] += 1
                continue
            if sender == me:
                own += 1
                continue
            seq = int(seq_b)
            top = highest[sender]
            if seq == top + 1:  # the usual case: next in order
                highest[sender] = seq
            elif seq > top:
                skipped = gaps[sender]
                if skipped is None:
                    skipped = gaps[sender] = set()
                skipped.update(range(top + 1, seq))
                highest[sender] = seq
            else:
                skipped = gaps[sender]
                if skipped is not None and seq in skipped:
                    skipped.discard(seq)
                    late += 1
                else:
                    duplicated += 1
                    continue
            delivered += 1
            if seq % sample:
                continue
            sent = int(sent_b)
            us = (now - sent) // 1000
            if us >= 1024:
                shift = us.bit_length() - 10
                us = (shift << 10) | (us >> shift)
            histogram[us] += 1
            us = (arrival - sent) // 1000
            if us >= 1024:
                shift = us.bit_length() - 10
                us = (shift << 10) | (us >> shift)
            elif us < 0:  # only if the real-time clock was stepped back
                us = 0
            arrivals[us] += 1
        if own:
            counts["self"] += own
        if duplicated:
            counts["duplicated"] += duplicated
        if late:
            counts["out_of_order"] += late
        if delivered:
            counts["delivered"] += delivered
            self.last_delivery = now


def _worker_main(cfg: Config, number: int, shared: dict, results) -> None:
    try:
        results.put((number, Worker(cfg, number, shared).run()))
    except Exception as exc:  # report, never hang the parent
        results.put((number, {"error": f"worker {number}: {exc!r}"}))


# -- the parent --------------------------------------------------------------


def run(cfg: Config) -> Report:
    """Run one shape against ``cfg.host:cfg.port`` and report what happened.

    Every run gets its own run id (unless ``cfg.run_id`` is set), so that an
    earlier run's messages, replayed in a welcome's history, never count.
    """
    if not cfg.run_id:
        cfg = replace(cfg, run_id=int.from_bytes(os.urandom(3), "big") or 1)
    raise_file_limit(cfg.clients // max(cfg.procs, 1) + 64)
    context = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    sender_workers = len({i % cfg.procs for i in range(cfg.senders)})
    shared = {
        "go": context.Event(),
        "ready": context.Array("b", cfg.procs),
        "senders_done": context.Value("i", 0),
        "sender_workers": sender_workers,
    }
    results = context.Queue()
    workers = [
        context.Process(
            target=_worker_main,
            args=(cfg, n, shared, results),
            name=f"bench worker {n}",
            daemon=True,
        )
        for n in range(cfg.procs)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    outcome: dict[int, dict] = {}
    try:
        deadline = started + cfg.timeout + 30
        while not shared["go"].is_set() and time.monotonic() < deadline:
            if all(shared["ready"]):
                shared["go"].set()
            elif not results.empty():
                break  # a worker failed before the roll call ended
            time.sleep(0.01)
        while len(outcome) < cfg.procs and time.monotonic() < deadline:
            try:
                number, result = results.get(timeout=0.5)
            except Exception:  # queue.Empty
                continue
            outcome[number] = result
            if result.get("error"):
                shared["go"].set()  # let the others finish and report
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
                worker.join(5)
    wall = time.monotonic() - started
    return merge(cfg, list(outcome.values()), wall)


def merge(cfg: Config, results: list[dict], wall: float) -> Report:
    report = Report()
    errors = [r["error"] for r in results if r.get("error")]
    if len(results) < cfg.procs:
        errors.append("a worker did not report")
    if errors:
        report.error = "; ".join(errors)
        return report
    histogram = [0] * HISTOGRAM_SIZE
    arrivals = [0] * HISTOGRAM_SIZE
    for result in results:
        for index, count in enumerate(result["histogram"]):
            if count:
                histogram[index] += count
        for index, count in enumerate(result["arrivals"]):
            if count:
                arrivals[index] += count
        report.sent += result["sent"]
        report.delivered += result["delivered"]
        report.duplicated += result["duplicated"]
        report.out_of_order += result["out_of_order"]
        report.malformed += result["malformed"]
        report.self_echoes += result["self"]
        report.not_joined += result["not_joined"]
        report.stalled_dropped += result["stalled_dropped"]
    # Every reader gets every sender's messages but its own; the senders are
    # the first clients, the stalled (non-readers) the last.
    readers = cfg.clients - cfg.stalled
    report.expected = cfg.messages * (readers * cfg.senders - min(cfg.senders, readers))
    report.lost = max(report.expected - report.delivered, 0)
    first = min((r["first_send"] for r in results if r["first_send"]), default=0)
    last = max((r["last_delivery"] for r in results), default=0)
    if first and last > first:
        report.duration_s = round((last - first) / 1e9, 3)
        report.deliveries_per_s = round(report.delivered / report.duration_s)
    total = sum(histogram)
    if total:
        report.p50_ms, report.p90_ms, report.p99_ms, report.max_ms = quantiles(
            histogram, total, max(r["oldest"] for r in results)
        )
    if total and any(r["stamped"] for r in results):
        (
            report.arrival_p50_ms,
            report.arrival_p90_ms,
            report.arrival_p99_ms,
            report.arrival_max_ms,
        ) = quantiles(arrivals, total, max(r["oldest_arrival"] for r in results))
    cpu = sum(r["cpu"] for r in results)
    report.generator_cpu_pct = round(100 * cpu / wall, 1) if wall else 0.0
    return report


def quantiles(histogram: list[int], total: int, oldest: int) -> tuple[float, ...]:
    """p50, p90, p99 and max (ms); ``oldest``: the largest latency's bucket."""
    top = max(max(i for i, count in enumerate(histogram) if count), oldest)
    return (
        percentile(histogram, total, 0.50),
        percentile(histogram, total, 0.90),
        percentile(histogram, total, 0.99),
        bucket_floor(top) / 1000,
    )


def raise_file_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


# -- the command line --------------------------------------------------------


def add_shape_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--clients", type=int, default=Config.clients)
    parser.add_argument("-s", "--senders", type=int, default=Config.senders)
    parser.add_argument("-m", "--messages", type=int, default=Config.messages)
    parser.add_argument(
        "-r", "--rate", type=float, default=0.0, help="messages/s in all (0: flat out)"
    )
    parser.add_argument("--size", type=int, default=Config.size, help="bytes a message")
    parser.add_argument(
        "--stalled", type=int, default=0, help="clients that never read (the last ones)"
    )
    parser.add_argument(
        "--procs", type=int, default=1, help="generator processes (default 1)"
    )
    parser.add_argument("--timeout", type=float, default=Config.timeout)


def report_line(report: Report) -> str:
    if report.error:
        return f"error: {report.error}"
    latency = (
        f"p50 {report.p50_ms} p90 {report.p90_ms} p99 {report.p99_ms} "
        f"max {report.max_ms} ms"
        if report.p50_ms is not None
        else "latency n/a"
    )
    if report.arrival_p50_ms is not None:
        latency += (
            f" (at arrival p50 {report.arrival_p50_ms} p90 {report.arrival_p90_ms}"
            f" p99 {report.arrival_p99_ms} max {report.arrival_max_ms})"
        )
    return (
        f"{report.deliveries_per_s:>10,.0f} deliveries/s  "
        f"delivered {report.delivered:,}"
        f"/{report.expected:,}  lost {report.lost}  dup {report.duplicated}  "
        f"out-of-order {report.out_of_order}  malformed {report.malformed}  "
        f"{latency}  generator {report.generator_cpu_pct}% cpu"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat.bench run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "target", nargs="?", default="127.0.0.1:12345", help="HOST:PORT"
    )
    parser.add_argument("--mode", choices=("json", "plain", "ncat"), default="json")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_shape_options(parser)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    cfg = Config(
        host=host or "127.0.0.1",
        port=int(port),
        clients=args.clients,
        senders=args.senders,
        messages=args.messages,
        rate=args.rate,
        mode=args.mode,
        size=args.size,
        stalled=args.stalled,
        procs=args.procs,
        timeout=args.timeout,
    )
    report = run(cfg)
    print(json.dumps(asdict(report)) if args.json else report_line(report))
    return 1 if report.error or report.lost or report.malformed else 0
