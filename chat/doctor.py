"""The connection doctor: why a connection failed, in plain words, and what to try.

Both clients call ``advise`` when they cannot get in: the window shows the
lines under the error, ``python -m chat`` prints them and exits non-zero.
Everything is worked out from what the client already knows (the failure's
word from ``chat.client``, or an error code from the server), with one
exception: when a server on *this* computer refuses a connection to one of
its network addresses, ``loopback_only`` tries 127.0.0.1 on the same port.
If that answers, the server was started on 127.0.0.1 only, the most common
classroom mistake.
"""

from __future__ import annotations

import ipaddress
import socket

ADVICE = {
    "refused": [
        "Nothing is listening there.",
        "Is the server running? Is the port right (the server prints it when it "
        "starts)? Is the address the server's?",
    ],
    "timeout": [
        "The server's computer did not answer at all.",
        "A firewall may be in the way, or you are on another network (Wi-Fi "
        "for guests?), or the address is wrong.",
    ],
    "unreachable": [
        "That address cannot be reached from this computer.",
        "Check that you are on the same network as the server, and the address.",
    ],
    "unknown_host": [
        "No computer has that name.",
        "Check the spelling, or use the address the server printed (like "
        "192.168.1.20).",
    ],
    "no_answer": [
        "The server stopped answering (it may have frozen, or the network "
        "dropped). The client keeps trying.",
    ],
    "no_welcome": [
        "Something answers on that port, but it is not a chat server, or it is "
        "stuck: it never said welcome.",
        "Check the port. A server started with --echo only echoes: start it "
        "without --echo to chat.",
    ],
    "loopback_only": [
        "The server listens on 127.0.0.1 only, so only its own computer can connect.",
        "Start it with: python server.py --host 0.0.0.0 (it then prints the "
        "addresses to type).",
    ],
    "bad_password": [
        "The room password is wrong.",
        "Ask the teacher for it, and type it in the Password field (or --password).",
    ],
    "tls_mismatch": [
        "The server does not speak TLS.",
        "Connect without TLS (untick Use TLS, or leave out --tls).",
    ],
    "tls_required": [
        "The server speaks TLS only.",
        "Connect with TLS (tick Use TLS, or add --tls).",
    ],
    "tls_untrusted": [
        "The server's certificate is not signed by the authority you trust.",
        "Check --cafile, or compare the fingerprint the server printed.",
    ],
    "tls_changed": [
        "The server's certificate is not the one expected (the fingerprint "
        "trusted before, or given with --fingerprint).",
        "Compare it with the fingerprint the server printed. If they match, "
        "the server has a new certificate: give it with --fingerprint, or, "
        'for the window, delete the server\'s line under "trusted" in its '
        "settings.json, and it asks again. If not, someone may be in the "
        "middle.",
    ],
}


def advise(failure: str | None, host: str, port: int) -> list[str]:
    """Lines for people: what went wrong, and what to try (maybe none)."""
    if failure == "refused" and loopback_only(host, port):
        failure = "loopback_only"
    return list(ADVICE.get(failure or "", []))


def loopback_only(host: str, port: int, timeout: float = 0.5) -> bool:
    """Is ``host`` this computer, reached on a network address, with a
    server on ``port`` that answers on 127.0.0.1 only?

    Connects to 127.0.0.1 and nowhere else; never sends a byte.
    """
    if not _is_this_computer(host):
        return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def _is_this_computer(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.ip_address(socket.gethostbyname(host))
        except (OSError, ValueError):
            return False
    if address in _LOOPBACK:
        return False  # 127.0.0.1 itself was refused: nothing listens at all
    # Another 127.x address (Debian names the computer 127.0.1.1) is this
    # computer too, but a server on 127.0.0.1 does not answer there.
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))  # binding works for our own addresses only
        return True
    except OSError:
        return False
