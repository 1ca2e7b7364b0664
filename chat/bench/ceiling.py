"""The generator's own ceiling: ``python -m chat.bench ceiling``.

How many deliveries per second can ``chat.bench.load`` take in, when the
server costs nothing?  The *firehose* server here speaks just enough of each
wire mode to pass the roll call; when the first message arrives it answers
every client with all the messages of the run at once, built in advance and
sent as one big buffer, so its cost per delivery is close to nil.  Whatever
rate the generator reports against it is the generator's limit: a server
measured well below it was measured, not the generator.

(Latencies are meaningless here: the firehose stamps the messages itself.)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import selectors
import socket
import sys
import time
from dataclasses import asdict, replace

from .load import Config, add_shape_options, report_line, run, token_text


class Firehose:
    """A server that delivers a whole run to everyone in one go.  One thread."""

    def __init__(self, cfg: Config, listener: socket.socket) -> None:
        self.cfg = cfg
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.clients: dict[socket.socket, memoryview | None] = {}
        self.blast = b""

    def serve(self, stop_at: float) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        while time.monotonic() < stop_at:
            for key, mask in self.selector.select(0.5):
                if key.fileobj is self.listener:
                    self.accept()
                elif mask & selectors.EVENT_READ:
                    self.read(key.fileobj)
                elif mask & selectors.EVENT_WRITE:
                    self.write(key.fileobj)

    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        self.clients[sock] = None
        self.selector.register(sock, selectors.EVENT_READ)

    def read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(262144)
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(sock)
            self.clients.pop(sock, None)
            sock.close()
            return
        if b"RC" in data:  # the roll call: pass it on to everyone
            line = data[data.index(b"RC") : data.index(b"RC") + 24].split(b"x")[0]
            for other in list(self.clients):
                self._send_now(other, b"<roll> " + line + b"x\n")
        if b"XB" in data and not self.blast:
            self.blast = self.build()
            for other in list(self.clients):
                self.clients[other] = memoryview(self.blast)
                self.selector.modify(
                    other, selectors.EVENT_READ | selectors.EVENT_WRITE
                )

    def write(self, sock: socket.socket) -> None:
        view = self.clients.get(sock)
        if view is None:
            return
        try:
            sent = sock.send(view)
        except BlockingIOError:
            return
        except OSError:
            sent = len(view)
        view = view[sent:]
        self.clients[sock] = view if view else None
        if not view:
            self.selector.modify(sock, selectors.EVENT_READ)

    def _send_now(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.send(data)
        except OSError:
            pass

    def build(self) -> bytes:
        """Every message of the run, sender by sender in turn, stamped now."""
        cfg = self.cfg
        lines = []
        for seq in range(cfg.messages):
            for sender in range(cfg.senders):
                lines.append(token_text(cfg.run_id, sender, seq, cfg.size) + b"\n")
        return b"".join(lines)


def _serve(cfg: Config, listener: socket.socket, seconds: float) -> None:
    Firehose(cfg, listener).serve(time.monotonic() + seconds)


def measure(cfg: Config) -> dict:
    """Run ``cfg`` against a firehose in a process of its own."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    run_id = int.from_bytes(os.urandom(3), "big") or 1  # the firehose needs it too
    cfg = replace(cfg, host="127.0.0.1", port=port, mode="ncat", run_id=run_id)
    context = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    server = context.Process(
        target=_serve, args=(cfg, listener, cfg.timeout + 10), name="firehose"
    )
    server.start()
    listener.close()  # the firehose has its own copy
    try:
        return asdict(run(cfg))
    finally:
        server.kill()
        server.join(5)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat.bench ceiling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_shape_options(parser)
    parser.set_defaults(messages=2000)
    args = parser.parse_args(argv)
    shape = dict(
        clients=args.clients,
        senders=args.senders,
        messages=args.messages,
        size=args.size,
        timeout=args.timeout,
    )
    results = {}
    for procs in sorted({1, args.procs, 2}):
        report = measure(Config(procs=procs, **shape))
        results[procs] = report
        if not args.json:
            print(f"generator x{procs} process(es) vs the firehose:")
            from .load import Report

            print("  " + report_line(Report(**report)))
    if args.json:
        print(json.dumps(results))
    return 0
