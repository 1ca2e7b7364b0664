"""Tests of ``chat.discovery`` and ``python -m chat.discover``.

The formats and the rate limit are tables of cases, without sockets.  The
rest uses real UDP sockets on 127.0.0.1: a ``DiscoveryResponder`` on port 0
and probes sent to it.  Every datagram these tests send goes to 127.0.0.1,
never to a broadcast or network address: ``loopback_only`` makes any other
``sendto`` fail the test before anything leaves.

Nothing sleeps to synchronise.  "No answer" is shown by waiting until the
responder has counted the datagram as ignored, then finding nothing queued,
then getting the answer to a good probe as the very next datagram.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat import discover as discover_cli
from chat.discovery import (
    MAX_PROBE_BYTES,
    MAX_REPLY_BYTES,
    MAX_SERVER_NAME_CHARS,
    PROBE,
    DiscoveryResponder,
    Found,
    ReplyBudget,
    broadcast_addresses,
    broadcasts_from_route_table,
    discover,
    encode_reply,
    is_broadcast,
    is_probe,
    parse_reply,
)
from tests.helpers import DEADLINE, wait_for

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
#: How long the tests that expect silence listen for an answer.
SILENCE = 0.3

DESCRIPTION = {
    "name": "lab-pc",
    "port": 4242,
    "users": 3,
    "password": True,
    "tls": False,
}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any ``sendto`` in this process to an address other than loopback."""
    real_sendto = socket.socket.sendto

    def sendto(sock: socket.socket, data: bytes, *args: Any) -> int:
        address = args[-1]
        assert address[0] == LOOPBACK, f"a test tried to send to {address!r}"
        return real_sendto(sock, data, *args)

    monkeypatch.setattr(socket.socket, "sendto", sendto)


class QuickResponder(DiscoveryResponder):
    """Notices stop() within 20 ms rather than 200: the tests start dozens."""

    timeout = 0.02


@contextlib.contextmanager
def responding(**options: Any) -> Iterator[DiscoveryResponder]:
    """A started responder on 127.0.0.1, port 0 unless given; stopped on exit."""
    options.setdefault("describe", lambda: DESCRIPTION)
    port = options.pop("port", 0)
    with QuickResponder(LOOPBACK, port, **options) as responder:
        yield responder


@contextlib.contextmanager
def asker() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 for sending probes by hand and reading replies."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(DEADLINE)
        yield sock


def queued(sock: socket.socket) -> list[bytes]:
    """The datagrams already waiting on ``sock``, read without waiting."""
    sock.setblocking(False)
    try:
        datagrams = []
        for _ in range(1000):
            try:
                datagrams.append(sock.recv(65536))
            except BlockingIOError:
                break
        return datagrams
    finally:
        sock.settimeout(DEADLINE)


# ---------------------------------------------------------------------------
# The formats

GOOD_PROBES = [
    PROBE,
    b'{ "type": "discover", "v": 1 }',
    b'{"v":1,"type":"discover"}',
    b'{"type":"discover","v":1,"want":"more"}',  # later versions may add fields
]

BAD_PROBES = [
    b"",
    b"hello",
    b"\xff\xfe",
    b"{}",
    b"[]",
    b'"discover"',
    b'{"type":"discover"}',
    b'{"type":"discover","v":2}',
    b'{"type":"discover","v":"1"}',
    b'{"type":"discover","v":true}',
    b'{"type":"discover","v":1.0}',
    b'{"type":"Discover","v":1}',
    b'{"type":"discovery","v":1}',
    b'{"type":"discover","v":1',
    b'{"type":"discover","v":1}{}',
    b'{"type":"discover","v":1,"pad":"' + b"x" * MAX_PROBE_BYTES + b'"}',
    b"[" * 30 + b"]" * 30,
    encode_reply(**DESCRIPTION),  # a reply is never a probe: no ping-pong
]


@pytest.mark.parametrize("data", GOOD_PROBES)
def test_a_good_probe_is_recognised(data: bytes) -> None:
    assert is_probe(data)


@pytest.mark.parametrize("data", BAD_PROBES)
def test_anything_else_is_not_a_probe(data: bytes) -> None:
    assert not is_probe(data)


