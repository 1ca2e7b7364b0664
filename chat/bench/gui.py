"""``python -m chat.bench gui``: the chat window under a flood, and its launch time.

    xvfb-run -a python3 -m chat.bench gui                 # headless (Xvfb)
    python3 -m chat.bench gui --messages 20000 --repeat 3
    python3 -m chat.bench gui --json                      # one JSON object
    python3 -m chat.bench gui --profile 15                # where the loop's time goes

A benchmark, not a test: it prints figures, and exits 0 when every target is
met, 1 when one is missed, 2 when it cannot run (no X display, no xdotool).

What it does, all on 127.0.0.1:

1. Starts ``server.py --port 0 -q --flood-rate 0`` as a child process.
2. **Flood.**  Opens the window *in this process* (a ``tk.Tk`` root and a
   ``ChatApp`` with a transcript file, connected as ``watcher``), so that its
   event loop and its memory are measured directly.  A *separate* process (so
   its CPU and GIL do not count against the window) joins as the JSON client
   ``flood``, and on a signal sends ``--messages`` lines (``flood r1 00042``...)
   as fast as the socket takes them, reading its own copies as they come back.
   The window runs its ``mainloop`` until the transcript shows the last line.
   Every flood line must be in the transcript exactly once, in order.
3. **Longest stall.**  During the flood an ``after()`` heartbeat ticks every
   ``--heartbeat-ms``; a tick that comes late shows how long the event loop was
   busy (the window could not repaint or answer the mouse).  Reported: the
   longest lateness and the 99th percentile of the gaps between ticks (with
   fewer than 100 ticks, as in a one-second flood, that is the largest gap).
   Target: the longest stall at most 100 ms.
4. **Memory.**  The process's resident memory (``VmRSS``) before the flood
   (connected, settled) and after it (drawn, ``gc.collect()``).  Target: at
   most 20 MB of growth (the view keeps a capped scrollback).  The first
   window pays one-time costs (allocator arenas, Tk caches) that later windows
   in the same process reuse: with ``--repeat`` the first run is the honest
   figure, and the per-run lines show it.
5. **Launch.**  Starts ``gui_client.py --host 127.0.0.1 --port P --name N``
   ``--launches`` times (its settings in a temporary ``XDG_CONFIG_HOME``) and
   times each from ``Popen`` until a new visible ``ClassChat`` window exists
   (``xdotool search --onlyvisible``, polled with a deadline).  Target: the
   median at most 0.5 s; the slowest is shown too.

``--repeat N`` runs the flood N times, each on a fresh window, and judges the
medians (delivery must be perfect in every run).  ``--profile N`` runs the
first flood's event loop under ``cProfile`` and prints its top N functions:
the profiler slows the loop, so the stall figures of that run are inflated.

Processes started here (the server, the flood senders, the launched windows)
are stopped by their PID, in ``finally`` blocks.  Needs Linux for ``VmRSS``
(elsewhere memory shows as n/a and is not judged).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import multiprocessing
import os
import pstats
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from ..gui.app import APP_NAME, SWITCH_INTERVAL, ChatApp
from ..gui.settings import Settings
from ..protocol import Bye, Error, Hello, Say, Welcome, decode_server, encode

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
WATCHER = "watcher"  # the measured window's name
FLOODER = "flood"  # the sending client's name

TARGET_STALL_MS = 100.0
TARGET_RSS_GROWTH_MB = 20.0
TARGET_LAUNCH_S = 0.5

SETTLE_S = 0.5  # idle event loop before each memory figure
CHECK_MS = 20  # how often the window looks for the last line in the transcript
STARTUP_TIMEOUT = 10.0  # server start, connecting, the sender joining
LAUNCH_TIMEOUT = 10.0  # a launched window that is not mapped by then failed
SEND_CHUNK = 256 * 1024


# -- processes ---------------------------------------------------------------


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to this one PID; wait for it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(3.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(3.0)


#: A server that floods freely and keeps no history file.
QUIET_MEMORY = ("--flood-rate", "0", "--db", ":memory:")


@contextmanager
def chat_server(workdir: Path) -> Iterator[int]:
    """A ``server.py`` of our own for the block; yields its port."""
    output = workdir / "server.out"
    with open(output, "w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            [sys.executable, "server.py", "--port", "0", "-q", *QUIET_MEMORY],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield _listening_port(process, output)
    finally:
        stop_process(process)


def _listening_port(process: subprocess.Popen, output: Path) -> int:
    """The port from the server's first line ("Server listening on H:P")."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = output.read_text(encoding="utf-8", errors="replace")
        match = re.search(r"Server listening on 127\.0\.0\.1:(\d+)", text)
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            raise BenchError(f"server.py exited at start: {text.strip()}")
        time.sleep(0.02)
    raise BenchError("server.py did not say where it listens")


