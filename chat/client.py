"""The client side of a connection, for any front end (console, window, bots).

``ChatClient`` does the networking in two named threads and reports
everything that happens as *events* on a ``queue.Queue``:

* the **reader** thread connects, says ``hello``, turns incoming lines into
  protocol messages (``Welcome``, ``Message``, ``Joined``...) and puts them on
  the queue; when the connection is lost it puts a ``Disconnected`` event,
  waits 1, 2, 4... up to 30 seconds, and connects again with the name it
  last had;
* the **writer** thread takes what the front end asked to send from an
  ``Outgoing`` list and sends it, so ``send()`` never blocks the caller.

The front end only ever calls ``send``/``say``/... and ``close``, and reads
``events``: connection trouble is an event, never an exception raised in
somebody else's thread.  A window polls the queue with ``after()``; the
console client reads it in a loop.
"""

from __future__ import annotations

import dataclasses
import errno
import getpass
import logging
import queue
import re
import secrets
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .outgoing import Outgoing
from .protocol import (
    MAX_LINE_BYTES,
    MAX_NAME_CHARS,
    Bye,
    ClientMessage,
    Error,
    Hello,
    Left,
    LineDecoder,
    LineTooLong,
    Message,
    Notice,
    Ping,
    Pong,
    Private,
    PrivateMessage,
    ProtocolError,
    Rename,
    Renamed,
    Say,
    ServerMessage,
    Welcome,
    Who,
    check_name,
    decode_server,
    encode,
    escape_text,
)
from .tls import TlsChannel, client_context, same_fingerprint

log = logging.getLogger("chat.client")

#: Seconds between reconnect attempts: doubled each time, up to the last.
BACKOFF = (1, 2, 4, 8, 16, 30)
#: Seconds for the TCP connect, and again for the TLS handshake.
CONNECT_TIMEOUT = 10.0
#: A send not finished within this long means the connection is dead.
SEND_TIMEOUT = 30.0
#: How often a connect attempt (or ``wait_until_joined``) looks up to see
#: whether the client was closed.
POLL = 0.1
#: The longest the threads wait without looking at their clocks (close()
#: wakes them at once anyway).
IDLE_WAIT = 5.0
#: Silence from the server before we ping it, and the time it has to answer.
KEEPALIVE = 20.0
#: From our hello to the server's welcome: what takes longer is no chat
#: server (an echo server, another program), or one that is stuck.
WELCOME_TIMEOUT = 15.0
#: Why we stop when our own hello comes back: no need to wait for the above.
ECHOED = "the server sent our hello back: it is an echo server"
#: Server lines can be long (a welcome carries the history).
MAX_SERVER_LINE = 16 * 1024 * 1024
#: Errors after which trying again with the same settings cannot help.
FATAL_CODES = frozenset({"bad_name", "name_taken", "bad_password", "banned"})


# -- events (besides the protocol's own server messages) ---------------------


@dataclass(frozen=True, slots=True)
class Connecting:
    """A connection attempt has started (``attempt`` counts from 1)."""

    host: str
    port: int
    attempt: int


