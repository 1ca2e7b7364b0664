"""The connect dialog, and the check of what was typed into it.

``check_connect_fields`` is plain logic (tested without a screen, as in
idlelib's ``Query.entry_ok``); ``ConnectDialog`` is the window around it.
The dialog does not connect: it hands checked values to ``on_connect`` and
closes, so the main window never waits on the network.
"""

from __future__ import annotations

import threading
import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from ..discovery import Found, broadcast_addresses, discover
from ..protocol import DEFAULT_PORT, ProtocolError, check_name, escape_text

FIND_TIMEOUT = 1.0
BAD_PORT = "The port is a number from 1 to 65535."
NOBODY_ANSWERED = (
    "No server answered. Is it running, started with --host 0.0.0.0, and not "
    "with --no-discovery? Or type its address."
)


class ServerFinder(threading.Thread):
    """Sends the discovery probe to each target and collects the answers.

    A thread of its own, as ``discover`` waits a second for answers (for
    each target); the dialog starts it, polls ``is_alive()`` with
    ``after()``, then reads ``found`` (or ``failure``) and joins it.
    ``stop()`` (any thread) makes it end after the target it is asking.
    """

    def __init__(self, targets: list[str], port: int) -> None:
        super().__init__(name="finding servers", daemon=True)
        self.targets = targets
        self.port = port
        self.found: list[Found] = []
        self.failure = ""
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        seen = set()
        for target in self.targets:
            if self._stopping.is_set():
                return
            try:
                answers = discover(target, self.port, FIND_TIMEOUT)
            except OSError as exc:
                self.failure = f"Cannot search the network: {exc.strerror or exc}."
                continue
            for server in answers:
                if (server.address, server.port) not in seen:
                    seen.add((server.address, server.port))
                    self.found.append(server)


def check_connect_fields(host: str, port: str, name: str) -> tuple[str, int, str] | str:
    """(host, port, name) ready to use, or a sentence saying what is wrong."""
    host = host.strip()
    if not host:
        return "Type the server's address (127.0.0.1 for this computer)."
    if any(c.isspace() for c in host):
        return "An address has no spaces."
    try:  # what the network's name lookup will need
        host.encode("idna")
    except UnicodeError:
        return "That address is not valid: check its dots."
    try:
        number = int(port.strip())
    except ValueError:
        return "The port is a number, such as 12345."
    if not 1 <= number <= 65535:
        return BAD_PORT
    try:
        name = check_name(name.strip())
    except ProtocolError as exc:
        return f"That name won't do: {exc.text}."
    return host, number, name


def suggest_other_name(name: str, taken: set[str] | None = None) -> str:
    """``alice`` -> ``alice2``, ``alice2`` -> ``alice3``: a name likely free."""
    stem = name.rstrip("0123456789") or name
    digits = name[len(stem) :]
    number = int(digits) + 1 if digits else 2
    taken_keys = {t.casefold() for t in taken or set()}
    while True:
        candidate = f"{stem[: 24 - len(str(number))]}{number}"
        if candidate.casefold() not in taken_keys:
            return candidate
        number += 1