class BenchError(Exception):
    """The benchmark cannot run here (exit status 2)."""


# -- the flood sender (runs in its own process) -------------------------------


def flood_text(tag: str, number: int) -> str:
    return f"{FLOODER} {tag} {number:05d}"


def send_flood(
    port: int, count: int, tag: str, conn: Connection, timeout: float
) -> None:
    """The sending process: join, say "ready", wait for "go", flood, say bye.

    Reports on ``conn`` a dict: ``ok``, and ``error`` or the ``time.monotonic``
    moments (the clock is shared by all processes on Linux) when it started,
    when everything was handed to the kernel and when its last line came back.
    """
    try:
        with socket.create_connection((HOST, port), timeout=STARTUP_TIMEOUT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _join(sock)
            conn.send({"ok": True, "ready": True})
            if not conn.poll(timeout) or conn.recv() != "go":
                raise TimeoutError("no signal to start")
            payload = b"".join(encode(Say(flood_text(tag, n))) for n in range(count))
            last = f'"{flood_text(tag, count - 1)}"'.encode()
            started = time.monotonic()
            all_sent, echoed = _pour(sock, payload, last, started + timeout)
            _leave(sock)
        conn.send({"ok": True, "started": started, "sent": all_sent, "echo": echoed})
    except Exception as exc:  # this process's error fence: report, never hide
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _join(sock: socket.socket) -> None:
    """Say hello and read until the welcome (blocking, at most STARTUP_TIMEOUT)."""
    sock.sendall(encode(Hello(FLOODER)))
    buffer = b""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        data = sock.recv(65536)  # the socket's timeout bounds each wait
        if not data:
            raise ConnectionError("the server closed the connection")
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            if not line.startswith(b"{"):  # the prompt for people, if we were slow
                continue
            message = decode_server(line)
            if isinstance(message, Welcome):
                return
            if isinstance(message, Error):
                raise ConnectionError(f"refused: {message.text}")
    raise TimeoutError("no welcome")


def _pour(
    sock: socket.socket, payload: bytes, last: bytes, deadline: float
) -> tuple[float, float]:
    """Send ``payload`` flat out while reading, until ``last`` comes back.

    Returns the moments when all was sent and when ``last`` was seen.
    """
    sock.setblocking(False)
    view = memoryview(payload)
    sent, tail, all_sent = 0, b"", 0.0
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while time.monotonic() < deadline:
            for _, mask in selector.select(0.1):
                if mask & selectors.EVENT_WRITE:
                    try:
                        sent += sock.send(view[sent : sent + SEND_CHUNK])
                    except BlockingIOError:
                        pass
                    if sent == len(payload):
                        all_sent = time.monotonic()
                        selector.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    data = sock.recv(SEND_CHUNK)
                    if not data:
                        raise ConnectionError("the server closed the connection")
                    window = tail + data
                    if last in window and all_sent:
                        return all_sent, time.monotonic()
                    tail = window[-len(last) :]
    raise TimeoutError("the flood's last line did not come back in time")


def _leave(sock: socket.socket) -> None:
    """Say bye and read to the end, so the name is free for the next run."""
    sock.setblocking(True)
    sock.settimeout(STARTUP_TIMEOUT)
    sock.sendall(encode(Bye("done")))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and sock.recv(SEND_CHUNK):
        pass


# -- measuring the window ----------------------------------------------------


def rss_bytes() -> int | None:
    """This process's resident memory, from ``/proc/self/status`` (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Heartbeat:
    """An ``after()`` tick every ``interval_ms``; records the gaps between ticks.

    Main thread only.  A gap longer than the interval is time the event loop
    spent on something else: no repaint, no answer to the mouse.
    """

    def __init__(self, root: tk.Tk, interval_ms: int) -> None:
        self.root = root
        self.interval_ms = interval_ms
        self.gaps: list[float] = []  # seconds
        self._last = 0.0
        self._after_id: str | None = None

    def start(self) -> None:
        self._last = time.perf_counter()
        self._after_id = self.root.after(self.interval_ms, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now
        self._after_id = self.root.after(self.interval_ms, self._tick)

    def stop(self) -> None:
        if self._after_id is not None:
            self.root.after_cancel(self._after_id)
            self._after_id = None


class TranscriptWatch:
    """Quits the main loop when the transcript's tail holds ``marker``, or at
    ``deadline``.  Reads only the last 4 KiB, so looking costs nothing."""

    def __init__(self, root: tk.Tk, path: Path, marker: str, deadline: float):
        self.root = root
        self.path = path
        self.marker = f"{marker}\n".encode()  # the end of its line
        self.deadline = deadline
        self.done_at: float | None = None  # time.monotonic()
        self._after_id: str | None = None

    def start(self) -> None:
        self._after_id = self.root.after(CHECK_MS, self._check)

    def _check(self) -> None:
        found = self.marker in self._tail()
        now = time.monotonic()
        if found or now > self.deadline:
            self.done_at = now if found else None
            self._after_id = None
            self.root.quit()
        else:
            self._after_id = self.root.after(CHECK_MS, self._check)

    def _tail(self) -> bytes:
        try:
            with open(self.path, "rb") as file:
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - 4096))
                return file.read()
        except OSError:  # looked at again next time, until the deadline
            return b""


def pump(root: tk.Tk, seconds: float, until: Callable[[], bool] | None = None) -> bool:
    """Run the event loop for ``seconds``, or until ``until()`` is true (True)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        root.update()
        if until is not None and until():
            return True
        time.sleep(0.005)
    return until is None


@dataclass
class FloodRun:
    """The figures of one flood on one fresh window."""

    messages: int
    delivered: int  # flood lines in the transcript
    in_order: bool  # exactly range(messages), each once
    drawn_s: float | None  # from "go" until the last line was in the transcript
    sent_s: float  # sender: until everything was handed to the kernel
    echo_s: float  # sender: until its own last line came back
    stall_ms: float  # longest heartbeat gap beyond the interval
    gap_p99_ms: float  # 99th percentile of the gaps between ticks
    ticks: int
    rss_before_mb: float | None
    rss_after_mb: float | None

    @property
    def rss_growth_mb(self) -> float | None:
        if self.rss_before_mb is None or self.rss_after_mb is None:
            return None
        return self.rss_after_mb - self.rss_before_mb


def run_flood(
    port: int,
    count: int,
    run: int,
    workdir: Path,
    *,
    timeout: float,
    heartbeat_ms: int,
    profiler: cProfile.Profile | None = None,
) -> FloodRun:
    """One flood at a fresh in-process window.  Main thread only.

    The caller must ``gc.collect()`` right after: the window's Tk objects are
    garbage then, and must be freed in this thread.
    """
    tag = f"r{run}"
    transcript_path = workdir / f"transcript-{run}.txt"
    spawn = multiprocessing.get_context("spawn")  # no fork of a Tk process
    ours, theirs = spawn.Pipe()
    sender = spawn.Process(
        target=send_flood,
        args=(port, count, tag, theirs, timeout),
        name=f"flood sender {run}",
        daemon=True,
    )
    with open(transcript_path, "w", encoding="utf-8") as transcript:
        root = tk.Tk(className=APP_NAME)
        app = ChatApp(root, Settings(), workdir / "settings.json", transcript)
        try:
            app.connect(HOST, port, WATCHER)
            if not pump(root, STARTUP_TIMEOUT, lambda: _joined(app)):
                raise BenchError(f"the window could not join the server on {port}")
            sender.start()
            theirs.close()  # the child's end: if the child dies, ours sees EOF
            if not pump(root, STARTUP_TIMEOUT, ours.poll):
                raise BenchError("the flood sender did not join in time")
            _check_report(receive(ours, 0))
            pump(root, SETTLE_S)
            gc.collect()
            rss_before = rss_bytes()
            go = time.monotonic()
            marker = flood_text(tag, count - 1)
            watch = TranscriptWatch(root, transcript_path, marker, go + timeout)
            heartbeat = Heartbeat(root, heartbeat_ms)
            _measured_loop(root, heartbeat, watch, ours, profiler)
            pump(root, SETTLE_S)
            gc.collect()
            rss_after = rss_bytes()
            report = _check_report(receive(ours, timeout))
        finally:
            _close_window(app)
            _stop_sender(sender)
    numbers = flood_numbers(transcript_path, tag)
    started = report["started"]
    return FloodRun(
        messages=count,
        delivered=len(numbers),
        in_order=numbers == list(range(count)),
        drawn_s=None if watch.done_at is None else watch.done_at - go,
        sent_s=report["sent"] - started,
        echo_s=report["echo"] - started,
        stall_ms=max((g * 1000 - heartbeat_ms for g in heartbeat.gaps), default=0.0),
        gap_p99_ms=percentile(heartbeat.gaps, 99) * 1000,
        ticks=len(heartbeat.gaps),
        rss_before_mb=_mb(rss_before),
        rss_after_mb=_mb(rss_after),
    )


def _joined(app: ChatApp) -> bool:
    client = app.client
    return client is not None and client.connected and client.events.empty()


def _measured_loop(
    root: tk.Tk,
    heartbeat: Heartbeat,
    watch: TranscriptWatch,
    conn: Connection,
    profiler: cProfile.Profile | None,
) -> None:
    """Start the heartbeat, give the sender its "go", run the main loop until
    the watch quits it (all drawn, or its deadline)."""
    heartbeat.start()
    watch.start()
    conn.send("go")
    if profiler is not None:
        profiler.enable()
    try:
        root.mainloop()
    finally:
        if profiler is not None:
            profiler.disable()
        heartbeat.stop()


def receive(conn: Connection, seconds: float) -> dict:
    """The sender's next report, or a failed one if it has none in time."""
    try:
        if conn.poll(seconds):
            return conn.recv()
    except (EOFError, OSError):
        return {"ok": False, "error": "the sender process ended without a word"}
    return {"ok": False, "error": f"no word from the sender in {seconds} s"}


def _check_report(report: dict) -> dict:
    if not report.get("ok"):
        raise BenchError(f"the flood sender failed: {report.get('error')}")
    return report


def _close_window(app: ChatApp) -> None:
    """Close the window, then wait for its client's threads to end, so that no
    other thread runs while the Tk objects become garbage."""
    app.close()
    names = {f"reader {WATCHER}", f"writer {WATCHER}"}
    for thread in threading.enumerate():
        if thread.name in names:
            thread.join(STARTUP_TIMEOUT)


def _stop_sender(sender: multiprocessing.process.BaseProcess) -> None:
    if sender.pid is None:  # never started
        return
    sender.join(2.0)  # it has reported and is saying bye, unless it failed
    if sender.is_alive():
        sender.terminate()
        sender.join(STARTUP_TIMEOUT)


def flood_numbers(path: Path, tag: str) -> list[int]:
    """The numbers of the flood lines in the transcript, in file order."""
    pattern = re.compile(rf"{FLOODER}: {FLOODER} {re.escape(tag)} (\d+)$")
    numbers = []
    with open(path, encoding="utf-8") as transcript:
        for line in transcript:
            match = pattern.search(line.rstrip("\n"))
            if match:
                numbers.append(int(match.group(1)))
    return numbers


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceiling
    return ordered[int(rank) - 1]


def _mb(value: int | None) -> float | None:
    return None if value is None else value / 1e6


# -- launch to a mapped window ---------------------------------------------


def visible_windows() -> set[str]:
    """The ids of the visible windows whose title contains ``ClassChat``."""
    found = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--name", APP_NAME],
        capture_output=True,
        text=True,
        timeout=5.0,
    )
    return set(found.stdout.split())


