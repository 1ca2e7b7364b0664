"""A conformance suite for docs/protocol.md, to run against any chat server.

    python -m chat.selftest 127.0.0.1:12345            # every check
    python -m chat.selftest 127.0.0.1:12345 --only framing_bytes,framing_utf8
    python -m chat.selftest 127.0.0.1:12345 --json     # one JSON object at the end
    python -m chat.selftest --list                     # what each check proves

Each check is a function below, and its docstring says what it proves.  It
opens its own raw TCP connections (never ``chat.client``: the point is to test
the server, not our client), sends bytes exactly as the protocol describes,
and either returns one line saying what it saw (PASS) or raises
``CheckFailed`` with one line saying what it expected and what came instead
(FAIL).  A wait that ends with nothing is a FAIL that says "no answer within
N s" (``--timeout``), or within 0.3 s once the server has sent not one
byte in the first two checks (a silent server is not waited for in full 19
times).  At the end: "N/M passed".

What a run needs from the server, and does to it:

* **Names** end in a random suffix (``ann3-1f0c9a``), so two runs, or a run in
  a room with people in it, do not clash.  Other people's messages are skipped.
* **Flood control** (ours: a burst of 20 lines, then 5 per second, for each
  connection): no connection here sends more than 18 lines, so the suite
  passes with it on.  A server with a tighter limit answers some lines with
  ``flood``; such a check fails with "rate-limited: rerun against a server
  with --flood-rate 0".
* **Limits** are the defaults of docs/limits.md: ``too_long`` sends a
  9000-byte line, over the 8192-byte limit.
* **slow_reader** sends up to 4 MiB of private lines to one of its own
  connections, which never reads them (nobody else sees them), until the
  server drops it or the 4 MiB are sent.
* **Connections are closed** at the end of every check, after a ``bye`` and
  reading what the server still had to send: the server sees an orderly
  close, never a reset, except where a check resets on purpose.
* **The room hears it**: other people in the room see the checks come and
  go, and about 30 public lines, which stay in the server's history.
* Plain TCP only (no TLS), and only the address given is contacted.

Exit status: 0 if every check passed, 1 if one failed, 2 if the server could
not be reached at all (or the command line is wrong).

No threads: everything runs in the caller's thread, and every wait has a
deadline.  Only ``slow_reader`` and the framing checks pause on purpose, to
cut the input where the check needs it cut.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import secrets
import socket
import struct
import sys
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, NoReturn

from .protocol import escape_text

Json = dict[str, Any]
Check = Callable[["Context"], str]

DEFAULT_TIMEOUT = 3.0  # seconds to wait for any one answer
#: The longest line sent by too_long (the protocol's limit is 8192 bytes).
LONG_LINE_BYTES = 9000
#: Pause between the bytes of framing_bytes, and between the halves of a
#: split emoji: long enough for the server to read each piece on its own.
BYTE_PAUSE = 0.002
SPLIT_PAUSE = 0.2
#: Waiting for a politely closed connection to be closed by the server.
CLOSE_WAIT = 1.0
#: Says per sender in order (with hello and bye, 7 lines on a connection).
ORDER_LINES = 5
# slow_reader: the stalled client's receive buffer is as small as it gets;
# each feeder connection sends FEED_LINES private lines of FEED_TEXT_CHARS
# (with hello and bye, 18 lines: within a flood burst of 20), until
# FEED_LIMIT bytes have gone or the server drops the stalled client.  A probe
# line must reach another client within MAX_DELAY seconds throughout.
STALL_RCVBUF = 4096
FEED_LINES = 16
FEED_TEXT_CHARS = 8000
FEED_LIMIT = 4 * 1024 * 1024
FEED_ROUNDS_PER_PROBE = 4
MAX_DELAY = 1.0
#: A server line longer than this (a welcome is at most 512 KiB by default)
#: fails the check: it would otherwise fill our memory.
MAX_RECEIVED_LINE = 16 * 1024 * 1024
#: A server that has sent not one byte in the first SILENT_CHECKS checks is
#: given SILENT_TIMEOUT seconds (or --timeout, if less) per wait after that.
SILENT_CHECKS = 2
SILENT_TIMEOUT = 0.3
REASON_CHARS = 300  # a result's reason is cut to this length
SHOWN_CHARS = 120  # a message quoted in a reason is cut to this length


class CheckFailed(Exception):
    """The server did not do what docs/protocol.md says.

    The text says, in one line, what was expected and what was seen.
    """


class RateLimited(CheckFailed):
    """The server refused a line with ``flood``: the check could not run."""


def fail(text: str) -> NoReturn:
    raise CheckFailed(text)


def encode(**fields: Any) -> bytes:
    """One message as one line of UTF-8 JSON (non-ASCII sent raw, not escaped)."""
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def describe(message: Json) -> str:
    """A message, shortened for a reason: ``error bad_json ("...")`` or its JSON."""
    if message.get("type") == "error":
        shown = f"error {message.get('code')} ({message.get('text')!r})"
    else:
        shown = json.dumps(message, ensure_ascii=False)
    return shown if len(shown) <= SHOWN_CHARS else shown[: SHOWN_CHARS - 3] + "..."


def rate_limited(label: str, error: Json) -> RateLimited:
    return RateLimited(
        f"rate-limited: {label} got {describe(error)}; "
        "rerun against a server with --flood-rate 0"
    )


# ---------------------------------------------------------------------------
# One connection


class Peer:
    """One raw TCP connection to the server under test.

    Sends bytes exactly as given; reads JSON lines with deadlines.  Lines that
    do not start with ``{`` (the prompt meant for ``nc`` users) are skipped,
    and a ``ping`` from the server is answered with ``pong``, as the protocol
    asks of every client.  Every message read is kept in ``seen``.  Used by
    one thread; no call blocks for longer than the timeout it is given.
    """

    def __init__(self, sock: socket.socket, label: str, timeout: float) -> None:
        self.sock = sock
        self.label = label  # names the connection in reasons: its (wanted) name
        self.timeout = timeout
        self.name = label  # the name the server gave it (see Context.join)
        self.welcome: Json = {}
        self.seen: list[Json] = []
        self.ended = False  # the server ended the stream
        self.was_reset = False  # ... with a reset
        self.received = 0  # bytes read from the server (by read)
        self._buffer = b""
        self._lines: deque[bytes] = deque()  # complete lines not yet parsed
        #: The last line skipped as not JSON, if nothing JSON came after it.
        self.last_text: bytes | None = None

    # -- sending --------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        """Send all of ``data``; a server that stops reading fails the check."""
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
        except TimeoutError:
            fail(
                f"no answer within {self.timeout:g} s: the server stopped reading "
                f"what {self.label} sends"
            )
        except OSError as exc:
            fail(f"{self.label} could not send: {exc}")

    def send_json(self, **fields: Any) -> None:
        self.send_bytes(encode(**fields))

    def send_slowly(self, data: bytes, pause: float) -> None:
        """Send ``data`` one byte per ``send``, pausing between them."""
        for byte in data:
            self.send_bytes(bytes((byte,)))
            time.sleep(pause)  # pacing, so that each byte is read on its own

    # -- receiving ------------------------------------------------------------

    def read(self, deadline: float) -> Json | None:
        """The next message, or None once the server has ended the stream.

        Raises ``TimeoutError`` at ``deadline`` (a ``time.monotonic`` value),
        ``CheckFailed`` for a line that is not a JSON object with a ``type``.
        """
        while True:
            while self._lines:
                line = self._lines.popleft()
                message = self._parse(line)
                if message is None:
                    if line.strip():
                        self.last_text = line
                    continue
                self.last_text = None
                self.seen.append(message)
                if message["type"] == "ping":
                    self.send_json(type="pong")
                    continue
                return message
            if self.ended:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data, self.was_reset = b"", True
            except TimeoutError:  # an OSError too, but the caller's to report
                raise
            except OSError as exc:
                fail(f"{self.label} could not receive: {exc}")
            self.received += len(data)
            if not data:
                self.ended = True
            *complete, self._buffer = (self._buffer + data).split(b"\n")
            self._lines.extend(complete)
            if len(self._buffer) > MAX_RECEIVED_LINE:
                fail(f"{self.label} got {len(self._buffer)} bytes with no end of line")

    def _parse(self, line: bytes) -> Json | None:
        if not line.lstrip().startswith(b"{"):
            return None  # blank, or the prompt for people
        try:
            message = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # nested deep
            fail(f"{self.label} got a line that is not JSON: {line[:SHOWN_CHARS]!r}")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            fail(f'{self.label} got a line without a string "type": {line[:80]!r}')
        return message

    def wait_for(
        self, what: str, match: Callable[[Json], bool], timeout: float | None = None
    ) -> Json:
        """Read until a message that ``match`` accepts, and return it.

        Other messages (the room's traffic) are skipped.  Fails if the time
        runs out, the connection ends, or an ``error`` comes that ``match``
        does not accept (``flood``: ``RateLimited``).
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last: Json | None = None
        while True:
            try:
                message = self.read(deadline)
            except TimeoutError:
                fail(
                    f"no answer within {limit:g} s: {self.label} expected "
                    f"{what}{self._last_seen(last)}"
                )
            if message is None:
                how = "reset" if self.was_reset else "closed"
                fail(
                    f"{self.label} expected {what}, but the server {how} the "
                    f"connection{self._last_seen(last)}"
                )
            if match(message):
                return message
            if message["type"] == "error":
                if message.get("code") == "flood":
                    raise rate_limited(self.label, message)
                fail(f"{self.label} expected {what}; got {describe(message)}")
            last = message

    def _last_seen(self, last: Json | None) -> str:
        """``; the last thing it got: ...`` for a reason, or nothing."""
        if self.last_text is not None:  # a server answering in plain text
            shown = self.last_text[:SHOWN_CHARS]
            return f"; the last thing it got was a line that is not JSON: {shown!r}"
        return f"; the last thing it got: {describe(last)}" if last else ""

    def expect(self, kind: str, what: str = "") -> Json:
        """Wait for the next message of type ``kind``."""
        return self.wait_for(what or kind, lambda m: m["type"] == kind)

    def expect_error(self, code: str, about: str) -> Json:
        """Wait for ``error`` with this ``code`` (another code fails at once)."""
        return self.wait_for(
            f"error {code} {about}",
            lambda m: m["type"] == "error" and m.get("code") == code,
        )

    def expect_closed(self, about: str) -> None:
        """Read (and skip) everything until the server ends the stream."""
        deadline = time.monotonic() + self.timeout
        try:
            while self.read(deadline) is not None:
                pass
        except TimeoutError:
            fail(
                f"no answer within {self.timeout:g} s: expected the server to "
                f"close {self.label}'s connection {about}"
            )

    def got_already(self, match: Callable[[Json], bool]) -> Json | None:
        """A message ``match`` accepts among those that have arrived by now.

        Reads whatever is waiting (for at most 10 ms): for diagnostics and
        for things that must have happened already, never to wait for one.
        """
        with contextlib.suppress(TimeoutError, CheckFailed):
            deadline = time.monotonic() + 0.01
            while self.read(deadline) is not None:
                pass
        return next((m for m in self.seen if match(m)), None)

    # -- ending ---------------------------------------------------------------

    def vanish(self, reset: bool) -> None:
        """Disappear without a ``bye``: a FIN (``reset`` false) or an RST."""
        if reset:  # SO_LINGER on with a zero timeout: close() sends RST
            linger = struct.pack("ii", 1, 0)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        else:  # a FIN now, whatever is still unread when close() comes
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        self.sock.close()

    def close(self) -> None:
        """Say ``bye``, read until the server closes (briefly), then close.

        Reading to the end leaves nothing unread, so the kernel closes with a
        FIN, not an RST; and the server has handled the leaving before the
        next check starts.  Never raises; does nothing if already closed.
        """
        if self.sock.fileno() < 0:
            return
        try:
            if not self.ended:
                self.sock.settimeout(CLOSE_WAIT)
                self.sock.sendall(encode(type="bye"))
                self.sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + CLOSE_WAIT
                while (remaining := deadline - time.monotonic()) > 0:
                    self.sock.settimeout(remaining)
                    if not self.sock.recv(65536):
                        break
        except OSError:
            pass  # it is going anyway
        finally:
            self.sock.close()


# ---------------------------------------------------------------------------
# What a check gets


@dataclass(frozen=True)
class Target:
    """The server under test, and how patient to be with it."""

    host: str
    port: int
    timeout: float = DEFAULT_TIMEOUT
    password: str | None = None
    #: ``(family, type, proto, address)`` that accepted a connection
    #: (``reachable``): every check connects there, not to the first of the
    #: name's addresses (``localhost`` may give ::1 first, the server 127.0.0.1).
    resolved: tuple | None = None


class Context:
    """A check's means: fresh names, and connections closed when it ends."""

    def __init__(
        self,
        target: Target,
        token: str,
        numbers: Iterator[int],
        stack: contextlib.ExitStack,
    ) -> None:
        self.target = target
        self.token = token  # this run's random suffix
        self.timeout = target.timeout
        self._numbers = numbers  # shared by the whole run: no name twice
        self._stack = stack
        self.peers: list[Peer] = []  # every connection opened, in order

    def name(self, role: str) -> str:
        """A name no one else has: ``ann3-1f0c9a``."""
        return f"{role}{next(self._numbers)}-{self.token}"

    def connect(
        self, label: str, *, rcvbuf: int | None = None, nodelay: bool = False
    ) -> Peer:
        """A new connection, closed (politely) when the check ends."""
        host, port = self.target.host, self.target.port
        try:
            family, kind, proto, address = self.target.resolved or _first_address(
                host, port
            )
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            fail(f"could not connect to {host}:{port}: {exc}")
        peer = Peer(sock, label, self.timeout)
        self.peers.append(peer)
        self._stack.callback(peer.close)
        try:
            if rcvbuf:  # before connect: the window is agreed at the handshake
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
            sock.connect(address)
        except TimeoutError:
            fail(f"no answer within {self.timeout:g} s: could not connect for {label}")
        except OSError as exc:
            fail(f"could not connect for {label}: {exc}")
        return peer

    def hello(self, name: str) -> bytes:
        """The ``hello`` line for ``name`` (with the password, if one was given)."""
        if self.target.password is None:
            return encode(type="hello", name=name)
        return encode(type="hello", name=name, password=self.target.password)

    def join(self, role: str, **options: Any) -> Peer:
        """A new connection that has said hello and read its welcome.

        ``peer.name`` is the name the welcome gives (the protocol says it is
        the one that counts).
        """
        name = self.name(role)
        peer = self.connect(name, **options)
        peer.send_bytes(self.hello(name))
        peer.welcome = peer.expect("welcome", f"a welcome after hello as {name!r}")
        if not isinstance(peer.welcome.get("name"), str):
            fail(f"expected a string name in the welcome; got {describe(peer.welcome)}")
        peer.name = peer.welcome["name"]
        return peer


def is_message(sender: str, text: str) -> Callable[[Json], bool]:
    """Matches the ``message`` that relays ``sender``'s ``text``."""
    return lambda m: (
        m["type"] == "message" and m.get("from") == sender and m.get("text") == text
    )


def left_of(name: str) -> Callable[[Json], bool]:
    return lambda m: m["type"] == "left" and m.get("name") == name


def is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def relayed(talker: Peer, listener: Peer, text: str) -> Json:
    """Wait for ``listener`` to get ``talker``'s line; name the error if not.

    A server that refused the line told the talker why: that is a better
    reason than the listener's silence.
    """
    try:
        return listener.wait_for(
            f"{talker.label}'s line {text!r}", is_message(talker.name, text)
        )
    except CheckFailed:
        error = talker.got_already(lambda m: m["type"] == "error")
        if error is None:
            raise
        fail(f"{talker.label}'s line was refused: {describe(error)}")


# ---------------------------------------------------------------------------
# The checks, in the order they run.  Each returns what it saw, in one line.

CHECKS: dict[str, Check] = {}


def check(function: Check) -> Check:
    """Register a check under its function's name."""
    CHECKS[function.__name__] = function
    return function


@check
def greeting(ctx: Context) -> str:
    """hello is answered by welcome: your name, and users that include you.

    Proves that a JSON client whose first line is hello gets in under the
    name it asked for, that welcome.users lists the room in order of arrival
    (an earlier arrival first), and that the room is told: joined.
    """
    ann = ctx.join("ann")
    wanted = ann.label
    users = ann.welcome.get("users")
    if ann.name != wanted:
        fail(f"expected the welcome's name {wanted!r}; got {ann.name!r}")
    if not is_names(users) or wanted not in users:
        fail(f"expected {wanted!r} in the welcome's users; got {users!r}")
    if not isinstance(ann.welcome.get("history"), list):
        fail(f"expected a list as the welcome's history; got {describe(ann.welcome)}")
    bob = ctx.join("bob")
    users = bob.welcome.get("users")
    if not (
        is_names(users)
        and ann.name in users
        and bob.name in users
        and users.index(ann.name) < users.index(bob.name)
    ):
        fail(f"expected {ann.name!r} before {bob.name!r} in users; got {users!r}")
    ann.wait_for(
        f"joined {bob.name}",
        lambda m: m["type"] == "joined" and m.get("name") == bob.name,
    )
    return (
        f"welcome as {ann.name!r} with it in users; {bob.name!r} saw both in "
        f"order of arrival, and {ann.name!r} was told it joined"
    )


def fullwidth(name: str) -> str:
    """``ann1-x`` -> ``ａｎｎ１－ｘ``: what NFKC turns back into ``name``."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in name)


@check
def names(ctx: Context) -> str:
    """Names: unique whatever the case, checked, normalised; a refusal may be retried.

    Proves, on one connection: hello with a name already in the room in
    other case gets name_taken; a name with a space gets bad_name; then a
    full-width name is accepted, in its NFKC form (``ａｎｎ`` is ``ann``).
    """
    ann = ctx.join("ann")
    wanted = ctx.name("bob")
    bob = ctx.connect(wanted)
    shouted = ann.name.upper()
    bob.send_bytes(ctx.hello(shouted))
    bob.expect_error("name_taken", f"for {shouted!r} ({ann.name!r} is here)")
    bob.send_bytes(ctx.hello("bad name"))
    bob.expect_error("bad_name", "for 'bad name' (a space)")
    wide = fullwidth(wanted)
    bob.send_bytes(ctx.hello(wide))
    welcome = bob.expect("welcome", f"a welcome after hello as {wide!r}")
    if welcome.get("name") != unicodedata.normalize("NFKC", wide):
        fail(f"expected {wide!r} welcomed as {wanted!r}; got {welcome.get('name')!r}")
    return (
        f"{shouted!r}: name_taken; 'bad name': bad_name; then {wide!r} "
        f"welcomed as {wanted!r}, all on one connection"
    )


@check
def broadcast(ctx: Context) -> str:
    """A say reaches everyone in the room, the sender included, as one message.

    Proves that each of three clients gets a message with the same integer
    id, "from" the sender's name, the text unchanged (non-ASCII included), a
    numeric ts, and the sender's cid.
    """
    peers = [ctx.join(role) for role in ("ann", "bob", "cat")]
    ann = peers[0]
    text = f"hello, everyone ✓ {ctx.token}"
    ann.send_json(type="say", text=text, cid="b1")
    got = [
        peer.wait_for(f"{ann.name}'s message {text!r}", is_message(ann.name, text))
        for peer in peers
    ]
    ids = [m.get("id") for m in got]
    if len(set(map(repr, ids))) != 1 or type(ids[0]) is not int:
        fail(f"expected one integer id for all three; got {ids}")
    for peer, message in zip(peers, got, strict=True):
        if message.get("cid") != "b1":
            fail(f"{peer.label} got cid {message.get('cid')!r}; expected 'b1'")
        if type(message.get("ts")) not in (int, float):
            fail(f"expected a number as ts; got {describe(message)}")
    return f"message id {ids[0]} from {ann.name!r} reached all 3, the sender too"


@check
def order(ctx: Context) -> str:
    """Several senders at once: one order for everyone, ids strictly increasing.

    Proves that the room has one order: three clients each send five says,
    interleaved, without waiting.  Each of the three sees all fifteen, in the
    same order with the same ids, the ids going up, and each sender's lines
    in the order they were sent.
    """
    peers = [ctx.join(role) for role in ("ann", "bob", "cat")]
    for i in range(ORDER_LINES):
        for peer in peers:
            peer.send_json(type="say", text=f"order {i} {peer.name}")
    wanted = {
        (p.name, f"order {i} {p.name}") for p in peers for i in range(ORDER_LINES)
    }

    def ours(m: Json) -> bool:
        return m["type"] == "message" and (m.get("from"), m.get("text")) in wanted

    views = []
    for peer in peers:
        view: list[tuple[Any, Any, Any]] = []
        while len(view) < len(wanted):
            message = peer.wait_for(f"15 messages (after {len(view)})", ours)
            view.append((message.get("id"), message.get("from"), message.get("text")))
        ids = [entry[0] for entry in view]
        if not all(type(i) is int for i in ids) or ids != sorted(set(ids)):
            fail(f"{peer.label} saw ids {ids}; expected them strictly increasing")
        if len({entry[1:] for entry in view}) != len(wanted):
            fail(f"{peer.label} got a line twice: {[entry[2] for entry in view]}")
        for sender in peers:
            lines = [text for _, source, text in view if source == sender.name]
            if lines != [f"order {i} {sender.name}" for i in range(ORDER_LINES)]:
                fail(f"{peer.label} saw {sender.label}'s lines out of order: {lines}")
        views.append(view)
    for peer, view in zip(peers[1:], views[1:], strict=True):
        if view != views[0]:
            k = next(
                k for k, (a, b) in enumerate(zip(views[0], view, strict=True)) if a != b
            )
            fail(
                f"{peers[0].label} and {peer.label} disagree at message {k + 1}: "
                f"{views[0][k]} against {view[k]}"
            )
    return (
        f"{len(wanted)} messages from 3 senders in one order for all 3, "
        f"ids {views[0][0][0]}..{views[0][-1][0]} increasing"
    )


@check
def private(ctx: Context) -> str:
    """A private line reaches its addressee and its sender, nobody else.

    Proves that ann's private to bob reaches bob and comes back to ann (from,
    to, text and cid as sent); that cat, who then gets ann's next public
    line, got no private before it; and that a private to a name nobody has
    gets no_such_user.
    """
    ann, bob, cat = (ctx.join(role) for role in ("ann", "bob", "cat"))
    text = f"just for you {ctx.token}"
    ann.send_json(type="private", to=bob.name, text=text, cid="p1")

    def the_private(m: Json) -> bool:
        return m["type"] == "private" and m.get("text") == text

    for peer in (bob, ann):
        got = peer.wait_for(f"the private {ann.name} -> {bob.name}", the_private)
        sent = {"from": ann.name, "to": bob.name, "cid": "p1"}
        seen = {key: got.get(key) for key in sent}
        if seen != sent:
            fail(f"{peer.label} got a private with {seen}; expected {sent}")
    after = f"after the private {ctx.token}"
    ann.send_json(type="say", text=after)
    cat.wait_for(f"{ann.name}'s line {after!r}", is_message(ann.name, after))
    leak = next((m for m in cat.seen if the_private(m)), None)
    if leak is not None:
        fail(f"{cat.label} got the private meant for {bob.label}: {describe(leak)}")
    nobody = ctx.name("nobody")
    ann.send_json(type="private", to=nobody, text="anyone there?", cid="p2")
    ann.expect_error("no_such_user", f"for a private to {nobody!r}")
    return (
        f"{bob.name!r} and {ann.name!r} got it, {cat.name!r} did not; "
        f"to {nobody!r}: no_such_user"
    )


@check
def rename(ctx: Context) -> str:
    """rename is announced to everyone, the renamed client included.

    Proves that ann and bob both get renamed {old, new} when ann renames
    herself, and that bob's who then lists the new name and not the old.
    """
    ann, bob = ctx.join("ann"), ctx.join("bob")
    new = ctx.name("ren")
    ann.send_json(type="rename", name=new)
    for peer in (ann, bob):
        peer.wait_for(
            f"renamed {ann.name} -> {new}",
            lambda m: (
                m["type"] == "renamed"
                and (m.get("old"), m.get("new")) == (ann.name, new)
            ),
        )
    bob.send_json(type="who")
    users = bob.expect("users", "users (after who)").get("users")
    if not is_names(users) or new not in users or ann.name in users:
        fail(f"expected {new!r}, not {ann.name!r}, in users; got {users!r}")
    return f"{ann.name!r} -> {new!r} told to both; who shows the new name"


@check
def who(ctx: Context) -> str:
    """who is answered with users: everyone here, in order of arrival.

    Proves that ann's who gets a users list holding ann and bob, ann first.
    """
    ann, bob = ctx.join("ann"), ctx.join("bob")
    ann.send_json(type="who")
    users = ann.expect("users", "users (after who)").get("users")
    if not (
        is_names(users)
        and ann.name in users
        and bob.name in users
        and users.index(ann.name) < users.index(bob.name)
    ):
        fail(f"expected {ann.name!r} then {bob.name!r} in users; got {users!r}")
    return f"users lists {ann.name!r} then {bob.name!r} ({len(users)} in all)"


@check
def ping(ctx: Context) -> str:
    """ping is answered with pong, before hello and after.

    Proves that a ping as the very first line gets pong (and the connection
    is still a JSON one: its hello is welcomed), and that a ping in the room
    gets pong.
    """
    name = ctx.name("ann")
    peer = ctx.connect(name)
    peer.send_json(type="ping")
    peer.expect("pong", "pong (to a ping before hello)")
    peer.send_bytes(ctx.hello(name))
    peer.expect("welcome", "a welcome after the ping")
    peer.send_json(type="ping")
    peer.expect("pong", "pong (to a ping in the room)")
    return "pong before hello and after"


# -- framing -------------------------------------------------------------------


@check
def framing_bytes(ctx: Context) -> str:
    """A hello and a say sent one byte at a time are read as whole lines.

    Proves that the server keeps a buffer across reads instead of taking what
    one recv returns as one message: each byte goes in a TCP segment of its
    own (TCP_NODELAY, a pause between sends), and the say reaches another
    client whole.
    """
    listener = ctx.join("lis")
    name = ctx.name("tal")
    talker = ctx.connect(name, nodelay=True)
    talker.send_slowly(ctx.hello(name), BYTE_PAUSE)
    talker.name = talker.expect("welcome", "a welcome (hello sent bytewise)").get(
        "name", name
    )
    text = f"one byte at a time {ctx.token}"
    talker.send_slowly(encode(type="say", text=text), BYTE_PAUSE)
    relayed(talker, listener, text)
    return "hello and say arrived whole from single-byte segments"


@check
def framing_coalesced(ctx: Context) -> str:
    """Two lines in one segment are two messages.

    Proves that the server splits what one recv returns into lines: a hello
    and a say sent in one sendall, then two says in one, reach another
    client as three messages, in order.
    """
    listener = ctx.join("lis")
    name = ctx.name("tal")
    talker = ctx.connect(name)
    texts = [f"together {i} {ctx.token}" for i in (1, 2, 3)]
    talker.send_bytes(ctx.hello(name) + encode(type="say", text=texts[0]))
    talker.name = talker.expect("welcome", "a welcome (hello + say in one)").get(
        "name", name
    )
    talker.send_bytes(b"".join(encode(type="say", text=text) for text in texts[1:]))
    got = []
    for _ in texts:
        message = listener.wait_for(
            f"{name}'s 3 lines (after {len(got)})",
            lambda m: (
                m["type"] == "message"
                and m.get("from") == talker.name
                and m.get("text") in texts
            ),
        )
        got.append(message.get("text"))
    if got != texts:
        fail(f"expected {texts} in that order; got {got}")
    return "hello+say, then say+say, each in one segment: 3 messages in order"


@check
def framing_utf8(ctx: Context) -> str:
    """An emoji split across two sends, with a pause, arrives whole.

    Proves that the server splits bytes into lines before decoding UTF-8:
    the line is cut in the middle of the four bytes of U+1F642, the second
    half follows 0.2 s later, and another client gets the text unchanged.
    """
    listener, talker = ctx.join("lis"), ctx.join("tal")
    text = f"split 🙂 here {ctx.token}"
    line = encode(type="say", text=text)
    cut = line.index("🙂".encode()) + 2
    talker.send_bytes(line[:cut])
    time.sleep(SPLIT_PAUSE)  # pacing: the server reads the first half alone
    talker.send_bytes(line[cut:])
    relayed(talker, listener, text)
    return f"cut after byte {cut}, paused {SPLIT_PAUSE:g} s: text arrived unchanged"


@check
def framing_blank(ctx: Context) -> str:
    """Blank lines are ignored: no error, nothing relayed, still connected.

    Proves that an empty line and a line of spaces (keep-alives) get no
    answer: the next thing after them, a ping, is answered by pong with no
    error before it, and nothing was said in the talker's name.
    """
    talker = ctx.join("tal")
    start = len(talker.seen)
    talker.send_bytes(b"\n")
    talker.send_bytes(b"   \n")
    talker.send_json(type="ping")
    talker.expect("pong", "pong after two blank lines, with nothing before it")
    said = [m for m in talker.seen[start:] if m.get("from") == talker.name]
    if said:
        fail(f"a blank line was relayed: {describe(said[0])}")
    return "no answer to blank lines; the ping after them got pong"


# -- limits --------------------------------------------------------------------


def refused(ctx: Context, line: bytes, code: str, about: str) -> str:
    """Send ``line`` from a client in the room: ``code``, then a ping works."""
    talker = ctx.join("tal")
    listener = ctx.join("lis")
    talker.send_bytes(line)
    error = talker.expect_error(code, about)
    talker.send_json(type="ping")
    talker.expect("pong", f"pong (still connected after {code})")
    # Refused means not relayed either: the next line is the first one heard.
    text = f"after the refused line {ctx.token}"
    talker.send_json(type="say", text=text)
    heard = relayed(talker, listener, text)
    earlier = [
        m
        for m in listener.seen
        if m is not heard and m["type"] == "message" and m.get("from") == talker.name
    ]
    if earlier:
        fail(f"answered {code}, but relayed the line anyway: {describe(earlier[0])}")
    return f"error {code} ({error.get('text')!r}), not relayed, and still connected"


@check
def too_long(ctx: Context) -> str:
    """A 9000-byte line gets too_long, and the client stays connected.

    Proves that the server caps a line's length (8192 bytes by default) and
    answers too_long instead of relaying the line or closing, then reads the
    next line normally (a ping gets pong).
    """
    bare = len(encode(type="say", text="")) - 1
    line = encode(type="say", text="x" * (LONG_LINE_BYTES - bare))
    return refused(ctx, line, "too_long", f"for a {len(line) - 1}-byte line")


@check
def bad_utf8(ctx: Context) -> str:
    """A line that is not UTF-8 gets bad_utf8, and the client stays connected.

    Proves that the server checks the encoding of each line (here a Latin-1
    é, byte 0xE9) and answers instead of crashing or closing.
    """
    line = b'{"type":"say","text":"caf\xe9"}\n'
    return refused(ctx, line, "bad_utf8", "for the byte 0xE9 alone")


@check
def bad_json(ctx: Context) -> str:
    """A line that is not JSON gets bad_json, and the client stays connected.

    Proves that the server answers a broken line (an object left open) with
    an error instead of crashing or closing.
    """
    line = b'{"type":"say","text":\n'
    return refused(ctx, line, "bad_json", "for an object left open")


@check
def unknown_type(ctx: Context) -> str:
    """A message of an unknown type gets unknown_type, and the client stays.

    Proves that the server answers {"type":"shout"} with unknown_type, as
    docs/protocol.md section 3 asks, and goes on.
    """
    line = encode(type="shout", text="HI")
    return refused(ctx, line, "unknown_type", "for type 'shout'")


# -- disconnecting -------------------------------------------------------------


@check
def bye(ctx: Context) -> str:
    """bye: the others get left with the reason quit; the connection closes.

    Proves that bob's bye is announced to ann as left {name: bob, reason:
    quit}, and that the server then closes bob's connection.
    """
    ann, bob = ctx.join("ann"), ctx.join("bob")
    bob.send_json(type="bye")
    left = ann.wait_for(f"left {bob.name}", left_of(bob.name))
    if left.get("reason") != "quit":
        fail(f"expected left with reason 'quit'; got {describe(left)}")
    bob.expect_closed("after its bye")
    return f"{ann.name!r} got left {bob.name!r} (quit); the server closed it"


@check
def vanish(ctx: Context) -> str:
    """Clients that vanish leave the room, and the server carries on.

    Proves that a client that closes without bye (a FIN) and one whose
    connection is reset (an RST: SO_LINGER 0) are both announced with left,
    and that the server still works afterwards: a newcomer joins and gets
    an old member's line.
    """
    ann, cat, bob = (ctx.join(role) for role in ("ann", "cat", "bob"))
    bob.vanish(reset=False)  # bob came last: nothing unread, a clean FIN
    left_bob = ann.wait_for(f"left {bob.name} (closed without bye)", left_of(bob.name))
    # cat reads up to the same point first, so that the server is sending it
    # nothing when the reset comes: its read, not a send, meets the reset.
    cat.wait_for(f"left {bob.name} (closed without bye)", left_of(bob.name))
    cat.vanish(reset=True)
    left_cat = ann.wait_for(f"left {cat.name} (reset)", left_of(cat.name))
    dan = ctx.join("dan")
    text = f"still here {ctx.token}"
    ann.send_json(type="say", text=text)
    relayed(ann, dan, text)
    return (
        f"closed: left ({left_bob.get('reason')!r}); reset: left "
        f"({left_cat.get('reason')!r}); then a newcomer joined and heard {ann.name!r}"
    )


# -- a client that stops reading -------------------------------------------------


def _feed(ctx: Context, stalled: str, before: str) -> bool:
    """One feeder: FEED_LINES private lines to ``stalled``, then bye.

    True if the stalled client is gone (the lines got no_such_user).  Fails
    if the server refused the lines, or did not deal with them and close the
    feeder in time: then it is stuck on the client that is not reading.
    """
    feeder = ctx.join("feed")
    text = "y" * FEED_TEXT_CHARS
    stuck = None
    try:
        for _ in range(FEED_LINES):
            feeder.send_json(type="private", to=stalled, text=text)
        feeder.send_json(type="bye")
        feeder.expect_closed("after its bye")
    except CheckFailed as exc:
        stuck = exc
    errors = [m for m in feeder.seen if m["type"] == "error"]
    codes = {m.get("code") for m in errors}
    if "no_such_user" in codes:
        return True
    if "flood" in codes:
        raise rate_limited(feeder.label, errors[0])
    if errors:
        fail(f"the server refused the feeder's private lines: {describe(errors[0])}")
    if stuck is not None:
        fail(f"{stuck}; {stalled} is not reading, and was sent {before} before")
    if not any(m["type"] == "private" for m in feeder.seen):
        fail(
            f"{feeder.label} sent {FEED_LINES} private lines to {stalled} and got "
            "neither its copy of one nor an error: were they sent at all?"
        )
    return False


@check
def slow_reader(ctx: Context) -> str:
    """A client that stops reading does not delay anyone else by over 1 s.

    Proves that the server does not send to one client at a time and wait:
    a client with a tiny receive buffer joins and never reads again, while
    feeder connections send it up to 4 MiB of private lines; throughout, a
    say from another client reaches a third within a second.  The server
    may drop the stalled client (a slow consumer): that passes too.
    """
    stalled = ctx.join("stall", rcvbuf=STALL_RCVBUF)  # reads its welcome only
    observer, prober = ctx.join("obs"), ctx.join("prb")
    per_round = FEED_LINES * FEED_TEXT_CHARS
    fed, worst, gone = 0, 0.0, False

    def probe() -> None:
        nonlocal worst
        text = f"probe after {fed} bytes {ctx.token}"
        mib = f"{fed / 2**20:.1f} MiB"
        start = time.monotonic()
        prober.send_json(type="say", text=text)
        observer.wait_for(
            f"{prober.label}'s line ({mib} sent to {stalled.label}, not reading)",
            is_message(prober.name, text),
            timeout=max(ctx.timeout, 2 * MAX_DELAY),
        )
        delay = time.monotonic() - start
        worst = max(worst, delay)
        if delay > MAX_DELAY:
            fail(
                f"a line took {delay:.2f} s to reach {observer.label} after {mib} "
                f"sent to {stalled.label}, which is not reading (at most "
                f"{MAX_DELAY:g} s)"
            )

    try:
        for number in range(FEED_LIMIT // per_round):
            if number % FEED_ROUNDS_PER_PROBE == 0:
                probe()
            gone = _feed(ctx, stalled.name, f"{fed / 2**20:.1f} MiB")
            if gone:
                break  # dropped: no one left to feed
            fed += per_round
        probe()
        dropped = observer.got_already(left_of(stalled.name))
    finally:
        stalled.vanish(reset=True)  # stop stalling: a stuck server is freed
    if dropped is not None:
        end = f"the server dropped it ({dropped.get('reason')!r})"
    else:
        end = "the server dropped it" if gone else "it was still connected"
    return (
        f"lines took at most {worst * 1000:.0f} ms while {stalled.label} was sent "
        f"{fed / 2**20:.1f} MiB unread; {end}"
    )


# ---------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class Result:
    """One check's outcome; ``reason`` is one line."""

    name: str
    passed: bool
    reason: str
    seconds: float


