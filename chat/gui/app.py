"""The chat window: ``python gui_client.py`` lands in ``main()``.

Threads: only the Tk main thread touches widgets.  The network runs in the
``ChatClient``'s threads, which put events on a ``queue.Queue``; the window
drains that queue with ``after()`` every ``POLL_MS`` milliseconds, at most
``CHUNK`` events at a time for at most ``BUDGET`` seconds, drawing included,
so the screen repaints between batches even during a flood.  (Thonny's
``Runner._poll_vm_messages`` explains why polling beats ``event_generate``
from other threads.)  The poll's after-id is kept and cancelled when the
window closes.

A bug in a callback is logged and shown as a line in the window
(``report_callback_exception``); the window stays usable.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import queue
import sys
import time
import tkinter as tk
from collections.abc import Sequence
from pathlib import Path
from tkinter import filedialog, messagebox, ttk
from tkinter import font as tkfont
from typing import TextIO

from .. import plain
from ..client import (
    ChatClient,
    Closed,
    Connected,
    Connecting,
    Disconnected,
    Event,
    Untrusted,
    default_name,
)
from ..discovery import broadcast_addresses
from ..doctor import advise
from ..protocol import (
    Bye,
    Error,
    Joined,
    Left,
    Message,
    Private,
    PrivateMessage,
    Renamed,
    Say,
    Users,
    Welcome,
)
from ..timeline import Timeline
from .dialogs import ConnectDialog, check_connect_fields, suggest_other_name
from .format import (
    Line,
    divider_line,
    lines_for,
    notice_line,
    pending_line,
)
from .settings import Settings
from .view import MessageView, UserList
from .wire import WirePanel

log = logging.getLogger("chat.gui")

APP_NAME = "ClassChat"
POLL_MS = 50
CHUNK = 50  # events handled, then drawn, at a time
BUDGET = 0.025  # seconds of handling and drawing per poll, then Tk repaints
NOT_CONNECTED = "Not connected: use Chat → Connect… first."
FONT_SIZES = (8, 9, 10, 11, 12, 14, 16, 18, 20, 24, 28)

HELP_TEXT = "\n".join(
    [
        "Type a line and press Enter to send it to everyone.",
        "",
        *(f"{usage:<18} {what}" for usage, what in plain.COMMANDS),
        "",
        "Up and Down recall the lines you sent.",
        "Double-click a name in the list to write to that person only.",
        "Ctrl+plus and Ctrl+minus change the text size.",
    ]
)


class ChatApp:
    """The main window and everything it does.  Main thread only.

    ``settings_path`` and ``transcript`` are optional: where to remember the
    settings, and a file that gets every line shown (``--log``).
    """

    def __init__(
        self,
        root: tk.Tk,
        settings: Settings | None = None,
        settings_path: Path | None = None,
        transcript: TextIO | None = None,
    ) -> None:
        self.root = root
        self.settings = settings or Settings()
        self.settings_path = settings_path
        self.transcript = transcript
        self.client: ChatClient | None = None
        self.me = ""
        self.unread = 0
        self.focused = True
        self._sent: list[str] = []  # lines typed, for Up/Down
        self._recall = 0
        self._poll_id: str | None = None
        self._countdown_id: str | None = None
        self._retry_at = 0.0
        self._dialog: ConnectDialog | None = None
        self._pending: dict[str, Say | Private] = {}  # cid -> line not yet confirmed
        self._failed_lines: dict[str, Say | Private] = {}  # cid -> shown as failed
        self.timeline = Timeline()  # which lines are shown already
        self._wire_panel: WirePanel | None = None  # View → Wire, when open
        #: Where "Find servers" sends its probe: the local network's broadcast
        #: addresses (tests set 127.0.0.1).
        self.find_targets = broadcast_addresses
        self._password: str | None = None  # for a reconnect after a TLS question
        self._advised: str | None = None  # the failure the doctor explained
        self._was_in = False  # welcomed since the last connect(): a reconnect
        self._closed = False
        self._build()
        root.report_callback_exception = self.report_callback_exception
        self._poll_id = root.after(POLL_MS, self._poll)

    # -- building the window -------------------------------------------------

    def _build(self) -> None:
        root = self.root
        root.title(APP_NAME)
        root.geometry("860x560")
        root.minsize(480, 320)
        root.protocol("WM_DELETE_WINDOW", self.close)
        self.font = tkfont.Font(
            root,
            family=tkfont.nametofont("TkDefaultFont").cget("family"),
            size=self.settings.font_size,
        )
        self._build_menu()
        panes = ttk.PanedWindow(root, orient="horizontal")
        self.view = MessageView(panes, self.font)
        self.users = UserList(panes, self.font, self.start_private)
        panes.add(self.view, weight=5)
        panes.add(self.users, weight=1)
        bottom = ttk.Frame(root, padding=(6, 4))
        self.entry = ttk.Entry(bottom, font=self.font)
        self.send_button = ttk.Button(bottom, text="Send", command=self.send_entry)
        self.entry.pack(side="left", fill="x", expand=True)
        self.send_button.pack(side="left", padx=(6, 0))
        self.status = ttk.Label(root, text="Not connected", anchor="w", padding=(8, 2))
        ttk.Separator(root).pack(side="bottom", fill="x")
        self.status.pack(side="bottom", fill="x")
        bottom.pack(side="bottom", fill="x")
        panes.pack(side="top", fill="both", expand=True)
        entry = self.entry
        entry.bind("<Return>", lambda e: self.send_entry())
        entry.bind("<KP_Enter>", lambda e: self.send_entry())
        entry.bind("<Up>", lambda e: self.recall(-1))
        entry.bind("<Down>", lambda e: self.recall(+1))
        root.bind("<FocusIn>", self._focus_in)
        root.bind("<FocusOut>", self._focus_out)
        for sequence in ("<Control-plus>", "<Control-equal>", "<Control-KP_Add>"):
            root.bind(sequence, lambda e: self.zoom(+1))
        for sequence in ("<Control-minus>", "<Control-KP_Subtract>"):
            root.bind(sequence, lambda e: self.zoom(-1))
        root.bind("<Control-q>", lambda e: self.close())
        root.bind("<Control-s>", lambda e: self.save_transcript())
        entry.focus_set()

    def _build_menu(self) -> None:
        menubar = tk.Menu(self.root)
        chat = tk.Menu(menubar, tearoff=False)
        chat.add_command(label="Connect…", command=self.ask_connect)
        chat.add_command(label="Disconnect", command=self.disconnect)
        chat.add_separator()
        chat.add_command(
            label="Save transcript…", accelerator="Ctrl+S", command=self.save_transcript
        )
        chat.add_separator()
        chat.add_command(label="Quit", accelerator="Ctrl+Q", command=self.close)
        view = tk.Menu(menubar, tearoff=False)
        view.add_command(
            label="Larger text", accelerator="Ctrl++", command=lambda: self.zoom(+1)
        )
        view.add_command(
            label="Smaller text", accelerator="Ctrl+-", command=lambda: self.zoom(-1)
        )
        view.add_separator()
        view.add_command(label="Wire", command=self.show_wire)
        helpmenu = tk.Menu(menubar, tearoff=False)
        helpmenu.add_command(label="Commands", command=self.show_help)
        helpmenu.add_command(label="About", command=self.show_about)
        menubar.add_cascade(label="Chat", menu=chat, underline=0)
        menubar.add_cascade(label="View", menu=view, underline=0)
        menubar.add_cascade(label="Help", menu=helpmenu, underline=0)
        self.root.configure(menu=menubar)
        self.menus = {"chat": chat, "view": view, "help": helpmenu}

    # -- connecting ----------------------------------------------------------

    def ask_connect(self, message: str = "", focus: str = "") -> None:
        """Open the connect dialog (or bring the open one forward)."""
        if self._dialog is not None and self._dialog.winfo_exists():
            self._dialog.lift()
            return
        s = self.settings
        self._dialog = ConnectDialog(
            self.root,
            s.host,
            s.port,
            s.name,
            self._connect_from_dialog,
            message,
            focus,
            s.tls,
            self.find_targets,
        )

    def _connect_from_dialog(
        self, host: str, port: int, name: str, password: str | None, tls: bool
    ) -> None:
        self.connect(host, port, name, password=password, tls=tls)

    def connect(
        self,
        host: str,
        port: int,
        name: str,
        *,
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        """Start connecting in the background; the window stays responsive.

        Over TLS, a certificate trusted before (by "host:port") is pinned.
        """
        self.disconnect(quiet=True)
        s = self.settings
        s.host, s.port, s.name, s.tls = host, port, name, tls
        s.save(self.settings_path)
        self.me = name
        self._password = password
        self._advised = None
        self._was_in = False
        pinned = s.trusted.get(f"{host}:{port}") if tls else None
        wire = self._wire_panel.feed if self._wire_panel is not None else None
        self.client = ChatClient(
            host, port, name, password=password, tls=tls, fingerprint=pinned, wire=wire
        )
        self.client.start()
        self._set_status(f"Connecting to {host}:{port}…")

    def disconnect(self, quiet: bool = False) -> None:
        """Leave the room (say bye) and stop reconnecting."""
        client, self.client = self.client, None
        self._cancel_countdown()
        if client is None:
            return
        client.close("quit", timeout=0.5)
        self._fail_all_pending("disconnected")
        self.users.clear()
        if not quiet:
            self.add_lines([notice_line("Disconnected.")])
            self._set_status("Not connected")
        self._update_title()

    # -- the event poll --------------------------------------------------------

    def _poll(self) -> None:
        """Handle and draw network events for at most ``BUDGET``, then come back.

        Events are taken ``CHUNK`` at a time and drawn at once, and the budget
        counts the drawing too, so one poll can never hold the window for long
        however fast messages come; Tk repaints between polls.
        """
        self._poll_id = None
        client = self.client
        more = False
        try:
            if client is not None:
                more = self._handle_events(client)
        finally:  # a bug in one event (shown by report_callback_exception)
            if not self._closed:  # must not stop the window for good
                self._poll_id = self.root.after(1 if more else POLL_MS, self._poll)

    def _handle_events(self, client: ChatClient) -> bool:
        """One poll's worth of ``client``'s events; True if more are waiting."""
        deadline = time.monotonic() + BUDGET
        while client is self.client:
            lines: list[Line] = []
            for _ in range(CHUNK):
                try:
                    event = client.events.get_nowait()
                except queue.Empty:
                    break
                try:
                    lines += self.handle(event)
                except Exception:  # our bug: say so, and go on with the rest
                    self.report_callback_exception(*sys.exc_info())
            if lines:
                self.add_lines(lines)
            if client.events.empty():
                return False
            if time.monotonic() > deadline:
                return True
        return False

    def handle(self, event: Event) -> list[Line]:
        """Update the window for one event; return the lines it adds."""
        if isinstance(event, Connecting):
            self._cancel_countdown()
            self._set_status(f"Connecting to {event.host}:{event.port}…")
            return []
        if isinstance(event, Connected):
            return []
        if isinstance(event, Disconnected):
            return self._disconnected(event)
        if isinstance(event, Closed):
            return []
        if isinstance(event, Untrusted):
            return self._untrusted(event)
        if isinstance(event, Welcome):
            return self._welcomed(event)
        if isinstance(event, (Message, PrivateMessage)):
            fresh = self.timeline.fresh(event)
            if not self._confirm(event) and not fresh:
                return []  # a resend's echo, or a replay: it is shown already
            # (One of ours is shown even with an old id: a resend is answered
            # with the first copy, which a lost link kept from us.)
        elif isinstance(event, Error) and event.cid in self._pending:
            self._failed(event.cid, f"not sent: {event.text}")
            return []
        if isinstance(event, Joined):
            self.users.add(event.name)
        elif isinstance(event, Left):
            self.users.remove(event.name)
        elif isinstance(event, Renamed):
            if event.old == self.me:
                self.me = event.new
                self.settings.name = event.new
                self._set_status(
                    f"Connected to {self.client.host}:{self.client.port} as {self.me}"
                    if self.client
                    else "Not connected"
                )
                self._update_title()
            self.users.rename(event.old, event.new, self.me)
        elif isinstance(event, Users):
            self.users.set_users(event.users, self.me)
        elif isinstance(event, Error) and not (self.client and self.client.connected):
            if event.code == "name_taken" and self._was_in:
                # Coming back after a lost link: the name is most likely still
                # held by our own old connection, which the server drops soon.
                # The client keeps trying; so do we.
                text = f"{event.text}: the old connection has not ended yet"
                return [notice_line(f"{text}. Still trying.", "error")]
            if event.code == "name_taken":
                return self._name_taken(event)
            if event.code == "bad_password":
                self.root.after_idle(
                    self.ask_connect, f"{event.text} Try again:", "password"
                )
        lines = lines_for(event, self.me)
        self._notify(event, lines)
        return lines

    def _welcomed(self, event: Welcome) -> list[Line]:
        """In (again): who is here, and what was said that is not shown yet.

        Within one history (``room``) ids only grow, so a line at or below the
        highest id shown is one we have: nothing is shown twice.  Coming back
        to the same room, what was missed goes under a divider.
        """
        self._was_in = True
        missed, coming_back = self.timeline.welcome(event.room, event.history)
        # Ours that were waiting are shown even when older than what is
        # shown already (a private line is answered late, below newer ones).
        shown = {id(line) for line in missed}
        shown.update(id(line) for line in event.history if self._confirm(line))
        missed = tuple(line for line in event.history if id(line) in shown)
        self.me = event.name
        self.users.set_users(event.users, self.me)
        assert self.client is not None
        self._set_status(
            f"Connected to {self.client.host}:{self.client.port} as {self.me}"
        )
        self._update_title()
        lines = lines_for(dataclasses.replace(event, history=missed), self.me)
        if coming_back:
            welcome_back = notice_line(f"Back in the room as {self.me}.")
            return [divider_line("while you were away"), *lines[:-1], welcome_back]
        return lines

    def _confirm(self, line: Message | PrivateMessage) -> bool:
        """A line of ours came back from the room: it is no longer pending
        (or failed).  True if it was one we were waiting for."""
        cid = line.cid
        if not cid or (
            self._pending.pop(cid, None) is None
            and self._failed_lines.pop(cid, None) is None
        ):
            return False
        self.view.remove_pending(cid)
        return True

    def _failed(self, cid: str, note: str) -> None:
        """A line refused, or not confirmed: say so (``note``); a click sends
        it again."""
        self._failed_lines[cid] = self._pending.pop(cid)
        self.view.fail_pending(cid, note, lambda: self._retry(cid))

    def _fail_all_pending(self, reason: str) -> None:
        """The client stopped for good: its waiting lines will not go by
        themselves (a click sends one again once connected).  The room may
        have them already: only the echo was missing."""
        for cid in list(self._pending):
            self._failed(cid, f"not confirmed: {reason}")

    def _retry(self, cid: str) -> None:
        """A click on a failed line: send it again, with the same ``cid``, so
        that a room which has it already answers with it, not a second copy."""
        line = self._failed_lines.get(cid)
        if line is None:
            return  # clicked twice, or the room confirmed it meanwhile
        if self.client is None:  # keep it: it can be sent once connected
            self.add_lines([notice_line(NOT_CONNECTED, "error")])
            return
        del self._failed_lines[cid]
        self.view.remove_pending(cid)
        self.client.send(line)
        self._show_pending(cid, line)

    def _disconnected(self, event: Disconnected) -> list[Line]:
        self.users.clear()
        self._update_title()
        reason = event.reason.rstrip(".")
        if not reason.endswith(("!", "?", "…")):  # not "Goodbye!."
            reason += "."
        text = f"Disconnected: {reason}"
        advice: list[Line] = []
        if event.failure is not None and self.client is not None:
            where = f"{self.client.host}:{self.client.port}"
            text = f"Could not connect to {where}: {reason}"
            if event.failure != self._advised:  # once, not at every retry
                self._advised = event.failure
                tips = advise(event.failure, self.client.host, self.client.port)
                advice = [notice_line(tip, "advice") for tip in tips]
        if event.retry_in is None:
            self._set_status("Not connected")
            self._fail_all_pending("not connected")
            if self.client is not None and not self.client.connected:
                self.client = None
            if event.failure == "tls_unknown":
                return []  # the trust question already said it all
            return [notice_line(text, "error"), *advice]
        self._start_countdown(event.retry_in)
        retrying = notice_line(f"{text} Trying again in {event.retry_in} s.", "error")
        return [retrying, *advice]

    def _name_taken(self, event: Error) -> list[Line]:
        taken = self.me
        other = suggest_other_name(taken, set(self.users.names()))
        self.settings.name = other
        self.disconnect(quiet=True)
        self._set_status("Not connected")
        self.ask_connect(f"{event.text}. How about {other}?", focus="name")
        return [notice_line(f"{event.text}. Choose another name.", "error")]

    def _untrusted(self, event: Untrusted) -> list[Line]:
        """A TLS server we do not know yet: ask the person, remember the answer."""
        key = f"{event.host}:{event.port}"
        if not self.ask_trust(event.host, event.port, event.fingerprint):
            return [notice_line(f"Not connected: {key}'s certificate is not trusted.")]
        self.settings.trusted[key] = event.fingerprint
        self.settings.save(self.settings_path)
        host, port, name = event.host, event.port, self.settings.name
        password = self._password
        self.root.after_idle(
            lambda: self.connect(host, port, name, password=password, tls=True)
        )
        return [notice_line(f"Trusting {key}'s certificate from now on.")]

    def ask_trust(self, host: str, port: int, fingerprint: str) -> bool:
        """Ask whether to trust a certificate seen for the first time."""
        return messagebox.askyesno(
            "A new server certificate",
            f"{host}:{port} speaks TLS with a certificate this computer has not "
            f"seen before. Its fingerprint is:\n\n{fingerprint}\n\n"
            "The server prints its fingerprint when it starts. Are they the "
            "same? Trust it from now on?",
            parent=self.root,
        )

    def _notify(self, event: Event, lines: list[Line]) -> None:
        """Unread count while unfocused; the bell when someone names me."""
        from_other = (
            isinstance(event, (Message, PrivateMessage)) and event.sender != self.me
        )
        if from_other and not self.focused:
            self.unread += 1
            self._update_title()
        if any(line.mention for line in lines):
            self.root.bell()

    # -- sending -------------------------------------------------------------

    def send_entry(self) -> None:
        """Enter (or Send): send what is in the entry (a line or a command).

        A text pasted with line breaks goes as one line per line, as it would
        from a terminal (sent whole, the room would see ``\\n`` escapes).
        The keyboard stays in the entry, even after a click on Send.
        """
        self.entry.focus_set()
        text = self.entry.get()
        if not text.strip():
            return
        self.entry.delete(0, "end")
        lines = [line for line in text.splitlines() if line.strip()]
        self._sent += lines
        self._recall = len(self._sent)
        for line in lines:
            if self._closed:  # a /quit among them
                return
            self.submit(line)

    def submit(self, text: str) -> None:
        """Act on one typed line: send it, or carry out a command."""
        parsed = plain.parse_input(text)
        if parsed is None:
            return
        if isinstance(parsed, tuple):  # /help, or a usage mistake: local only
            self.add_lines([line for m in parsed for line in lines_for(m, self.me)])
            return
        if isinstance(parsed, Bye):
            self.close()
            return
        if self.client is None:
            self.add_lines([notice_line(NOT_CONNECTED, "error")])
            return
        cid = self.client.send(parsed)
        if cid is not None:  # a chat line: shown at once, waiting for the room
            assert isinstance(parsed, (Say, Private))
            self._show_pending(cid, dataclasses.replace(parsed, cid=cid))
        elif isinstance(parsed, (Say, Private)) and not self.entry.get():
            # Refused before sending (too long; an error event says why):
            # give the text back, to be cut down rather than typed again.
            self.entry.insert(0, text)

    def _show_pending(self, cid: str, line: Say | Private) -> None:
        """Show a line sent and not yet confirmed (greyed, with a clock)."""
        to = line.to if isinstance(line, Private) else None
        me = bool(getattr(line, "me", False))
        self._pending[cid] = line
        self.view.add_pending(cid, pending_line(line.text, me, to, self.me))
        self.view.text.see("end")

    def recall(self, step: int) -> str:
        """Up/Down in the entry: bring back earlier lines."""
        if not self._sent:
            return "break"
        self._recall = max(0, min(len(self._sent), self._recall + step))
        text = self._sent[self._recall] if self._recall < len(self._sent) else ""
        self.entry.delete(0, "end")
        self.entry.insert(0, text)
        self.entry.icursor("end")
        return "break"

    def start_private(self, name: str) -> None:
        """Double-click on a name: start a private message to that person."""
        self.entry.delete(0, "end")
        self.entry.insert(0, f"/msg {name} ")
        self.entry.icursor("end")
        self.entry.focus_set()

    # -- the view, the title, the status bar ----------------------------------

    def add_lines(self, lines: list[Line]) -> None:
        self.view.add(lines)
        if self.transcript is not None:
            try:
                self.transcript.write("".join(f"{line.plain}\n" for line in lines))
                self.transcript.flush()
            except OSError as exc:
                log.warning("transcript: %s", exc)
                self.transcript = None

    def _set_status(self, text: str) -> None:
        self.status.configure(text=text)

    def _update_title(self) -> None:
        title = f"{self.me} — {APP_NAME}" if self.client and self.me else APP_NAME
        if self.unread:
            title = f"({self.unread}) {title}"
        self.root.title(title)

    def _focus_in(self, event: tk.Event) -> None:
        self.focused = True
        if self.unread:
            self.unread = 0
            self._update_title()

    def _focus_out(self, event: tk.Event) -> None:
        # Focus moving between our own widgets also sends FocusOut: look again
        # once Tk has settled.
        self.root.after_idle(self._check_focus)

    def _check_focus(self) -> None:
        try:
            self.focused = self.root.focus_displayof() is not None
        except (KeyError, tk.TclError):  # focus in a Tk-internal window
            self.focused = True

    def _start_countdown(self, seconds: float) -> None:
        self._cancel_countdown()
        self._retry_at = time.monotonic() + seconds
        self._tick()

    def _tick(self) -> None:
        left = max(0, round(self._retry_at - time.monotonic()))
        self._set_status(f"Reconnecting in {left} s")
        self._countdown_id = self.root.after(1000, self._tick) if left else None

    def _cancel_countdown(self) -> None:
        if self._countdown_id is not None:
            self.root.after_cancel(self._countdown_id)
            self._countdown_id = None

    def zoom(self, step: int) -> None:
        """Larger or smaller text, remembered in the settings."""
        size = self.font.cget("size")
        bigger = [s for s in FONT_SIZES if s > size]
        smaller = [s for s in FONT_SIZES if s < size]
        new = (
            (bigger[0] if bigger else size)
            if step > 0
            else (smaller[-1] if smaller else size)
        )
        self.font.configure(size=new)
        self.view.set_font(self.font)
        self.settings.font_size = new

    # -- menus ---------------------------------------------------------------

    def save_transcript(self) -> None:
        path = filedialog.asksaveasfilename(
            parent=self.root,
            title="Save transcript",
            defaultextension=".txt",
            initialfile=f"chat-{time.strftime('%Y-%m-%d-%H%M')}.txt",
            filetypes=[("Text", "*.txt"), ("All files", "*")],
        )
        if path:
            self.write_transcript(Path(path))

    def write_transcript(self, path: Path) -> None:
        try:
            path.write_text(self.view.contents() + "\n", encoding="utf-8")
        except OSError as exc:
            self.add_lines(
                [notice_line(f"Could not save {path}: {exc.strerror}", "error")]
            )
        else:
            self.add_lines([notice_line(f"Transcript saved to {path}")])

    def show_wire(self) -> None:
        """View → Wire: every chunk sent and received, live (or bring it forward).

        While the panel is closed the client has no hook at all: it costs
        nothing.
        """
        if self._wire_panel is not None:
            self._wire_panel.lift()
            return
        self._wire_panel = WirePanel(self.root, on_close=self._wire_closed)
        if self.client is not None:
            self.client.wire = self._wire_panel.feed

    def _wire_closed(self) -> None:
        self._wire_panel = None
        if self.client is not None:
            self.client.wire = None

    def show_help(self) -> None:
        messagebox.showinfo("Commands", HELP_TEXT, parent=self.root)

    def show_about(self) -> None:
        messagebox.showinfo(
            f"About {APP_NAME}",
            f"{APP_NAME}: a chat for learning socket programming.\n"
            "Python standard library only: socket, threading, queue, tkinter.",
            parent=self.root,
        )

    # -- errors and closing ----------------------------------------------------

    def report_callback_exception(self, exc_type, exc, tb) -> None:
        """A bug in one of our callbacks: log it, say so, keep going."""
        log.error("error in a window callback", exc_info=(exc_type, exc, tb))
        self.view.add(
            [
                notice_line(
                    f"Something went wrong inside the program ({exc_type.__name__}: "
                    f"{exc}). The window still works; details are in the log.",
                    "error",
                )
            ]
        )

    def close(self) -> None:
        """Say bye, stop the network threads, remember the settings, go."""
        if self._closed:
            return
        self._closed = True
        if self._poll_id is not None:
            self.root.after_cancel(self._poll_id)
            self._poll_id = None
        self._cancel_countdown()
        client, self.client = self.client, None
        if client is not None:
            client.close("quit", timeout=0.6)
        self.settings.save(self.settings_path)
        self.root.destroy()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gui_client.py",
        description="The chat window. With no options, it asks where to connect.",
    )
    parser.add_argument("--host", help="server address: connect straight away")
    parser.add_argument("--port", type=int, help="server port: connect straight away")
    parser.add_argument("--name", help="your name: connect straight away")
    parser.add_argument("--log", metavar="FILE", help="append every line shown to FILE")
    return parser


#: How long a busy thread may keep the GIL when another wants it (the
#: default is 5 ms).  The window's thread must not wait behind the network
#: thread for long, so this process switches more often.
SWITCH_INTERVAL = 0.001


#: Said when Tk finds no screen to open the window on.
NO_SCREEN = (
    "The window needs a screen (a desktop, or ssh -X). Without one, "
    "the console client works: python -m chat"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.setswitchinterval(SWITCH_INTERVAL)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    settings = Settings.load()
    if not settings.name:
        settings.name = default_name()
    transcript = None
    if args.log:
        try:
            transcript = open(args.log, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            build_parser().error(f"cannot write {args.log}: {exc.strerror or exc}")
    try:
        root = tk.Tk(className=APP_NAME)
    except tk.TclError as exc:  # no screen: ssh without -X, WSL without X
        if transcript is not None:
            transcript.close()
        build_parser().exit(1, f"Cannot open the chat window: {exc}.\n{NO_SCREEN}\n")
    app = ChatApp(root, settings, transcript=transcript)
    direct = args.host is not None or args.port is not None or args.name is not None
    if direct:
        checked = check_connect_fields(
            args.host or settings.host,
            str(args.port or settings.port),
            args.name or settings.name,
        )
        if isinstance(checked, str):
            app.ask_connect(checked)
        else:
            app.connect(*checked)
    else:
        root.after_idle(app.ask_connect)
    try:
        root.mainloop()
    finally:
        if transcript is not None:
            transcript.close()
    return 0
