"""The protocol as people type and read it: slash commands in, readable lines out.

Sans-I/O, like ``protocol``.  Three users share it:

* the server, for plain clients (``nc``, ``telnet``) that send text lines and
  get text lines back;
* the console client (``python -m chat``), which prints events as lines;
* the GUI, whose entry box understands the same commands.

``parse_input`` turns one typed line into a client message (or into lines to
show locally, for ``/help`` and mistakes); ``render`` turns one server message
into the lines a person reads.  Everything a peer wrote passes through
``protocol.escape_text`` on the way out, so a message can never start a new
line, move the cursor or colour a terminal.
"""

from __future__ import annotations

import time

from .protocol import (
    MAX_NAME_CHARS,
    Bye,
    ClientMessage,
    Error,
    Joined,
    Left,
    Message,
    Notice,
    Ping,
    Pong,
    Private,
    PrivateMessage,
    Rename,
    Renamed,
    Say,
    ServerMessage,
    Users,
    Welcome,
    Who,
    escape_text,
)

PROMPT = "Welcome to the chat! Type your name and press Enter:"

COMMANDS = (
    ("/nick NAME", "change your name"),
    ("/msg NAME TEXT", "send TEXT to NAME only"),
    ("/me TEXT", "say what you are doing, as in '* alice waves'"),
    ("/who", "list who is here"),
    ("/help", "show this help"),
    ("/quit [REASON]", "leave (typing exit does the same)"),
)

HELP_LINES = (
    "Commands:",
    *(f"  {usage:<16} {what}" for usage, what in COMMANDS),
    "Anything else you type is sent to everyone. Start a line with // to send a /.",
)

#: What ``parse_input`` returns for a line that asks for something local.
Local = tuple[ServerMessage, ...]


def parse_input(line: str) -> ClientMessage | Local | None:
    """One line a person typed -> what to send, what to show, or nothing.

    Returns a client message to send, a tuple of ``Notice``/``Error`` messages
    to show only to that person (help, usage mistakes), or ``None`` for a blank
    line.  The word ``exit`` on its own leaves, as in the classic tutorials.
    """
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if not stripped:
        return None
    if stripped.lower() == "exit":
        return Bye("quit")
    if not stripped.startswith("/"):
        return Say(text)
    if stripped.startswith("//"):
        return Say(stripped[1:])
    command, _, rest = stripped.partition(" ")
    command = command.lower()
    rest = rest.strip()
    if command == "/me":
        return Say(rest, me=True) if rest else _usage("/me TEXT")
    if command == "/msg":
        to, _, message = rest.partition(" ")
        if not to or not message.strip():
            return _usage("/msg NAME TEXT")
        return Private(to, message.strip())
    if command == "/nick":
        if not rest or " " in rest:
            return _usage("/nick NAME")
        return Rename(rest)
    if command == "/who":
        return Who()
    if command in ("/quit", "/exit", "/bye"):
        return Bye(rest or "quit")
    if command == "/help":
        return tuple(Notice(line) for line in HELP_LINES)
    shown = escape_text(command[: MAX_NAME_CHARS + 1])
    return (Error("unknown_command", f"Unknown command {shown}; /help lists them."),)


def erase(text: str) -> str:
    """``text`` with each Backspace (^H) or Delete (^?) taking back the
    character before it, as a terminal does while you type.

    Clients that send each key as it is pressed (Windows telnet, PuTTY
    without local line editing) send these keys too.
    """
    if "\b" not in text and "\x7f" not in text:
        return text
    kept: list[str] = []
    for char in text:
        if char in "\b\x7f":
            if kept:
                kept.pop()
        else:
            kept.append(char)
    return "".join(kept)


# Telnet's commands (RFC 854): what a telnet client may send besides text.
IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
TIMING_MARK = 6  # RFC 860: telnet's Ctrl+C asks for it, and shows nothing until


