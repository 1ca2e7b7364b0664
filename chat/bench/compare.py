"""Our server against ``ncat --chat``: ``python -m chat.bench compare``.

Starts both on free ports of 127.0.0.1 (``server.py --flood-rate 0 -q``,
``ncat --chat -m 2000``), then runs each shape against each, alternating, in
one run, and prints a table with the ratios.  In shapes 1 and 2 the *relay*
runs too (``chat.bench.relay``, the least a chat server can be in Python):
what it reaches is about the best a Python server can do here at that
moment, so a figure of ours is read against it.  The shapes:

1. 100 clients, 10 senders, flat out (throughput; JSON and plain for us);
2. 100 clients, 100 senders, 1,000 messages/s in all (latency);
3. 5,000 clients, 50 senders, 500 messages/s (scale; ncat cannot take part:
   it aborts near 1,020 connections);
4. 100 clients of which one never reads, 10 senders flat out (fairness: the
   others' rate against the same run with nobody stalled, run alternately,
   and whether the stalled one is dropped).

Each server's CPU time and memory are read from ``/proc`` (Linux), so the
table also shows the server's cost per delivery.  ``--repeat N`` runs every
pair N times and reports medians: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .load import Config, Report, run

ROOT = Path(__file__).resolve().parents[2]


#: Shape 4 is also run with nobody stalled: what the others get without one.
UNSTALLED = "none-stalled"


@dataclass
class Shape:
    number: int
    title: str
    config: Config


def _shape(number: int, title: str, **config) -> Shape:
    return Shape(number, title, Config(host="127.0.0.1", port=0, **config))


SHAPES = {
    1: _shape(1, "100 clients, 10 senders, flat out", messages=2000),
    2: _shape(
        2, "100 clients, 100 senders, 1,000 msg/s", senders=100, messages=20, rate=1000
    ),
    3: _shape(
        3,
        "5,000 clients, 50 senders, 500 msg/s",
        clients=5000,
        senders=50,
        messages=10,
        rate=500,
    ),
    4: _shape(4, "100 clients, 1 never reads, flat out", messages=4000, stalled=1),
}


@dataclass
class Measured:
    """One run against one server: what the generator saw, what it cost."""

    server: str
    mode: str
    report: Report
    server_cpu_s: float
    server_rss_base_mb: float
    server_rss_peak_mb: float

    @property
    def ns_per_delivery(self) -> float | None:
        if not self.report.delivered:
            return None
        return self.server_cpu_s * 1e9 / self.report.delivered


class Server:
    """A server process on a free port; its CPU and memory from /proc."""

    def __init__(self, name: str, command: list[str], port: int) -> None:
        self.name = name
        self.port = port
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not _listening(port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start on port {port}")
            time.sleep(0.05)
        time.sleep(0.2)  # the probe connection is gone
        self.idle_threads = self.threads()

    def threads(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            match = re.search(r"Threads:\s+(\d+)", status.read())
        return int(match.group(1)) if match else 0

    def settle(self, idle_threads: int, timeout: float = 60.0) -> None:
        """Wait until the last run's connections are all gone (thread count)."""
        deadline = time.monotonic() + timeout
        while self.threads() > idle_threads and time.monotonic() < deadline:
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read())
        return int(match.group(1)) / 1024 if match else 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ours(extra: list[str], folder: str) -> Server:
    """server.py as a teacher runs it, history database on (in ``folder``)."""
    port = free_port()
    command = [
        sys.executable, "server.py", "--port", str(port), "-q",
        "--flood-rate", "0", "--max-clients", "6000",
        "--db", os.path.join(folder, "history.db"), *extra,
    ]  # fmt: skip
    return Server("ours", command, port)


def start_relay() -> Server:
    port = free_port()
    command = [sys.executable, "-m", "chat.bench", "relay", "--port", str(port)]
    return Server("relay", command, port)


def start_ncat() -> Server | None:
    ncat = shutil.which("ncat")
    if ncat is None:
        return None
    port = free_port()
    command = [ncat, "--chat", "-l", "127.0.0.1", str(port), "-m", "2000"]
    return Server("ncat", command, port)


def measure(server: Server, config: Config, mode: str) -> Measured:
    """One run, with the server's CPU and its memory sampled meanwhile."""
    wire = "json" if mode == UNSTALLED else mode
    base = server.rss_mb()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], server.rss_mb())

    sampler = threading.Thread(target=sample, name="rss sampler")
    sampler.start()
    before = server.cpu_seconds()
    try:
        report = run(replace(config, port=server.port, mode=wire))
    finally:
        done.set()
        sampler.join()
    return Measured(
        server.name, mode, report, server.cpu_seconds() - before, base, peak[0]
    )


