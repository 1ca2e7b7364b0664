"""Reading what a person types at a terminal, in a thread that can be stopped.

Both consoles (the server's operator and ``python -m chat``) read standard
input in a thread of their own while other threads print (and both make
their output say what it cannot show as escapes: ``escape_unprintable``).  A blocking
``readline`` cannot be interrupted, so on POSIX the thread polls the
descriptor and reads with ``os.read``: ``stop()`` ends it within ``POLL``
seconds and joins it.  Windows consoles cannot be polled; there the thread
blocks in ``readline`` and ``stop()`` gives up waiting for it after a second
(it is a daemon thread and holds nothing that needs closing).
"""

from __future__ import annotations

import io
import os
import select
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from .protocol import MAX_LINE_BYTES, LineDecoder, LineTooLong

#: Seconds between looks at ``stop()`` while nothing is typed (POSIX).
POLL = 0.25
#: What both consoles say when a line typed (or piped) is too long.
TOO_LONG = f"! That line is too long (over {MAX_LINE_BYTES:,} bytes); it was ignored."


def escape_unprintable() -> None:
    """Make ``sys.stdout`` write what its encoding cannot show as escapes.

    A Windows console redirected to a file is cp1252 (no emoji, no Greek):
    a name or a line from the room must come out as ``\\u03b1``, not end a
    thread or print a logging traceback for every line of that person.
    Call once, from the main thread, before other threads print.
    """
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


class StdinReader:
    """Calls ``on_line(text)`` for each line typed, then ``on_end()`` at EOF.

    A last line without a newline counts.  Bytes that are not in the
    stream's encoding come out as U+FFFD; a ``\\r`` before the newline is
    dropped.

    A line longer than ``MAX_LINE_BYTES`` (a paste, a file piped in) is
    dropped, and ``on_too_long()`` is called instead; reading goes on.  (On
    Windows, or for a stream with no descriptor, lines come as the stream
    reads them: decoded by it, and none is too long.)  The callbacks run in
    the reader thread.  In the background of a terminal, reading stops the
    process; where the program ignores ``SIGTTIN`` (the server's console
    does), POSIX gives an error instead, which counts as the end of input.
    """

    def __init__(
        self,
        on_line: Callable[[str], None],
        on_end: Callable[[], None] = lambda: None,
        stream: TextIO | None = None,
        name: str = "stdin reader",
        on_too_long: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_line = on_line
        self._on_end = on_end
        self._on_too_long = on_too_long
        self._stream = stream if stream is not None else sys.stdin
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop reading: no more lines are passed on, and ``on_end`` is not
        called.  Waits up to ``timeout`` seconds for the thread, unless
        called from it (from a callback).  Any thread may call it."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._read()
        finally:
            if not self._stopping.is_set():
                self._on_end()

    def _read(self) -> None:
        stream = self._stream
        if stream is None or stream.closed:
            return
        try:
            fd = stream.fileno()
        except (OSError, ValueError):
            fd = -1
        if fd < 0 or not hasattr(select, "poll"):
            for line in stream:  # Windows consoles, or a stream with no descriptor
                if self._stopping.is_set():
                    return
                self._on_line(line.rstrip("\r\n"))
            return
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        # No hard limit: a line too long is skipped, not kept, however long.
        decoder = LineDecoder(MAX_LINE_BYTES, max_unterminated_bytes=sys.maxsize)
        encoding = getattr(stream, "encoding", None) or "utf-8"
        while not self._stopping.is_set():
            if not poller.poll(POLL * 1000):
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: a background process reading its terminal
                return
            if not data:
                # A last line with no newline (a file that does not end in
                # one, or Ctrl+D pressed twice after typing) is a line too.
                if decoder.buffered:
                    self._deliver(decoder.feed(b"\n"), encoding)
                return
            self._deliver(decoder.feed(data), encoding)

    def _deliver(self, lines: list[bytes | LineTooLong], encoding: str) -> None:
        for line in lines:
            if self._stopping.is_set():
                return
            if isinstance(line, LineTooLong):
                self._on_too_long()
            else:
                self._on_line(line.decode(encoding, "replace").rstrip("\r"))