def one_line(text: str) -> str:
    """``text`` safe to print on one line: escapes, and cut to REASON_CHARS."""
    # A lone surrogate (text a server cut inside an emoji) cannot be printed.
    text = escape_text(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def run_check(target: Target, name: str, token: str, numbers: Iterator[int]) -> Result:
    """Run one check; every connection it opened is closed when it returns."""
    return _run_check(target, name, token, numbers)[0]


def _run_check(
    target: Target, name: str, token: str, numbers: Iterator[int]
) -> tuple[Result, int]:
    """``run_check``, and how many bytes the server sent during the check."""
    start = time.monotonic()
    peers: list[Peer] = []
    try:
        with contextlib.ExitStack() as stack:
            ctx = Context(target, token, numbers, stack)
            peers = ctx.peers
            reason = CHECKS[name](ctx)
        passed = True
    except CheckFailed as exc:
        passed, reason = False, str(exc)
    except Exception as exc:  # what the server sent broke the check itself
        passed = False
        reason = f"the check could not go on: {type(exc).__name__}: {exc}"
    result = Result(name, passed, one_line(reason), round(time.monotonic() - start, 3))
    return result, sum(peer.received for peer in peers)


def run_checks(target: Target, names: Sequence[str] | None = None) -> Iterator[Result]:
    """Run the checks named (default: all), in order; yield each result.

    Blocks while each check runs.  Names are unique to this run.  A server
    that has not sent one byte in the first SILENT_CHECKS checks (it reads
    and never answers) is given at most SILENT_TIMEOUT s per wait after
    that: every check still runs, without costing the full timeout each.
    """
    token = secrets.token_hex(3)
    numbers = itertools.count(1)
    heard = 0
    for done, name in enumerate(names or list(CHECKS)):
        if done == SILENT_CHECKS and not heard:
            target = replace(target, timeout=min(target.timeout, SILENT_TIMEOUT))
        result, received = _run_check(target, name, token, numbers)
        heard += received
        yield result


def reachable(target: Target) -> Target:
    """``target`` with the first of its addresses that accepts a connection
    (opened and closed); raises ``OSError`` if none does."""
    error: OSError = OSError(f"no address for {target.host}")
    found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    for family, kind, proto, _, address in found:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(target.timeout)
                sock.connect(address)
        except OSError as exc:
            error = exc
            continue
        return replace(target, resolved=(family, kind, proto, address))
    raise error


def _first_address(host: str, port: int) -> tuple:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    )[0]
    return family, kind, proto, address


