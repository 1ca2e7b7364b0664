"""Finding chat servers on the local network: one UDP probe, one small reply.

A client that does not know where the server is sends one datagram, the
*probe*, to the network's broadcast address (or to one computer), on the
chat's port number.  Every server that hears it answers with one datagram,
the *reply*, saying what it is::

    probe:  {"type":"discover","v":1}
    reply:  {"type":"server","v":1,"name":"lab-pc","port":12345,"users":3,
             "password":false,"tls":false}

The reply's ``port`` is the server's TCP port; its address is where the reply
came from.  ``docs/protocol.md`` describes the chat itself.

The server side is ``DiscoveryResponder``, built on ``socketserver.UDPServer``.
It does not import the server: it asks a callable for the reply's fields each
time, so what it says is always current.  Wiring it in (from the main thread,
after the ``ChatServer`` is bound)::

    responder = DiscoveryResponder(
        config.host,
        server.port,  # the same number as TCP (UDP is a separate port space)
        lambda: {
            "name": socket.gethostname(),
            "port": server.port,
            "users": len(server.room.names()),
            "password": server.config.password is not None,
            "tls": server.tls_context is not None,
        },
    )  # raises OSError if the UDP port is taken
    responder.start()
    ...
    responder.stop()  # joins the thread and frees the port

The client side is ``discover()``, which blocks for its ``timeout`` (run it
in a worker thread in a window), and ``python -m chat.discover`` in a terminal.

Why a responder is safe to leave on, even facing the internet by mistake:

* It answers only a well-formed probe: at most ``MAX_PROBE_BYTES`` bytes of
  UTF-8 JSON with exactly the right ``type`` and ``v``.  Anything else (junk,
  a reply, another version, an oversized datagram) is ignored without a word,
  so two responders can never keep each other talking.
* It ignores probes from ports below 1024: a forged probe "from" an echo or
  chargen service could otherwise start a loop.
* Its replies are small (at most ``MAX_REPLY_BYTES``), and all askers
  together get at most ``REPLY_BURST`` replies at once and ``REPLY_RATE`` a
  second after that.  Someone forging probes from a victim's address can
  make it send a few kilobytes a second at most: useless as a reflector.
* It reveals nothing that connecting would not: a name, a port, a user
  count, and whether a password or TLS is needed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .protocol import DEFAULT_PORT, escape_text

log = logging.getLogger("chat.discovery")

#: The version both sides speak; a probe or reply with another is ignored.
VERSION = 1
#: The one probe this version sends.
PROBE = b'{"type":"discover","v":1}'
#: A datagram longer than this is not a probe (ours is 25 bytes).
MAX_PROBE_BYTES = 64
#: A reply never passes this; a longer datagram is not a reply.
MAX_REPLY_BYTES = 256
#: A server's name in a reply is cut to this many characters.
MAX_SERVER_NAME_CHARS = 40
#: A user count above this is nonsense, not a reply.
MAX_USERS = 1_000_000
#: Replies a responder may send at once, all askers together (a whole class
#: pressing "Find servers" in the same second)...
REPLY_BURST = 40
#: ...and per second after that.
REPLY_RATE = 20.0
#: The broadcast address of "this network", whichever it is.
LIMITED_BROADCAST = "255.255.255.255"
#: ``discover`` reads at most this many datagrams, however many arrive.
MAX_DATAGRAMS_READ = 1000


# ---------------------------------------------------------------------------
# The formats.  No sockets here: bytes in, a verdict or a ``Found`` out.


@dataclass(frozen=True, slots=True)
class Found:
    """A server that answered: its name, where to connect, and what it said."""

    name: str
    address: str  # where the reply came from: the host to connect to
    port: int  # the server's TCP port
    users: int
    password: bool  # a password is needed to join
    tls: bool  # connect with TLS (python -m chat --tls)


def is_probe(data: bytes) -> bool:
    """Is this datagram a well-formed probe of our version?  Never raises."""
    if len(data) > MAX_PROBE_BYTES:
        return False
    obj = _json_object(data)
    return (
        obj is not None
        and obj.get("type") == "discover"
        and type(obj.get("v")) is int  # not true, not 1.0
        and obj["v"] == VERSION
    )


def encode_reply(
    *, name: str, port: int, users: int, password: bool, tls: bool
) -> bytes:
    """The reply datagram for a server described by these fields.

    ``name`` is shown to people: its control and invisible characters are
    escaped, as is a lone surrogate (``socket.gethostname()`` gives one for
    each byte of a name that is not UTF-8), and it is cut to
    ``MAX_SERVER_NAME_CHARS``.  The other fields are
    checked; a wrong one raises ``ValueError`` or ``TypeError`` (a bug in
    the caller, never the peer's doing), as does a missing or extra one.
    """
    name = _as_text(escape_text(name))[:MAX_SERVER_NAME_CHARS]
    if not name:
        raise ValueError("a server needs a name")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1 to 65535, not {port!r}")
    if type(users) is not int or not 0 <= users <= MAX_USERS:
        raise ValueError(f"users must be 0 to {MAX_USERS}, not {users!r}")
    if type(password) is not bool or type(tls) is not bool:
        raise TypeError("password and tls must be True or False")
    reply = {
        "type": "server",
        "v": VERSION,
        "name": name,
        "port": port,
        "users": users,
        "password": password,
        "tls": tls,
    }
    data = json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode()
    if len(data) > MAX_REPLY_BYTES:  # cannot happen with the limits above
        raise ValueError(f"a reply of {len(data)} bytes is too long")
    return data


def parse_reply(data: bytes, address: str) -> Found | None:
    """The server a reply datagram from ``address`` describes, or ``None``.

    ``None`` for anything that is not a well-formed reply of our version:
    the caller just ignores it.  Never raises.
    """
    if len(data) > MAX_REPLY_BYTES:
        return None
    obj = _json_object(data)
    if obj is None or obj.get("type") != "server":
        return None
    name, port, users = obj.get("name"), obj.get("port"), obj.get("users")
    password, tls = obj.get("password"), obj.get("tls")
    if (
        type(obj.get("v")) is not int
        or obj["v"] != VERSION
        or type(name) is not str
        or not 1 <= len(name) <= MAX_SERVER_NAME_CHARS
        or escape_text(name) != name  # control characters: not from us
        or _as_text(name) != name  # a lone surrogate: no terminal prints it
        or type(port) is not int
        or not 1 <= port <= 65535
        or type(users) is not int
        or not 0 <= users <= MAX_USERS
        or type(password) is not bool
        or type(tls) is not bool
    ):
        return None
    return Found(name, address, port, users, password, tls)


def _as_text(text: str) -> str:
    """``text`` with each lone surrogate (``"\\udcff"``) written as an escape.

    JSON can carry one (``"\\ud800"``) and ``gethostname`` can return one,
    but UTF-8 cannot: printing it, or sending it, raises ``UnicodeEncodeError``.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_object(data: bytes) -> dict[str, Any] | None:
    """The JSON object in a datagram, or ``None`` if there is none."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


class ReplyBudget:
    """A token bucket: ``burst`` replies at once, then ``rate`` a second.

    ``clock`` gives seconds (``time.monotonic``; tests pass a fake one).
    Not thread-safe: it belongs to the one thread that answers.
    """

    def __init__(
        self,
        rate: float = REPLY_RATE,
        burst: int = REPLY_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("need rate >= 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        """May one more reply go out now?  (If so, it is counted.)"""
        now = self._clock()
        elapsed = max(now - self._last, 0.0)  # a clock never goes back; still
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


# ---------------------------------------------------------------------------
# The server side


@dataclass(frozen=True, slots=True)
class ResponderStats:
    """What a responder did with the datagrams it read."""

    answered: int = 0  # probes that got a reply
    ignored: int = 0  # datagrams that were not probes (or came from a port < 1024)
    limited: int = 0  # probes not answered because of the rate limit


class DiscoveryHandler(socketserver.BaseRequestHandler):
    """Looks at one datagram and answers it if it is a probe (discovery thread)."""

    server: DiscoveryResponder
    request: tuple[bytes, socket.socket]

    def handle(self) -> None:
        data, sock = self.request
        responder = self.server
        if not is_probe(data):
            responder.count("ignored")
            return
        if not responder.budget.take():
            responder.count("limited")
            return
        reply = encode_reply(**responder.describe())
        try:
            sock.sendto(reply, self.client_address)
        except OSError as exc:  # no route back, a full buffer...: their loss
            log.debug("no reply to %s: %s", self.client_address, exc)
            return
        responder.count("answered")


class DiscoveryResponder(socketserver.UDPServer):
    """Answers discovery probes on a UDP port, in a thread of its own.

    Life cycle: ``DiscoveryResponder(host, port, describe)`` binds at once
    (``port`` 0 picks a free one; ``.port`` says which) and raises
    ``OSError`` if it cannot.  ``start()`` starts the ``discovery`` thread;
    ``stop()`` ends it, joins it and frees the port.  ``with`` does both.
    Use these, not ``serve_forever``/``shutdown``.  ``start`` and ``stop``
    belong to the owner's thread (never the discovery thread itself).

    ``describe`` is called in the discovery thread, once per answered probe,
    and returns the reply's fields as keywords of ``encode_reply``: ``name``,
    ``port`` (TCP), ``users``, ``password`` and ``tls``.  It must be quick and
    must not block.  If it (or the reply it describes) is wrong, that is
    logged as a bug and the probe gets no answer; the responder goes on.

    ``rate`` and ``burst`` set the reply budget (``ReplyBudget``); ``clock``
    is for tests.  ``stats()`` counts what was answered, ignored and limited.
    """

    # SO_REUSEADDR stays off.  UDP has no TIME_WAIT, so a restarted server
    # binds again at once without it; and with it, on Linux, another user's
    # program could bind the same port and take our probes (CPython removed
    # it from asyncio's UDP endpoints for that reason, bpo-37228).
    allow_reuse_address = False
    allow_reuse_port = False
    # Bigger than any probe, so an oversized datagram is read whole and
    # counted as ignored.  A bigger one still is cut short (Linux) or refused
    # by recvfrom (Windows): ignored either way.
    max_packet_size = 2048
    # The longest the thread waits for a datagram before it looks at the
    # stop flag: how soon stop() returns.
    timeout = 0.2
    # How long stop() waits for the thread before calling it a bug.
    join_timeout = 5.0

    def __init__(
        self,
        host: str,
        port: int,
        describe: Callable[[], Mapping[str, Any]],
        *,
        rate: float = REPLY_RATE,
        burst: int = REPLY_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.describe = describe
        self.budget = ReplyBudget(rate, burst, clock)
        self._lock = threading.Lock()  # guards _counts
        self._counts = {"answered": 0, "ignored": 0, "limited": 0}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        super().__init__((host, port), DiscoveryHandler)
        # recvfrom after select can still wait (a datagram with a bad
        # checksum is dropped in between): bound that wait too.
        self.socket.settimeout(self.timeout)

    @property
    def port(self) -> int:
        """The UDP port really bound (useful with port 0)."""
        return self.server_address[1]

    def start(self) -> None:
        """Start answering, in a new ``discovery`` thread.  Returns at once.

        Raises ``RuntimeError`` if it was started or stopped before.
        """
        if self._thread is not None or self._closed:
            raise RuntimeError("a DiscoveryResponder can be started only once")
        self._thread = threading.Thread(
            target=self._serve,
            name="discovery",
            daemon=True,  # only so that a bug cannot keep the process alive
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop answering: end and join the thread, then free the port.

        Blocks for at most ``timeout`` seconds in the usual case.  Safe to
        call twice, or without ``start``.  Raises ``RuntimeError`` if the
        thread has not ended after ``join_timeout`` seconds (a bug; the
        socket is then left open rather than closed under the thread).
        """
        if self._closed:
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.join_timeout)
            if self._thread.is_alive():
                raise RuntimeError("the discovery thread did not stop")
        self._closed = True
        self.server_close()

    def stats(self) -> ResponderStats:
        """What has been done so far (any thread)."""
        with self._lock:
            return ResponderStats(**self._counts)

    def count(self, what: str) -> None:
        """Add one to a ``ResponderStats`` field (the discovery thread)."""
        with self._lock:
            self._counts[what] += 1

    def __enter__(self) -> DiscoveryResponder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- socketserver hooks, in the discovery thread -------------------------

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Ignore datagrams from ports below 1024 (no client sends from one)."""
        if client_address[1] < 1024:
            self.count("ignored")
            return False
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A bug while answering (in ``describe``, say): log it; go on."""
        log.exception("discovery: error while answering %s", client_address)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self.handle_request()  # waits at most self.timeout


