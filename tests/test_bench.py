"""The benchmark's generator counts right: every delivery, and every fault.

A benchmark that miscounts is worse than none, so the generator
(``chat.bench.load``) is run here, small, against our real server (nothing
may be missing) and against a relay that loses, doubles and mangles chosen
lines on purpose (each fault must be counted, and only once).  Timing is
never checked: speed is for the benchmark commands, not for tests.
"""

from __future__ import annotations

import re
import select
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable

import pytest

from chat.bench import floor, load
from chat.bench.load import (
    MAX_PARTIAL,
    Client,
    Config,
    Report,
    Worker,
    bucket_floor,
    report_line,
    run,
    stamp_arrivals,
    token_text,
)
from tests.helpers import running_server, wait_for

SMALL = dict(clients=6, senders=3, messages=40, procs=1, timeout=30, idle=0.5)


def expected(cfg: Config) -> int:
    """Each of the clients reads every other sender's messages."""
    return cfg.messages * cfg.senders * (cfg.clients - 1)


def check_clean(report: Report, cfg: Config) -> None:
    assert not report.error, report.error
    assert report.expected == expected(cfg)
    assert report.delivered == expected(cfg)
    assert (report.lost, report.duplicated, report.malformed) == (0, 0, 0)
    assert report.out_of_order == 0
    assert report.sent == cfg.messages * cfg.senders
    assert report.p50_ms is not None and report.p50_ms <= report.p99_ms


@pytest.mark.parametrize("mode", ["json", "plain"])
@pytest.mark.parametrize("procs", [1, 2])
def test_against_our_server_nothing_is_missing(mode, procs):
    with running_server() as server:
        cfg = Config(port=server.port, mode=mode, **{**SMALL, "procs": procs})
        report = run(cfg)
    check_clean(report, cfg)
    if mode == "json":  # JSON clients hear their own lines: counted apart
        assert report.self_echoes == cfg.messages * cfg.senders


def test_without_epoll_the_selectors_loop_counts_the_same(monkeypatch):
    """As where there is no epoll (the workers are forked: they see it)."""
    monkeypatch.setattr(load, "EPOLL", False)
    with running_server() as server:
        cfg = Config(port=server.port, **SMALL)
        report = run(cfg)
    check_clean(report, cfg)
    assert report.self_echoes == cfg.messages * cfg.senders


def test_at_a_fixed_rate_every_message_is_timed():
    with running_server() as server:
        cfg = Config(port=server.port, **{**SMALL, "rate": 400})
        report = run(cfg)
    check_clean(report, cfg)


@pytest.mark.parametrize("rate", [400, 0])
def test_arrival_latency_is_never_above_read_latency(rate):
    """A line arrives before it is read: each of its latencies at arrival
    is at most the one when read, so every percentile is too."""
    with running_server() as server:
        cfg = Config(port=server.port, **{**SMALL, "rate": rate, "procs": 2})
        report = run(cfg)
    check_clean(report, cfg)
    if not sys.platform.startswith("linux"):
        return  # stamps or not: nothing more to check here
    if not rate:  # flat out, the generator saves itself the stamps
        assert report.arrival_p50_ms is None and report.arrival_max_ms is None
        return
    at_arrival = (
        report.arrival_p50_ms,
        report.arrival_p90_ms,
        report.arrival_p99_ms,
        report.arrival_max_ms,
    )
    assert None not in at_arrival, "Linux stamps every segment"
    when_read = (report.p50_ms, report.p90_ms, report.p99_ms, report.max_ms)
    for arrival, read in zip(at_arrival, when_read, strict=True):
        assert 0 < arrival <= read  # 0: the stamps were misread
    assert f"at arrival p50 {report.arrival_p50_ms} " in report_line(report)


def test_without_stamps_there_is_no_arrival_latency(monkeypatch):
    """As on a platform that cannot stamp (the workers are forked: they see
    the change)."""
    monkeypatch.setattr(load, "SO_TIMESTAMPNS", None)
    with running_server() as server:
        cfg = Config(port=server.port, **SMALL)
        report = run(cfg)
    check_clean(report, cfg)
    assert report.arrival_p50_ms is None and report.arrival_max_ms is None
    assert "at arrival" not in report_line(report)


# -- a relay that misbehaves on purpose --------------------------------------

Tamper = Callable[[int, bytes], list[bytes]]


