"""The console client: ``python -m chat``.

    python -m chat                          # join 127.0.0.1:12345 as your user name
    python -m chat --host 10.0.0.5 --name ada
    python -m chat --send "Hello, server!"  # the tutorials' echo client
    python -m chat --wire                   # also show every chunk sent and received

Incoming messages are printed while you type, as in the classic two-terminal
chat.  Your own lines are not printed again (your /me and private lines
are).  Type ``/help`` for commands, ``exit`` (or Ctrl+D) to leave.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence

from . import plain
from .client import (
    ChatClient,
    Closed,
    Connected,
    Connecting,
    Disconnected,
    Untrusted,
    Wire,
    default_name,
)
from .doctor import advise
from .protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Bye,
    Error,
    LineDecoder,
    LineTooLong,
    Message,
    PrivateMessage,
    Welcome,
    escape_text,
)
from .terminal import TOO_LONG, StdinReader, escape_unprintable
from .timeline import Timeline
from .tls import client_context, fingerprint, same_fingerprint
from .wire import Chunk, WireLog, format_record

#: ``--send``: the socket's timeout (the connect, TLS, each wait for the answer).
SEND_TIMEOUT = 5.0
#: At the end of input, how long to wait for a welcome (so that lines typed
#: before it can go out) before saying goodbye.
CONNECT_WAIT = 10.0
#: At the end of input, how long the lines typed may take to go out (and the
#: goodbye after them): a busy machine or a slow network needs more than the
#: second ``close`` gives by default.  Closing returns as soon as all are sent.
CLOSE_WAIT = 5.0
#: The exit status when Ctrl+C cuts the program short (128 + SIGINT), as
#: shells expect.  Ctrl+C in the chat is a way to leave, not this.
INTERRUPTED = 130


def port_number(text: str) -> int:
    """An ``argparse`` type: a TCP port to connect to, 1 to 65535.

    ``int`` alone lets 99999 through, and the name lookup quietly takes it
    modulo 65536: the client would knock on port 34463 and blame it.
    """
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (use 1 to 65535)")
    return port


def utf8_text(text: str) -> str:
    """An ``argparse`` type: text that can go on the wire, which is UTF-8.

    An argument whose bytes are not UTF-8 (a terminal set to Latin-1) comes
    into Python with lone surrogates, which no UTF-8 line can carry.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            "not UTF-8 text (is the terminal set to UTF-8?)"
        ) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chat", description="Chat from a terminal."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="default %(default)s")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help="default %(default)s"
    )
    parser.add_argument(
        "--name", type=utf8_text, default=None, help="default: your user name"
    )
    parser.add_argument(
        "--password", type=utf8_text, default=None, help="the room password, if any"
    )
    parser.add_argument("--tls", action="store_true", help="talk to the server in TLS")
    parser.add_argument(
        "--cafile", metavar="PEM", help="trust server certificates signed by this (TLS)"
    )
    parser.add_argument(
        "--fingerprint",
        metavar="SHA256",
        help="trust the server certificate with this fingerprint (TLS); the "
        "server prints it when it starts",
    )
    parser.add_argument(
        "--send",
        metavar="TEXT",
        help="send one line, print the first line that comes back, and exit "
        "(the echo client: try it against server.py --echo)",
    )
    parser.add_argument(
        "--wire",
        action="store_true",
        help="also print every chunk sent (→) and received (←): its text, with "
        "invisible characters shown, and its bytes in hex",
    )
    return parser


class Printer:
    """Writes whole lines to stdout from any thread, never interleaved.

    If the output goes away (``python -m chat | head -1``, a closed
    terminal), ``gone`` is set and later lines are dropped: nobody can read
    them, and a thread must not die of it.
    """

    def __init__(self, stream=None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()
        self.gone = threading.Event()

    def __call__(self, *lines: str) -> None:
        if not lines or self.gone.is_set():
            return
        text = "".join(f"{line}\n" for line in lines)
        with self._lock:
            try:
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):  # EPIPE, EIO; ValueError: closed
                self.gone.set()


