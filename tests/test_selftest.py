"""``python -m chat.selftest``: our server passes; broken servers fail as they should.

A conformance suite is only worth something if it fails the right servers.
So besides our server, this file holds a *toy* chat server, small enough to
read in one sitting, that follows docs/protocol.md well enough to pass every
check, and broken copies of it, each with one classic student mistake (its
docstring names it).  The tests assert which checks each one fails and which
it still passes, so every check is shown to catch its bug and only its bug.

Nothing here sleeps to synchronise: the selftest waits with deadlines, and
the servers are stopped and their threads joined before each test ends.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat import selftest as selftest_module
from chat.selftest import CHECKS, Result, Target, parse_address, run_checks, summary
from tests.helpers import DEADLINE, in_a_thread, running_server

ROOT = Path(__file__).resolve().parent.parent
ALL = set(CHECKS)
FRAMING = {"framing_bytes", "framing_coalesced", "framing_utf8"}
TOY_TIMEOUT = 3.0  # each failing check against a toy costs about this much
Json = dict[str, Any]


# ---------------------------------------------------------------------------
# A toy server that does it right


def encode(message: Json) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n"


def name_problem(name: Any) -> str | None:
    """Why ``name`` (already NFKC) is refused, or None if it is fine."""
    if not isinstance(name, str) or not 0 < len(name) <= 24:
        return "a name has 1 to 24 characters"
    if not re.fullmatch(r"\w[\w.-]*", name) or name.casefold() == "server":
        return "letters, digits, - _ . only"
    return None


class ToyHandler(socketserver.BaseRequestHandler):
    """One connection: this thread reads, a writer thread of its own sends.

    The writer thread (``toy writer PORT``, a daemon only so that a bug cannot
    keep the process alive) is started in ``setup`` and joined in ``finish``.
    """

    server: ToyServer

    def setup(self) -> None:
        port = self.client_address[1]
        threading.current_thread().name = f"toy reader {port}"
        self.name: str | None = None
        self.count = 0  # this client's says (used by PerClientIdsServer)
        self.reason = "connection closed"
        self.outbox: queue.Queue[bytes | None] = queue.Queue()  # None: stop
        self.writer = threading.Thread(
            target=self.write_loop, name=f"toy writer {port}", daemon=True
        )
        self.writer.start()
        self.server.opened(self.request)

    def write_loop(self) -> None:
        while (data := self.outbox.get()) is not None:
            try:
                self.request.sendall(data)
            except OSError:
                pass  # the reader will notice the connection is gone

    def handle(self) -> None:
        try:
            for line in self.server.lines(self.request):
                if not self.server.answer(self, line):
                    self.reason = "quit"
                    return
        except OSError:
            self.reason = "connection lost"
            self.server.lost(self)

    def finish(self) -> None:
        self.server.leave(self)
        self.outbox.put(None)
        self.writer.join()
        self.server.closed(self.request)

    def tell(self, message: Json) -> None:
        self.server.send(self, encode(message))

    def error(self, code: str) -> None:
        self.tell({"type": "error", "code": code, "text": code.replace("_", " ")})


class ToyServer(socketserver.ThreadingTCPServer):
    """A chat server in a page: enough of docs/protocol.md to pass every check.

    Members and message ids are guarded by ``lock``; a broadcast puts on each
    member's queue while holding it, which gives everyone the same order, and
    never blocks.  The methods marked "hook" are where the broken servers
    below differ.  Stop it with ``shutdown``, ``hang_up_all``, then
    ``server_close`` (which joins every handler thread): ``running_toy``.
    """

    allow_reuse_address = True
    daemon_threads = False  # handler threads are joined by server_close
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ToyHandler)
        self.lock = threading.Lock()  # guards members and next_id
        self.members: list[ToyHandler] = []  # in order of arrival
        self.next_id = 1
        self.connections_lock = threading.Lock()  # guards connections
        self.connections: set[socket.socket] = set()

    @property
    def port(self) -> int:
        return self.server_address[1]

    # -- hooks ----------------------------------------------------------------

    def lines(self, sock: socket.socket) -> Iterator[bytes | None]:
        """Hook: complete lines, however the bytes arrive; None for one too long."""
        buffer = b""
        while data := sock.recv(4096):
            *complete, buffer = (buffer + data).split(b"\n")
            for line in complete:
                yield None if len(line) > 8192 else line

    def send(self, member: ToyHandler, data: bytes) -> None:
        """Hook: queue ``data`` for ``member``; never blocks."""
        member.outbox.put(data)

    def say_to(self, sender: ToyHandler) -> list[ToyHandler]:
        """Hook: who gets a say (lock held): everyone, the sender included."""
        return self.members

    def number(self, sender: ToyHandler) -> int:
        """Hook: the next message id (lock held): one counter for the room."""
        self.next_id += 1
        return self.next_id - 1

    def private_to(self, sender: ToyHandler, target: ToyHandler) -> list[ToyHandler]:
        """Hook: who gets a private line (lock held): its addressee and sender."""
        return [target] if target is sender else [target, sender]

    def announce_left(self, member: ToyHandler) -> None:
        """Hook: tell the others that ``member`` left (lock held)."""
        self.to_all({"type": "left", "name": member.name, "reason": member.reason})

    def lost(self, member: ToyHandler) -> None:
        """Hook: ``member``'s connection failed (a reset): nothing more to do."""

    # -- the protocol ---------------------------------------------------------

    def answer(self, member: ToyHandler, line: bytes | None) -> bool:
        """Act on one line; False after ``bye``."""
        if line is None:
            member.error("too_long")
            return True
        if not line.strip():
            return True
        try:
            message = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            member.error("bad_utf8")
            return True
        except ValueError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if not isinstance(message, dict):
            member.error("bad_json")
        elif kind == "bye":
            return False
        elif kind == "ping":
            member.tell({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "hello":
            self.join(member, message.get("name"))
        elif kind not in ("say", "private", "rename", "who"):
            member.error("unknown_type")
        elif member.name is None:
            member.error("not_registered")
        elif kind == "say":
            self.say(member, str(message.get("text")), message.get("cid"))
        elif kind == "private":
            self.private(member, message)
        elif kind == "rename":
            self.rename(member, message.get("name"))
        elif kind == "who":
            with self.lock:
                member.tell({"type": "users", "users": self.names()})
        return True

    def names(self) -> list[str]:
        return [m.name for m in self.members if m.name]

    def find(self, name: Any) -> ToyHandler | None:
        key = unicodedata.normalize("NFKC", str(name)).casefold()
        return next((m for m in self.members if m.name.casefold() == key), None)

    def to_all(self, message: Json, members: list[ToyHandler] | None = None) -> None:
        data = encode(message)
        for member in self.members if members is None else members:
            self.send(member, data)

    def join(self, member: ToyHandler, name: Any) -> None:
        with self.lock:
            name = unicodedata.normalize("NFKC", name) if isinstance(name, str) else 0
            if member.name is not None:
                member.error("already_registered")
            elif name_problem(name):
                member.error("bad_name")
            elif self.find(name):
                member.error("name_taken")
            else:
                self.to_all({"type": "joined", "name": name})
                member.name = name
                self.members.append(member)
                welcome = {"name": name, "users": self.names(), "history": []}
                member.tell({"type": "welcome", **welcome})

    def say(self, sender: ToyHandler, text: str, cid: Any) -> None:
        with self.lock:
            message = {"type": "message", "id": self.number(sender)}
            message.update({"from": sender.name, "text": text, "ts": time.time()})
            if cid is not None:
                message["cid"] = cid
            self.to_all(message, self.say_to(sender))

    def private(self, sender: ToyHandler, message: Json) -> None:
        with self.lock:
            target = self.find(message.get("to"))
            if target is None:
                sender.error("no_such_user")
                return
            line = {"type": "private", "from": sender.name, "to": target.name}
            line.update({"text": message.get("text"), "ts": time.time()})
            if message.get("cid") is not None:
                line["cid"] = message["cid"]
            self.to_all(line, self.private_to(sender, target))

    def rename(self, member: ToyHandler, name: Any) -> None:
        with self.lock:
            name = unicodedata.normalize("NFKC", name) if isinstance(name, str) else 0
            if name_problem(name):
                member.error("bad_name")
            elif self.find(name) not in (None, member):
                member.error("name_taken")
            else:
                self.to_all({"type": "renamed", "old": member.name, "new": name})
                member.name = name

    def leave(self, member: ToyHandler) -> None:
        with self.lock:
            if member in self.members:
                self.members.remove(member)
                self.announce_left(member)

    # -- connections ----------------------------------------------------------

    def opened(self, sock: socket.socket) -> None:
        with self.connections_lock:
            self.connections.add(sock)

    def closed(self, sock: socket.socket) -> None:
        with self.connections_lock:
            self.connections.discard(sock)

    def hang_up_all(self) -> None:
        """Shut every connection down: each reader then sees the end."""
        with self.connections_lock:
            for sock in self.connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------
# The broken ones: one mistake each


class NoFramingServer(ToyServer):
    """Bug: ``recv(1024)`` is taken as one message (no buffer, no framing).

    Works while each line happens to arrive alone; fails as soon as a line
    is cut (byte by byte, a split emoji, a long line) or two arrive together.
    """

    def lines(self, sock: socket.socket) -> Iterator[bytes | None]:
        while data := sock.recv(1024):
            yield data.rstrip(b"\r\n")


class NoEchoServer(ToyServer):
    """Bug: a say goes to everyone but its sender, who never sees it in order."""

    def say_to(self, sender: ToyHandler) -> list[ToyHandler]:
        return [member for member in self.members if member is not sender]


class PerClientIdsServer(ToyServer):
    """Bug: each client's messages are numbered on their own: ids repeat."""

    def number(self, sender: ToyHandler) -> int:
        sender.count += 1
        return sender.count


class LeakyPrivateServer(ToyServer):
    """Bug: a private line goes to everyone; its "to" is only a label."""

    def private_to(self, sender: ToyHandler, target: ToyHandler) -> list[ToyHandler]:
        return self.members


class NoLeftServer(ToyServer):
    """Bug: nobody is told when someone leaves (no ``left``, ever)."""

    def announce_left(self, member: ToyHandler) -> None:
        pass


class CrashOnVanishServer(ToyServer):
    """Bug: a connection reset is handled by hanging up on everyone."""

    def lost(self, member: ToyHandler) -> None:
        self.hang_up_all()


class BlockingServer(ToyServer):
    """Bug: it sends with ``sendall`` to each client in turn, holding the lock.

    One client that stops reading fills its buffers; the ``sendall`` to it
    then blocks, and with it every message to everyone.
    """

    def send(self, member: ToyHandler, data: bytes) -> None:
        with contextlib.suppress(OSError):
            member.request.sendall(data)


@contextlib.contextmanager
def running_toy(server_class: type[ToyServer]) -> Iterator[ToyServer]:
    """A toy server on 127.0.0.1 (any free port), serving in a thread."""
    server = server_class()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="toy accept"
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(DEADLINE)
        server.hang_up_all()
        server.server_close()


def check_all(
    port: int, *names: str, timeout: float = TOY_TIMEOUT
) -> dict[str, Result]:
    """Run the selftest (every check, or those named) against 127.0.0.1:port."""
    target = Target("127.0.0.1", port, timeout=timeout)
    return {r.name: r for r in run_checks(target, list(names) or None)}


def failures(results: dict[str, Result]) -> str:
    return "\n".join(f"{r.name}: {r.reason}" for r in results.values() if not r.passed)


# ---------------------------------------------------------------------------
# Against our server, and the toy that does it right


def test_every_check_passes_against_our_server() -> None:
    with running_server() as server:
        results = check_all(server.port, timeout=5.0)
    assert set(results) == ALL
    assert all(r.passed for r in results.values()), failures(results)


def test_every_check_passes_against_the_correct_toy() -> None:
    """The toy is a fair baseline: what its copies fail, their bug fails."""
    with running_toy(ToyServer) as server:
        results = check_all(server.port)
    assert all(r.passed for r in results.values()), failures(results)


def test_flood_errors_are_reported_as_rate_limiting() -> None:
    with running_server(flood_rate=1.0, flood_burst=3) as server:
        results = check_all(server.port, "order")
    assert not results["order"].passed
    assert results["order"].reason.startswith("rate-limited:")
    assert "--flood-rate 0" in results["order"].reason


def test_the_password_goes_with_every_hello() -> None:
    with running_server(password="sesame") as server:
        right = Target("127.0.0.1", server.port, timeout=5.0, password="sesame")
        results = {r.name: r for r in run_checks(right, ["greeting", "names"])}
        wrong = Target("127.0.0.1", server.port, timeout=5.0)
        [refused] = run_checks(wrong, ["greeting"])
    assert all(r.passed for r in results.values()), failures(results)
    assert not refused.passed
    assert "got error bad_password" in refused.reason


# ---------------------------------------------------------------------------
# Against the broken toys

BROKEN = [
    # (server, the checks it must fail, checks that may go either way,
    #  words in the reason of the first check it must fail)
    (
        NoFramingServer,
        # Lines over 1024 bytes never fit one recv(1024).
        FRAMING | {"too_long", "slow_reader"},
        # Short lines sent back to back may or may not share a recv.
        {"framing_blank", "order"},
        "bad_json",
    ),
    (NoEchoServer, {"broadcast", "order"}, set(), "no answer within 3 s"),
    (PerClientIdsServer, {"order"}, set(), "expected them strictly increasing"),
    # The feeders' 4 MiB of private lines reach slow_reader's observer too.
    (LeakyPrivateServer, {"private"}, {"slow_reader"}, "got the private meant for"),
    (NoLeftServer, {"bye", "vanish"}, set(), "expected left"),
    (CrashOnVanishServer, {"vanish"}, set(), "the server closed the connection"),
    (BlockingServer, {"slow_reader"}, set(), "not reading"),
]


@pytest.mark.parametrize(
    ("server_class", "must_fail", "either", "words"),
    BROKEN,
    ids=[case[0].__name__ for case in BROKEN],
)
def test_a_broken_server_fails_the_checks_for_its_bug(
    server_class: type[ToyServer], must_fail: set[str], either: set[str], words: str
) -> None:
    with running_toy(server_class) as server:
        results = check_all(server.port)
    failed = {name for name, result in results.items() if not result.passed}
    assert must_fail <= failed, f"should have failed:\n{failures(results)}"
    assert failed <= must_fail | either, f"should have passed:\n{failures(results)}"
    first = next(name for name in CHECKS if name in must_fail)
    assert words in results[first].reason


# ---------------------------------------------------------------------------
# The command line


def selftest(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m chat.selftest ARGS``, run to the end."""
    return subprocess.run(
        [sys.executable, "-m", "chat.selftest", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_passes_our_server_with_its_default_flood_control() -> None:
    with running_server(flood_rate=5.0, flood_burst=20) as server:
        done = selftest(f"127.0.0.1:{server.port}")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[0] == f"Checking the chat server at 127.0.0.1:{server.port} (19 checks)"
    )
    for name in CHECKS:
        assert any(re.match(rf"PASS  {name} +\S", line) for line in lines), name
    assert re.fullmatch(r"19/19 passed \(\d+\.\d s\)", lines[-1])


def test_cli_json_runs_only_the_checks_asked_for() -> None:
    with running_server() as server:
        done = selftest(f"127.0.0.1:{server.port}", "--json", "--only", "who,ping")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["server"] == f"127.0.0.1:{server.port}"
    assert (report["passed"], report["total"]) == (2, 2)
    assert [c["name"] for c in report["checks"]] == ["who", "ping"]  # suite order


def test_cli_says_what_failed_and_exits_1() -> None:
    with running_toy(NoEchoServer) as server:
        address = f"127.0.0.1:{server.port}"
        done = selftest(address, "--only", "broadcast,who", "--timeout", "1")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert re.match(
        r"FAIL  broadcast +no answer within 1 s: ann\d+-\w+ expected", lines[1]
    )
    assert lines[2].startswith("PASS  who ")
    assert lines[-1].startswith("1/2 passed")


def test_cli_cannot_connect_exits_2_with_a_clear_sentence() -> None:
    with socket.socket() as closed_door:  # bound, not listening: refused
        closed_door.bind(("127.0.0.1", 0))
        port = closed_door.getsockname()[1]
        done = selftest(f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"Cannot connect to 127.0.0.1:{port} (")
    assert "Is the server running" in done.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["localhost"], "expected HOST:PORT"),
        (["127.0.0.1:99999"], "expected HOST:PORT"),
        (["127.0.0.1:1", "--only", "greeting,dance"], "no check called dance"),
        ([], "give the server's address"),
    ],
)
def test_cli_usage_errors_exit_2(args: list[str], complaint: str) -> None:
    done = selftest(*args)
    assert done.returncode == 2
    assert complaint in done.stderr


def test_cli_lists_what_each_check_proves() -> None:
    listing = selftest("--list")
    helped = selftest("--help")
    assert listing.returncode == helped.returncode == 0
    for name, function in CHECKS.items():
        assert f"{name}\n    {summary(function)}" in listing.stdout
        assert "Proves" in (function.__doc__ or ""), name
        assert re.search(
            rf"^  {name} +{re.escape(summary(function))}$", helped.stdout, re.M
        )


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:12345", ("127.0.0.1", 12345)),
        ("localhost:80", ("localhost", 80)),
        ("[::1]:5000", ("::1", 5000)),
    ],
)
def test_addresses_are_host_colon_port(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


# -- a server that misbehaves must get a FAIL, never a traceback ---------------


@contextlib.contextmanager
def answering(answer: Callable[[bytes], bytes]) -> Iterator[int]:
    """A server on 127.0.0.1 that answers each connection's first line with
    ``answer(line)``, then waits for the close.  Bounded in connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop, conns = threading.Event(), []

    def serve() -> None:
        while not stop.is_set() and len(conns) < 20:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conns.append(conn)
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                line = conn.recv(65536)
                if line:
                    conn.sendall(answer(line))

    try:
        with in_a_thread(serve, "answering server", stop):
            yield listener.getsockname()[1]
    finally:
        for conn in conns:
            conn.close()
        listener.close()


def test_json_nested_too_deep_is_a_fail_and_the_run_goes_on():
    deep = b'{"type":"pong","x":' + b"[" * 100_000 + b"\n"
    with answering(lambda line: deep) as port:
        results = list(run_checks(Target("127.0.0.1", port, 1.0), ["ping", "who"]))
    assert [(r.name, r.passed) for r in results] == [("ping", False), ("who", False)]


def test_a_lone_surrogate_from_the_server_is_printed_escaped():
    def answer(line: bytes) -> bytes:
        name = json.loads(line)["name"]
        welcome = {"type": "welcome", "name": name, "users": [name], "history": []}
        cut = b'{"type":"message","id":1,"from":"x","text":"cut \\ud83d","ts":1}\n'
        return json.dumps(welcome).encode() + b"\n" + cut

    with answering(answer) as port:
        done = subprocess.run(
            [sys.executable, "-m", "chat.selftest", f"127.0.0.1:{port}",
             "--only", "greeting,who", "--timeout", "1"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert "0/2 passed" in done.stdout


def test_a_host_name_with_an_address_that_refuses_first_is_checked_at_the_other(
    monkeypatch,
):
    """As localhost may give ::1 first while the server is on 127.0.0.1:
    every check connects where the first connection succeeded."""
    real = socket.getaddrinfo

    def refusing_first(host, port, *args, **kwargs):
        found = real(host, port, *args, **kwargs)
        if host == "localhost":
            stream = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            return [(*stream, "", ("127.0.0.2", port)), *found]  # nobody there
        return found

    monkeypatch.setattr(socket, "getaddrinfo", refusing_first)
    with running_server() as server:
        target = selftest_module.reachable(Target("localhost", server.port, 2.0))
        [result] = run_checks(target, ["who"])
    assert result.passed, result.reason


def test_a_host_mistyped_is_told_not_a_traceback(capsys):
    assert selftest_module.main(["192.168..1:12345"]) == 2
    assert "Cannot connect to 192.168..1:12345" in capsys.readouterr().err


class OddErrorCodes(ToyServer):
    """Answers private lines with an error whose code is a list."""

    def private(self, sender, message):
        sender.tell({"type": "error", "code": ["no_such_user"], "text": "?"})


def test_a_check_broken_by_what_the_server_sent_is_a_fail():
    with running_toy(OddErrorCodes) as server:
        [result] = run_checks(Target("127.0.0.1", server.port, 2.0), ["slow_reader"])
    assert not result.passed
    assert "could not go on" in result.reason


class RelaysLongLines(ToyServer):
    """Says too_long for a long line, and relays it all the same."""

    def lines(self, sock):
        buffer = b""
        while data := sock.recv(4096):
            *complete, buffer = (buffer + data).split(b"\n")
            yield from complete

    def answer(self, member, line):
        if line is not None and len(line) > 8192:
            member.error("too_long")
        return super().answer(member, line)


def test_a_line_refused_and_relayed_anyway_fails_the_check():
    with running_toy(RelaysLongLines) as server:
        [result] = run_checks(Target("127.0.0.1", server.port, 2.0), ["too_long"])
    assert not result.passed
    assert "relayed the line anyway" in result.reason


# -- found by running the selftest against servers students write --------------


def test_a_server_answering_in_plain_text_is_not_called_silent():
    """A student's server that answers hello with a line of text did answer:
    "no answer" would send them looking for a bug they do not have."""
    with answering(lambda line: b"Welcome! you said: " + line) as port:
        [result] = run_checks(Target("127.0.0.1", port, 1.0), ["greeting"])
    assert not result.passed
    assert "not JSON" in result.reason, result.reason
    assert "Welcome! you said" in result.reason, result.reason


class DropsPrivateLines(ToyServer):
    """Bug: private lines are read and thrown away, without a word."""

    def private(self, sender, message):
        pass


def test_slow_reader_fails_a_server_that_never_sends_the_private_lines():
    """Nothing reached the stalled client: the check proved nothing, and must
    not claim that megabytes were sent to it."""
    with running_toy(DropsPrivateLines) as server:
        [result] = run_checks(Target("127.0.0.1", server.port, 2.0), ["slow_reader"])
    assert not result.passed, result.reason
    assert "private" in result.reason, result.reason


@contextlib.contextmanager
def silent() -> Iterator[int]:
    """A server on 127.0.0.1 that accepts and reads, and never says a word."""
    import selectors

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    stop, chooser = threading.Event(), selectors.DefaultSelector()
    chooser.register(listener, selectors.EVENT_READ)

    def serve() -> None:
        while not stop.is_set():
            for key, _ in chooser.select(0.05):
                if key.fileobj is listener:
                    with contextlib.suppress(OSError):
                        conn, _ = listener.accept()
                        chooser.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the client closed: so do we
                    chooser.unregister(key.fileobj)
                    key.fileobj.close()

    try:
        with in_a_thread(serve, "silent server", stop):
            yield listener.getsockname()[1]
    finally:
        for key in list(chooser.get_map().values()):
            key.fileobj.close()
        chooser.close()


def test_a_silent_server_does_not_cost_the_full_timeout_for_every_check():
    """Once the server has said nothing at all for two whole checks, waiting
    the full timeout in each of the others only makes the teacher wait."""
    with silent() as port:
        results = list(run_checks(Target("127.0.0.1", port, 2.0)))
    assert len(results) == len(CHECKS)
    assert not any(r.passed for r in results)
    assert all("no answer within" in r.reason for r in results)
    # The waits themselves say how long they were (the time taken is a
    # benchmark's business, not a test's).
    first, then = results[:2], results[2:]
    assert all("no answer within 2 s" in r.reason for r in first)
    assert all("no answer within 0.3 s" in r.reason for r in then)