class Relay:
    """A plain-lines chat relay on 127.0.0.1 that passes each token line
    through ``tamper(receiver index, line)``, which returns what to send.

    With ``echo_after`` (seconds), it also gives each line back to its
    sender, as our JSON protocol does, token lines that much later."""

    def __init__(self, tamper: Tamper, echo_after: float | None = None) -> None:
        self.tamper = tamper
        self.echo_after = echo_after
        self.echoes: list[tuple[float, socket.socket, bytes]] = []  # (due, to, line)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.clients: dict[socket.socket, bytes] = {}  # in connection order
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, name="test relay")

    def serve(self) -> None:
        while not self.stopping.is_set():
            now = time.monotonic()
            for due, sock, line in [e for e in self.echoes if e[0] <= now]:
                self.echoes.remove((due, sock, line))
                if sock in self.clients:
                    sock.sendall(line + b"\n")
            for key, _ in self.selector.select(0.01):
                if key.fileobj is self.listener:
                    sock, _ = self.listener.accept()
                    sock.setblocking(True)  # small runs: sends never fill up
                    self.clients[sock] = b""
                    self.selector.register(sock, selectors.EVENT_READ)
                else:
                    self.read(key.fileobj)

    def read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(sock)
            del self.clients[sock]
            sock.close()
            return
        data = self.clients[sock] + data
        *lines, self.clients[sock] = data.split(b"\n")
        for line in lines:
            if self.echo_after is not None:
                late = self.echo_after if b"XB" in line else 0.0
                self.echoes.append((time.monotonic() + late, sock, line))
            for index, other in enumerate(list(self.clients)):
                if other is sock:
                    continue
                out = self.tamper(index, line) if b"XB" in line else [line]
                if out:
                    other.sendall(b"".join(piece + b"\n" for piece in out))

    def __enter__(self) -> Relay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        for sock in self.clients:
            sock.close()
        self.selector.close()
        self.listener.close()


def nth_token(n: int, reader: int, change: Callable[[bytes], list[bytes]]) -> Tamper:
    """Change only the ``n``-th token line that goes to client ``reader``."""
    seen = [0]

    def tamper(index: int, line: bytes) -> list[bytes]:
        if index != reader:
            return [line]
        seen[0] += 1
        return change(line) if seen[0] == n else [line]

    return tamper


def relay_run(tamper: Tamper) -> tuple[Report, Config]:
    with Relay(tamper) as relay:
        cfg = Config(port=relay.port, mode="plain", **SMALL)
        return run(cfg), cfg


def test_a_worker_waits_for_its_own_lines_to_come_back():
    """A sender's own lines come back after everyone else has them (here 0.3 s
    later, under the run's 0.5 s of quiet that would end it): still counted."""
    with Relay(lambda index, line: [line], echo_after=0.3) as relay:
        cfg = Config(port=relay.port, mode="json", **SMALL)
        report = run(cfg)
    check_clean(report, cfg)
    assert report.self_echoes == cfg.messages * cfg.senders


def test_an_honest_relay_is_clean():
    report, cfg = relay_run(lambda index, line: [line])
    check_clean(report, cfg)


def to_no_sender(line: bytes) -> list[bytes]:
    """The token's sender changed to 99, which no client of the run is."""
    return [re.sub(rb"(XB\d+\.)\d+", rb"\g<1>99", line)]


@pytest.mark.parametrize(
    "change, lost, duplicated, malformed, late",
    [
        pytest.param(lambda line: [], 1, 0, 0, 0, id="dropped"),
        pytest.param(lambda line: [line, line], 0, 1, 0, 0, id="doubled"),
        pytest.param(lambda line: [line[:12]], 1, 0, 1, 0, id="cut short"),
        pytest.param(lambda line: [b"<user3> " + line], 0, 0, 0, 0, id="prefixed"),
        pytest.param(to_no_sender, 1, 0, 1, 0, id="no such sender"),
    ],
)
def test_each_fault_is_counted_once(change, lost, duplicated, malformed, late):
    report, cfg = relay_run(nth_token(10, reader=4, change=change))
    assert not report.error, report.error
    assert report.expected == expected(cfg)
    assert report.lost == lost
    assert report.duplicated == duplicated
    assert report.malformed == malformed
    assert report.out_of_order == late
    assert report.delivered == expected(cfg) - lost


def token_of(line: bytes) -> tuple[int, int]:
    """(sender, seq) of a token line: ``XB<run>.<sender>.<seq>.<ns>#``."""
    _, sender, seq, _ = line[line.index(b"XB") :].split(b".", 3)
    return int(sender), int(seq)


