"""The server's console: command-line options, the log, and the operator's keyboard.

``python server.py`` lands in ``main()``.  The main thread owns everything:
it starts the accept loop (``serve_forever``) in a thread of its own, reads
the operator's commands in another, and waits for a reason to stop (Ctrl+C,
SIGTERM, ``/quit``).  Then it shuts the server down and joins both threads.

What the room does is logged (``chat.room``): one timestamped line per join,
leave, message or kick, flushed at once even into a pipe, with every control
character a peer sent shown escaped (``SafeFormatter``).
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence

from .bots import MAX_BOTS, Bots
from .discovery import DiscoveryResponder
from .protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_LINE_BYTES,
    MAX_UNTERMINATED_BYTES,
    escape_text,
)
from .room import DEFAULT_HISTORY
from .server import ChatServer, ServerConfig, format_address
from .store import MEMORY, StoreError, default_path
from .terminal import TOO_LONG, StdinReader, escape_unprintable
from .tls import file_fingerprint, server_context

log = logging.getLogger("chat.console")

OPERATOR_HELP = (
    "Operator commands:",
    "  /list                who is connected, and from where",
    "  /kick NAME [REASON]  remove someone from the room",
    "  /ban NAME|ADDRESS [REASON]  keep a person (name and address) out until restart",
    "  /unban NAME|ADDRESS  let them back in; /bans lists the banned addresses",
    "  /mute NAME           refuse someone's lines; /unmute NAME gives them back",
    "  /stats               one row per client: traffic, queue, last activity",
    "  /clear               delete the stored history (asks first)",
    "  /bots N              fill the room with N talkative demo clients (0: none)",
    "  /quit                stop the server",
    "  /help                this help",
    "Anything else you type is sent to everyone, from 'server'.",
)


def byte_count(text: str) -> int:
    """A size option's type: a whole number of bytes, 64 to 64 MiB."""
    value = int(text)
    if not 64 <= value <= 64 * 1024 * 1024:
        raise argparse.ArgumentTypeError(f"{text} is out of range (64 to 67108864)")
    return value


def seconds(text: str) -> float:
    """A duration option's type: seconds, 0 (meaning "off") to 86400 (a day)."""
    value = float(text)
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to 86400)")
    return value


def count(text: str) -> int:
    """A count option's type: 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def positive_count(text: str) -> int:
    """A count option that must be 1 or more: ``--max-clients`` (0 would turn
    everyone away), ``--flood-burst`` (0 would refuse every line)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range (1 or more)")
    return value


def rate(text: str) -> float:
    """``--flood-rate``'s type: lines per second, 0 (meaning "off") to 1000000."""
    value = float(text)
    if not 0 <= value <= 1_000_000:  # (nan is neither)
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to 1000000)")
    return value


#: The most lines --history may ask for.  A welcome is cut to a size in bytes
#: anyway; the bound keeps a typo from becoming a traceback (or the memory).
MAX_HISTORY = 100_000


def history_size(text: str) -> int:
    """``--history``'s type: 0 to ``MAX_HISTORY`` lines."""
    value = int(text)
    if not 0 <= value <= MAX_HISTORY:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to {MAX_HISTORY})")
    return value


