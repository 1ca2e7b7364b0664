"""The relay (``chat.bench.relay``): the yardstick the comparison runs beside
ours.  It must be a fair one: every line to everyone else, whole, once."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

from chat.bench import relay as relay_module
from chat.bench.compare import verdicts
from chat.bench.load import Config, run
from chat.bench.relay import Relay
from tests.helpers import wait_for

READ_TIMEOUT = 10.0


@contextlib.contextmanager
def running_relay() -> Iterator[Relay]:
    relay = Relay(0)
    stop = threading.Event()
    thread = threading.Thread(target=relay.serve, args=(stop,), name="relay")
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        thread.join(READ_TIMEOUT)
        assert not thread.is_alive()


@contextlib.contextmanager
def people(relay: Relay, *names: str) -> Iterator[list[socket.socket]]:
    """Connected, named plain clients, in order."""
    socks = []
    try:
        for name in names:
            sock = socket.create_connection(("127.0.0.1", relay.port), READ_TIMEOUT)
            sock.sendall(name.encode() + b"\n")
            socks.append(sock)
        wait_for(lambda: len(relay.held) == len(names) and not relay.unnamed,
                 what="everyone connected and named")  # fmt: skip
        yield socks
    finally:
        for sock in socks:
            sock.close()


def read_line(sock: socket.socket) -> bytes:
    """One whole line, however the reads cut it."""
    data = b""
    while not data.endswith(b"\n"):
        more = sock.recv(1)
        assert more, f"closed after {data!r}"
        data += more
    return data


def test_a_line_goes_to_everyone_else_and_not_back():
    with running_relay() as relay, people(relay, "ann", "bob", "cy") as socks:
        ann, bob, cy = socks
        ann.sendall(b"hello from ann\n")
        assert read_line(bob) == b"hello from ann\n"  # not "bob", the name line
        assert read_line(cy) == b"hello from ann\n"
        bob.sendall(b"and bob\n")
        # ann's own line never came back: the first she reads is bob's.
        assert read_line(ann) == b"and bob\n"
        assert read_line(cy) == b"and bob\n"


def test_a_line_cut_across_writes_is_sent_once_whole():
    with running_relay() as relay, people(relay, "ann", "bob") as (ann, bob):
        ann.sendall(b"hal")
        wait_for(lambda: relay.held.get(relay_peer(relay, ann)) == b"hal",
                 what="the relay holding the cut line")  # fmt: skip
        ann.sendall(b"f a line\nand more\n")
        assert read_line(bob) == b"half a line\n"
        assert read_line(bob) == b"and more\n"


def relay_peer(relay: Relay, sock: socket.socket) -> socket.socket | None:
    """The relay's end of the connection ``sock`` is the other end of."""
    mine = sock.getsockname()
    return next((s for s in relay.held if s.getpeername() == mine), None)


def test_someone_who_leaves_or_never_ends_a_line_costs_the_others_nothing(
    monkeypatch,
):
    monkeypatch.setattr(relay_module, "MAX_LINE", 100)
    with running_relay() as relay, people(relay, "ann", "bob", "cy", "dee") as socks:
        ann, bob, cy, dee = socks
        cy.close()  # gone without a word
        dee.sendall(b"x" * 200)  # a line with no end, past the limit
        wait_for(lambda: len(relay.held) == 2, what="cy and dee dropped")
        assert dee.recv(1) == b""  # the relay hung up on dee
        ann.sendall(b"still here\n")
        assert read_line(bob) == b"still here\n"


def test_the_generator_counts_every_message_through_it():
    with running_relay() as relay:
        cfg = Config(port=relay.port, mode="plain", clients=6, senders=3,
                     messages=40, procs=1, timeout=30, idle=0.5)  # fmt: skip
        report = run(cfg)
    assert not report.error, report.error
    assert report.sent == 3 * 40
    assert report.delivered == report.expected == 40 * 3 * (6 - 1)
    assert (report.lost, report.duplicated, report.malformed) == (0, 0, 0)
    assert report.out_of_order == 0


def test_the_verdicts_show_the_relay_beside_ours():
    def row(rate=None, p99=None):
        return {"deliveries_per_s": rate, "p99_ms": p99, "arrival_p99_ms": None,
                "lost": 0, "malformed": 0}  # fmt: skip

    summary = {
        1: {
            "ours/json": row(rate=900_000),
            "ncat/ncat": row(rate=1_000_000),
            "relay/plain": row(rate=1_100_000),
        },
        2: {"ours/json": row(p99=3.0), "relay/plain": row(p99=2.5)},
    }
    (_, met1, note1), (_, met2, note2) = verdicts(summary)
    assert not met1 and note1 == "x0.90 (the relay: x1.10)"
    assert not met2 and note2 == "p99 3.00 ms; the relay 2.50 ms"
    del summary[1]["relay/plain"], summary[2]["relay/plain"]
    (_, _, note1), (_, _, note2) = verdicts(summary)
    assert (note1, note2) == ("x0.90", "p99 3.00 ms")


def test_the_command_says_its_port_and_stops_cleanly_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "chat.bench", "relay"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        match = re.fullmatch(r"relay on 127\.0\.0\.1:(\d+)\n", first)
        assert match, first
        port = int(match.group(1))
        with socket.create_connection(("127.0.0.1", port), READ_TIMEOUT) as sock:
            sock.sendall(b"ann\n")
            process.send_signal(signal.SIGTERM)
            assert process.wait(READ_TIMEOUT) == 0
            # It closed its connections on the way out: an end, or a reset
            # if our name line was still unread.  (Open, recv would time out.)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(READ_TIMEOUT)
        process.stdout.close()
