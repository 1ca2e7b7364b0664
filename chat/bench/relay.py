"""The least a chat server can be in Python: ``python -m chat.bench relay``.

A yardstick for the comparison, not a server to use.  One thread, one
``selectors`` loop, plain lines: a connection's first line is its name (and
is dropped), every later line goes to everyone else.  What one turn of the
loop reads, from every connection that had something, goes to each receiver
in one ``sendall``.  ``TCP_NODELAY`` is on, as in ``server.py``.

It has nothing that makes ``server.py`` a chat: no protocol, no names, no
history, no limits, no flood control; and a receiver that stops reading stops
everyone, as with ``ncat --chat`` (``sendall`` waits for it, for up to
``SEND_TIMEOUT`` seconds).  So what it reaches in a shape is about the best a
Python server can do on this machine under the same load generator, and the
comparison runs it beside ours in shapes 1 and 2: a figure of ours is read
against it.  It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
import threading

RECV_BYTES = 65536
#: A line longer than this (no newline in sight) ends its connection.
MAX_LINE = 64 * 1024
#: How long one receiver may keep everyone waiting before it is dropped.
SEND_TIMEOUT = 10.0


class Relay:
    """A listening socket on 127.0.0.1 and the connections it accepted."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port), backlog=2048)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.held: dict[socket.socket, bytes] = {}  # a line not yet ended
        self.unnamed: set[socket.socket] = set()  # first line not yet read

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def serve(self, stop: threading.Event | None = None) -> None:
        """Relay until ``stop`` is set (checked twice a second), then close."""
        try:
            while stop is None or not stop.is_set():
                said: list[tuple[socket.socket, bytes]] = []
                for key, _ in self.selector.select(0.5):
                    if key.fileobj is self.listener:
                        self._accept()
                    elif lines := self._read(key.fileobj):
                        said.append((key.fileobj, lines))
                if said:
                    self._relay(said)
        finally:
            self.close()

    def close(self) -> None:
        for sock in list(self.held):
            self._drop(sock)
        self.selector.close()
        self.listener.close()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:  # gone before we took it, or no file descriptor left
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Reads only follow the selector, so only sendall ever waits.
        sock.settimeout(SEND_TIMEOUT)
        # Registered first: whatever is in ``held`` is registered, even if a
        # SIGTERM's exit (which closes everything) comes between the two.
        self.selector.register(sock, selectors.EVENT_READ)
        self.held[sock] = b""
        self.unnamed.add(sock)

    def _read(self, sock: socket.socket) -> bytes:
        """The complete lines that came from ``sock``, its name line left out."""
        try:
            data = sock.recv(RECV_BYTES)
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return b""
        data = self.held[sock] + data
        end = data.rfind(b"\n") + 1
        self.held[sock] = rest = data[end:]
        if len(rest) > MAX_LINE:
            self._drop(sock)
            return b""
        lines = data[:end]
        if lines and sock in self.unnamed:
            self.unnamed.discard(sock)
            lines = lines.partition(b"\n")[2]
        return lines

    def _relay(self, said: list[tuple[socket.socket, bytes]]) -> None:
        """Send each receiver everything said this turn by the others."""
        everything = b"".join(lines for _, lines in said)
        senders = {sock for sock, _ in said}
        for sock in list(self.held):
            if sock in senders:
                data = b"".join(lines for who, lines in said if who is not sock)
            else:
                data = everything
            if not data:
                continue
            try:
                sock.sendall(data)
            except OSError:  # gone, or kept everyone waiting too long
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        if self.held.pop(sock, None) is None:
            return
        self.unnamed.discard(sock)
        self.selector.unregister(sock)
        sock.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat.bench relay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="default: any free one")
    args = parser.parse_args(argv)
    relay = Relay(args.port)
    # Stopped by SIGTERM (the comparison stops it so): close, then exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"relay on 127.0.0.1:{relay.port}", flush=True)
    try:
        relay.serve()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