def test_a_line_held_back_counts_as_out_of_order_not_lost():
    held: list[bytes] = []

    def hold_back(index: int, line: bytes) -> list[bytes]:
        """Client 5 gets sender 0's message 2 only after its message 5."""
        if index != 5 or token_of(line)[0] != 0:
            return [line]
        seq = token_of(line)[1]
        if seq == 2:
            held.append(line)
            return []
        return [line, *held] if seq == 5 else [line]

    report, cfg = relay_run(hold_back)
    assert not report.error, report.error
    assert report.out_of_order == 1
    assert (report.lost, report.duplicated, report.malformed) == (0, 0, 0)
    assert report.delivered == expected(cfg)


def reader(sock: socket.socket, senders: int) -> Client:
    """Client 1, a reader of ``senders`` senders, on ``sock``."""
    client = Client(1, sock, sender=False, stalled=False)
    client.highest, client.gaps = [-1] * senders, [None] * senders
    return client


def test_a_line_split_across_reads_is_counted_once():
    """Reads end anywhere: the part of a line after the last newline waits."""
    cfg = Config(senders=2, run_id=7)
    worker = Worker(cfg, 0, shared={})
    ours, theirs = socket.socketpair()
    with ours, theirs:
        client = reader(ours, senders=2)
        lines = b"".join(
            token_text(7, 0, seq, 40) + b"\n" for seq in range(3)
        )  # three whole lines, sent in pieces that cut them anywhere
        for start in range(0, len(lines), 25):
            theirs.sendall(lines[start : start + 25])
            worker.receive(client)
    assert worker.counts["delivered"] == 3
    assert worker.counts["malformed"] == 0
    assert client.highest == [2, -1]


def test_the_floor_command_measures_a_real_fan_out():
    result = floor.measure(connections=5, messages=60, rate=600)
    assert (result["connections"], result["messages"]) == (5, 60)
    assert 0 < result["fan_out_p50_ms"] <= result["fan_out_p99_ms"]
    assert result["fan_out_p99_ms"] <= result["fan_out_max_ms"]
    assert result["send_us"] > 0


def test_a_line_that_never_ends_is_dropped_not_kept_forever():
    cfg = Config(senders=1, run_id=7)
    worker = Worker(cfg, 0, shared={})
    ours, theirs = socket.socketpair()
    with ours, theirs:
        client = reader(ours, senders=1)
        endless = token_text(7, 0, 0, 40) + b"x" * (MAX_PARTIAL + 1)
        for start in range(0, len(endless), 50_000):
            theirs.sendall(endless[start : start + 50_000])
            while worker_reads_more(ours):
                worker.receive(client)
        assert len(client.inbox) <= MAX_PARTIAL
        assert worker.counts["malformed"] == 1
        theirs.sendall(b"\n" + token_text(7, 0, 1, 40) + b"\n")
        while worker_reads_more(ours):
            worker.receive(client)
    assert worker.counts["delivered"] == 1  # the next line counts as always


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of one TCP connection on 127.0.0.1 (only TCP gets stamps)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=5)
        theirs, _ = listener.accept()
    return ours, theirs


def wait_until(deadline_ns: int) -> None:
    """A deliberate delay, up to a ``time.monotonic_ns`` deadline."""
    while time.monotonic_ns() < deadline_ns:
        time.sleep(0.001)


def one_latency(histogram: list[int]) -> float:
    """The only latency (ms) in a histogram."""
    (index,) = [i for i, count in enumerate(histogram) if count]
    assert histogram[index] == 1
    return bucket_floor(index) / 1000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux stamps")
def test_a_line_read_late_is_timed_at_its_arrival_too():
    """A line waits 50 ms in the socket before it is read (as behind a busy
    generator): read, it is 50 ms late; at its arrival, it was not."""
    cfg = Config(senders=1, run_id=7, rate=1000)
    worker = Worker(cfg, 0, shared={})
    ours, theirs = tcp_pair()
    with ours, theirs:
        assert stamp_arrivals(ours)
        client = reader(ours, senders=1)
        line = token_text(7, 0, 0, 40) + b"\n"
        stamped = int(line.split(b".")[3].rstrip(b"#"))
        wait_until(stamped + 10_000_000)  # 10 ms on the way to the server...
        theirs.sendall(line)
        sent = time.monotonic_ns()
        wait_until(sent + 50_000_000)  # ...then 50 ms unread
        wait_for(lambda: worker_reads_more(ours), what="the line")
        worker.receive(client)
    assert worker.counts["delivered"] == 1
    assert worker.stamped
    # (A bucket's floor is up to 0.1 % below the latency in it.)
    assert one_latency(worker.histogram) >= 59.9
    # At least the 10 ms before it was sent (a clock offset gone wrong would
    # show as 0 or as hours), far below the 60 ms of the read
    assert 9.9 <= one_latency(worker.arrivals) < 50


