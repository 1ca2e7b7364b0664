"""TLS for a socket that two threads share, with the standard ``ssl`` module.

Our connections are read by one thread and written by another.  An
``ssl.SSLSocket`` must not be used like that: OpenSSL's connection objects
are not safe for two threads at once.  So the socket stays a plain socket,
and ``TlsChannel`` does the TLS in memory (``ssl.SSLObject`` with two
``MemoryBIO``s), under one lock that is never held across any I/O:

* the **handshake** runs first, on the reader thread, before anybody else
  uses the socket (``handshake``);
* the **reader** passes what it received to ``decrypt`` and gets plain text;
* the **writer** passes plain text to ``encrypt`` and sends what comes out.

Certificates: the server needs ``--tls-cert`` and ``--tls-key`` (PEM files).
A client checks the server against ``--cafile``; without one it can pin the
certificate's SHA-256 fingerprint (trust on first use, as the window does).
"""

from __future__ import annotations

import hashlib
import re
import select
import socket
import ssl
import threading
import time

_CHUNK = 16384


def server_context(cert: str, key: str | None = None) -> ssl.SSLContext:
    """A server-side context with a modern minimum version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client context: verify against ``cafile``, or (without one) do not
    verify here, because the caller checks a pinned fingerprint instead."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def file_fingerprint(cert_file: str) -> str:
    """The fingerprint of the first certificate in a PEM file."""
    with open(cert_file, encoding="ascii") as pem:
        return fingerprint(ssl.PEM_cert_to_DER_cert(pem.read()))


def fingerprint(certificate_der: bytes) -> str:
    """The SHA-256 fingerprint people compare: ``AB:CD:...``."""
    digest = hashlib.sha256(certificate_der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def same_fingerprint(typed: str, seen: str) -> bool:
    """Do two fingerprints name the same certificate?  Case, colons and
    spaces do not count, as people copy them."""
    return _hex_digits(typed) == _hex_digits(seen)


def _hex_digits(text: str) -> str:
    return re.sub(r"[^0-9A-F]", "", text.upper())


class TlsChannel:
    """TLS over a socket owned by others.  See the module docstring.

    ``decrypt`` (reader thread) and ``encrypt`` (writer thread) may run at the
    same time; ``_lock`` keeps them off the ``SSLObject`` together.  Neither
    does any I/O.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        #: The peer said close_notify: nothing more will come (end of stream).
        self.closed = False
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )

    def handshake(
        self, sock: socket.socket, timeout: float, received: bytes = b""
    ) -> bytes:
        """Do the handshake on ``sock`` (blocking or not), within ``timeout``.

        ``received``: bytes already read from the socket.  Only the calling
        thread may touch the socket meanwhile.  Returns the plain text that
        came in with the last handshake message (a client's first line often
        does), to be handled before reading more.  Raises ``ssl.SSLError`` if
        the peer does not speak TLS (or we do not trust it), ``TimeoutError``
        if it takes too long, ``ConnectionError`` if the peer hangs up.
        """
        deadline = time.monotonic() + timeout
        if received:
            with self._lock:
                self._incoming.write(received)
        while True:
            try:
                with self._lock:
                    self._tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            self._send_all(sock, self._take_outgoing(), deadline)
            if done:
                return self.decrypt(b"")[0]
            if not _wait(sock, deadline, write=False):
                raise TimeoutError("the TLS handshake timed out")
            try:
                data = sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                raise ConnectionError("the peer hung up during the TLS handshake")
            with self._lock:
                self._incoming.write(data)

    def decrypt(self, data: bytes) -> tuple[bytes, bool]:
        """Received bytes -> (plain text, whether TLS has something to send).

        Plain text may be empty: a record can arrive in several pieces.
        Raises ``ssl.SSLError`` (an ``OSError``) for a record that is bad.
        """
        pieces = []
        with self._lock:
            if data:
                self._incoming.write(data)
            while True:
                try:
                    piece = self._tls.read(_CHUNK)
                except ssl.SSLWantReadError:  # nothing more for now
                    break
                except ssl.SSLZeroReturnError:
                    piece = b""
                if not piece:  # the peer's close_notify: nothing more, ever
                    self.closed = True
                    break
                pieces.append(piece)
            reply = self._outgoing.pending > 0
        return b"".join(pieces), reply

    def encrypt(self, data: bytes) -> bytes:
        """Plain text -> the bytes to send (plus anything TLS had waiting).

        Raises ``ssl.SSLError`` once the connection's TLS is broken.
        """
        with self._lock:
            if data:
                self._tls.write(data)
            return self._outgoing.read()

    def peer_fingerprint(self) -> str:
        """The SHA-256 fingerprint of the peer's certificate ("" if none)."""
        with self._lock:
            der = self._tls.getpeercert(binary_form=True)
        return fingerprint(der) if der else ""

    def _take_outgoing(self) -> bytes:
        with self._lock:
            return self._outgoing.read()

    @staticmethod
    def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            if not _wait(sock, deadline, write=True):
                raise TimeoutError("the TLS handshake timed out")
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            view = view[sent:]


def _wait(sock: socket.socket, deadline: float, *, write: bool) -> bool:
    left = max(deadline - time.monotonic(), 0.0)
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT if write else select.POLLIN)
        return bool(poller.poll(left * 1000))
    readable, writable, _ = select.select(
        [] if write else [sock], [sock] if write else [], [], left
    )
    return bool(readable or writable)