def send_once(
    host: str,
    port: int,
    text: str,
    show: Printer,
    *,
    tls: bool = False,
    cafile: str | None = None,
    pinned: str | None = None,
) -> int:
    """The echo client: one line out, one line back.

    ``text`` goes out as the bytes that were typed, even if they are not
    UTF-8 (``surrogateescape``): an echo server does not care.  The reply is
    printed with control characters escaped: it comes from the network.
    With ``tls``, the server is trusted by ``cafile`` or by the ``pinned``
    fingerprint, as in the chat.  Returns the exit status: 0 once a line
    came back.
    """
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(
                socket.create_connection((host, port), timeout=SEND_TIMEOUT)
            )
            if tls:
                sock = stack.enter_context(_tls_wrap(sock, host, cafile))
                seen = fingerprint(sock.getpeercert(binary_form=True))
                if not cafile and not (pinned and same_fingerprint(pinned, seen)):
                    known = "not the one expected" if pinned else "not known"
                    show(
                        f"The server's certificate is {known}: its fingerprint "
                        f"is {seen}. If the server printed the same, give "
                        f"--fingerprint {seen}"
                    )
                    return 1
            sock.sendall(text.encode("utf-8", "surrogateescape") + b"\n")
            decoder = LineDecoder()
            while True:
                data = sock.recv(4096)
                if not data:
                    show("The server closed the connection without an answer.")
                    return 1
                for line in decoder.feed(data):
                    if isinstance(line, LineTooLong):
                        # Reading on would end in a ProtocolError: not a
                        # line server (or not an answer a person could read).
                        show(
                            f"The server's answer is over {line.limit:,} bytes "
                            "long; it is not shown."
                        )
                        return 1
                    reply = line.decode("utf-8", "replace").rstrip("\r")
                    show(f"Received from server: {escape_text(reply)}")
                    return 0
    except ssl.SSLCertVerificationError as exc:
        show(f"The server's certificate is not trusted: {exc.verify_message}.")
        return 1
    except ssl.SSLError as exc:
        show(f"No TLS with {host}:{port} ({exc.reason or exc}): leave out --tls?")
        return 1
    except OSError as exc:
        show(f"Could not talk to {host}:{port}: {exc.strerror or exc}")
        return 1


def _tls_wrap(sock: socket.socket, host: str, cafile: str | None) -> ssl.SSLSocket:
    """``sock`` after a TLS handshake; checked against ``cafile`` if given
    (else the caller compares the fingerprint)."""
    hostname = host if cafile else None
    return client_context(cafile).wrap_socket(sock, server_hostname=hostname)


class ConsoleView:
    """What to print for each client event, remembering what was shown.

    After a reconnect, what was missed comes under a divider, and a line is
    never printed twice (``Timeline``); a failure to connect is explained
    (``chat.doctor``).
    """

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.timeline = Timeline()

    def lines(self, event) -> list[str]:
        """The lines to print for one event (maybe none).  Main thread only."""
        client = self.client
        if isinstance(event, Connecting):
            if event.attempt == 1:
                return [f"* Connecting to {event.host}:{event.port}..."]
            return []
        if isinstance(event, (Connected, Closed)):
            return []
        if isinstance(event, Disconnected):
            return self._disconnected(event)
        if isinstance(event, Welcome):
            missed, coming_back = self.timeline.welcome(event.room, event.history)
            lines = plain.render(dataclasses.replace(event, history=missed))
            if coming_back:
                shown = [line for line in lines if not line.startswith("* ")]
                return ["---- while you were away ----", *shown, "* Back in the room."]
            return lines
        if isinstance(event, (Message, PrivateMessage)):
            if not self.timeline.fresh(event):
                return []  # shown already (a replay, or a resend's echo)
            mine = event.sender == client.name
            if isinstance(event, Message) and mine and not event.me:
                return []  # you typed it: it is on your screen already
        if isinstance(event, Untrusted):
            return [
                f"* The server's certificate has the fingerprint {event.fingerprint}",
                "* If that is the fingerprint the server printed when it started, "
                "connect again with:",
                f"*     --fingerprint {event.fingerprint}",
            ]
        lines = plain.render(event)
        if isinstance(event, Error) and event.code == "bad_password":
            lines += [f"  {tip}" for tip in advise("bad_password", "", 0)]
        return lines

    def _disconnected(self, event: Disconnected) -> list[str]:
        # The reason may quote the server (an error, a kick, a last notice):
        # another program's server could send terminal escapes.
        reason = escape_text(event.reason).rstrip(".")
        if event.retry_in is not None:
            return [f"* Disconnected: {reason}. Trying again in {event.retry_in} s."]
        tips = advise(event.failure, self.client.host, self.client.port)
        return [f"* Disconnected: {reason}.", *(f"  {tip}" for tip in tips)]