@dataclass(frozen=True, slots=True)
class Connected:
    """The TCP connection is up and ``hello`` is on its way."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection is gone (or could not be made).

    ``reason`` is for people.  ``retry_in`` is the number of seconds before
    the next attempt, or ``None`` when the client has given up for good.
    ``failure`` is a short word when more went wrong than a lost connection:
    no connection could be made (``refused``, ``timeout``, ``unknown_host``,
    ``unreachable``, ``error``), TLS failed (``tls_mismatch``,
    ``tls_unknown``...), or the server did not behave as a chat server
    (``no_welcome``, ``no_answer``, ``tls_required``).  Else ``None``.
    """

    reason: str
    retry_in: float | None
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class Untrusted:
    """A TLS server showed a certificate we have no reason to trust yet.

    The client stops.  A person may compare ``fingerprint`` with the one the
    server printed and connect again with it pinned (trust on first use).
    """

    host: str
    port: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The client has stopped: no more events will come."""


Event = ServerMessage | Connecting | Connected | Disconnected | Untrusted | Closed

#: The wire hook: ``wire(direction, data)`` with direction ``"in"`` or ``"out"``
#: and the bytes of one ``recv`` or one send, as the protocol sees them (over
#: TLS: the plain text).  ``b""`` in: that connection's stream has ended
#: (closed, reset or lost), so a character cut at its end will not be
#: finished.  Called on the client's own threads: it must be quick and must
#: not block (put the chunk on a queue).
Wire = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class _Ending:
    """How one connection ended: why, what failed (the ``failure`` word of
    ``Disconnected``, if any), and whether trying again could help."""

    reason: str
    failure: str | None = None
    fatal: bool = False


class _Link:
    """The current connection: a socket, and TLS over it if asked for.

    The reader thread receives (and sends the hello, before the writer may
    use it); the writer thread sends the rest.  ``TlsChannel`` keeps the two
    apart where TLS needs it.
    """

    def __init__(self, sock: socket.socket, tls: TlsChannel | None) -> None:
        self.sock = sock
        self.tls = tls
        #: The ``Outgoing`` connection number it was welcomed with (None
        #: before the welcome): a line taken for another is not sent on it.
        self.generation: int | None = None

    def send(self, data: bytes) -> None:
        if self.tls is not None:
            data = self.tls.encrypt(data)
        self.sock.sendall(data)

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class ChatClient:
    """One user's connection to a chat server.  See the module docstring.

    Thread contract: ``start``, ``send`` (and its shortcuts) and ``close`` may
    be called from any thread and never block for long (``close`` waits
    about ``timeout`` seconds at most).  ``start`` may be called once.
    Events arrive on ``self.events``.

    ``reconnect=False`` gives up when a connection ends; ``retry_first=False``
    gives up when no connection has been welcomed yet.  ``keepalive`` is
    ``KEEPALIVE`` when ``None``; ``0`` sends no pings.
    """

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        *,
        password: str | None = None,
        tls: bool = False,
        cafile: str | None = None,
        fingerprint: str | None = None,
        reconnect: bool = True,
        retry_first: bool = True,
        connect_timeout: float = CONNECT_TIMEOUT,
        keepalive: float | None = None,
        events: queue.Queue | None = None,
        wire: Wire | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.password = password
        self.tls = tls or cafile is not None or fingerprint is not None
        self.cafile = cafile
        self.fingerprint = fingerprint
        self.reconnect = reconnect
        self.retry_first = retry_first
        self.connect_timeout = connect_timeout
        self.keepalive = KEEPALIVE if keepalive is None else keepalive
        #: Called with every chunk sent and received (see ``Wire``); may be
        #: set or cleared at any time.  ``None`` costs nothing.
        self.wire = wire
        #: The server certificate's fingerprint, once a TLS handshake is done.
        self.server_fingerprint = ""
        self.events: queue.Queue[Event] = queue.Queue() if events is None else events
        self._outgoing = Outgoing()
        #: The highest message id seen: sent as ``since`` when reconnecting, so
        #: the welcome brings exactly what was missed.  Reader thread only.
        self.last_id: int | None = None
        self.room: str | None = None  # the history last_id counts in
        #: The longest line ``send`` lets go, in bytes: the protocol's, or the
        #: server's if its welcome says it takes less.  Set by the reader.
        self.max_line = MAX_LINE_BYTES
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._link: _Link | None = None  # guarded by _lock
        self._joined = threading.Event()  # welcome received on this connection
        self._farewell = ""  # reader thread only: the last notice, if last
        self._reader = threading.Thread(
            target=self._read_loop, name=f"reader {name}", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name=f"writer {name}", daemon=True
        )

    # -- the front end's side ---------------------------------------------

    def start(self) -> None:
        """Connect in the background; events start arriving at once."""
        self._reader.start()
        self._writer.start()

    @property
    def connected(self) -> bool:
        """True between a ``Welcome`` and the next ``Disconnected``."""
        return self._joined.is_set()

    def wait_until_joined(self, timeout: float) -> bool:
        """Block until welcomed (True), or given up or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while not self._joined.wait(POLL):
            if self._stopping.is_set() or time.monotonic() > deadline:
                return False
        return True

    def send(self, message: ClientMessage) -> str | None:
        """Queue a message for the server; sent once the client is in the room.

        A chat line (``Say``, ``Private``) gets a ``cid`` if it has none, and is
        kept until the server echoes that ``cid`` back: through any number of
        reconnects, it is sent, in order, exactly once as far as the room can
        tell.  Returns that ``cid`` (``None`` for other messages).

        A line longer than the protocol allows (``MAX_LINE_BYTES``), or than
        the server said it takes (``max_line``), is not sent: the server would
        refuse it without its ``cid``, so it would wait for a confirmation
        forever.  An ``Error`` event (``too_long``) says so, and ``None`` is
        returned.  (A line queued before a welcome that lowers the limit is
        given up then, with the same event.)
        """
        cid = None
        if isinstance(message, (Say, Private)):
            cid = message.cid or new_cid()
            message = dataclasses.replace(message, cid=cid)
        data = encode(message)
        if len(data) - 1 > self.max_line:  # not counting its newline
            self._emit(self._too_long(len(data) - 1, cid))
            return None
        self._outgoing.add(data, cid)
        return cid

    def _too_long(self, size: int, cid: str | None) -> Error:
        too_long = f"That line is too long to send: {size:,} bytes"
        limit = f"a line may be at most {self.max_line:,}"
        return Error("too_long", f"{too_long}, {limit}.", cid)

    def say(self, text: str, *, me: bool = False) -> str:
        """Send a chat line; returns its ``cid``, or ``""`` if it is too long
        to send (see ``send``)."""
        return self.send(Say(text, me=me or None)) or ""

    def private(self, to: str, text: str) -> str:
        """Send a private line; returns its ``cid``, or ``""`` if it is too
        long to send (see ``send``)."""
        return self.send(Private(to, text)) or ""

    def unconfirmed(self) -> list[str]:
        """The cids of the lines the server has not echoed yet, oldest first."""
        return self._outgoing.unconfirmed()

    def rename(self, name: str) -> None:
        self.send(Rename(name))

    def who(self) -> None:
        self.send(Who())

    def close(self, reason: str = "quit", timeout: float = 1.0) -> None:
        """Say ``bye`` (if connected), stop both threads and join them.

        When connected, what is queued (the bye last) first has up to 60% of
        ``timeout`` to go out.  Lines the server has not echoed yet are given
        up (see ``unconfirmed``).  Safe to call more than once.
        """
        deadline = time.monotonic() + timeout
        if self._stopping.is_set():  # stopped already, or stopped itself
            self._join(deadline)
            return
        if self.connected:
            self._outgoing.add(encode(Bye(reason)))
            self._outgoing.wait_sent(timeout * 0.6)  # let what was typed go out
        self._outgoing.close()
        self._stopping.set()
        self._hang_up()
        self._join(deadline)

    def _join(self, deadline: float) -> None:
        for thread in (self._writer, self._reader):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.05))

    # -- the reader thread ------------------------------------------------

    def _read_loop(self) -> None:
        attempt = 0
        first = True
        try:
            while not self._stopping.is_set():
                attempt += 1
                self._emit(Connecting(self.host, self.port, attempt))
                ending = self._connect_and_read(first)
                self._outgoing.pause()  # hold what is typed until we are back
                if self._joined.is_set():
                    attempt = 1
                    first = False
                self._joined.clear()
                if self._stopping.is_set():
                    break
                retry_in = None
                retry = self.retry_first or not first
                if self.reconnect and retry and not ending.fatal:
                    retry_in = BACKOFF[min(attempt - 1, len(BACKOFF) - 1)]
                self._emit(Disconnected(ending.reason, retry_in, ending.failure))
                if retry_in is None or self._stopping.wait(retry_in):
                    break
        except Exception:  # a bug of ours: say so, rather than stop in silence
            log.exception("the connection's reader thread failed")
            self._emit(Disconnected("an error inside the program (see the log)", None))
        finally:
            self._stopping.set()
            self._outgoing.close()
            self._emit(Closed())

    def _connect_and_read(self, first: bool) -> _Ending:
        """One connection's life, from connect to its end."""
        try:
            sock = self._open()
        except OSError as exc:
            failure, reason = describe_failure(exc)
            # A name that does not resolve will not start to by waiting.
            return _Ending(reason, failure, fatal=first and failure == "unknown_host")
        if sock is None:
            return _Ending("cancelled", fatal=True)
        connected = False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # One timeout serves both threads: recv is only called once select
            # says there is data, so it only bounds sendall.
            sock.settimeout(SEND_TIMEOUT)
            # Known before the TLS handshake, so that close() can end that too
            # (the writer sends nothing on it before the welcome).
            link = _Link(sock, None)
            with self._lock:
                self._link = link
            if self._stopping.is_set():  # closed before it was known
                return _Ending("closed", fatal=True)
            pending = b""
            if self.tls:
                link.tls, pending, refusal = self._start_tls(sock)
                if refusal is not None:
                    return refusal
            self._emit(Connected(self.host, self.port))
            connected = True
            hello = Hello(self.name, self.password, self.last_id, self.room)
            self._send_on(link, encode(hello))
            return self._read(link, first, pending)
        except OSError as exc:
            return _Ending(f"connection lost ({exc.strerror or exc})")
        finally:
            with self._lock:
                self._link = None
            sock.close()
            wire = self.wire
            if connected and wire is not None:
                wire("in", b"")  # the end of this connection's stream

    def _open(self) -> socket.socket | None:
        """Connect, giving up at the timeout or when asked to stop (``None``).

        A non-blocking connect watched with ``selectors``, so that closing the
        client (the Cancel button) ends an attempt within ``POLL`` seconds.
        """
        deadline = time.monotonic() + self.connect_timeout
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except UnicodeError:  # "127.0.0..1": no name at all, as far as DNS goes
            raise socket.gaierror(socket.EAI_NONAME, "not a valid address") from None
        error: OSError = TimeoutError("timed out")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                status = sock.connect_ex(address)
                if status not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                    raise OSError(status, errno.errorcode.get(status, "error"))
                with selectors.DefaultSelector() as selector:
                    selector.register(sock, selectors.EVENT_WRITE)
                    while not selector.select(POLL):
                        if self._stopping.is_set():
                            sock.close()
                            return None
                        if time.monotonic() > deadline:
                            raise TimeoutError("timed out")
                status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if status:
                    raise _connect_error(status)
                sock.setblocking(True)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error

    def _start_tls(
        self, sock: socket.socket
    ) -> tuple[TlsChannel | None, bytes, _Ending | None]:
        """The handshake and the check of the server's certificate.

        Returns the channel, the plain text that came with the handshake, and
        (when the connection cannot go on) why.
        """
        context = client_context(self.cafile)
        hostname = self.host if self.cafile else None
        channel = TlsChannel(context, server_side=False, server_hostname=hostname)
        try:
            pending = channel.handshake(sock, self.connect_timeout)
        except ssl.SSLCertVerificationError as exc:
            reason = f"the server's certificate is not trusted ({exc.verify_message})"
            return None, b"", _Ending(reason, "tls_untrusted", fatal=True)
        except ssl.SSLError:
            reason = "the server does not speak TLS (connect without TLS)"
            return None, b"", _Ending(reason, "tls_mismatch", fatal=True)
        seen = channel.peer_fingerprint()
        self.server_fingerprint = seen
        if self.cafile:
            return channel, pending, None
        if self.fingerprint is None:
            self._emit(Untrusted(self.host, self.port, seen))
            reason = "the server's certificate is not known yet"
            return None, b"", _Ending(reason, "tls_unknown", fatal=True)
        if not same_fingerprint(self.fingerprint, seen):
            reason = f"the server's certificate is not the one expected (it is {seen})"
            return None, b"", _Ending(reason, "tls_changed", fatal=True)
        return channel, pending, None

    def _read(self, link: _Link, first: bool, pending: bytes = b"") -> _Ending:
        decoder = LineDecoder(MAX_SERVER_LINE, MAX_SERVER_LINE)
        self._farewell = ""
        heard = time.monotonic()
        welcome_due = heard + WELCOME_TIMEOUT
        pinged = 0.0
        if pending:  # text that came in with the TLS handshake
            ending = self._receive(decoder.feed(pending), first)
            if ending is not None:
                return ending
        with selectors.DefaultSelector() as selector:
            selector.register(link.sock, selectors.EVENT_READ)
            while not self._stopping.is_set():
                # No polling to notice close(): it shuts the socket down, which
                # wakes this select.  Wake for the keepalive's and the
                # welcome's clocks only.
                wait = self._until_keepalive(heard, pinged)
                if not self._joined.is_set():
                    left = welcome_due - time.monotonic()
                    if left <= 0:  # silent, or saying anything but a welcome
                        # Once it has welcomed us it is a chat server: try
                        # again then.  The first time, it most likely is not.
                        reason = f"no welcome within {WELCOME_TIMEOUT:g} s"
                        return _Ending(reason, "no_welcome", fatal=first)
                    wait = min(left + 0.01, wait)
                if not selector.select(wait):
                    now = time.monotonic()
                    if not self._joined.is_set() or self.keepalive <= 0:
                        continue
                    if pinged and now - pinged > self.keepalive:
                        return _Ending("the server stopped answering", "no_answer")
                    if not pinged and now - heard > self.keepalive:
                        pinged = now
                        self._outgoing.add(encode(Ping()))
                    continue
                data = link.sock.recv(65536)
                if not data:
                    reason = self._farewell or "the server closed the connection"
                    if not self._joined.is_set() and "speaks TLS" in self._farewell:
                        return _Ending(reason, "tls_required", fatal=True)
                    return _Ending(reason)
                heard, pinged = time.monotonic(), 0.0
                if link.tls is not None:
                    data, reply = link.tls.decrypt(data)
                    if reply:
                        self._outgoing.add(b"")  # the writer's encrypt sends it
                wire = self.wire
                if wire is not None and data:
                    wire("in", data)
                try:
                    lines = decoder.feed(data)
                except ProtocolError as exc:  # not a chat server, or a broken one
                    return _Ending(f"the server sent garbage ({exc.text})")
                ending = self._receive(lines, first)
                if ending is not None:
                    return ending
                if link.tls is not None and link.tls.closed:  # its close_notify
                    return _Ending(self._farewell or "the server closed the connection")
        return _Ending("closed", fatal=True)

    def _receive(self, lines: list, first: bool) -> _Ending | None:
        """Handle a batch of lines; how the connection ends for good, if so."""
        for line in lines:
            if isinstance(line, LineTooLong) or not line.strip():
                continue
            try:
                message = decode_server(line)
            except ProtocolError as exc:
                if self._joined.is_set():
                    log.warning("ignoring a line from the server: %s", exc.text)
                    continue
                if line.lstrip().startswith(b'{"type":"hello"'):
                    # No chat server says hello to a client.
                    return _Ending(ECHOED, "no_welcome", fatal=True)
                # Before the welcome, a server may say something in plain words
                # (ours: "This chat server speaks TLS..."): show it.
                text = escape_text(line.decode("utf-8", "replace").strip())
                message = Notice(text[:500])
            fatal = self._handle(message, first)
            if fatal:
                return _Ending(fatal, fatal=True)
        return None

    def _handle(self, message: ServerMessage, first: bool) -> str:
        """Note what concerns the connection; pass everything on.  Fatal reason?"""
        if isinstance(message, Ping):
            self._outgoing.add(encode(Pong()))
            return ""
        if isinstance(message, Welcome):
            self.name = message.name
            if message.room != self.room:  # another history: ids start over
                self.room, self.last_id = message.room, None
            for line in message.history:
                self._saw(line)
            # Lines before this one were said before we came (or replayed just
            # now): a comeback asks for what follows it, even if we saw none.
            last = message.last_id
            if last is not None and last >= 0 and (self.last_id or 0) <= last:
                self.last_id = last
            self._take_line_limit(message.max_line)
            self._joined.set()
            with self._lock:  # one step for the writer, which reads the link
                generation = self._outgoing.restart()  # what is kept goes, in order
                if self._link is not None:
                    self._link.generation = generation
        elif isinstance(message, Renamed) and message.old == self.name:
            self.name = message.new
        elif isinstance(message, (Message, PrivateMessage)):
            self._saw(message)
        elif (
            isinstance(message, Error)
            and message.cid
            # Refused, it will not go again -- unless it only came too early
            # (before the welcome of a new connection): then it goes after it.
            and message.code != "not_registered"
        ):
            self._outgoing.confirm(message.cid)
        self._emit(message)
        # A notice just before the end of the stream says why (shutting down).
        self._farewell = message.text if isinstance(message, Notice) else ""
        if isinstance(message, Left) and message.name == self.name:
            return f"You were {message.reason}" if "kicked" in message.reason else ""
        if (
            isinstance(message, Error)
            and not self._joined.is_set()
            and message.code in FATAL_CODES
            # A taken name on a *re*connect is most likely our own ghost, which
            # the server drops soon: keep trying then.
            and (first or message.code != "name_taken")
        ):
            return message.text
        return ""

    def _take_line_limit(self, server_limit: int | None) -> None:
        """Keep to the server's line limit (a welcome's ``max_line``) where
        it is below the protocol's, and give up what is queued over it."""
        limit = MAX_LINE_BYTES
        if server_limit is not None and 1 <= server_limit < MAX_LINE_BYTES:
            limit = server_limit
        self.max_line = limit
        for entry in self._outgoing.drop_longer(limit):
            self._emit(self._too_long(len(entry.data) - 1, entry.cid))

    # -- the writer thread ------------------------------------------------

    def _write_loop(self) -> None:
        while not self._stopping.is_set():
            taken = self._outgoing.take(IDLE_WAIT)  # close() wakes it at once
            if taken is None:
                continue
            entry, generation = taken
            with self._lock:
                link = self._link
            if link is None or link.generation != generation:
                # The connection it was taken for has ended (and perhaps a new
                # one begun, which sends everything again from the top).
                self._outgoing.pause(generation)
                continue
            try:
                self._send_on(link, entry.data)
            except OSError:
                # Part of the line may have gone: the connection is unusable.
                # The reader sees it end and reconnects; the line goes again.
                self._outgoing.pause(generation)
                link.shutdown()
            else:
                self._outgoing.sent(entry, generation)

    # -- helpers ----------------------------------------------------------

    def _until_keepalive(self, heard: float, pinged: float) -> float:
        """Seconds until the keepalive must look again (at most IDLE_WAIT)."""
        if self.keepalive <= 0 or not self._joined.is_set():
            return IDLE_WAIT
        due = (pinged or heard) + self.keepalive
        return min(max(due - time.monotonic(), 0.0) + 0.01, IDLE_WAIT)

    def _saw(self, line: Message | PrivateMessage) -> None:
        """A line arrived: note its id, and confirm it if it was ours."""
        if line.id is not None and (self.last_id is None or line.id > self.last_id):
            self.last_id = line.id
        if line.cid:
            self._outgoing.confirm(line.cid)

    def _send_on(self, link: _Link, data: bytes) -> None:
        link.send(data)
        wire = self.wire
        if wire is not None and data:
            wire("out", data)

    def _emit(self, event: Event) -> None:
        self.events.put(event)

    def _hang_up(self) -> None:
        with self._lock:
            link = self._link
        if link is not None:
            link.shutdown()


def new_cid() -> str:
    """A name for a line we send, unique enough to tell our lines apart."""
    return secrets.token_hex(6)


def describe_failure(exc: OSError) -> tuple[str, str]:
    """A failed connect as (short word, sentence for people)."""
    if isinstance(exc, socket.gaierror):
        return "unknown_host", "unknown host name"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "connection refused: nothing is listening there"
    if isinstance(exc, TimeoutError):
        return "timeout", "no answer (timed out)"
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable", "that network or host cannot be reached"
    return "error", exc.strerror or str(exc)


def _connect_error(status: int) -> OSError:
    if status == errno.ECONNREFUSED:
        return ConnectionRefusedError(status, "Connection refused")
    if status == errno.ETIMEDOUT:
        return TimeoutError(status, "timed out")
    return OSError(status, errno.errorcode.get(status, "error"))


def default_name() -> str:
    """The OS user name, trimmed to what the server accepts (or ``guest``)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name at all in some containers
        user = ""
    cleaned = re.sub(r"[^\w.-]", "", user)[:MAX_NAME_CHARS].lstrip(".-")
    try:
        return check_name(cleaned)  # also not "server", which is reserved
    except ProtocolError:
        return "guest"