class ConnectDialog(tk.Toplevel):
    """Host, port, name, password and TLS, with Connect and Cancel.

    ``on_connect(host, port, name, password, tls)`` is called with checked
    values (``password`` is ``None`` when left empty); the dialog then closes
    itself.  ``message`` is shown above the fields (used to say that a name
    was taken, or that a connection failed); ``focus`` names the field to
    start in.
    """

    def __init__(
        self,
        master: tk.Misc,
        host: str,
        port: int,
        name: str,
        on_connect: Callable[[str, int, str, str | None, bool], None],
        message: str = "",
        focus: str = "",
        tls: bool = False,
        find_targets: Callable[[], list[str]] = broadcast_addresses,
    ) -> None:
        super().__init__(master)
        self._find_targets = find_targets
        self._finder: ServerFinder | None = None
        self._found: list[Found] = []
        self._poll_id: str | None = None
        self.title("Connect to a chat server")
        self.transient(master)  # type: ignore[call-overload]
        self.resizable(False, False)
        self._on_connect = on_connect
        body = ttk.Frame(self, padding=14)
        body.grid(sticky="nsew")
        self.message = ttk.Label(
            body, text=message, wraplength=320, foreground="#b00020"
        )
        self.message.grid(row=0, column=0, columnspan=2, sticky="w", pady=(0, 8))
        self.host = self._field(body, 1, "Server address:", host)
        self.port = self._field(body, 2, "Port:", str(port))
        self.name = self._field(body, 3, "Your name:", name)
        self.password = self._field(body, 4, "Password (if any):", "")
        self.password.configure(show="•")
        self.tls = tk.BooleanVar(self, value=tls)
        ttk.Checkbutton(
            body, text="Use TLS (the server must offer it)", variable=self.tls
        ).grid(row=5, column=0, columnspan=2, sticky="w", pady=(6, 0))
        self.found = tk.Listbox(body, height=0, activestyle="none", width=44)
        self.found.bind("<<ListboxSelect>>", self._picked)
        self.found_label = ttk.Label(body, text="", foreground="#555555")
        self.found_label.grid(row=7, column=0, columnspan=2, sticky="w", pady=(8, 0))
        buttons = ttk.Frame(body)
        buttons.grid(row=6, column=0, columnspan=2, sticky="ew", pady=(12, 0))
        self.find_button = ttk.Button(
            buttons, text="Find servers", command=self.find_servers
        )
        self.find_button.pack(side="left")
        self.connect_button = ttk.Button(
            buttons, text="Connect", default="active", command=self.submit
        )
        self.cancel_button = ttk.Button(buttons, text="Cancel", command=self.destroy)
        self.cancel_button.pack(side="right")
        self.connect_button.pack(side="right", padx=(0, 6))
        self.bind("<Return>", lambda e: self.submit())
        self.bind("<KP_Enter>", lambda e: self.submit())
        self.bind("<Escape>", lambda e: self.destroy())
        fields = {"name": self.name, "password": self.password, "host": self.host}
        target = fields.get(focus) or (self.host if name else self.name)
        target.focus_set()
        target.select_range(0, "end")

    def _field(self, body: ttk.Frame, row: int, label: str, value: str) -> ttk.Entry:
        ttk.Label(body, text=label).grid(row=row, column=0, sticky="w", pady=3)
        entry = ttk.Entry(body, width=28)
        entry.insert(0, value)
        entry.grid(row=row, column=1, sticky="ew", padx=(8, 0), pady=3)
        return entry

    # -- Find servers ---------------------------------------------------------

    def find_servers(self) -> None:
        """Ask the local network who serves a chat (on the port typed here)."""
        if self._finder is not None and self._finder.is_alive():
            return
        try:
            port = int(self.port.get())
        except ValueError:
            port = DEFAULT_PORT
        if not 1 <= port <= 65535:
            self.found_label.configure(text=BAD_PORT)
            self.bell()
            return
        self._finder = ServerFinder(self._find_targets(), port)
        self._finder.start()
        self.found_label.configure(text="Looking for servers…")
        self._poll_id = self.after(50, self._collect)

    def _collect(self) -> None:
        self._poll_id = None
        finder = self._finder
        if finder is None:
            return
        if finder.is_alive():
            self._poll_id = self.after(50, self._collect)
            return
        finder.join()
        self._found = finder.found
        self.found.delete(0, "end")
        for server in self._found:
            extras = ", password" if server.password else ""
            extras += ", TLS" if server.tls else ""
            people = "1 user" if server.users == 1 else f"{server.users} users"
            self.found.insert(
                "end",
                f"{escape_text(server.name)} — {server.address}:{server.port} "
                f"({people}{extras})",
            )
        if self._found:
            self.found.configure(height=min(len(self._found), 6))
            self.found.grid(row=8, column=0, columnspan=2, sticky="ew")
            self.found_label.configure(text="Pick a server to fill in its address:")
        else:
            self.found_label.configure(text=finder.failure or NOBODY_ANSWERED)

    def _picked(self, event: tk.Event) -> None:
        selection = self.found.curselection()
        if not selection:
            return
        server = self._found[selection[0]]
        self.host.delete(0, "end")
        self.host.insert(0, server.address)
        self.port.delete(0, "end")
        self.port.insert(0, str(server.port))
        self.tls.set(server.tls)
        self.name.focus_set()

    def destroy(self) -> None:
        if self._poll_id is not None:
            self.after_cancel(self._poll_id)
            self._poll_id = None
        if self._finder is not None:  # it ends after the target it is asking
            self._finder.stop()
            self._finder.join(FIND_TIMEOUT + 0.5)  # at most a second, and rare
        super().destroy()

    def submit(self) -> None:
        checked = check_connect_fields(
            self.host.get(), self.port.get(), self.name.get()
        )
        if isinstance(checked, str):
            self.message.configure(text=checked)
            self.bell()
            return
        password = self.password.get() or None
        tls = self.tls.get()
        self.destroy()
        self._on_connect(*checked, password, tls)