def test_a_reply_reads_back_as_what_was_encoded() -> None:
    data = encode_reply(**DESCRIPTION)
    assert json.loads(data) == {"type": "server", "v": 1, **DESCRIPTION}
    assert parse_reply(data, "10.0.0.5") == Found(
        "lab-pc", "10.0.0.5", 4242, 3, True, False
    )


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("salle-B12", "salle-B12"),
        ("évry ☕", "évry ☕"),
        ("evil\x1b[2J\nname", "evil\\x1b[2J\\nname"),  # escaped, still shown
        ("x" * 100, "x" * MAX_SERVER_NAME_CHARS),
        ("😀" * 100, "😀" * MAX_SERVER_NAME_CHARS),
    ],
)
def test_a_name_is_made_safe_and_short(name: str, sent: str) -> None:
    data = encode_reply(**{**DESCRIPTION, "name": name})
    assert len(data) <= MAX_REPLY_BYTES
    found = parse_reply(data, LOOPBACK)
    assert found is not None and found.name == sent


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"name": ""}, ValueError),
        ({"port": 0}, ValueError),
        ({"port": 65536}, ValueError),
        ({"port": True}, ValueError),
        ({"users": -1}, ValueError),
        ({"users": 2.0}, ValueError),
        ({"password": 1}, TypeError),
        ({"tls": None}, TypeError),
        ({"colour": "blue"}, TypeError),  # an unknown field is our bug too
    ],
)
def test_a_wrong_description_is_our_bug(change: dict, error: type) -> None:
    with pytest.raises(error):
        encode_reply(**{**DESCRIPTION, **change})


def reply_bytes(**change: Any) -> bytes:
    fields = {"type": "server", "v": 1, **DESCRIPTION, **change}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"junk",
        b"\xc3",
        b"[1]",
        PROBE,
        reply_bytes(type="servers"),
        reply_bytes(v=2),
        reply_bytes(v=True),
        reply_bytes(name=...),
        reply_bytes(name=""),
        reply_bytes(name=7),
        reply_bytes(name="x" * (MAX_SERVER_NAME_CHARS + 1)),
        reply_bytes(name="bell\x07"),
        reply_bytes(name="rtl\u202egnp.exe"),
        reply_bytes(port=0),
        reply_bytes(port=70000),
        reply_bytes(port="4242"),
        reply_bytes(users=-1),
        reply_bytes(users=True),
        reply_bytes(users=...),
        reply_bytes(password="yes"),
        reply_bytes(tls=0),
        reply_bytes(pad="x" * MAX_REPLY_BYTES),
    ],
)
def test_anything_else_is_not_a_reply(data: bytes) -> None:
    assert parse_reply(data, LOOPBACK) is None


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_allows_a_burst_then_a_rate() -> None:
    clock = FakeClock()
    budget = ReplyBudget(rate=2.0, burst=3, clock=clock)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    clock.now += 1.0  # two more
    assert [budget.take() for _ in range(3)] == [True, True, False]
    clock.now += 3600  # never more than the burst
    assert sum(budget.take() for _ in range(10)) == 3


def test_a_budget_needs_sensible_numbers() -> None:
    with pytest.raises(ValueError):
        ReplyBudget(rate=-1)
    with pytest.raises(ValueError):
        ReplyBudget(burst=0)


# ---------------------------------------------------------------------------
# Broadcast addresses: computed only, never sent to

