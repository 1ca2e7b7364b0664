"""The widgets of the main window: the message view and the user list.

Main thread only, like all of Tk.  ``MessageView.add`` takes ``format.Line``
objects; it inserts each as tagged pieces (no index arithmetic, so emoji are
safe), keeps the view pinned to the bottom only if it already was, and drops
the oldest lines beyond ``max_lines`` so memory stays flat in a long class.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable, Iterable
from tkinter import font as tkfont
from tkinter import ttk

from .format import NAME_COLOURS, Line

MAX_LINES = 5000


class MessageView(ttk.Frame):
    """Read-only, scrollable, styled chat text."""

    def __init__(
        self, master: tk.Misc, text_font: tkfont.Font, max_lines: int = MAX_LINES
    ) -> None:
        super().__init__(master)
        self.max_lines = max_lines
        self.text = tk.Text(
            self,
            wrap="word",
            font=text_font,
            state="disabled",
            padx=8,
            pady=6,
            spacing1=2,
            spacing3=2,
            borderwidth=0,
            highlightthickness=0,
            background="#ffffff",
            foreground="#1e1e1e",
            cursor="arrow",
            undo=False,
        )
        scroll = ttk.Scrollbar(self, orient="vertical", command=self.text.yview)
        self._scrollbar = scroll
        self._follow = True  # the reader is at the bottom: keep it there
        self._size = (0, 0)
        self.text.configure(yscrollcommand=self._scrolled)
        self.text.bind("<Configure>", self._resized, add="+")
        self.text.grid(row=0, column=0, sticky="nsew")
        scroll.grid(row=0, column=1, sticky="ns")
        self.columnconfigure(0, weight=1)
        self.rowconfigure(0, weight=1)
        self._configure_tags(text_font)
        # Read-only, but text can still be selected and copied.
        self.text.bind("<1>", lambda e: self.text.focus_set())

    def _configure_tags(self, text_font: tkfont.Font) -> None:
        bold = tkfont.Font(font=text_font)
        bold.configure(weight="bold")
        italic = tkfont.Font(font=text_font)
        italic.configure(slant="italic")
        self._derived_fonts = (bold, italic)  # keep references alive
        text = self.text
        # A line that wraps goes on indented, so text padded with spaces can
        # never start a screen line of its own that looks like a new line.
        text.tag_configure("line", lmargin2=24)
        text.tag_configure("time", foreground="#8a8a8a")
        text.tag_configure("name", font=bold)
        for index, colour in enumerate(NAME_COLOURS):
            text.tag_configure(f"name{index}", foreground=colour)
        text.tag_configure("own", background="#eef5ff")
        text.tag_configure("private", foreground="#6a1b9a", font=italic)
        text.tag_configure("line-private", background="#f7eefc")
        text.tag_configure("notice", foreground="#6b6b6b", font=italic)
        text.tag_configure("error", foreground="#b00020")
        text.tag_configure("advice", foreground="#1f5f8b", lmargin1=24, lmargin2=24)
        text.tag_configure("action", font=italic)
        text.tag_configure("mention", background="#fff3b0", font=bold)
        text.tag_configure("line-mention", background="#fffbe6")
        text.tag_configure("divider", foreground="#2f6f3f", justify="center")
        text.tag_configure("pending", foreground="#9a9a9a")
        text.tag_configure("failed", foreground="#b00020", overstrike=False)
        text.tag_configure("retry", underline=True)
        text.tag_raise("mention")

    def set_font(self, text_font: tkfont.Font) -> None:
        for derived in self._derived_fonts:
            derived.configure(size=text_font.cget("size"))

    def _scrolled(self, first: str, last: str) -> None:
        """The view moved: remember whether the reader is at the bottom,
        unless a resize moved it (then the reader did not)."""
        self._scrollbar.set(first, last)
        text = self.text
        if self._size == (text.winfo_width(), text.winfo_height()):
            self._follow = float(last) >= 0.999

    def _resized(self, event: tk.Event) -> None:
        """Made smaller (or larger), a view at the bottom stays there: Tk
        keeps the top line in place, which would hide the newest lines and
        stop the view from following new ones."""
        self._size = (event.width, event.height)
        if self._follow:
            self.text.see("end")

    def at_bottom(self) -> bool:
        return self.text.yview()[1] >= 0.999

    def add(self, lines: Iterable[Line], extra_tags: tuple[str, ...] = ()) -> None:
        """Append lines at the end; scroll only if the reader was at the bottom.

        All the lines go in with one ``insert`` call: tkinter lets go of the
        GIL around every call into Tcl, and a busy network thread may then
        keep it for a switch interval each time, so few calls keep the
        window responsive during a flood.
        """
        args: list[object] = []
        for line in lines:
            line_tags = ("line", "own" if line.kind == "own" else f"line-{line.kind}")
            if line.mention:
                line_tags = (*line_tags, "line-mention")
            line_tags = (*line_tags, *extra_tags)
            for piece, tags in line.pieces:
                args += [piece, (*tags, *line_tags)]
            args += ["\n", line_tags]
        if not args:
            return
        follow = self.at_bottom()
        text = self.text
        text.configure(state="normal")
        try:
            text.insert("end", *args)
            self._trim()
        finally:
            text.configure(state="disabled")
        if follow:
            text.see("end")

    def add_pending(self, cid: str, line: Line) -> None:
        """Add a line typed but not yet confirmed, tagged so it can be found."""
        self.add([line], extra_tags=(f"cid-{cid}",))

    def remove_pending(self, cid: str) -> bool:
        """The server confirmed the line: take the pending one away."""
        ranges = self.text.tag_ranges(f"cid-{cid}")
        if not ranges:
            return False
        self.text.configure(state="normal")
        try:
            self.text.delete(ranges[0], ranges[-1])
        finally:
            self.text.configure(state="disabled")
        return True

    def fail_pending(self, cid: str, note: str, retry: Callable[[], None]) -> None:
        """The line was refused, or not confirmed: say so (``note``), and send
        it again on a click."""
        tag = f"cid-{cid}"
        ranges = self.text.tag_ranges(tag)
        if not ranges:
            return
        start, end = ranges[0], ranges[-1]
        text = self.text
        text.configure(state="normal")
        try:
            text.tag_remove("pending", start, end)
            text.tag_add("failed", start, end)
            note = f"  ✗ {note.rstrip('.')} (click to send again)"
            text.insert(f"{end} - 1 chars", note, ("failed", "retry", tag))
        finally:
            text.configure(state="disabled")
        text.tag_bind(tag, "<Button-1>", lambda e: retry())

    def _trim(self) -> None:
        count = int(self.text.index("end-1c").split(".")[0])
        if count > self.max_lines:
            self.text.delete("1.0", f"{count - self.max_lines + 1}.0")

    def line_count(self) -> int:
        return int(self.text.index("end-1c").split(".")[0]) - 1

    def contents(self) -> str:
        return self.text.get("1.0", "end-1c")


class UserList(ttk.Frame):
    """Who is here.  Double-clicking a name calls ``on_pick(name)``."""

    def __init__(
        self,
        master: tk.Misc,
        text_font: tkfont.Font,
        on_pick: Callable[[str], None],
    ) -> None:
        super().__init__(master)
        self.heading = ttk.Label(self, text="In the room", anchor="w")
        self.listbox = tk.Listbox(
            self,
            font=text_font,
            activestyle="none",
            borderwidth=0,
            highlightthickness=0,
            selectbackground="#cfe3ff",
            selectforeground="#000000",
            width=18,
        )
        self.heading.pack(fill="x", padx=6, pady=(6, 2))
        self.listbox.pack(fill="both", expand=True, padx=(6, 0))
        self._on_pick = on_pick
        self.listbox.bind("<Double-Button-1>", self._picked)
        self.listbox.bind("<Return>", self._picked)
        self._names: list[str] = []
        self._me = ""

    def set_users(self, names: Iterable[str], me: str) -> None:
        self._names = list(names)
        self._me = me
        self._refresh()

    def add(self, name: str) -> None:
        if name not in self._names:
            self._names.append(name)
            self._refresh()

    def remove(self, name: str) -> None:
        if name in self._names:
            self._names.remove(name)
            self._refresh()

    def rename(self, old: str, new: str, me: str) -> None:
        self._names = [new if n == old else n for n in self._names]
        self._me = me
        self._refresh()

    def clear(self) -> None:
        self.set_users([], self._me)

    def names(self) -> list[str]:
        return list(self._names)

    def _refresh(self) -> None:
        self.heading.configure(text=f"In the room ({len(self._names)})")
        self.listbox.delete(0, "end")
        for name in self._names:
            self.listbox.insert("end", f"{name} (you)" if name == self._me else name)

    def _picked(self, event: tk.Event) -> None:
        selection = self.listbox.curselection()
        if selection:
            self._on_pick(self._names[selection[0]])
