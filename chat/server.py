"""The chat server: ``socketserver`` threads that read, one writer that sends.

How a line travels (see ``docs/architecture.md``):

1. ``socketserver`` accepts; ``ChatServer.process_request`` starts one named
   reader thread per connection, running a ``ChatHandler``.
2. The handler waits while the room is saturated (``Writer.wait_for_room``),
   then (with ``poll``) until its socket is readable, ``recv``s up to 8 KiB
   and feeds the bytes to its ``LineDecoder``.
3. The complete lines go to the connection's session (``chat.session``),
   which asks the ``Room`` to broadcast.
4. The room hands the encoded bytes, with every member's ``Outbox``, to
   ``Writer.broadcast`` (one append for all); the one ``Writer`` thread
   sends them (``chat.outbox``).

Sockets are non-blocking: readers wait in ``poll`` before each ``recv`` (so
every wait has a timeout) and the writer's ``send`` can never block, on any
platform.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import select
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass

from . import outbox as outbox_module
from . import plain
from .history import History
from .protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_LINE_BYTES,
    MAX_UNTERMINATED_BYTES,
    Error,
    LineDecoder,
    LineTooLong,
    Notice,
    Ping,
    ProtocolError,
    encode,
    looks_like_json,
    name_key,
)
from .room import DEFAULT_HISTORY, Member, Room
from .session import EchoSession, JsonSession, PlainSession, Policy, Session
from .store import MEMORY, Store
from .tls import TlsChannel, server_context

log = logging.getLogger("chat.server")

RECV_BYTES = 8192
#: A JSON client says hello at once; a person on nc gets a prompt if the first
#: line has not come within this many seconds.
PROMPT_DELAY = 0.3
#: The longest a reader waits without looking at its clock.
MAX_WAIT = 60.0
TLS_HANDSHAKE_TIMEOUT = 10.0
#: How long a reader waits at a time for a saturated room (see wait_for_room).
ROOM_WAIT = 0.5
#: What everyone is told when the server stops.
GOODBYE = "Server shutting down. Goodbye!"

#: A request line's start: a method, a space, and the start of its target
#: ("/", "*" or "http://..."), so that a person called "GET" is not refused.
_HTTP_REQUEST = re.compile(rb"(GET|POST|HEAD|PUT|OPTIONS|DELETE) [/*h]")
_SNIFF_BYTES = 9  # enough to tell "OPTIONS /" or a TLS record header


@dataclass
class ServerConfig:
    """Everything the server can be told.  ``chat.console`` fills it from argv."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    echo: bool = False
    history: int = DEFAULT_HISTORY
    max_clients: int = 1000
    max_per_address: int = 0  # 0: no cap
    max_line_bytes: int = MAX_LINE_BYTES
    max_unterminated_bytes: int = MAX_UNTERMINATED_BYTES
    max_outbox_bytes: int = outbox_module.DEFAULT_LIMIT
    flood_rate: float = 5.0  # lines per second after the burst; 0: no limit
    flood_burst: int = 20
    register_timeout: float = 60.0  # seconds to give a name; 0: forever
    ping_interval: float = 30.0  # silence before a ping, and the pong's time
    password: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    db: str = MEMORY  # the history file (chat.console picks the user's one)
    store_private: bool = False


@dataclass(frozen=True)
class ConnectionStats:
    """One connection, as the operator's /stats shows it."""

    name: str  # "" before a name is given
    address: str
    connected_s: float
    lines_in: int  # lines received from it
    lines_out: int  # events the room sent it (about)
    outbox_bytes: int  # waiting to be sent to it
    idle_s: float  # since it last sent anything


class ChatServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threaded TCP server around one ``Room``.

    Life cycle: ``ChatServer(config)`` binds and listens; ``serve_forever()``
    accepts until ``shutdown()`` (which must be called from another thread);
    ``server_close()`` says goodbye to every client, joins every thread and
    frees the port.  ``with ChatServer(...) as server`` calls it for you.
    """

    # A restart right after a stop binds at once, even with old connections
    # still in TIME_WAIT.
    allow_reuse_address = True
    # The listen backlog: a whole class may connect in the same second (the
    # tutorials' listen(5) silently drops most of them).
    request_queue_size = 4096
    # Not read: our process_request starts and names the reader threads
    # itself (daemons, like this says), and server_close joins them.
    daemon_threads = True

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        if ":" in self.config.host:
            self.address_family = socket.AF_INET6
        # First, before any thread or socket exists: bad certificate files
        # raise here and leave nothing behind.
        self.tls_context: ssl.SSLContext | None = None
        if self.config.tls_cert:
            self.tls_context = server_context(self.config.tls_cert, self.config.tls_key)
        # All of this exists before binding: when the bind fails (a port in
        # use), socketserver calls server_close(), which needs it, then raises.
        self.store = Store.open(self.config.db)  # StoreError: a sentence to show
        history = History(
            self.config.history, self.store, keep_private=self.config.store_private
        )
        self.store.start()
        self.writer = outbox_module.Writer()
        self.room = Room(
            self.config.history,
            # Half the outbox for a welcome: a long history never makes a
            # newcomer a "slow consumer" before it has read a byte.
            self.config.max_outbox_bytes // 2,
            deliver=self.writer.broadcast,
            history=history,
            # Told to JSON clients when not the protocol's: a line over it is
            # refused before its cid is read, so they must not send one.
            max_line=(
                self.config.max_line_bytes
                if self.config.max_line_bytes != MAX_LINE_BYTES
                else None
            ),
        )
        self.policy = Policy(
            password=self.config.password,
            flood_rate=self.config.flood_rate,
            flood_burst=self.config.flood_burst,
        )
        self._lock = threading.Lock()
        self._handlers: set[ChatHandler] = set()  # guarded by _lock
        self._readers: set[threading.Thread] = set()  # guarded by _lock
        self._per_address: dict[str, int] = {}  # guarded by _lock
        self._banned: set[str] = set()  # addresses; guarded by _lock
        self._banned_with: dict[str, str] = {}  # name key -> its address; _lock
        self._closing = False  # server_close() has begun; guarded by _lock
        self.writer.start()
        super().__init__((self.config.host, self.config.port), ChatHandler)

    @property
    def port(self) -> int:
        """The port really listened on (useful with port 0)."""
        return self.server_address[1]

    # -- socketserver hooks ------------------------------------------------

    def process_request(self, request: socket.socket, client_address) -> None:
        """Start a named reader thread for a new connection (or refuse it).

        Runs on the thread of ``serve_forever``; never waits on the client.
        """
        host = normal_address(client_address[0])
        config = self.config
        with self._lock:
            refusal = None
            if host in self._banned:
                refusal = ("banned", "You are banned from this server.")
            elif len(self._readers) >= config.max_clients:
                limit = config.max_clients
                refusal = ("server_full", f"The server is full ({limit} connections).")
            elif (
                config.max_per_address
                and self._per_address.get(host, 0) >= config.max_per_address
            ):
                limit = config.max_per_address
                refusal = (
                    "too_many_connections",
                    f"Too many connections from your address (at most {limit}).",
                )
            else:
                thread = threading.Thread(
                    target=self.process_request_thread,
                    args=(request, client_address),
                    name=f"reader {format_address(client_address)}",
                    daemon=True,
                )
                self._readers.add(thread)
                self._per_address[host] = self._per_address.get(host, 0) + 1
        if refusal is not None:
            self._refuse(request, *refusal)
            return
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": out of resources
            self._uncount(thread, host)  # or the counts would refuse others
            self._refuse(request, "server_full", "The server is full (no threads).")

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._uncount(threading.current_thread(), normal_address(client_address[0]))

    def _uncount(self, thread: threading.Thread, host: str) -> None:
        """A reader is gone (or never started): it no longer counts."""
        with self._lock:
            self._readers.discard(thread)
            left = self._per_address.get(host, 1) - 1
            if left:
                self._per_address[host] = left
            else:
                self._per_address.pop(host, None)

    def shutdown_request(self, request: socket.socket) -> None:
        """Leave the socket alone: the writer closes it (``Outbox.close``)."""

    def handle_error(self, request, client_address) -> None:
        """A bug while serving one client: log it loudly; the others go on."""
        log.exception("error while serving %s", format_address(client_address))

    def server_close(self) -> None:
        """Stop listening, say goodbye to everyone, join every thread."""
        super().server_close()
        with self._lock:
            self._closing = True  # from now on, register() hangs up at once
            handlers = list(self._handlers)
        self.room.close(GOODBYE)
        for handler in handlers:
            handler.hang_up(GOODBYE)
        with self._lock:
            threads = list(self._readers)
        for thread in threads:
            thread.join(2 * outbox_module.LINGER)
        self.writer.stop()
        self.store.stop()

    # -- for handlers and the console ---------------------------------------

    def register(self, handler: ChatHandler) -> None:
        """Track a new connection (its reader thread, from ``setup``).

        A connection accepted just before ``shutdown()`` may get here after
        ``server_close()`` has said goodbye to the others: it is hung up at
        once, or its reader would wait for input that never comes.
        """
        with self._lock:
            self._handlers.add(handler)
            closing = self._closing
        if closing:
            handler.hang_up(GOODBYE)

    def unregister(self, handler: ChatHandler) -> None:
        """Forget a connection (its reader thread, from ``finish``)."""
        with self._lock:
            self._handlers.discard(handler)

    def connections(self) -> list[ChatHandler]:
        """A snapshot of the open connections (any thread)."""
        with self._lock:
            return list(self._handlers)

    def stats(self) -> list[ConnectionStats]:
        """One row per connection, in order of arrival (for the console's /stats)."""
        now, clock = time.time(), time.monotonic()
        rows = []
        for handler in sorted(self.connections(), key=lambda h: h.member.connected_at):
            member, session = handler.member, handler.session
            rows.append(
                ConnectionStats(
                    name=member.name or "",
                    address=handler.address,
                    connected_s=now - member.connected_at,
                    lines_in=session.lines_in if session else 0,
                    lines_out=self.room.lines_out(member) if member.name else 0,
                    outbox_bytes=handler.outbox.queued,
                    idle_s=clock - handler._heard,
                )
            )
        return rows

    def connections_from(self, host: str) -> int:
        """How many connections from ``host`` count against ``--max-per-address``."""
        with self._lock:
            return self._per_address.get(normal_address(host), 0)

    # -- the operator's powers ------------------------------------------------

    def ban(self, target: str, reason: str = "banned by the operator") -> str:
        """Ban a name (and its address) or an address, for as long as we run.

        Everyone connected from a banned address is disconnected.  Returns a
        sentence saying what was done.
        """
        member = self.room.find(target)
        if member is not None:
            address = member.address.rsplit(":", 1)[0].strip("[]")
            self.room.ban_name(target)
        elif is_address(target):
            address = target
        else:
            return f"Nobody here is called {target}, and it is not an address."
        address = normal_address(address)  # one spelling: ::1, ::ffff:10.0.0.7
        with self._lock:
            self._banned.add(address)
            if member is not None:
                self._banned_with[name_key(target)] = address
            victims = [
                h
                for h in self._handlers
                if normal_address(h.client_address[0]) == address
            ]
        for handler in victims:
            if handler.member.name is not None:
                self.room.kick(handler.member.name, reason)
            else:
                handler.hang_up("You are banned from this server.")
        what = f"{target} ({address})" if member is not None else address
        return f"Banned {what}: {len(victims)} connection(s) closed."

    def unban(self, target: str) -> bool:
        """Lift a ban on a name (and the address banned with it) or an address."""
        with self._lock:
            address = self._banned_with.pop(name_key(target), normal_address(target))
            found = address in self._banned
            self._banned.discard(address)
        return self.room.unban_name(target) or found

    def banned(self) -> list[str]:
        """The banned addresses, sorted (banned names are the room's)."""
        with self._lock:
            return sorted(self._banned)

    def _refuse(self, sock: socket.socket, code: str, text: str) -> None:
        """Tell a connection why it is refused, without waiting on it, and close."""
        try:
            sock.send(encode(Error(code, text)), outbox_module._MSG_DONTWAIT)
        except OSError:
            pass
        finally:
            sock.close()
        log.warning("refused %s: %s", code, text)


class ChatHandler(socketserver.BaseRequestHandler):
    """Reads one connection: bytes -> lines -> its session.  One thread each.

    The reader also keeps the connection's clock: it prompts a silent newcomer
    (who is most likely a person on ``nc``), drops one that never gives a
    name, and pings a JSON client that has gone quiet, dropping it if no
    answer comes.  Plain clients cannot answer a ping: TCP keepalive, set on
    every connection, finds their dead peers instead.
    """

    server: ChatServer
    request: socket.socket

    def setup(self) -> None:
        config = self.server.config
        sock = self.request
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_keepalive(sock, config.ping_interval)
        self.address = format_address(self.client_address)
        self.outbox = self.server.writer.open(sock, config.max_outbox_bytes)
        self.decoder = LineDecoder(config.max_line_bytes, config.max_unterminated_bytes)
        # Until a first line says JSON (or in echo mode, which mirrors every
        # byte), the bytes may come from telnet: its commands are taken out
        # and answered before the lines are cut (plain.TelnetFilter).
        self.telnet = None if config.echo else plain.TelnetFilter()
        self.member = Member(self.outbox, encode, echo=True, address=self.address)
        self.session: Session | None = None
        self.tls: TlsChannel | None = None
        self._lost_reason = "connection closed"  # if the stream just ends
        self._thread_named: str | None = None  # the name in the thread's name
        self._readable = Readable(sock)
        self._started = time.monotonic()
        self._heard = self._started  # when the peer last sent anything
        self._pinged = 0.0  # when we sent a ping still unanswered, or 0
        self._prompted = False
        self.server.register(self)
        log.debug("connection from %s", self.address)

    def handle(self) -> None:
        config = self.server.config
        try:
            pending = b""  # plain text that came in with the TLS handshake
            if self.server.tls_context is not None:
                pending = self._start_tls()
                if pending is None:
                    return
            if config.echo:
                self.member.render = plain.render_bytes
                self.session = EchoSession(self.server.room, self.member)
            head = b""  # the first bytes, until we know what is talking to us
            while not (self.session and self.session.ended):
                if pending:
                    data, pending = pending, b""
                elif not self.server.writer.wait_for_room(ROOM_WAIT):
                    # The room is saturated: read nothing more yet.  Nor look
                    # at the clock: a client we do not read is not silent
                    # (what it sent is read first, once there is room).
                    if self.outbox.ended:  # hung up or kicked meanwhile
                        break
                    continue
                else:
                    data = self._recv(self._time_to_next_check())
                if data == b"":
                    if was_reset(self.request):
                        self._lost_reason = "connection lost"
                    break
                if data is None:
                    self._check_clock()
                    continue
                self._heard, self._pinged = time.monotonic(), 0.0
                if self.session is None and len(head) < _SNIFF_BYTES:
                    # A browser's request may come a byte at a time too.
                    head = (head + data)[:_SNIFF_BYTES]
                    if self._foreign(head):
                        return
                self._receive(data)
                if self._name_overdue():  # also for one who never stops sending
                    self._give_up_on_name()
        except ProtocolError as exc:  # the stream cannot be trusted any more
            self.outbox.put(self.member.render(Error(exc.code, exc.text)))
            self._end(exc.text)
        except TimeoutError:  # TCP keepalive: the peer's machine is gone
            self._lost_reason = "ping timeout"
        except OSError as exc:  # reset by the peer, mostly
            self._lost_reason = "connection lost"
            log.debug("%s: %s", self.address, exc)

    def finish(self) -> None:
        """Leave the room, saying why, and give the socket to the writer to
        close (``Outbox.close``)."""
        if self.session is not None and self.session.ended:
            reason = self.session.reason
        else:
            reason = self.outbox.end_reason or self._lost_reason
        self.server.room.leave(self.member, reason)
        self.server.unregister(self)
        self.outbox.close()
        log.debug("%s closed: %s", self.address, reason)

    def hang_up(self, text: str) -> None:
        """Say ``text`` and end the connection (any thread; never blocks).

        Only a connection without a name is told ``text``: the room tells
        its members itself.  Before the TLS handshake is done, nothing is
        said: it would go out in plain text, in the middle of the handshake.
        """
        in_clear = self.server.tls_context is not None and self.outbox.transform is None
        if self.member.name is None and not in_clear:  # the room tells members
            self.outbox.put(self.member.render(Notice(text)))
        self.outbox.hang_up()

    # -- inside the reader thread ------------------------------------------

    def _time_to_next_check(self) -> float:
        """Seconds until the next thing the clock must look at."""
        config = self.server.config
        now = time.monotonic()
        due = [now + MAX_WAIT]  # from now: a fixed moment would pass, then spin
        if self.session is None and not self._prompted and not config.echo:
            due.append(self._started + PROMPT_DELAY)
        if self.member.name is None and config.register_timeout and not config.echo:
            due.append(self._started + config.register_timeout)
        if self._pinging():
            due.append((self._pinged or self._heard) + config.ping_interval)
        return max(min(due) - now, 0.0)

    def _pinging(self) -> bool:
        return (
            self.server.config.ping_interval > 0
            and isinstance(self.session, JsonSession)
            and not isinstance(self.session, PlainSession)
            and self.member.name is not None
        )

    def _check_clock(self) -> None:
        """Nothing came for a while: prompt, give up on a name, or ping."""
        config = self.server.config
        now = time.monotonic()
        if self.session is None and not self._prompted and not config.echo:
            # Most likely a person.  Switch before the prompt goes out: once
            # they can see it, anything said to them must be in their format.
            self._prompted = True
            self.member.render = plain.render_bytes
            self.outbox.put(plain.PROMPT.encode() + b"\n")
        if self._name_overdue():
            self._give_up_on_name()
        elif self._pinging():
            if self._pinged and now - self._pinged >= config.ping_interval:
                self._end("ping timeout")
            elif not self._pinged and now - self._heard >= config.ping_interval:
                self._pinged = now
                self.outbox.put(encode(Ping()))

    def _name_overdue(self) -> bool:
        config = self.server.config
        return (
            self.member.name is None
            and bool(config.register_timeout)
            and not config.echo
            and not (self.session is not None and self.session.ended)
            and time.monotonic() - self._started >= config.register_timeout
        )

    def _give_up_on_name(self) -> None:
        timeout = self.server.config.register_timeout
        text = f"No name after {timeout:g} s: goodbye."
        self.outbox.put(self.member.render(Error("register_timeout", text)))
        self._end("registration timeout")

    def _receive(self, data: bytes) -> None:
        if self.telnet is not None:
            data, answer = self.telnet.feed(data)
            if answer:  # at once: telnet shows nothing more until it comes
                self.outbox.put(answer)
        lines = self.decoder.feed(data)
        if self.session is None:
            lines = self._before_first_line(lines)
            if not lines:
                return
            # The first line decides: a JSON object means a program speaking
            # the protocol (even one slow enough to have got the prompt).
            first = lines[0]
            if isinstance(first, bytes) and looks_like_json(first):
                self.telnet = None  # a program: its bytes are its own
                self.member.render = encode
                self.session = JsonSession(
                    self.server.room, self.member, self.server.policy
                )
            else:
                self._use_plain()
        assert self.session is not None
        self.session.receive(lines)
        if self.member.name != self._thread_named:  # "reader alice", once known
            self._thread_named = self.member.name
            threading.current_thread().name = f"reader {self.member.name}"

    def _before_first_line(self, lines: list) -> list:
        """Drop blank and over-long lines that come before the deciding one."""
        for position, line in enumerate(lines):
            if isinstance(line, LineTooLong):
                text = f"Line too long (over {line.limit} bytes); not sent."
                self.outbox.put(self.member.render(Error("too_long", text)))
            elif line.strip():
                return lines[position:]
        return []

    def _use_plain(self) -> None:
        self.member.render = plain.render_bytes
        self.member.echo = False
        self.session = PlainSession(self.server.room, self.member, self.server.policy)

    def _recv(self, timeout: float | None) -> bytes | None:
        """Bytes, ``b""`` at end of stream, or ``None`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.tls is not None and self.tls.closed:  # the peer's close_notify
                return b""  # (after the text that came with it)
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not self._readable.wait(left):
                return None
            try:
                data = self.request.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            if self.tls is None or not data:
                return data
            data, reply = self.tls.decrypt(data)
            if reply:  # TLS said something of its own (a key update...)
                self.outbox.put(b"")  # the writer's encrypt() sends it
            if data:
                return data

    def _start_tls(self) -> bytes | None:
        """The TLS handshake, before anything else.

        Returns the plain text that arrived with it, or ``None`` if this is
        not a TLS client (it is told so, in words), the handshake failed, or
        the peer hung up first.
        """
        first = self._recv(TLS_HANDSHAKE_TIMEOUT)  # raw: self.tls is not set yet
        if not first:
            if first is None:  # silence: most likely a person on nc, waiting
                self._refuse_plain_text()
            return None
        if first[0] != 0x16:  # a TLS client starts with a handshake record
            self._refuse_plain_text()
            return None
        tls = TlsChannel(self.server.tls_context, server_side=True)
        try:
            pending = tls.handshake(self.request, TLS_HANDSHAKE_TIMEOUT, first)
        except OSError as exc:  # ssl.SSLError included
            log.info("TLS handshake with %s failed: %s", self.address, exc)
            return None
        self.tls = tls
        self.outbox.transform = tls.encrypt
        # The prompt and the registration clock start now, not before TLS.
        self._started = self._heard = time.monotonic()
        return pending

    def _refuse_plain_text(self) -> None:
        self.outbox.put(
            b"This chat server speaks TLS: connect with the chat client "
            b"and --tls (see docs/limits.md).\n"
        )
        self._end("not a TLS client")

    def _foreign(self, data: bytes) -> bool:
        """Is the first data from a browser or a TLS client?  Then answer it."""
        if self.server.config.echo:
            return False
        if not (_HTTP_REQUEST.match(data) or data[:2] == b"\x16\x03"):
            return False
        what = "TLS" if data.startswith(b"\x16") else "HTTP"
        body = (
            f"This is a chat server: it speaks lines of text, not {what}. "
            "Connect with nc, telnet or the chat client (see docs/protocol.md).\n"
        ).encode()
        if what == "HTTP":  # a browser shows the body of a proper reply
            body = (
                "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8"
                f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body
        self.outbox.put(body)
        self._end(f"not a chat client ({what})")
        log.info("refused %s from %s", what, self.address)
        return True

    def _end(self, reason: str) -> None:
        if self.session is None:
            self.session = EchoSession(self.server.room, self.member)
        self.session.end(reason)
        self.outbox.hang_up()


def set_keepalive(sock: socket.socket, interval: float) -> None:
    """Let TCP find a dead peer: probes start after ``interval`` seconds of
    silence, and three unanswered ones, a third of that apart, end it (about
    twice ``interval`` in all).

    Plain clients cannot answer the protocol's ``ping``; the kernel's own
    probes can.  Where the idle time cannot be set, the system's default is
    used (often two hours).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if interval <= 0:
        return
    seconds = max(int(interval), 1)
    for option, value in (
        ("TCP_KEEPIDLE", seconds),
        ("TCP_KEEPINTVL", max(seconds // 3, 1)),
        ("TCP_KEEPCNT", 3),
    ):
        if hasattr(socket, option):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
            except OSError:
                pass


class Readable:
    """Waits, with a timeout, until a socket or file descriptor is readable.

    ``poll`` where there is one (it has no limit on descriptor numbers, unlike
    ``select``, which is kept for Windows).
    """

    def __init__(self, sock: socket.socket | int) -> None:
        self._sock = sock
        self._poll = None
        if hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)

    def wait(self, timeout: float | None) -> bool:
        """Block until readable (True) or ``timeout`` s pass (False); ``None``:
        no limit."""
        if self._poll is not None:
            ms = None if timeout is None else int(timeout * 1000)
            return bool(self._poll.poll(ms))
        readable, _, _ = select.select([self._sock], [], [self._sock], timeout)
        return bool(readable)


#: Linux's number for a TCP connection that is over, as ``TCP_INFO`` reports
#: it: after a reset, where a peer's orderly close leaves ``CLOSE_WAIT``.
_TCP_CLOSE = 7


def was_reset(sock: socket.socket) -> bool:
    """Did the stream that just ended end with a reset, not a close?

    The error a reset leaves is given to whichever call comes first, and that
    may be the writer's ``send``; the reader then sees a plain end of stream.
    The connection's state says it either way (Linux; elsewhere: False).
    """
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 1)[0]
    except OSError:
        return False
    return state == _TCP_CLOSE


def format_address(address) -> str:
    """``host:port``, with brackets around IPv6 hosts."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def normal_address(host: str) -> str:
    """One spelling for one address, so that a ban matches however it was
    typed: IPv6 compressed (``::1``), and an IPv4 address mapped into IPv6
    (as a dual-stack server sees IPv4 clients) as the IPv4 one."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_address(text: str) -> bool:
    """Is ``text`` an IPv4 or IPv6 address?"""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
