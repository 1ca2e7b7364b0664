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
queue with ``after()`` every ``POLL_MS`` milliseconds, ``CHUNK`` chunks at a
time for at most ``BUDGET`` seconds, drawing included, as the main window
does; the after-id is kept and cancelled when the panel closes.

Memory stays flat: at most ``max_rows`` rows are kept (the oldest go), and at
most ``MAX_QUEUED`` chunks wait to be drawn; chunks beyond that are counted
as lost and a row says so.  **Pause** stops the drawing: chunks that come
while paused are read (so that a character cut across them is still
followed) and counted, but dropped; a row says how many on Resume.
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


class WireFeed:
    """The end of the panel that other threads call: ``feed(direction, data)``.

    A ``ChatClient.wire`` hook: any thread may call it; it never blocks and
    never touches Tk.  It puts ``Chunk(direction, data, time.time())`` on
    ``queue``, or, when the queue is full, counts the chunk as lost.  Once
    ``open`` is False (the panel closed), it does nothing.
    """

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self.queue: queue.Queue[Chunk] = queue.Queue(max_queued)
        #: Set to False by the panel, in the Tk thread, when it closes.
        self.open = True
        self._lock = threading.Lock()
        self._lost = 0  # guarded by _lock: chunks that found the queue full

    def __call__(self, direction: str, data: bytes) -> None:
        if not self.open:
            return
        try:
            self.queue.put_nowait(Chunk(direction, data, time.time()))
        except queue.Full:
            with self._lock:
                self._lost += 1

    def take_lost(self) -> int:
        """How many chunks were lost since the last call (and start again at 0)."""
        with self._lock:
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
    ) -> None:
        super().__init__(master)
        self.feed = WireFeed(max_queued)
        self.log = WireLog(max_shown)
        self.max_rows = max_rows
        self.paused = False
        self.counts = {OUT: 0, IN: 0}  # chunks since the last Clear
        self.sizes = {OUT: 0, IN: 0}  # bytes since the last Clear
        self.lost = 0
        self._unshown = 0  # chunks read while paused
        self._unshown_bytes = 0
        self._row_lines: collections.deque[int] = collections.deque()  # per row
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
        """Read and draw chunks for at most ``BUDGET``, then come back."""
        self._poll_id = None
        deadline = time.monotonic() + BUDGET
        more = False
        while True:
            batch: list[Chunk] = []
            for _ in range(CHUNK):
                try:
                    batch.append(self.feed.queue.get_nowait())
                except queue.Empty:
                    break
            lost = self.feed.take_lost()
            if batch or lost:
                self._take(batch, lost)
            if len(batch) < CHUNK:
                break
            if time.monotonic() > deadline:
                more = True
                break
        self._poll_id = self.after(1 if more else POLL_MS, self._poll)

    def _take(self, batch: list[Chunk], lost: int) -> None:
        """Read a batch of chunks; draw them unless paused."""
        records = [self.log.feed(*chunk) for chunk in batch]
        for record in records:
            self.counts[record.direction] += 1
            self.sizes[record.direction] += record.size
        rows = [_record_row(record) for record in records] if not self.paused else []
        if self.paused:
            self._unshown += len(records)
            self._unshown_bytes += sum(record.size for record in records)
        if lost:
            # What was lost may have finished a cut character: start afresh.
            self.log.reset()
            self.lost += lost
            rows.append(_note_row(f"{_chunks(lost)} lost here: the panel fell behind"))
        self._draw(rows)
        self._update_status()

    # -- drawing ---------------------------------------------------------------

    def _draw(self, rows: list[list]) -> None:
        """Append rows (each a list of text, tags, text, tags...) in one insert."""
        if not rows:
            return
        follow = self.text.yview()[1] >= 0.999
        args = [item for row in rows for item in row]
        text = self.text
        text.configure(state="normal")
        try:
            text.insert("end", *args)
            for row in rows:
                self._row_lines.append(sum(str(item).count("\n") for item in row[::2]))
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


def _record_row(record: WireRecord) -> list:
    """The text and tags of one chunk's row: a line of text, a line of hex."""
    row = (f"row-{record.direction}",)
    head = f"{record.size:>6} B  "
    items: list = [
        f"{record.arrow} ",
        (record.direction, *row),
        f"{record.clock} ",
        ("time", *row),
        head,
        (record.direction, *row),
    ]
    for span in record.spans:
        items += [span.text, (span.kind, "body", *row)]
    items += ["\n", row, " " * HEAD_WIDTH, ("hex", *row)]
    for text, kind in hex_pieces(record) or [("(no bytes)", NOTE)]:
        items += [text, ("hex", kind, *row)]
    items += ["\n", ("hex", "last", *row)]
    return items


def _note_row(words: str) -> list:
    return [f"{'':{HEAD_WIDTH}}⋯ {words}\n", (NOTE, "last")]


def _chunks(count: int) -> str:
    return "1 chunk" if count == 1 else f"{count:,} chunks"