ROUTE_TABLE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
wlan0\t0000A8C0\t00000000\t0001\t0\t0\t600\t0000FFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
tun0\t0100000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
down0\t0000000A\t00000000\t0000\t0\t0\t0\t000000FF\t0\t0\t0
lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0
vpn0\t0000100A\t0101A8C0\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0
broken\tnot-hex
"""


@pytest.mark.skipif(sys.byteorder != "little", reason="the sample is little-endian")
def test_broadcast_addresses_come_from_the_attached_networks() -> None:
    # A default route, a host route, a route that is down, loopback, a network
    # behind a router and a broken line give nothing; a duplicate, once.
    assert broadcasts_from_route_table(ROUTE_TABLE) == [
        "192.0.2.255",
        "192.168.255.255",
    ]
    assert broadcasts_from_route_table("") == []


def test_this_machine_has_some_broadcast_address() -> None:
    addresses = broadcast_addresses()
    assert addresses
    for address in addresses:
        assert socket.inet_aton(address)


def test_only_broadcast_addresses_get_so_broadcast() -> None:
    assert is_broadcast("255.255.255.255")
    assert is_broadcast("<broadcast>")
    assert all(is_broadcast(address) for address in broadcast_addresses())
    assert not is_broadcast(LOOPBACK)


# ---------------------------------------------------------------------------
# A responder and discover(), on 127.0.0.1


def test_discover_finds_a_responder_with_its_fields() -> None:
    with responding() as responder:
        found = discover(
            target=LOOPBACK, port=responder.port, timeout=DEADLINE, limit=1
        )
        assert found == [Found("lab-pc", LOOPBACK, 4242, 3, True, False)]
        wait_for(lambda: responder.stats().answered == 1, what="the count")


def test_a_reply_tells_the_room_as_it_is_now() -> None:
    users = [0]
    description = lambda: {**DESCRIPTION, "users": users[0]}  # noqa: E731
    with responding(describe=description) as responder:
        for count in (0, 5, 1):
            users[0] = count
            (found,) = discover(LOOPBACK, responder.port, DEADLINE, limit=1)
            assert found.users == count


def test_discover_waits_out_its_timeout_and_lists_each_server_once() -> None:
    with responding() as responder:
        found = discover(LOOPBACK, responder.port, timeout=SILENCE)
        assert [server.name for server in found] == ["lab-pc"]


@pytest.mark.parametrize("data", [*BAD_PROBES, b"x" * 1500, PROBE + b" " * 1000])
def test_junk_gets_no_answer(data: bytes) -> None:
    with responding() as responder, asker() as sock:
        sock.sendto(data, (LOOPBACK, responder.port))
        wait_for(lambda: responder.stats().ignored == 1, what="the junk to be read")
        assert queued(sock) == []
        sock.sendto(PROBE, (LOOPBACK, responder.port))
        assert parse_reply(sock.recv(65536), LOOPBACK) is not None  # the next one
        wait_for(lambda: responder.stats().answered == 1, what="the count")


def test_a_datagram_bigger_than_the_buffer_gets_no_answer() -> None:
    with responding() as responder, asker() as sock:
        sock.sendto(PROBE + b" " * 60000, (LOOPBACK, responder.port))
        sock.sendto(PROBE, (LOOPBACK, responder.port))
        assert sock.recv(65536) == encode_reply(**DESCRIPTION)
        wait_for(lambda: responder.stats().answered == 1, what="the count")


def test_probes_from_a_service_port_are_ignored() -> None:
    # An echo service "asking" could start a loop; no client sends from < 1024.
    with responding() as responder:
        assert not responder.verify_request((PROBE, None), ("10.0.0.1", 7))
        assert responder.verify_request((PROBE, None), ("10.0.0.1", 50000))
        assert responder.stats().ignored == 1


def test_replies_are_rate_limited() -> None:
    clock = FakeClock()
    with responding(rate=2.0, burst=5, clock=clock) as responder, asker() as sock:
        for _ in range(20):
            sock.sendto(PROBE, (LOOPBACK, responder.port))
        wait_for(lambda: responder.stats().limited == 15, what="20 probes to be read")
        assert responder.stats().answered == 5
        assert len(queued(sock)) == 5
        clock.now += 1.0  # the budget refills at 2 a second
        for _ in range(5):
            sock.sendto(PROBE, (LOOPBACK, responder.port))
        wait_for(lambda: responder.stats().limited == 18, what="5 more probes")
        assert responder.stats().answered == 7
        assert len(queued(sock)) == 2


def test_two_responders_are_each_found_on_their_port() -> None:
    first = lambda: {**DESCRIPTION, "name": "first"}  # noqa: E731
    second = lambda: {**DESCRIPTION, "name": "second", "port": 5353}  # noqa: E731
    with responding(describe=first) as one, responding(describe=second) as two:
        (found_one,) = discover(LOOPBACK, one.port, DEADLINE, limit=1)
        (found_two,) = discover(LOOPBACK, two.port, DEADLINE, limit=1)
    assert (found_one.name, found_one.port) == ("first", 4242)
    assert (found_two.name, found_two.port) == ("second", 5353)


def test_a_broken_description_is_logged_and_the_responder_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    def describe() -> dict:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug")
        return DESCRIPTION

    with responding(describe=describe) as responder, asker() as sock:
        with caplog.at_level(logging.ERROR, logger="chat.discovery"):
            sock.sendto(PROBE, (LOOPBACK, responder.port))
            wait_for(lambda: caplog.records, what="the bug to be logged")
        assert "error while answering" in caplog.records[0].getMessage()
        assert queued(sock) == []
        sock.sendto(PROBE, (LOOPBACK, responder.port))
        assert sock.recv(65536) == encode_reply(**DESCRIPTION)


def test_stop_joins_the_thread_and_frees_the_port() -> None:
    responder = DiscoveryResponder(LOOPBACK, 0, lambda: DESCRIPTION)
    port = responder.port
    responder.start()
    try:
        (thread,) = [t for t in threading.enumerate() if t.name == "discovery"]
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with other, pytest.raises(OSError):  # nobody else may share the port
            other.bind((LOOPBACK, port))
    finally:
        responder.stop()
    assert not thread.is_alive()
    responder.stop()  # a second stop does nothing
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind((LOOPBACK, port))  # no SO_REUSEADDR: it really is free
    with responding(port=port) as again:
        assert discover(LOOPBACK, again.port, DEADLINE, limit=1)


def test_a_responder_starts_once_and_may_stop_unstarted() -> None:
    responder = DiscoveryResponder(LOOPBACK, 0, lambda: DESCRIPTION)
    responder.stop()
    assert responder.socket.fileno() == -1
    with pytest.raises(RuntimeError):
        responder.start()
    with responding() as started, pytest.raises(RuntimeError):
        started.start()


def test_a_taken_port_is_an_os_error() -> None:
    with responding() as responder, pytest.raises(OSError):
        DiscoveryResponder(LOOPBACK, responder.port, lambda: DESCRIPTION)


# ---------------------------------------------------------------------------
# python -m chat.discover


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that is taken, and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


def run_cli(*args: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = discover_cli.main(list(args), out=lines.append)
    return status, lines


def test_the_command_prints_the_servers_found() -> None:
    with responding() as responder:
        port = str(responder.port)
        status, lines = run_cli(
            "--target", LOOPBACK, "--port", port, "--timeout", "0.5"
        )
    assert status == 0
    assert lines[0].split() == ["NAME", "ADDRESS", "PORT", "USERS", "PASSWORD", "TLS"]
    assert lines[1].split() == ["lab-pc", LOOPBACK, "4242", "3", "yes", "no"]
    assert lines[-1] == f"To join: python -m chat --host {LOOPBACK} --port 4242"


def test_the_command_prints_json_for_programs() -> None:
    with responding() as responder:
        port = str(responder.port)
        status, lines = run_cli(
            "--target", LOOPBACK, "--port", port, "--timeout", "0.5", "--json"
        )
    assert status == 0
    assert json.loads(lines[0]) == [{"address": LOOPBACK, **DESCRIPTION}]


def test_the_command_explains_an_empty_search() -> None:
    with silent_port() as port:
        status, lines = run_cli("--target", LOOPBACK, "--port", str(port))
    assert status == 1
    assert lines[0] == f"No chat server answered within 1 s on {LOOPBACK}:{port}."
    hints = "\n".join(lines[1:])
    assert "running" in hints
    assert "--no-discovery" in hints
    assert f"blocking UDP port {port}" in hints


def test_the_command_says_when_it_cannot_send(monkeypatch, capsys) -> None:
    def no_network(*args: Any, **kwargs: Any) -> list[Found]:
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(discover_cli, "discover", no_network)
    status, _ = run_cli("--target", LOOPBACK, "--port", "4000")
    assert status == 2
    assert "Cannot send a probe to 127.0.0.1:4000" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args", [["--port", "0"], ["--port", "70000"], ["--timeout", "0"], ["--x"]]
)
def test_bad_options_are_usage_errors(args: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        discover_cli.main(args)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_python_dash_m_runs_it() -> None:
    with responding() as responder:
        command = [sys.executable, "-m", "chat.discover", "--target", LOOPBACK]
        command += ["--port", str(responder.port), "--timeout", "0.5"]
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE * 2
        )
    assert result.returncode == 0, result.stderr
    assert "lab-pc" in result.stdout


# ---------------------------------------------------------------------------
# Found in review: each of these failed before its fix


@contextlib.contextmanager
def answering_once(reply: bytes) -> Iterator[int]:
    """A fake server on 127.0.0.1 that answers the first datagram with ``reply``.

    Yields its port; the thread that answers is joined on exit.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(DEADLINE)

        def answer() -> None:
            with contextlib.suppress(OSError):
                _, source = sock.recvfrom(65536)
                sock.sendto(reply, source)

        thread = threading.Thread(target=answer, name="fake server")
        thread.start()
        try:
            yield sock.getsockname()[1]
        finally:
            thread.join(DEADLINE * 2)