def queue_chunks(events: queue.Queue) -> Wire:
    """A ``ChatClient.wire`` hook that puts each chunk on ``events`` as a ``Chunk``.

    The chunks go on the client's own event queue, so the main loop prints
    them in order with the events they carry, and the client's threads never
    wait for the terminal.
    """

    def wire(direction: str, data: bytes) -> None:
        events.put(Chunk(direction, data, time.time()))

    return wire


def chat(args: argparse.Namespace, show: Printer) -> int:
    """The chat in the terminal, until the client stops (the input ended,
    ``exit``, or it gave up), Ctrl+C, or the output went away.

    Blocks the calling (main) thread, which prints the client's events; a
    ``StdinReader`` thread reads what is typed.  Returns the exit status: 0
    if the server welcomed us at least once, else 1.
    """
    # A first connection that fails is explained and ends the program (exit
    # status 1); a connection lost later is made again.
    events: queue.Queue = queue.Queue()
    client = ChatClient(
        args.host,
        args.port,
        args.name or default_name(),
        password=args.password,
        tls=args.tls,
        cafile=args.cafile,
        fingerprint=args.fingerprint,
        retry_first=False,
        events=events,
        wire=queue_chunks(events) if args.wire else None,
    )
    wire_log = WireLog()
    view = ConsoleView(client)

    def on_line(text: str) -> None:
        parsed = plain.parse_input(text)
        if parsed is None:
            return
        if isinstance(parsed, tuple):
            for message in parsed:
                show(*plain.render(message))
        elif isinstance(parsed, Bye):
            # A pipe is read at once, before the welcome: the lines above
            # the exit are still queued then, and must go first.
            if client.unconfirmed():
                client.wait_until_joined(CONNECT_WAIT)
            client.close(parsed.reason or "quit", timeout=CLOSE_WAIT)
        else:
            client.send(parsed)

    def on_end() -> None:
        # End of input (Ctrl+D, or the end of a pipe): let what was typed go
        # out before saying goodbye.
        client.wait_until_joined(CONNECT_WAIT)
        client.close(timeout=CLOSE_WAIT)

    keyboard = StdinReader(
        on_line, on_end=on_end, name="keyboard", on_too_long=lambda: show(TOO_LONG)
    )
    welcomed = False
    client.start()
    keyboard.start()
    try:
        while not show.gone.is_set():  # nobody to show anything to: leave
            try:
                event = client.events.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(event, Chunk):
                show(*format_record(wire_log.feed(*event)))
                continue
            welcomed = welcomed or isinstance(event, Welcome)
            show(*view.lines(event))
            if isinstance(event, Closed):
                break
    except KeyboardInterrupt:
        show("* Leaving.")
    finally:
        client.close()
        keyboard.stop()
        unsure = len(client.unconfirmed())
        if unsure:  # say so, rather than let them vanish without a word
            lines = "1 line" if unsure == 1 else f"{unsure} lines"
            show(f"* {lines} you typed may not have reached the room (no echo came).")
    return 0 if welcomed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console client; returns the exit status.

    Ctrl+C in the chat leaves it, as ``exit`` does; Ctrl+C while the echo
    client waits (or a second one while leaving) gives ``INTERRUPTED``.
    ``argparse`` exits the program (status 2) on a bad argument.
    """
    args = build_parser().parse_args(argv)
    escape_unprintable()
    show = Printer()
    try:
        if args.send is not None:
            return send_once(
                args.host,
                args.port,
                args.send,
                show,
                tls=args.tls or bool(args.cafile or args.fingerprint),
                cafile=args.cafile,
                pinned=args.fingerprint,
            )
        return chat(args, show)
    except KeyboardInterrupt:  # waiting for the echo, or a second Ctrl+C
        return INTERRUPTED
    finally:
        if show.gone.is_set():
            _drop_stdout()


def _drop_stdout() -> None:
    """Point stdout at the null device, so that Python's own flush at exit
    does not complain a second time that the reader has gone."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