# ---------------------------------------------------------------------------
# The client side


def discover(
    target: str = LIMITED_BROADCAST,
    port: int = DEFAULT_PORT,
    timeout: float = 1.0,
    *,
    limit: int | None = None,
) -> list[Found]:
    """Send one probe to ``target``:``port`` and return the servers that answer.

    Blocks for ``timeout`` seconds, collecting replies (sooner once ``limit``
    servers have answered: probing one computer, ``limit=1`` returns as soon
    as it does).  The servers come in the order they answered, each address
    and port once; anything that is not a reply is ignored.  ``SO_BROADCAST``
    is set only when ``target`` is a broadcast address.

    Raises ``OSError`` if the probe cannot be sent (no network; a host name
    that does not resolve, or could not be one, is ``socket.gaierror``).
    Any thread may call it; in a window, call it from a worker thread.
    """
    check_host_name(target)
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    found: dict[tuple[str, int], Found] = {}
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if is_broadcast(target):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.sendto(PROBE, (target, port))
        deadline = time.monotonic() + timeout
        for _ in range(MAX_DATAGRAMS_READ):
            left = deadline - time.monotonic()
            if left <= 0 or (limit is not None and len(found) >= limit):
                break
            sock.settimeout(left)
            try:
                data, source = sock.recvfrom(MAX_REPLY_BYTES + 1)
            except TimeoutError:
                break
            except OSError:  # Windows reports an earlier ICMP "port unreachable"
                continue
            if source[1] != port:  # a reply comes from the port we asked
                continue
            server = parse_reply(data, source[0])
            if server is not None:
                found.setdefault((server.address, server.port), server)
    return list(found.values())