def test_a_name_that_is_not_text_is_not_a_reply() -> None:
    # JSON can carry a lone surrogate ("\ud800"), which no terminal can print.
    assert parse_reply(reply_bytes(name="bad\ud800"), LOOPBACK) is None
    assert parse_reply(reply_bytes(name="\udcff"), LOOPBACK) is None


def test_the_command_survives_a_reply_with_a_lone_surrogate() -> None:
    with answering_once(reply_bytes(name="evil\ud800")) as port:
        command = [sys.executable, "-m", "chat.discover", "--target", LOOPBACK]
        command += ["--port", str(port), "--timeout", "0.5"]
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE * 2
        )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1  # that was no server
    assert "No chat server answered" in result.stdout


def test_a_host_name_that_is_not_utf8_is_escaped_not_a_crash() -> None:
    # socket.gethostname() decodes a non-UTF-8 name with surrogateescape.
    found = parse_reply(encode_reply(**{**DESCRIPTION, "name": "lab\udcff"}), LOOPBACK)
    assert found is not None and found.name == "lab\\udcff"


def test_a_responder_answers_for_a_host_name_that_is_not_utf8() -> None:
    description = {**DESCRIPTION, "name": "lab\udcff"}
    with responding(describe=lambda: description) as responder:
        (found,) = discover(LOOPBACK, responder.port, DEADLINE, limit=1)
    assert found.name == "lab\\udcff"


