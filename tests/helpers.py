"""Test helpers: a running server on port 0, a line client, waiting with deadlines.

Nothing here sleeps to synchronise: every wait polls a condition until a
deadline and fails loudly when the deadline passes.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from chat.server import ChatServer, ServerConfig

DEADLINE = 5.0  # seconds; generous for a loaded 2-core machine


def wait_for(
    condition: Callable[[], Any], timeout: float = DEADLINE, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


@contextlib.contextmanager
def running_server(port: int = 0, **options: Any) -> Iterator[ChatServer]:
    """A ``ChatServer`` on 127.0.0.1 (port 0: any free one), serving in a thread.

    Flood control is off unless ``flood_rate`` is given: most tests send
    faster than a person types, on purpose.  Shut down and closed on exit, as
    the console does it.
    """
    options.setdefault("flood_rate", 0)
    config = ServerConfig(host="127.0.0.1", port=port, **options)
    server = ChatServer(config)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test accept"
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(DEADLINE)
        server.server_close()


class LineClient:
    """A raw TCP client that reads lines with deadlines.  For JSON and plain."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", sock: socket.socket | None = None
    ) -> None:
        if sock is None:
            sock = socket.create_connection((host, port), timeout=DEADLINE)
        self.sock = sock
        self.sock.settimeout(DEADLINE)
        self._buffer = b""
        self.lines: list[bytes] = []  # every complete line received, in order
        self._read = 0  # lines already returned by next_line

    @classmethod
    def accept(cls, listener: socket.socket) -> LineClient:
        """The next connection to ``listener``, as seen by a fake server."""
        listener.settimeout(DEADLINE)
        sock, _ = listener.accept()
        return cls(0, sock=sock)

    # -- sending -------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode("utf-8") + b"\n")

    def send_json(self, **fields: Any) -> None:
        self.sock.sendall(json.dumps(fields).encode("utf-8") + b"\n")

    # -- receiving -----------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Receive once; False at end of stream."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for data")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError("timed out waiting for data") from None
        if not data:
            return False
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(complete)
        return True

    def next_line(self, timeout: float = DEADLINE) -> bytes:
        """The next line not yet returned (without its newline)."""
        deadline = time.monotonic() + timeout
        while self._read >= len(self.lines):
            if not self._fill(deadline):
                raise AssertionError(f"connection closed; got {self.lines!r}")
        self._read += 1
        return self.lines[self._read - 1]

    def next_text(self, timeout: float = DEADLINE) -> str:
        return self.next_line(timeout).decode("utf-8")

    def next_json(self, timeout: float = DEADLINE) -> dict[str, Any]:
        return json.loads(self.next_line(timeout))

    def expect_json(self, type_: str, timeout: float = DEADLINE) -> dict[str, Any]:
        """Skip messages until one of ``type_`` comes; return it."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next_json(max(deadline - time.monotonic(), 0.001))
            if message.get("type") == type_:
                return message

    def expect_text(self, fragment: str, timeout: float = DEADLINE) -> str:
        """Skip lines until one containing ``fragment`` comes; return it."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_text(max(deadline - time.monotonic(), 0.001))
            if fragment in line:
                return line

    def expect_closed(self, timeout: float = DEADLINE) -> list[bytes]:
        """Read until the server closes the connection; return what came."""
        deadline = time.monotonic() + timeout
        start = len(self.lines)
        try:
            while self._fill(deadline):
                pass
        except ConnectionResetError:
            pass
        return self.lines[start:]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def in_a_thread(
    target: Callable[[], None], name: str, stop: threading.Event
) -> Iterator[threading.Thread]:
    """Run ``target`` (a fake server, say) in a thread named ``name`` for the
    ``with`` block; then set ``stop``, which ``target`` must heed, and join."""
    thread = threading.Thread(target=target, name=name)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(DEADLINE)


def json_client(port: int, name: str) -> LineClient:
    """A JSON client that has said hello and got its welcome."""
    client = LineClient(port)
    client.send_json(type="hello", name=name)
    welcome = client.next_json()
    assert welcome["type"] == "welcome", welcome
    client.welcome = welcome  # type: ignore[attr-defined]
    return client


def plain_client(port: int, name: str) -> LineClient:
    """A plain (nc-style) client that has sent its name and been welcomed."""
    client = LineClient(port)
    client.send_line(name)
    client.expect_text(f"Welcome, {name}!")
    return client