def run_shape(
    shape: Shape,
    ours: Server,
    ncat: Server | None,
    repeat: int,
    procs: int,
    relay: Server | None = None,
) -> list[Measured]:
    """Every server of this shape, ``repeat`` times, alternating who goes first."""
    config = replace(shape.config, procs=procs)
    plan: list[tuple[Server, str, Config]] = [(ours, "json", config)]
    if shape.number == 1:
        plan.append((ours, "plain", config))
    if relay is not None and shape.number in (1, 2):
        plan.append((relay, "plain", config))
    if shape.number == 4:  # the target's baseline: the same run, nobody stalled
        plan.append((ours, UNSTALLED, replace(config, stalled=0)))
    if ncat is not None and shape.number != 3:
        plan.append((ncat, "ncat", config))
    results = []
    for round_ in range(repeat):
        order = plan if round_ % 2 == 0 else list(reversed(plan))
        for server, mode, run_config in order:
            ours.settle(ours.idle_threads)  # the last run's leavers are gone
            result = measure(server, run_config, mode)
            results.append(result)
            _progress(shape, result)
    return results


def _progress(shape: Shape, result: Measured) -> None:
    r = result.report
    what = f"shape {shape.number} {result.server}/{result.mode}"
    if r.error:
        print(f"  {what}: error {r.error}", file=sys.stderr, flush=True)
        return
    print(
        f"  {what}: {r.deliveries_per_s:,.0f}/s lost {r.lost} malformed "
        f"{r.malformed} p99 {r.p99_ms} ms cpu {result.server_cpu_s:.2f} s",
        file=sys.stderr,
        flush=True,
    )


def median_of(results: list[Measured], server: str, mode: str) -> dict | None:
    chosen = [
        m
        for m in results
        if (m.server, m.mode) == (server, mode) and not m.report.error
    ]
    if not chosen:
        return None

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    return {
        "server": server,
        "mode": mode,
        "runs": len(chosen),
        "deliveries_per_s": med(m.report.deliveries_per_s for m in chosen),
        "lost": med(m.report.lost for m in chosen),
        "malformed": med(m.report.malformed for m in chosen),
        "p50_ms": med(m.report.p50_ms for m in chosen),
        "p99_ms": med(m.report.p99_ms for m in chosen),
        "arrival_p99_ms": med(m.report.arrival_p99_ms for m in chosen),
        "max_ms": med(m.report.max_ms for m in chosen),
        "stalled_dropped": med(m.report.stalled_dropped for m in chosen),
        "server_cpu_s": med(m.server_cpu_s for m in chosen),
        "ns_per_delivery": med(m.ns_per_delivery for m in chosen),
        "rss_base_mb": med(m.server_rss_base_mb for m in chosen),
        "rss_peak_mb": med(m.server_rss_peak_mb for m in chosen),
        "expected": chosen[0].report.expected,
    }


