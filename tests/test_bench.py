"""The benchmark's generator counts right: every delivery, and every fault.

A benchmark that miscounts is worse than none, so the generator
(``chat.bench.load``) is run here, small, against our real server (nothing
may be missing) and against a relay that loses, doubles and mangles chosen
lines on purpose (each fault must be counted, and only once).  Timing is
never checked: speed is for the benchmark commands, not for tests.
"""

from __future__ import annotations

import select
import selectors
import socket
import threading
from collections.abc import Callable

import pytest

from chat.bench import floor
from chat.bench.load import (
    MAX_PARTIAL,
    Client,
    Config,
    Report,
    Worker,
    run,
    token_text,
)
from tests.helpers import running_server

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


def test_at_a_fixed_rate_every_message_is_timed():
    with running_server() as server:
        cfg = Config(port=server.port, **{**SMALL, "rate": 400})
        report = run(cfg)
    check_clean(report, cfg)


# -- a relay that misbehaves on purpose --------------------------------------

Tamper = Callable[[int, bytes], list[bytes]]


class Relay:
    """A plain-lines chat relay on 127.0.0.1 that passes each token line
    through ``tamper(receiver index, line)``, which returns what to send."""

    def __init__(self, tamper: Tamper) -> None:
        self.tamper = tamper
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
            for key, _ in self.selector.select(0.05):
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


def test_an_honest_relay_is_clean():
    report, cfg = relay_run(lambda index, line: [line])
    check_clean(report, cfg)


@pytest.mark.parametrize(
    "change, lost, duplicated, malformed, late",
    [
        pytest.param(lambda line: [], 1, 0, 0, 0, id="dropped"),
        pytest.param(lambda line: [line, line], 0, 1, 0, 0, id="doubled"),
        pytest.param(lambda line: [line[:12]], 1, 0, 1, 0, id="cut short"),
        pytest.param(lambda line: [b"<user3> " + line], 0, 0, 0, 0, id="prefixed"),
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


def test_a_line_split_across_reads_is_counted_once():
    """Reads end anywhere: the part of a line after the last newline waits."""
    cfg = Config(senders=2, run_id=7)
    worker = Worker(cfg, 0, shared={})
    ours, theirs = socket.socketpair()
    with ours, theirs:
        client = Client(1, ours, sender=False, stalled=False)
        client.highest, client.gaps = [-1, -1], [None, None]
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
        client = Client(1, ours, sender=False, stalled=False)
        client.highest, client.gaps = [-1], [None]
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


def worker_reads_more(sock: socket.socket) -> bool:
    """Is there something to read right now?"""
    return bool(select.select([sock], [], [], 0)[0])