def time_to_window(port: int, name: str, config_home: Path) -> float | None:
    """Seconds from ``Popen`` until the launched window is mapped (None: never)."""
    before = visible_windows()
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    command = [sys.executable, "gui_client.py", "--host", HOST, "--port", str(port)]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--name", name],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - started < LAUNCH_TIMEOUT:
            if visible_windows() - before:
                return time.perf_counter() - started
            if process.poll() is not None:
                return None
            time.sleep(0.005)
        return None
    finally:
        stop_process(process)


def measure_launches(port: int, count: int, workdir: Path) -> list[float | None]:
    config_home = workdir / "config"
    config_home.mkdir(exist_ok=True)
    return [time_to_window(port, f"launch{n}", config_home) for n in range(count)]


# -- the report --------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise(runs: list[FloodRun], launches: list[float | None]) -> dict:
    """Every figure, its target and verdict, as one JSON-ready dict."""
    stall = median([r.stall_ms for r in runs])
    growth = median([r.rss_growth_mb for r in runs])
    launch = median(launches) if launches and None not in launches else None
    checks = {
        "delivery": all(r.in_order for r in runs),
        "stall": stall is not None and stall <= TARGET_STALL_MS,
        "memory": growth is None or growth <= TARGET_RSS_GROWTH_MB,
        "launch": not launches or (launch is not None and launch <= TARGET_LAUNCH_S),
    }
    return {
        "messages": runs[0].messages,
        "repeat": len(runs),
        "runs": [{**asdict(r), "rss_growth_mb": r.rss_growth_mb} for r in runs],
        "median": {
            "drawn_s": median([r.drawn_s for r in runs]),
            "echo_s": median([r.echo_s for r in runs]),
            "stall_ms": stall,
            "gap_p99_ms": median([r.gap_p99_ms for r in runs]),
            "rss_before_mb": median([r.rss_before_mb for r in runs]),
            "rss_after_mb": median([r.rss_after_mb for r in runs]),
            "rss_growth_mb": growth,
        },
        "launch_s": launches,
        "launch_median_s": launch,
        "launch_max_s": None if None in launches else max(launches, default=None),
        "targets": {
            "stall_ms": TARGET_STALL_MS,
            "rss_growth_mb": TARGET_RSS_GROWTH_MB,
            "launch_s": TARGET_LAUNCH_S,
        },
        "checks": checks,
        "passed": all(checks.values()),
    }


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, result) for each line of the table."""
    m, checks = summary["median"], summary["checks"]
    count = summary["messages"]
    delivered = min(r["delivered"] for r in summary["runs"])
    rate = "" if m["drawn_s"] is None else f"{count / m['drawn_s']:,.0f} msg/s"
    launched = _verdict(checks["launch"]) if summary["launch_s"] else "not run"
    stall_target = f"<= {TARGET_STALL_MS:g} ms"
    ticks = f"{min(r['ticks'] for r in summary['runs'])} ticks or more"
    rss_target = f"<= {TARGET_RSS_GROWTH_MB:g} MB"
    return [
        ("delivered to transcript", f"{delivered}/{count}", "all, once, in order",
         _verdict(checks["delivery"])),
        ("flood drawn in", _fmt(m["drawn_s"], "s", 2), "", rate),
        ("sender's own echo after", _fmt(m["echo_s"], "s", 2), "", ""),
        ("longest stall", _fmt(m["stall_ms"], "ms"), stall_target,
         _verdict(checks["stall"])),
        ("heartbeat gap p99", _fmt(m["gap_p99_ms"], "ms"), "", ticks),
        ("RSS before flood", _fmt(m["rss_before_mb"], "MB"), "", ""),
        ("RSS after flood", _fmt(m["rss_after_mb"], "MB"), "", ""),
        ("RSS growth", _fmt(m["rss_growth_mb"], "MB"), rss_target,
         _verdict(checks["memory"])),
        ("launch to mapped, median", _fmt(summary["launch_median_s"], "s", 2),
         f"<= {TARGET_LAUNCH_S:g} s", launched),
        ("launch to mapped, max", _fmt(summary["launch_max_s"], "s", 2), "", ""),
    ]  # fmt: skip


def print_table(summary: dict) -> None:
    runs = summary["runs"]
    medians = " (medians)" if len(runs) > 1 else ""
    print(f"ClassChat window: {summary['messages']} messages, {len(runs)} run(s)")
    print(f"{'figure' + medians:<26} {'value':>13}  {'target':<20} result")
    for figure, value, target, result in table_rows(summary):
        print(f"{figure:<26} {value:>13}  {target:<20} {result}".rstrip())
    if len(runs) > 1:
        for n, run in enumerate(runs, 1):
            print(f"  run {n}: {_run_figures(run)}")
    launches = ", ".join(_fmt(s, "s", 2) for s in summary["launch_s"]) or "not run"
    print(f"  launches: {launches}")
    print("all targets met" if summary["passed"] else "TARGET MISSED")


def _run_figures(run: dict) -> str:
    return (
        f"stall {_fmt(run['stall_ms'], 'ms')}, p99 gap {_fmt(run['gap_p99_ms'], 'ms')}"
        f", RSS {_fmt(run['rss_before_mb'], 'MB')} -> "
        f"{_fmt(run['rss_after_mb'], 'MB')}, drawn {_fmt(run['drawn_s'], 's', 2)}"
        f", delivered {run['delivered']} in order: {run['in_order']}"
    )


def print_profile(profiler: cProfile.Profile, top: int) -> None:
    print(f"\nThe first flood's event loop under cProfile (top {top} by own time):")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


# -- the command ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chat.bench gui",
        description="The chat window under a flood: delivery, stalls, memory, "
        "and the time from launch to a mapped window.",
    )
    add = parser.add_argument
    add("--messages", type=int, default=10_000, help="lines in each flood (10000)")
    add("--repeat", type=int, default=1, help="floods, each on a fresh window (1)")
    add("--launches", type=int, default=5, help="timed launches (5; 0: none)")
    add("--heartbeat-ms", type=int, default=10, help="heartbeat interval (10)")
    add("--timeout", type=float, default=120.0, help="seconds per flood (120)")
    add("--profile", type=int, default=0, metavar="N", help="profile flood 1: top N")
    add("--json", action="store_true", help="print one JSON object, no table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.messages < 1 or args.repeat < 1 or args.launches < 0:
        print("--messages and --repeat must be 1 or more, --launches 0 or more")
        return 2
    if not os.environ.get("DISPLAY"):
        print(
            "No X display (DISPLAY is not set). Run it headless with:\n"
            "    xvfb-run -a python3 -m chat.bench gui",
            file=sys.stderr,
        )
        return 2
    sys.setswitchinterval(SWITCH_INTERVAL)  # as gui_client.py runs the window
    if args.launches and shutil.which("xdotool") is None:
        print("xdotool is needed to see the launched windows (or --launches 0)")
        return 2
    profiler = cProfile.Profile() if args.profile else None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gui-") as tmp:
            workdir = Path(tmp)
            with chat_server(workdir) as port:
                runs = []
                for run in range(1, args.repeat + 1):
                    runs.append(
                        run_flood(
                            port,
                            args.messages,
                            run,
                            workdir,
                            timeout=args.timeout,
                            heartbeat_ms=args.heartbeat_ms,
                            profiler=profiler if run == 1 else None,
                        )
                    )
                    gc.collect()  # the closed window's Tk objects, in this thread
                launches = measure_launches(port, args.launches, workdir)
    except (BenchError, tk.TclError) as exc:
        print(f"cannot run the benchmark: {exc}", file=sys.stderr)
        return 2
    summary = summarise(runs, launches)
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(summary)
    if profiler is not None:
        print_profile(profiler, args.profile)
    return 0 if summary["passed"] else 1