def port_number(text: str) -> int:
    """``--port``'s type: 0 to 65535 (a typo gets a usage line, not a traceback)."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (use 0 to 65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="A chat server for a classroom: JSON clients, nc and telnet.",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default %(default)s; 0.0.0.0 for a whole class)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help="TCP port (default %(default)s; 0 picks a free one)",
    )
    parser.add_argument(
        "--echo",
        action="store_true",
        help="be an echo server: every line goes back to its sender",
    )
    parser.add_argument(
        "--max-clients",
        type=positive_count,
        default=ServerConfig.max_clients,
        metavar="N",
        help="most connections at once (default %(default)s)",
    )
    parser.add_argument(
        "--history",
        type=history_size,
        default=DEFAULT_HISTORY,
        metavar="N",
        help="messages replayed to a newcomer (default %(default)s)",
    )
    parser.add_argument(
        "--max-line-bytes",
        type=byte_count,
        default=MAX_LINE_BYTES,
        metavar="N",
        help="longest line accepted (default %(default)s)",
    )
    parser.add_argument(
        "--max-outbox-bytes",
        type=byte_count,
        default=ServerConfig.max_outbox_bytes,
        metavar="N",
        help="unsent bytes before a client is dropped as a slow consumer "
        "(default %(default)s)",
    )
    limits = parser.add_argument_group("limits (docs/limits.md)")
    limits.add_argument(
        "--max-per-address",
        type=count,
        default=ServerConfig.max_per_address,
        metavar="N",
        help="most connections from one address (default 0: no cap)",
    )
    limits.add_argument(
        "--flood-rate",
        type=rate,
        default=ServerConfig.flood_rate,
        metavar="PER_S",
        help="lines a client may send per second after its burst "
        "(default %(default)s; 0 turns flood control off)",
    )
    limits.add_argument(
        "--flood-burst",
        type=positive_count,
        default=ServerConfig.flood_burst,
        metavar="N",
        help="lines a client may send at once (default %(default)s)",
    )
    limits.add_argument(
        "--register-timeout",
        type=seconds,
        default=ServerConfig.register_timeout,
        metavar="S",
        help="seconds to give a name before being dropped "
        "(default %(default)s; 0: no limit)",
    )
    limits.add_argument(
        "--ping-interval",
        type=seconds,
        default=ServerConfig.ping_interval,
        metavar="S",
        help="silence before a client is pinged, and the time it has to answer "
        "(default %(default)s; 0: no pings)",
    )
    access = parser.add_argument_group("access")
    access.add_argument("--password", help="a password everyone must give to join")
    access.add_argument(
        "--tls-cert", metavar="PEM", help="serve TLS with this certificate"
    )
    access.add_argument(
        "--tls-key", metavar="PEM", help="the certificate's private key"
    )
    parser.add_argument(
        "--no-discovery",
        action="store_true",
        help="do not answer 'Find servers' (UDP probes on the same port)",
    )
    history = parser.add_argument_group("history")
    history.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="the history database (default: history.db in your data folder; "
        ":memory: keeps nothing after the server stops)",
    )
    history.add_argument(
        "--store-private",
        action="store_true",
        help="keep private lines in the history too (not by default)",
    )
    parser.add_argument(
        "--log", metavar="FILE", help="append the conversation to FILE as well"
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="also log connections and errors"
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="log only warnings (for benchmarks)"
    )
    return parser


def config_from(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        echo=args.echo,
        history=args.history,
        max_clients=args.max_clients,
        max_line_bytes=args.max_line_bytes,
        max_unterminated_bytes=max(MAX_UNTERMINATED_BYTES, args.max_line_bytes),
        max_outbox_bytes=args.max_outbox_bytes,
        max_per_address=args.max_per_address,
        flood_rate=args.flood_rate,
        flood_burst=args.flood_burst,
        register_timeout=args.register_timeout,
        ping_interval=args.ping_interval,
        password=args.password,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        # An echo server keeps no history: it must not lock (or write to)
        # the chat server's database, which may be running beside it.
        db=MEMORY if args.echo else args.db or str(default_path()),
        store_private=args.store_private,
    )


class SafeFormatter(logging.Formatter):
    """Writes every control character of a log message as a visible escape.

    A peer's text reaches the terminal through here, so an escape sequence,
    a BEL or a carriage return can never act on the operator's screen.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_text(record.message)
        return super().formatMessage(record)


def configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.INFO
    if args.quiet:
        level = logging.WARNING
    screen = logging.StreamHandler(sys.stdout)  # flushes after every record
    screen.setFormatter(SafeFormatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [screen]
    root.setLevel(level)
    if args.log:
        transcript = logging.FileHandler(args.log, encoding="utf-8")
        transcript.setFormatter(
            SafeFormatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
        transcript.setLevel(logging.INFO)
        logging.getLogger("chat.room").addHandler(transcript)
        if args.quiet:
            logging.getLogger("chat.room").setLevel(logging.INFO)


def raise_open_file_limit() -> None:
    """Let the server hold as many sockets as the system allows (no ulimit)."""
    try:
        import resource
    except ImportError:  # Windows has no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def local_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback, found without sending."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(info[4][0])
    except OSError:
        pass
    # Connecting a UDP socket only picks a route; no packet is sent.
    # 192.0.2.1 is TEST-NET-1, reserved for documentation.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            found.add(probe.getsockname()[0])
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127.") and a != "0.0.0.0")


def print_addresses(host: str, port: int, out: Callable[[str], None]) -> None:
    """Tell the operator exactly what students should type."""
    out(f"Server listening on {format_address((host, port))}")
    if host in ("0.0.0.0", "::", ""):
        addresses = local_addresses()
        if addresses:
            out("Students can connect to:")
            for address in addresses:
                out(f"    {address} port {port}    (nc {address} {port})")
        else:
            out("No network address found: only this computer can connect.")
    elif host.startswith("127.") or host in ("localhost", "::1"):
        out(
            "Only this computer can connect. For a class, start the server "
            "with --host 0.0.0.0"
        )


class Operator:
    """The person at the server's keyboard.  ``handle`` takes one typed line.

    ``start`` reads standard input in a thread of its own (``StdinReader``);
    ``stop`` ends it and joins it.  At the end of standard input (the server
    started in the background, say) the thread just ends and the server keeps
    serving.
    """

    def __init__(
        self,
        server: ChatServer,
        request_stop: Callable[[], None],
        out: Callable[[str], None] = print,
        *,
        tls_fingerprint: str | None = None,
    ) -> None:
        self.server = server
        self.request_stop = request_stop
        self.out = out
        self.tls_fingerprint = tls_fingerprint  # for the bots, on a TLS server
        self._keyboard = StdinReader(
            self.handle, name="operator console", on_too_long=lambda: self.out(TOO_LONG)
        )
        self._bots: Bots | None = None  # made by the first /bots

    def start(self) -> None:
        """Start reading the keyboard (thread ``operator console``, a daemon)."""
        self._keyboard.start()

    def stop(self) -> None:
        """Stop reading the keyboard, then send the bots (if any) away."""
        self._keyboard.stop()
        if self._bots is not None:
            self._bots.stop()

    def handle(self, line: str) -> None:
        """Carry out one line the operator typed (on the keyboard's thread).

        Never raises: a command that fails is logged and said to have failed.
        """
        text = line.strip()
        if not text:
            return
        if not text.startswith("/") or text.startswith("//"):
            if self.server.config.echo:
                self.out("This server only echoes (--echo): nobody hears the console.")
                return
            self.server.room.announce(text[1:] if text.startswith("//") else text)
            return
        command, _, rest = text.partition(" ")
        action = self._commands().get(command.lower())
        if action is None:
            self.out(f"Unknown command {escape_text(command)}; /help lists them.")
            return
        try:
            action(rest.strip())
        except Exception:  # our bug: say so, and keep reading (/quit must work)
            log.exception("the command %s failed", command)
            self.out(f"{escape_text(command)} failed: a bug (see the log).")

    def _commands(self) -> dict[str, Callable[[str], None]]:
        return {
            "/quit": self._quit,
            "/bots": self._bots_command,
            "/exit": self._quit,
            "/stop": self._quit,
            "/list": self._list,
            "/who": self._list,
            "/kick": self._kick,
            "/ban": self._ban,
            "/unban": self._unban,
            "/bans": self._bans,
            "/mute": self._mute,
            "/unmute": self._unmute,
            "/clear": self._clear,
            "/stats": self._stats,
            "/help": self._help,
        }

    def _quit(self, rest: str) -> None:
        self.out("Stopping the server...")
        self.request_stop()

    def _bots_command(self, rest: str) -> None:
        bots = self._bots
        if not rest:
            if bots is None or not bots.count:
                self.out("No bots. /bots N brings N of them into the room.")
            else:
                self.out(
                    f"{bots.count} bots, {bots.joined} in the room, "
                    f"{bots.sent} lines said."
                )
            if bots is not None and bots.problem:  # also why the last ones gave up
                self.out(f"Last problem: {bots.problem}")
            return
        try:
            n = int(rest)
            if not 0 <= n <= MAX_BOTS:
                raise ValueError
        except ValueError:
            self.out(f"Usage: /bots N, with N from 0 to {MAX_BOTS}.")
            return
        if self.server.config.echo:  # no welcome would ever come: they would wait
            self.out("This server only echoes (--echo): there is no room for bots.")
            return
        if bots is None:
            if n == 0:
                self.out("No bots to remove.")
                return
            host, port = self.server.server_address[:2]
            bots = self._bots = Bots(
                _loopback_for(host),
                port,
                password=self.server.config.password,
                fingerprint=self.tls_fingerprint,
            )
        before = bots.count
        if not bots.resize(n):
            self.out(f"Still on their way: {n} bots asked for; /bots shows progress.")
        else:
            self.out(_crowd_change(before, n))

    def _help(self, rest: str) -> None:
        for help_line in OPERATOR_HELP:
            self.out(help_line)

    def _kick(self, rest: str) -> None:
        name, _, reason = rest.partition(" ")
        if not name:
            self.out("Usage: /kick NAME [REASON]")
        elif not self.server.room.kick(name, reason.strip() or "by the operator"):
            self.out(f"Nobody here is called {escape_text(name)}.")

    def _ban(self, rest: str) -> None:
        target, _, reason = rest.partition(" ")
        if not target:
            self.out("Usage: /ban NAME|ADDRESS [REASON]")
            return
        self.out(escape_text(self.server.ban(target, reason.strip() or "banned")))

    def _unban(self, rest: str) -> None:
        if not rest:
            self.out("Usage: /unban NAME|ADDRESS")
        elif self.server.unban(rest):
            self.out(f"{escape_text(rest)} may come back.")
        else:
            self.out(f"{escape_text(rest)} was not banned.")

    def _bans(self, rest: str) -> None:
        banned = self.server.banned()
        self.out(f"Banned addresses: {', '.join(banned) if banned else 'none'}")

    def _mute(self, rest: str) -> None:
        if not rest:
            self.out("Usage: /mute NAME")
        elif self.server.room.mute(rest):
            self.out(f"{escape_text(rest)} is muted.")
        else:
            self.out(f"Nobody here is called {escape_text(rest)}.")

    def _stats(self, rest: str) -> None:
        rows = self.server.stats()
        self.out(
            f"{'name':<24} {'address':<21} {'connected':>9} {'in':>7} {'out':>8} "
            f"{'queued':>8} {'idle':>6}"
        )
        for row in rows:
            self.out(
                f"{escape_text(row.name) or '(no name)':<24} {row.address:<21} "
                f"{_duration(row.connected_s):>9} {row.lines_in:>7} {row.lines_out:>8} "
                f"{row.outbox_bytes:>8} {_duration(row.idle_s):>6}"
            )
        self.out(f"{len(rows)} connection(s).")

    def _clear(self, rest: str) -> None:
        if rest.lower() != "yes":
            self.out("This deletes every stored message (ids go on increasing).")
            self.out("Type /clear yes to do it.")
            return
        self.server.room.clear_history()
        if self.server.store.clear():
            self.out("The history is cleared.")
        else:
            self.out("The history could not be cleared in time: see the log.")

    def _unmute(self, rest: str) -> None:
        if not rest:
            self.out("Usage: /unmute NAME")
        elif self.server.room.unmute(rest):
            self.out(f"{escape_text(rest)} may speak again.")
        else:
            self.out(f"{escape_text(rest)} was not muted.")

    def _list(self, rest: str = "") -> None:
        members = self.server.room.members()
        others = len(self.server.connections()) - len(members)
        self.out(f"{len(members)} in the room:")
        for member in members:
            self.out(f"    {member.name:<24} {member.address}")
        if others > 0:
            self.out(f"({others} more connected, not in the room)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until Ctrl+C, SIGTERM or ``/quit``; the exit status."""
    args = build_parser().parse_args(argv)
    escape_unprintable()
    out = _print_now
    try:
        configure_logging(args)
    except OSError as exc:
        out(f"Cannot write the log file {args.log}: {exc.strerror or exc}")
        return 1
    raise_open_file_limit()
    tls_fingerprint = None
    if args.tls_key and not args.tls_cert:  # else it would run without TLS
        out("--tls-key needs --tls-cert: give the certificate too.")
        return 1
    if args.tls_cert:
        try:
            server_context(args.tls_cert, args.tls_key)
            tls_fingerprint = file_fingerprint(args.tls_cert)
        except (OSError, ValueError) as exc:
            out(f"Cannot use the TLS certificate {args.tls_cert}: {exc}")
            out("Give a PEM certificate with --tls-cert and its key with --tls-key.")
            return 1
    try:
        server = ChatServer(config_from(args))
    except StoreError as exc:
        out(str(exc))
        return 1
    except OSError as exc:
        out(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            out("Another program (another server?) uses that port: stop it, or")
            out("pick another port with --port.")
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if hasattr(signal, "SIGTTIN"):  # reading a terminal from the background
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)  # gives EIO, not a stop
    accept = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},  # how soon shutdown() is noticed
        name="accept loop",
    )
    operator = Operator(server, stop.set, out, tls_fingerprint=tls_fingerprint)
    with server:
        accept.start()
        host, port = server.server_address[:2]
        print_addresses(host, port, out)
        if args.tls_cert:
            out(f"TLS is on. Certificate fingerprint (SHA-256): {tls_fingerprint}")
            out("Clients that see this fingerprint are talking to this server.")
        if args.password:
            out("A password is needed to join.")
        store = server.store
        if args.echo:
            pass  # no room, so no history to speak of
        elif store.path == MEMORY:
            out("History: kept in memory only (--db :memory:).")
        else:
            kept = "private lines too" if args.store_private else "not private lines"
            out(f"History: {store.path} ({kept})")
        responder = None
        if not (args.no_discovery or args.echo):
            responder = start_discovery(server, out)
        if args.echo:
            out("Echo mode: every line goes back to its sender.")
        else:
            out("Type a line to talk to everyone, /help for commands.")
        operator.start()
        while not stop.wait(0.5):
            pass
        operator.stop()  # the bots leave with "quit" while the room runs
        server.shutdown()
        accept.join()
        if responder is not None:
            responder.stop()
    out("Server stopped.")
    return 0


def _loopback_for(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def start_discovery(
    server: ChatServer, out: Callable[[str], None]
) -> DiscoveryResponder | None:
    """Answer "Find servers" probes on UDP, on the same port number as TCP."""
    config = server.config

    def describe() -> dict:
        return {
            "name": socket.gethostname(),
            "port": server.port,
            "users": len(server.room.names()),
            "password": config.password is not None,
            "tls": server.tls_context is not None,
        }

    try:
        responder = DiscoveryResponder(config.host, server.port, describe)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = f"UDP port {server.port} is taken"
        else:  # an address it cannot listen on, say
            why = f"it cannot listen on UDP port {server.port}"
        out(f"Discovery is off: {why} ({exc.strerror or exc}).")
        return None
    responder.start()
    return responder


def _crowd_change(before: int, after: int) -> str:
    """What ``/bots N`` did, for a crowd of ``before`` bots made ``after``."""
    if after == 0:
        return "The bots have left." if before else "No bots to remove."
    if after == before:
        return f"The crowd is {after} already."
    if before == 0:
        return f"{after} bots are coming in; /bots 0 sends them away."
    if after > before:
        more = after - before
        coming = "1 more bot is" if more == 1 else f"{more} more bots are"
        return f"{coming} coming in; the crowd is now {after}."
    gone = before - after
    return f"{gone} bot{'s' if gone > 1 else ''} sent away; the crowd is now {after}."


def _duration(seconds: float) -> str:
    """A short human duration: 42s, 7m03s, 2h05m."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _print_now(text: str) -> None:
    print(text, flush=True)
