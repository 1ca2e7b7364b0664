"""The connect dialog, and the check of what was typed into it.

``check_connect_fields`` is plain logic (tested without a screen, as in
idlelib's ``Query.entry_ok``); ``ConnectDialog`` is the window around it.
The dialog does not connect: it hands checked values to ``on_connect`` and
closes, so the main window never waits on the network.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from ..protocol import ProtocolError, check_name


def check_connect_fields(host: str, port: str, name: str) -> tuple[str, int, str] | str:
    """(host, port, name) ready to use, or a sentence saying what is wrong."""
    host = host.strip()
    if not host:
        return "Type the server's address (127.0.0.1 for this computer)."
    if any(c.isspace() for c in host):
        return "An address has no spaces."
    try:
        number = int(port.strip())
    except ValueError:
        return "The port is a number, such as 12345."
    if not 1 <= number <= 65535:
        return "The port is a number from 1 to 65535."
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
    ) -> None:
        super().__init__(master)
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
        buttons = ttk.Frame(body)
        buttons.grid(row=6, column=0, columnspan=2, sticky="e", pady=(12, 0))
        self.connect_button = ttk.Button(
            buttons, text="Connect", default="active", command=self.submit
        )
        self.cancel_button = ttk.Button(buttons, text="Cancel", command=self.destroy)
        self.connect_button.pack(side="left", padx=(0, 6))
        self.cancel_button.pack(side="left")
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