class TelnetFilter:
    """Takes telnet commands out of a plain client's byte stream.

    ``feed(data)`` returns the data without them, and the bytes to answer at
    once: every option the client offers or asks for is refused (``WONT``,
    ``DONT``), except the timing mark, which is granted.  Telnet's Ctrl+C
    sends ``IAC IP IAC DO TIMING-MARK`` and then throws away all it receives
    until the mark is answered, so the answer must not wait for a newline.
    A command may be cut between two reads: its first bytes wait (at most
    two).  A subnegotiation (``IAC SB ... IAC SE``) is dropped whole, however
    long.  A 255 that starts no command is data (never UTF-8, so a line
    holding it is refused as such).  Sans-I/O: the caller sends the answer.
    """

    def __init__(self) -> None:
        self._held = b""  # the start of a command cut off by the end of a read
        self._in_subnegotiation = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        data, self._held = self._held + data, b""
        if not self._in_subnegotiation and IAC not in data:
            return data, b""
        kept, answer = bytearray(), bytearray()
        i, n = 0, len(data)
        while i < n:
            byte = data[i]
            if byte != IAC:
                if not self._in_subnegotiation:
                    kept.append(byte)
                i += 1
                continue
            need = 3 if i + 1 < n and data[i + 1] in (DO, DONT, WILL, WONT) else 2
            if i + need > n:  # cut by the end of this read: wait for the rest
                self._held = data[i:]
                break
            command = data[i + 1]
            if self._in_subnegotiation:
                self._in_subnegotiation = command != SE  # IAC IAC: data in it
            elif command < SE:  # not a command: a byte of data
                kept.append(IAC)
                i += 1
                continue
            elif command == IAC:  # an escaped 255: a byte of data
                kept.append(IAC)
            elif command == SB:
                self._in_subnegotiation = True
            elif command == DO:
                option = data[i + 2]
                answer += bytes((IAC, WILL if option == TIMING_MARK else WONT, option))
            elif command == WILL:
                answer += bytes((IAC, DONT, data[i + 2]))
            # DONT, WONT: nothing to answer; IP (Ctrl+C), AYT, NOP...: nothing to do
            i += need
        return bytes(kept), bytes(answer)


def _usage(usage: str) -> Local:
    return (Error("usage", f"Usage: {usage}"),)


def clock(ts: float) -> str:
    """``HH:MM`` in local time, for the history lines of a welcome."""
    return time.strftime("%H:%M", time.localtime(ts))


def render(message: ServerMessage) -> list[str]:
    """The lines (without ``\\n``) a person should read for one server message.

    Pings, pongs and anything unknown give no lines.  Names are escaped as
    well as text: the server checks the names it hands out, but a client
    renders whatever its server sent.
    """
    if isinstance(message, (Message, PrivateMessage)):
        return [_said(message)]
    if isinstance(message, Joined):
        return [f"* {escape_text(message.name)} joined"]
    if isinstance(message, Left):
        name, reason = escape_text(message.name), escape_text(message.reason)
        return [f"* {name} left ({reason})"]
    if isinstance(message, Renamed):
        old, new = escape_text(message.old), escape_text(message.new)
        return [f"* {old} is now known as {new}"]
    if isinstance(message, Users):
        return [_users_line(message.users)]
    if isinstance(message, Notice):
        return [f"* {escape_text(message.text)}"]
    if isinstance(message, Error):
        return [f"! {escape_text(message.text)}"]
    if isinstance(message, Welcome):
        # A history holds the newcomer's own private lines too, where kept.
        lines = [f"[{clock(m.ts)}] {_said(m)}" for m in message.history]
        if len(lines) == 1:
            lines.insert(0, "* The last message:")
        elif lines:
            lines.insert(0, f"* The last {len(lines)} messages:")
        name = escape_text(message.name)
        lines.append(f"* Welcome, {name}! {_users_line(message.users)[2:]}")
        lines.append("* Type /help for commands.")
        return lines
    if isinstance(message, (Ping, Pong)):
        return []
    return []


def render_bytes(message: ServerMessage) -> bytes:
    """``render`` as the UTF-8 bytes a plain client is sent (maybe empty)."""
    lines = render(message)
    if not lines:
        return b""
    return ("\n".join(lines) + "\n").encode("utf-8")


def _said(message: Message | PrivateMessage) -> str:
    sender, text = escape_text(message.sender), escape_text(message.text)
    if isinstance(message, PrivateMessage):
        return f"[private] {sender} -> {escape_text(message.to)}: {text}"
    if message.me:
        return f"* {sender} {text}"
    return f"{sender}: {text}"


def _users_line(users: tuple[str, ...]) -> str:
    count = len(users)
    people = "1 user here" if count == 1 else f"{count} users here"
    return f"* {people}: {', '.join(escape_text(name) for name in users)}"