@pytest.mark.parametrize("target", ["café..lan", "x" * 64 + ".lan", "10.0..5"])
def test_a_target_that_is_no_host_name_is_an_os_error(target: str) -> None:
    with pytest.raises(socket.gaierror):
        discover(target, 4000, timeout=DEADLINE)


def test_the_command_says_when_a_target_is_no_host_name(capsys) -> None:
    status, lines = run_cli("--target", "café..lan", "--port", "4000")
    assert status == 2
    assert lines == []
    assert "Cannot send a probe to café..lan:4000" in capsys.readouterr().err


def test_ctrl_c_ends_the_command_without_a_traceback(monkeypatch, capsys) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> list[Found]:
        raise KeyboardInterrupt

    monkeypatch.setattr(discover_cli, "discover", interrupted)
    try:
        status, _ = run_cli("--target", LOOPBACK, "--port", "4000", "--timeout", "9")
    except KeyboardInterrupt:
        pytest.fail("Ctrl+C came out of main() as a traceback")
    assert status == 130  # the shell's number for "ended by Ctrl+C"


@pytest.fixture
def networks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The command's targets, recorded; only 127.0.0.1 is let through.

    Stands in for this machine's broadcast addresses, so that nothing is
    ever sent to a real one.
    """
    targets: list[str] = []
    real_discover = discover_cli.discover

    def recording(target: str, *args: Any, **kwargs: Any) -> list[Found]:
        targets.append(target)
        assert target == LOOPBACK, f"the command tried to probe {target!r}"
        return real_discover(target, *args, **kwargs)

    monkeypatch.setattr(discover_cli, "discover", recording)
    monkeypatch.setattr(
        discover_cli, "broadcast_addresses", lambda: [LOOPBACK], raising=False
    )
    return targets


def test_the_command_asks_each_attached_network_by_default(networks) -> None:
    # 255.255.255.255 leaves by the default route only (none on a lab LAN
    # without internet: "Network is unreachable"); each network's own
    # broadcast address reaches it, as the window's "Find servers" does.
    with responding() as responder:
        status, lines = run_cli("--port", str(responder.port), "--timeout", "0.5")
    assert networks == [LOOPBACK]
    assert status == 0
    assert lines[1].split() == ["lab-pc", LOOPBACK, "4242", "3", "yes", "no"]


def test_the_command_names_the_networks_it_asked(networks) -> None:
    with silent_port() as port:
        status, lines = run_cli("--port", str(port), "--timeout", "0.2")
    assert status == 1
    assert lines[0] == (
        f"No chat server answered within 0.2 s on the local network "
        f"({LOOPBACK}), port {port}."
    )


def test_one_network_that_cannot_be_asked_does_not_hide_the_others(
    monkeypatch, capsys
) -> None:
    def discover_here(target: str, *args: Any, **kwargs: Any) -> list[Found]:
        if target == "10.9.9.255":
            raise OSError(101, "Network is unreachable")
        return [Found("lab-pc", LOOPBACK, 4242, 3, True, False)]

    monkeypatch.setattr(discover_cli, "discover", discover_here)
    monkeypatch.setattr(
        discover_cli, "broadcast_addresses", lambda: ["10.9.9.255", LOOPBACK]
    )
    status, lines = run_cli("--port", "4000", "--timeout", "0.1")
    assert status == 0
    assert lines[1].split()[0] == "lab-pc"
    assert "Cannot send a probe to 10.9.9.255:4000" in capsys.readouterr().err
