"""The floor of a fan-out in Python: ``python -m chat.bench floor``.

How long must one CPython thread take to hand the same line to 100 loopback
TCP connections, with nothing else in the way: no protocol, no room, no
locks, no other thread?  Here one thread does exactly that, ``--rate``
times a second, with non-blocking ``send`` calls, while another process
reads all 100 connections (as the load generator would).  It prints the
time one fan-out took (p50, p99, max) and the CPU time of one ``send``.

That is the least any Python server can spend between the first and the
last receiver of one message, on this machine.  Shape 2 of the comparison
(100 clients, 1,000 messages/s) asks for a p99 of 2 ms from sending to
*every* receipt; what this floor takes of those 2 ms is not left for
anything else.  Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import selectors
import socket
import sys
import time

LINE = (
    b'{"type":"message","id":123456,"from":"b17",'
    b'"text":"XB1.17.1234.123456789012345# .....","ts":1763830000.123}\n'
)


def _drain(port: int, connections: int, seconds: float) -> None:
    """The readers: connect, then read everything until told or timed out."""
    socks = [
        socket.create_connection(("127.0.0.1", port), timeout=10)
        for _ in range(connections)
    ]
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    buffer = bytearray(65536)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for key, _ in selector.select(0.1):
                try:
                    if not key.fileobj.recv_into(buffer):
                        return  # the sender is done
                except OSError:
                    return
    finally:
        selector.close()
        for sock in socks:
            sock.close()


def measure(connections: int, messages: int, rate: float) -> dict:
    """Fan ``messages`` lines out to ``connections`` readers at ``rate``/s."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=connections)
    port = listener.getsockname()[1]
    seconds = messages / rate + 30
    context = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    reader = context.Process(
        target=_drain, args=(port, connections, seconds), name="floor readers"
    )
    reader.start()
    socks = []
    try:
        listener.settimeout(10)
        for _ in range(connections):
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(sock)
        flags = getattr(socket, "MSG_DONTWAIT", 0)
        took = []
        cpu = 0.0  # this thread's CPU time in the fan-outs alone
        start = time.perf_counter()
        for index in range(messages):
            due = start + index / rate
            while (now := time.perf_counter()) < due:  # a busy wait: no sleep's
                pass  # wake-up delay in the figures
            before = time.thread_time()
            for sock in socks:
                sock.send(LINE, flags)  # the kernel takes 100 lines easily
            took.append(time.perf_counter() - now)
            cpu += time.thread_time() - before
    finally:
        for sock in socks:
            sock.close()
        listener.close()
        reader.join(10)
        if reader.is_alive():
            reader.kill()
            reader.join(5)
    took.sort()
    return {
        "connections": connections,
        "messages": messages,
        "rate": rate,
        "fan_out_p50_ms": round(took[len(took) // 2] * 1000, 3),
        "fan_out_p99_ms": round(took[int(len(took) * 0.99)] * 1000, 3),
        "fan_out_max_ms": round(took[-1] * 1000, 3),
        "send_us": round(cpu / (messages * connections) * 1e6, 2),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat.bench floor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("-c", "--connections", type=int, default=100)
    parser.add_argument("-m", "--messages", type=int, default=2000)
    parser.add_argument("-r", "--rate", type=float, default=1000.0)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.messages <= 0 or args.connections <= 0:
        parser.error("connections, messages and rate must be positive")
    result = measure(args.connections, args.messages, args.rate)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"one thread, {result['connections']} loopback connections, "
            f"{result['messages']:,} lines at {result['rate']:,.0f}/s: "
            f"fan-out p50 {result['fan_out_p50_ms']} ms, "
            f"p99 {result['fan_out_p99_ms']} ms, max {result['fan_out_max_ms']} ms; "
            f"{result['send_us']} us of CPU a send"
        )
    return 0