def verdicts(summary: dict) -> list[tuple[str, bool, str]]:
    """The issue's targets, each (what, met, figures)."""
    out = []
    s1, s2, s3, s4 = (summary.get(n, {}) for n in (1, 2, 3, 4))
    ncat1, relay1 = s1.get("ncat/ncat"), s1.get("relay/plain")
    for mode in ("json", "plain"):
        ours = s1.get(f"ours/{mode}")
        if ours and ncat1:
            ok = (
                ours["deliveries_per_s"] >= ncat1["deliveries_per_s"]
                and ours["lost"] == 0
                and ours["malformed"] == 0
            )
            ratio = ours["deliveries_per_s"] / ncat1["deliveries_per_s"]
            note = f"x{ratio:.2f}"
            if relay1:
                mine = relay1["deliveries_per_s"] / ncat1["deliveries_per_s"]
                note += f" (the relay: x{mine:.2f})"
            out.append((f"shape 1 {mode}: >= ncat, no loss", ok, note))
    ours2, ncat2 = s2.get("ours/json"), s2.get("ncat/ncat")
    relay2 = s2.get("relay/plain")
    if ours2:
        ok = ours2["p99_ms"] is not None and ours2["p99_ms"] <= 2.0
        if ncat2 and ncat2["p99_ms"] is not None:
            ok = ok and ours2["p99_ms"] <= ncat2["p99_ms"]
        note = f"p99 {_num(ours2['p99_ms'], 0)} ms" + (
            f" vs ncat {_num(ncat2['p99_ms'], 0)} ms" if ncat2 else ""
        )
        if ours2["arrival_p99_ms"] is not None:  # the server's part alone
            note += f" (at arrival: ours {_num(ours2['arrival_p99_ms'], 0)} ms" + (
                f", ncat {_num(ncat2['arrival_p99_ms'], 0)} ms)" if ncat2 else ")"
            )
        if relay2 and relay2["p99_ms"] is not None:
            note += f"; the relay {_num(relay2['p99_ms'], 0)} ms"
        out.append(("shape 2: p99 <= 2 ms and <= ncat", ok, note))
    ours3 = s3.get("ours/json")
    if ours3:
        per_client = (ours3["rss_peak_mb"] - ours3["rss_base_mb"]) * 1024 / 5000
        ok = ours3["lost"] == 0 and per_client <= 100
        note = f"lost {ours3['lost']}, {per_client:.0f} KiB per client"
        out.append(("shape 3: all delivered, <= 100 KiB/client", ok, note))
    ours4, base = s4.get("ours/json"), s4.get(f"ours/{UNSTALLED}")
    if ours4 and base:
        ratio = ours4["deliveries_per_s"] / base["deliveries_per_s"]
        ok = ratio >= 0.9 and ours4["stalled_dropped"] == 1
        note = (
            f"x{ratio:.2f} of the same run with nobody stalled, "
            f"stalled dropped: {ours4['stalled_dropped']}"
        )
        out.append(("shape 4: others >= 90 %, stalled dropped", ok, note))
    return out


def print_table(summary: dict, shapes: list[Shape]) -> None:
    print(
        f"{'shape':<44} {'server':<17} {'deliveries/s':>13} {'lost':>6} "
        f"{'bad':>5} {'p50 ms':>8} {'p99 ms':>8} {'arr. p99':>8} {'cpu s':>6} "
        f"{'ns/dlv':>7} {'RSS MB':>7}"
    )
    for shape in shapes:
        for key, row in summary.get(shape.number, {}).items():
            print(
                f"{shape.number}. {shape.title:<41} {key:<17} "
                f"{row['deliveries_per_s'] or 0:>13,.0f} {row['lost']:>6.0f} "
                f"{row['malformed']:>5.0f} {_num(row['p50_ms'], 8)} "
                f"{_num(row['p99_ms'], 8)} {_num(row['arrival_p99_ms'], 8)} "
                f"{row['server_cpu_s']:>6.2f} "
                f"{_num(row['ns_per_delivery'], 7, 0)} {row['rss_peak_mb']:>7.1f}"
            )


def _num(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat.bench compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--shapes", default="1,2,3,4", help="which (default all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each pair")
    parser.add_argument("--procs", type=int, default=2, help="generator processes")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="an extra option for our server.py (repeatable)",
    )
    args = parser.parse_args(argv)
    shapes = [SHAPES[int(n)] for n in args.shapes.split(",")]
    folder = tempfile.mkdtemp(prefix="chat-bench-")
    ours = start_ours(args.server_arg, folder)
    relay = start_relay()
    ncat = start_ncat()
    if ncat is None:
        print("ncat is not installed (Debian: apt install ncat): ours only.")
    summary: dict[int, dict] = {}
    try:
        for shape in shapes:
            print(f"shape {shape.number}: {shape.title}", file=sys.stderr, flush=True)
            results = run_shape(shape, ours, ncat, args.repeat, args.procs, relay)
            kinds = (
                ("ours", "json"),
                ("ours", "plain"),
                ("ours", UNSTALLED),
                ("ncat", "ncat"),
                ("relay", "plain"),
            )
            summary[shape.number] = {
                f"{server}/{mode}": row
                for server, mode in kinds
                if (row := median_of(results, server, mode)) is not None
            }
    finally:
        ours.stop()
        relay.stop()
        if ncat is not None:
            ncat.stop()
        shutil.rmtree(folder, ignore_errors=True)
    checks = verdicts(summary)
    if args.json:
        print(json.dumps({"shapes": summary, "targets": checks}, default=str))
    else:
        print_table(summary, shapes)
        print()
        for what, ok, figures in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {what:<44} {figures}")
    return 0 if all(ok for _, ok, _ in checks) else 1
