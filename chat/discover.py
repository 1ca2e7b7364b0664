"""Find chat servers from a terminal: ``python -m chat.discover``.

    python -m chat.discover                      # ask each local network
    python -m chat.discover --target 10.0.0.5    # ask one computer
    python -m chat.discover --port 4000 --json   # a server on another port

Sends one discovery probe (``chat.discovery``) to ``--target``, or else to
the broadcast address of each network this computer is on (as the window's
"Find servers" does), and prints every server that answers within
``--timeout`` seconds (for each network asked), as a table or, with
``--json``, as one JSON list.  Exit status: 0 if a server answered, 1 if none
did, 2 if no probe could be sent at all, 130 after Ctrl+C.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict

from .discovery import Found, broadcast_addresses, discover
from .protocol import DEFAULT_PORT, escape_text

HINTS = (
    "Is the server running, and started with --host 0.0.0.0 so that the "
    "network can reach it?",
    "Was it started with --no-discovery? Then ask its operator for the address.",
    "Could a firewall (here or on the server) be blocking UDP port {port}?",
)


def port_number(text: str) -> int:
    """``--port``'s type: 1 to 65535 (a typo gets a usage line, not a traceback)."""
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (use 1 to 65535)")
    return port


def wait_seconds(text: str) -> float:
    """``--timeout``'s type: more than 0, at most 60 seconds."""
    value = float(text)
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to 60)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chat.discover",
        description="Find the chat servers on the local network.",
    )
    parser.add_argument(
        "--target",
        metavar="ADDRESS",
        help="where to send the probe: a broadcast address, or one computer "
        "(default: the broadcast address of each network this computer is on)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help="the servers' port (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=wait_seconds,
        default=1.0,
        metavar="S",
        help="seconds to wait for answers (default %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON list, for programs"
    )
    return parser


def format_table(servers: Sequence[Found]) -> list[str]:
    """The servers as the lines of a table, names made safe for a terminal."""
    rows = [("NAME", "ADDRESS", "PORT", "USERS", "PASSWORD", "TLS")]
    for server in servers:
        rows.append(
            (
                escape_text(server.name),
                escape_text(server.address),
                str(server.port),
                str(server.users),
                "yes" if server.password else "no",
                "yes" if server.tls else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 3}  # numbers line up on the right
    return [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ask(
    targets: Sequence[str], port: int, timeout: float
) -> tuple[list[Found], list[str]]:
    """Probe each target in turn: the servers that answered, each once, and a
    sentence for each target that could not be probed.

    Blocks for ``timeout`` seconds per target.
    """
    found: dict[tuple[str, int], Found] = {}
    failures = []
    for target in targets:
        try:
            answers = discover(target, port, timeout)
        except OSError as exc:
            where = host_port(target, port)
            failures.append(f"Cannot send a probe to {where}: {exc.strerror or exc}")
            continue
        for server in answers:
            found.setdefault((server.address, server.port), server)
    return list(found.values()), failures


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = build_parser().parse_args(argv)
    if args.target is not None:
        targets = [args.target]
        where = host_port(args.target, args.port)
    else:
        # Not 255.255.255.255: Linux sends that by the default route only,
        # and a lab network without internet has none ("Network is
        # unreachable"); a computer on two networks would miss one.
        targets = broadcast_addresses()
        where = f"the local network ({', '.join(targets)}), port {args.port}"
    try:
        servers, failures = ask(targets, args.port, args.timeout)
    except KeyboardInterrupt:
        return 130  # Ctrl+C: the user's choice, not a crash
    for failure in failures:
        print(failure, file=sys.stderr)
    if len(failures) == len(targets):
        return 2
    if args.json:
        out(json.dumps([asdict(server) for server in servers], ensure_ascii=False))
        return 0 if servers else 1
    if not servers:
        out(f"No chat server answered within {args.timeout:g} s on {where}.")
        for hint in HINTS:
            out("  " + hint.format(port=args.port))
        return 1
    for line in format_table(servers):
        out(line)
    first = servers[0]
    tls = " --tls" if first.tls else ""
    out("")
    out(f"To join: python -m chat --host {first.address} --port {first.port}{tls}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