# ---------------------------------------------------------------------------
# The command line


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> ``(host, port)``."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT, such as 127.0.0.1:12345; got {text!r}"
        )
    return host.removeprefix("[").removesuffix("]"), int(port)


def summary(function: Check) -> str:
    """The first line of a check's docstring."""
    return (function.__doc__ or "").strip().splitlines()[0]


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, CHECKS))
    listing = "\n".join(f"  {n:<{width}}  {summary(f)}" for n, f in CHECKS.items())
    parser = argparse.ArgumentParser(
        prog="python -m chat.selftest",
        description="Check that a chat server speaks docs/protocol.md.",
        epilog=f"checks, in the order they run:\n{listing}\n\n"
        "Exit status: 0 all passed, 1 a check failed, 2 no connection at all.\n"
        "A server with flood control tighter than a burst of 20 lines may fail\n"
        "checks as rate-limited: rerun against it with --flood-rate 0.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "address", nargs="?", type=parse_address, help="HOST:PORT of the server"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="seconds to wait for each answer (default %(default)s)",
    )
    parser.add_argument(
        "--only", metavar="NAME,...", help="run only these checks (see --list)"
    )
    parser.add_argument("--password", metavar="PW", help="the room password, if any")
    parser.add_argument(
        "--list", action="store_true", help="say what each check proves, and stop"
    )
    return parser


