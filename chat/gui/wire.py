"""The wire panel (View → Wire): every chunk the client sent and received, live.

Each chunk is a row: the direction (``→`` sent, blue; ``←`` received, green),
the time, the byte count, the text with invisible characters made visible
and ``┃`` where a line ends, and the bytes in hex below it.  A character cut
between two chunks is marked in both (``chat.wire`` does the reading; this
module only draws).

Threads: ``panel.feed`` is meant to be ``ChatClient.wire``, so it is called
on the client's reader and writer threads.  It only puts a ``Chunk`` on a
queue, and it holds that queue and nothing else: no other thread ever holds
a widget, so none can be the one that frees it.  The Tk thread drains the
queue with ``after()`` every ``POLL_MS`` milliseconds, up to ``CHUNK`` chunks
at a time (fewer while rows are slow to draw) for about ``BUDGET`` seconds,
drawing included, as the main window does; the after-id is kept and
cancelled when the panel closes.

Memory stays flat: at most ``max_rows`` rows are kept (the oldest go), and at
most ``MAX_QUEUED`` chunks, ``MAX_QUEUED_BYTES`` in all, wait to be drawn;
chunks beyond that are counted as lost and a row says so.  **Pause** stops
the drawing: chunks that come while paused are read (so that a character
cut across them is still followed) and counted, but dropped; a row says how
many on Resume.
**Clear** empties the panel.  Closing it stops the poll, makes ``feed`` do
nothing, and calls ``on_close`` so that the owner can set
``client.wire = None``: a closed panel costs the client nothing.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass
from tkinter import font as tkfont
from tkinter import ttk

from ..wire import (
    BAD,
    CUT,
    ESCAPE,
    IN,
    MAX_SHOWN,
    NEWLINE_MARK,
    NOTE,
    OUT,
    SPLIT,
    SPLIT_MARK,
    Chunk,
    WireLog,
    WireRecord,
    hex_pieces,
)

POLL_MS = 50
CHUNK = 50  # chunks read, then drawn, at a time
BUDGET = 0.02  # seconds of reading and drawing per poll, then Tk repaints
MAX_ROWS = 1000  # rows kept in the panel; the oldest go first
MAX_QUEUED = 5000  # chunks waiting to be drawn; more are counted as lost
MAX_QUEUED_BYTES = 8 * 1024 * 1024  # and their bytes (a chunk can be 64 KiB)
MAX_MARKS = 64  # coloured pieces in one line of a row; the rest is plain

#: The row's head: "→ 14:02:01.123 123456 B  ", as wide in every row.
HEAD_WIDTH = len("→ 00:00:00.000 000000 B  ")

COLOURS = {OUT: "#1a5fb4", IN: "#26803a"}
ROW_BACKGROUNDS = {OUT: "#f4f8fe", IN: "#f3faf4"}

LEGEND = [
    ("→", (OUT,)),
    (" sent  ", ()),
    ("←", (IN,)),
    (" received  ", ()),
    (NEWLINE_MARK, (ESCAPE,)),
    (SPLIT_MARK, (SPLIT,)),
    (" end of a line: split here  ", ()),
    ("\\t", (ESCAPE,)),
    (" invisible  ", ()),
    ("⟨f0 9f…⟩", (CUT,)),
    (" a character cut in two  ", ()),
    ("\\xff", (BAD,)),
    (" not UTF-8", ()),
]


#: A row of the panel: its lines, each ``(tags of the whole line, pieces)``,
#: a piece being ``(text, tag)`` (``""``: no tag of its own).
Row = list[tuple[tuple[str, ...], list[tuple[str, str]]]]


@dataclass(frozen=True, slots=True)
class Lost:
    """On the queue: ``count`` chunks that found it full, then ``then``, the
    chunk that came next (``None``: none has come yet)."""

    count: int
    then: Chunk | None = None


class WireFeed:
    """The end of the panel that other threads call: ``feed(direction, data)``.

    A ``ChatClient.wire`` hook: any thread may call it; it never blocks and
    never touches Tk.  It puts ``Chunk(direction, data, time.time())`` on
    ``queue``, or, when the queue is full (``max_queued`` chunks, or
    ``max_bytes`` bytes), counts the chunk as lost.  The next chunk that
    fits goes on as a ``Lost`` carrying that count, so the panel learns of a
    loss where it happened.  The panel takes them with ``get_nowait``.  Once
    ``open`` is False (the panel closed), it does nothing.
    """

    def __init__(
        self, max_queued: int = MAX_QUEUED, max_bytes: int = MAX_QUEUED_BYTES
    ) -> None:
        self.queue: queue.Queue[Chunk | Lost] = queue.Queue(max_queued)
        self.max_bytes = max_bytes
        #: Set to False by the panel, in the Tk thread, when it closes.
        self.open = True
        # Held while putting, so that a loss and the chunks after it are
        # queued in the order they came.  put_nowait never blocks.
        self._lock = threading.Lock()
        self._lost = 0  # guarded by _lock: chunks lost, not yet on the queue
        self._bytes = 0  # guarded by _lock: the bytes of the queued chunks

    def __call__(self, direction: str, data: bytes) -> None:
        if not self.open:
            return
        chunk = Chunk(direction, data, time.time())
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                self._lost += 1
                return
            try:
                self.queue.put_nowait(Lost(self._lost, chunk) if self._lost else chunk)
            except queue.Full:
                self._lost += 1
            else:
                self._lost = 0
                self._bytes += len(data)

    def get_nowait(self) -> Chunk | Lost:
        """The next item for the panel (Tk thread); raises ``queue.Empty``."""
        item = self.queue.get_nowait()
        chunk = item.then if isinstance(item, Lost) else item
        if chunk is not None:
            with self._lock:
                self._bytes -= len(chunk.data)
        return item

    def take_lost(self) -> int:
        """Chunks lost after the last one queued, once the queue is empty
        (0 before: what is queued came first); the count starts again at 0."""
        with self._lock:
            if not self.queue.empty():
                return 0
            lost, self._lost = self._lost, 0
        return lost


class WirePanel(tk.Toplevel):
    """A window that shows the chunks given to ``self.feed``.  Tk thread only,
    except ``feed`` (see ``WireFeed``).

    ``on_close()`` is called once, in the Tk thread, when the panel closes:
    by its close button, by ``close()``, or because its parent went away.
    """

    def __init__(
        self,
        master: tk.Misc,
        on_close: Callable[[], None],
        *,
        max_rows: int = MAX_ROWS,
        max_shown: int = MAX_SHOWN,
        max_queued: int = MAX_QUEUED,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        super().__init__(master)
        self.feed = WireFeed(max_queued, max_queued_bytes)
        self.log = WireLog(max_shown)
        self.max_rows = max_rows
        self.paused = False
        self.counts = {OUT: 0, IN: 0}  # chunks since the last Clear
        self.sizes = {OUT: 0, IN: 0}  # bytes since the last Clear
        self.lost = 0
        self._unshown = 0  # chunks read while paused
        self._unshown_bytes = 0
        self._row_lines: collections.deque[int] = collections.deque()  # per row
        self._batch = 1  # chunks read and drawn at a time: see _poll
        self._on_close = on_close
        self._closed = False
        self._build()
        self.protocol("WM_DELETE_WINDOW", self.close)
        self.bind("<Destroy>", self._destroyed, add="+")
        self._poll_id: str | None = self.after(POLL_MS, self._poll)

    # -- building ------------------------------------------------------------

    def _build(self) -> None:
        self.title("Wire: every chunk sent and received")
        self.geometry("980x460")
        self.minsize(480, 200)
        self.font = tkfont.nametofont("TkFixedFont")
        bar = ttk.Frame(self, padding=(6, 4))
        self.pause_button = ttk.Button(bar, text="Pause", command=self.toggle_pause)
        self.clear_button = ttk.Button(bar, text="Clear", command=self.clear)
        self.status = ttk.Label(bar, anchor="w", padding=(10, 0))
        self.pause_button.pack(side="left")
        self.clear_button.pack(side="left", padx=(6, 0))
        self.status.pack(side="left", fill="x", expand=True)
        bar.pack(side="top", fill="x")
        self.legend = tk.Text(
            self,
            height=1,
            font=self.font,
            borderwidth=0,
            highlightthickness=0,
            padx=8,
            background=ttk.Style(self).lookup("TFrame", "background") or "#eeeeee",
            cursor="arrow",
        )
        self._configure_tags(self.legend)
        for text, tags in LEGEND:
            self.legend.insert("end", text, tags)
        self.legend.configure(state="disabled")
        self.legend.pack(side="top", fill="x", pady=(0, 4))
        body = ttk.Frame(self)
        self.text = tk.Text(
            body,
            wrap="char",
            font=self.font,
            state="disabled",
            padx=8,
            pady=6,
            borderwidth=0,
            highlightthickness=0,
            background="#ffffff",
            foreground="#1e1e1e",
            undo=False,
        )
        scroll = ttk.Scrollbar(body, orient="vertical", command=self.text.yview)
        self.text.configure(yscrollcommand=scroll.set)
        self.text.grid(row=0, column=0, sticky="nsew")
        scroll.grid(row=0, column=1, sticky="ns")
        body.columnconfigure(0, weight=1)
        body.rowconfigure(0, weight=1)
        body.pack(side="top", fill="both", expand=True)
        self._configure_tags(self.text)
        # Read-only, but text can still be selected and copied.
        self.text.bind("<1>", lambda e: self.text.focus_set())
        self._update_status()

    def _configure_tags(self, text: tk.Text) -> None:
        indent = self.font.measure("0" * HEAD_WIDTH)
        for direction, colour in COLOURS.items():
            text.tag_configure(direction, foreground=colour)
            text.tag_configure(
                f"row-{direction}", background=ROW_BACKGROUNDS[direction]
            )
        text.tag_configure("time", foreground="#7a7a7a")
        # Wrapped lines start under the text; hex wraps between bytes only.
        text.tag_configure("body", lmargin2=indent)
        text.tag_configure("hex", foreground="#6b6b6b", lmargin2=indent, wrap="word")
        text.tag_configure("last", spacing3=6)  # a little air below each row
        # Configured after "hex", so that these win inside the hex too.
        text.tag_configure(ESCAPE, foreground="#8f5b00", background="#fdeec6")
        text.tag_configure(SPLIT, foreground="#d01b1b")
        text.tag_configure(CUT, foreground="#ffffff", background="#e66100")
        text.tag_configure(BAD, foreground="#ffffff", background="#c01c28")
        text.tag_configure(NOTE, foreground="#7a7a7a")

    # -- the poll ------------------------------------------------------------

    def _poll(self) -> None:
        """Read and draw chunks for about ``BUDGET`` at most, then come back.

        Chunks are read and drawn ``self._batch`` at a time.  A row full of
        marks (a chunk of newlines or of bad bytes) can take tens of
        milliseconds to draw, so fifty of them would freeze the window: a
        batch that took too long makes the next one smaller, a quick one
        lets it grow back, up to ``CHUNK``.
        """
        self._poll_id = None
        deadline = time.monotonic() + BUDGET
        more = False
        while True:
            started = time.monotonic()
            wanted = self._batch
            batch: list[Chunk | Lost] = []
            for _ in range(wanted):
                try:
                    batch.append(self.feed.get_nowait())
                except queue.Empty:
                    break
            lost = self.feed.take_lost()
            if lost:
                batch.append(Lost(lost))
            if batch:
                self._take(batch)
            now = time.monotonic()
            if batch:
                fits = int(len(batch) * BUDGET / max(now - started, 1e-6))
                self._batch = max(1, min(fits, 2 * wanted, CHUNK))
            if len(batch) < wanted:
                break  # the queue is empty
            if now > deadline:
                more = True
                break
        self._poll_id = self.after(1 if more else POLL_MS, self._poll)

    def _take(self, batch: list[Chunk | Lost]) -> None:
        """Read a batch of chunks, in order; draw them unless paused."""
        rows = []
        for item in batch:
            if isinstance(item, Lost):
                # What was lost may have finished a cut character: start afresh.
                self.log.reset()
                self.lost += item.count
                words = f"{_chunks(item.count)} lost here: the panel fell behind"
                rows.append(_note_row(words))
                if item.then is None:
                    continue
                item = item.then
            record = self.log.feed(*item)
            self.counts[record.direction] += 1
            self.sizes[record.direction] += record.size
            if self.paused:
                self._unshown += 1
                self._unshown_bytes += record.size
            else:
                rows.append(_record_row(record))
        self._draw(rows)
        self._update_status()

    # -- drawing ---------------------------------------------------------------

    def _draw(self, rows: list[Row]) -> None:
        """Append rows in one insert, then give each line its row's tags.

        Each piece is inserted with its own tag only; the tags of whole lines
        (the row's background, the margins) are added once per tag, over all
        the lines.  Tk's text widget slows down with the square of the tag
        changes in one line, so this, and ``_line_pieces``, keep a row of
        hundreds of marks from freezing the window.
        """
        if not rows:
            return
        follow = self.text.yview()[1] >= 0.999
        text = self.text
        text.configure(state="normal")
        try:
            first = int(text.index("end-1c").split(".")[0])  # the new rows' line
            args: list = []
            ranges: dict[str, list[str]] = collections.defaultdict(list)
            line = first
            for row in rows:
                for line_tags, pieces in row:
                    args += [*_line_pieces(pieces), "\n", ()]
                    for tag in line_tags:
                        ranges[tag] += [f"{line}.0", f"{line + 1}.0"]
                    line += 1
                self._row_lines.append(len(row))
            text.insert("end", *args)
            for tag, indices in ranges.items():
                text.tag_add(tag, *indices)
            self._trim()
        finally:
            text.configure(state="disabled")
        if follow:
            text.see("end")

    def _trim(self) -> None:
        lines = 0
        while len(self._row_lines) > self.max_rows:
            lines += self._row_lines.popleft()
        if lines:
            self.text.delete("1.0", f"{lines + 1}.0")

    def _update_status(self) -> None:
        words = (
            f"{_chunks(self.counts[OUT])} sent ({self.sizes[OUT]:,} B), "
            f"{_chunks(self.counts[IN])} received ({self.sizes[IN]:,} B)"
        )
        if self.paused:
            words += f"; paused: {_chunks(self._unshown)} not shown"
        if self.lost:
            words += f"; {_chunks(self.lost)} lost"
        self.status.configure(text=words)

    # -- the buttons -----------------------------------------------------------

    def toggle_pause(self) -> None:
        """The Pause / Resume button."""
        if self.paused:
            self.resume()
        else:
            self.pause()

    def pause(self) -> None:
        """Stop drawing.  Chunks that come meanwhile are counted, not kept."""
        self.paused = True
        self.pause_button.configure(text="Resume")
        self._update_status()

    def resume(self) -> None:
        """Draw again, after a row saying how much was not shown."""
        if not self.paused:
            return
        self.paused = False
        self.pause_button.configure(text="Pause")
        if self._unshown:
            self._draw(
                [
                    _note_row(
                        f"{_chunks(self._unshown)} ({self._unshown_bytes:,} B) "
                        "not shown while paused"
                    )
                ]
            )
        self._unshown = self._unshown_bytes = 0
        self._update_status()

    def clear(self) -> None:
        """Empty the panel and its counts (chunks on their way still come)."""
        self.text.configure(state="normal")
        self.text.delete("1.0", "end")
        self.text.configure(state="disabled")
        self._row_lines.clear()
        self.counts = {OUT: 0, IN: 0}
        self.sizes = {OUT: 0, IN: 0}
        self.lost = self._unshown = self._unshown_bytes = 0
        self._update_status()

    # -- for tests and for copying -------------------------------------------

    def row_count(self) -> int:
        """Rows shown: one per chunk, and one per note."""
        return len(self._row_lines)

    def contents(self) -> str:
        return self.text.get("1.0", "end-1c")

    # -- closing ---------------------------------------------------------------

    def close(self) -> None:
        """Stop, close the window, and tell the owner.  Tk thread; idempotent."""
        if self._closed:
            return
        self._stop()
        self.destroy()

    def _destroyed(self, event: tk.Event) -> None:
        if event.widget is self and not self._closed:
            self._stop()  # the parent went away, and this window with it

    def _stop(self) -> None:
        self._closed = True
        self.feed.open = False
        if self._poll_id is not None:
            self.after_cancel(self._poll_id)
            self._poll_id = None
        self._on_close()


def _record_row(record: WireRecord) -> Row:
    """One chunk's row: a line of text, a line of hex below it."""
    row = f"row-{record.direction}"
    text = [
        (f"{record.arrow} ", record.direction),
        (f"{record.clock} ", "time"),
        (f"{record.size:>6} B  ", record.direction),
        *((span.text, span.kind) for span in record.spans),
    ]
    hex_text = [(" " * HEAD_WIDTH, ""), *(hex_pieces(record) or [("(no bytes)", NOTE)])]
    return [((row, "body"), text), ((row, "hex", "last"), hex_text)]


def _note_row(words: str) -> Row:
    return [(("last",), [(f"{'':{HEAD_WIDTH}}⋯ {words}", NOTE)])]


def _line_pieces(pieces: list[tuple[str, str]]) -> list:
    """Insert arguments for one line: text, tags, text, tags...

    Past ``MAX_MARKS`` tagged pieces the rest of the line goes in plain: its
    text is all there, only the colours stop.  Neighbours with the same tag
    go in as one piece (Tk would join them anyway).
    """
    args: list = []
    marks = 0
    for text, kind in pieces:
        marks += bool(kind)
        tags = (kind,) if kind and marks <= MAX_MARKS else ()
        if args and args[-1] == tags:
            args[-2] += text
        else:
            args += [text, tags]
    return args


def _chunks(count: int) -> str:
    return "1 chunk" if count == 1 else f"{count:,} chunks"