def check_host_name(target: str) -> None:
    """Raise ``socket.gaierror`` if ``target`` could not be a host name.

    An empty label (``"café..lan"``) or one over 63 characters fails the
    IDNA encoding ``sendto`` gives a name that is not ASCII, with a
    ``TypeError``; an ASCII one would be looked up in vain.  Either way it is
    no network's fault: say so as a lookup would, at once.  Sends nothing.
    """
    try:
        target.encode("idna")
    except UnicodeError as exc:
        raise socket.gaierror(
            socket.EAI_NONAME, "that is not a host name or an address"
        ) from exc


def is_broadcast(target: str) -> bool:
    """Is ``target`` a broadcast address (all networks, or one of ours)?"""
    if target in (LIMITED_BROADCAST, "<broadcast>"):
        return True
    return target in broadcast_addresses()


def broadcast_addresses() -> list[str]:
    """This machine's IPv4 broadcast addresses, or ``[LIMITED_BROADCAST]``.

    Read from the routing table (``/proc/net/route``, on Linux); elsewhere,
    or if there is none to find, just the limited broadcast address.  Sends
    nothing.  Blocks only to read that small file.
    """
    try:
        with open("/proc/net/route", encoding="ascii", errors="replace") as table:
            text = table.read(1024 * 1024)
    except OSError:
        text = ""
    return broadcasts_from_route_table(text) or [LIMITED_BROADCAST]


def broadcasts_from_route_table(text: str) -> list[str]:
    """The broadcast address of each directly attached IPv4 network in
    ``/proc/net/route``'s text (no loopback, no /31 or /32).  Never raises."""
    found: list[str] = []
    for line in text.splitlines()[1:]:
        columns = line.split()
        try:
            flags = int(columns[3], 16)
            destination, gateway, mask = (_route_address(columns[i]) for i in (1, 2, 7))
            network = ipaddress.IPv4Network(f"{destination}/{mask}", strict=False)
        except (IndexError, ValueError, struct.error):
            continue
        up = flags & 0x1  # RTF_UP
        on_link = gateway == "0.0.0.0"  # no router between us and them
        if not up or not on_link or network.prefixlen in (0, 31, 32):
            continue
        if network.is_loopback:
            continue
        address = str(network.broadcast_address)
        if address not in found:
            found.append(address)
    return found


def _route_address(column: str) -> str:
    """An address in ``/proc/net/route``: hex of the bytes in host order."""
    return socket.inet_ntoa(struct.pack("=I", int(column, 16)))