def print_list() -> None:
    for name, function in CHECKS.items():
        doc = (function.__doc__ or "").strip().splitlines()
        print(name)
        for line in doc:
            print(f"    {line.strip()}" if line.strip() else "")
        print()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print_list()
        return 0
    if args.address is None:
        parser.error("give the server's address as HOST:PORT, such as 127.0.0.1:12345")
    if args.timeout <= 0:
        parser.error("--timeout must be more than 0")
    names = list(CHECKS)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = sorted(wanted - set(CHECKS))
        if unknown or not wanted:
            missing = ", ".join(unknown) or "(none)"
            parser.error(f"no check called {missing}; see --list")
        names = [name for name in CHECKS if name in wanted]
    host, port = args.address
    target = Target(host, port, args.timeout, args.password)
    try:
        target = reachable(target)
    except (OSError, UnicodeError) as exc:  # UnicodeError: "192.168..1" (idna)
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if isinstance(exc, (socket.gaierror, UnicodeError)):
            hint = "Is the host name right?"
        else:
            hint = "Is the server running, and listening on that address and port?"
        print(f"Cannot connect to {host}:{port} ({why}). {hint}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"Checking the chat server at {host}:{port} ({len(names)} checks)")
    width = max(map(len, names))
    results = []
    for result in run_checks(target, names):
        results.append(result)
        if not args.json:
            verdict = "PASS" if result.passed else "FAIL"
            print(f"{verdict}  {result.name:<{width}}  {result.reason}", flush=True)
    passed = sum(result.passed for result in results)
    if args.json:
        report = {
            "server": f"{host}:{port}",
            "passed": passed,
            "total": len(results),
            "checks": [asdict(result) for result in results],
        }
        print(json.dumps(report, ensure_ascii=False))
    else:
        seconds = sum(result.seconds for result in results)
        print(f"{passed}/{len(results)} passed ({seconds:.1f} s)")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