@pytest.mark.parametrize("platform", ["socket not stamped", "no stamps at all"])
def test_without_a_stamp_arrival_is_when_read(platform):
    cfg = Config(senders=1, run_id=7, rate=1000)
    worker = Worker(cfg, 0, shared={})
    if platform == "no stamps at all":
        worker.stamps = False  # recv_into, as where the kernel cannot stamp
    ours, theirs = tcp_pair()
    with ours, theirs:
        client = reader(ours, senders=1)
        line = token_text(7, 0, 0, 40) + b"\n"
        theirs.sendall(line)
        wait_until(time.monotonic_ns() + 20_000_000)  # late enough to tell apart
        wait_for(lambda: worker_reads_more(ours), what="the line")
        worker.receive(client)
    assert worker.counts["delivered"] == 1
    assert not worker.stamped
    assert one_latency(worker.histogram) >= 19.9
    assert worker.arrivals == worker.histogram
    assert worker.oldest_arrival == worker.oldest


@pytest.mark.parametrize("epoll", [True, False] if load.EPOLL else [False])
def test_what_the_kernel_cannot_take_yet_is_sent_when_it_can(monkeypatch, epoll):
    """A sender's bytes wait in its outbox while the socket is full; the
    event loop writes them out as the other end reads."""
    monkeypatch.setattr(load, "EPOLL", epoll)
    worker = Worker(Config(senders=1, run_id=7), 0, shared={})
    ours, theirs = tcp_pair()
    with ours, theirs:
        ours.setblocking(False)
        client = Client(0, ours, sender=True, stalled=False)
        worker.watch(client, load.READ)  # as connected
        data = bytes(range(256)) * (16 << 10)  # 4 MiB: more than loopback takes
        client.outbox += data
        worker.flush(client)
        assert client.outbox, "the kernel took it all: send more"
        assert client.events == load.READ | load.WRITE
        received = bytearray()
        deadline = time.monotonic() + 10
        while len(received) < len(data) and time.monotonic() < deadline:
            if select.select([theirs], [], [], 0.01)[0]:
                received += theirs.recv(1 << 20)
            worker.pump(0)
        assert received == data
        assert client.events == load.READ  # nothing left to write
    (worker.epoll or worker.selector).close()


def worker_reads_more(sock: socket.socket) -> bool:
    """Is there something to read right now?"""
    return bool(select.select([sock], [], [], 0)[0])


def test_shape_2_is_judged_when_read_and_shows_the_arrival_too():
    """The target stays on the stricter figure (when the generator read the
    line); the figure at arrival is shown beside it, for both servers."""
    from chat.bench.compare import verdicts

    def row(p99, arrival):
        return {"p99_ms": p99, "arrival_p99_ms": arrival}

    slow_read = {2: {"ours/json": row(3.1, 1.5), "ncat/ncat": row(18.0, 17.0)}}
    [(what, met, note)] = verdicts(slow_read)
    assert what.startswith("shape 2") and not met
    assert "p99 3.10 ms vs ncat 18.00 ms" in note
    assert "at arrival: ours 1.50 ms, ncat 17.00 ms" in note
    quick = {2: {"ours/json": row(1.9, 1.5), "ncat/ncat": row(18.0, 17.0)}}
    [(_, met, _)] = verdicts(quick)
    assert met


def test_shape_4_is_judged_against_the_same_run_with_nobody_stalled():
    from chat.bench.compare import UNSTALLED, verdicts

    def row(rate, dropped):
        return {"deliveries_per_s": rate, "stalled_dropped": dropped}

    def judge(stalled, unstalled, dropped=1):
        summary = {4: {"ours/json": row(stalled, dropped)}}
        summary[4][f"ours/{UNSTALLED}"] = row(unstalled, 0)
        [(what, met, note)] = verdicts(summary)
        assert what.startswith("shape 4")
        return met, note

    assert judge(950_000, 1_000_000) == (
        True,
        "x0.95 of the same run with nobody stalled, stalled dropped: 1",
    )
    assert not judge(850_000, 1_000_000)[0]  # the others slowed by a tenth
    assert not judge(1_000_000, 1_000_000, dropped=0)[0]  # never dropped
