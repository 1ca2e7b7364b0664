"""Soak test: churn, floods and stalled readers against one chat server.

    python -m chat.soak                                # 60 s, a server of its own
    python -m chat.soak --duration 600                 # the release soak
    python -m chat.soak -- --flood-rate 0              # after --: server.py options
    python -m chat.soak --server-arg=--flood-rate=0    # the same, one at a time
    python -m chat.soak --port 12345 --pid 4242        # a server already running
    python -m chat.soak --json                         # one JSON object at the end

What it does, all on 127.0.0.1:

1. Starts ``server.py --port 0 -q`` (plus the options given after ``--``) as
   a child process, or uses the server at ``--port``.
2. Connects the steady listeners, waits for the server to settle, and
   measures it from ``/proc/PID``: threads, open file descriptors, resident
   memory (RSS).  These are the *start* figures.
3. For ``--duration`` seconds runs the load, printing a progress line every
   ``--report-every`` seconds:

   * listeners: JSON clients that stay and read everything, checking that
     message ids arrive one by one (no gap, nothing out of order);
   * churn: short visits at ``--churn-rate`` per second, by plain clients
     (name, a line, ``exit``), JSON clients (hello, say, bye), connections
     dropped without a word and connections reset (``SO_LINGER`` 0);
   * flooders: JSON clients sending far faster than flood control allows,
     counting the ``flood`` errors and disconnects, reconnecting each time;
   * stalled readers: JSON clients that never read, fed private lines by
     short-lived feeders until the server drops them as slow consumers
     (seen when a send fails);
   * hostile probes now and then: over-long lines, invalid UTF-8, an HTTP
     request, a TLS hello, a line with no end.

4. Stops the load, waits until the server's threads and descriptors stop
   falling, and measures again (the *end* figures; the listeners are still
   connected, as at the start).  Then it closes the listeners, measures the
   idle server once more, and stops the server: SIGTERM, then SIGKILL.
5. Prints a summary and exits 0 if nothing was wrong, 1 if an anomaly was
   found, 2 if the soak could not run at all.

An anomaly is any of: threads or descriptors not back within a small slack
of the start, RSS grown by more than ``--max-rss-growth-mb``, the server's
CPU use growing under the steady load, a listener seeing a gap or a step
back in message ids (or being dropped), a client getting an answer it
should not (or none within ``IO_TIMEOUT``), the server logging an error or
traceback, dying, or not stopping on SIGTERM.

Threads (all named; daemons only so that a bug cannot keep the process
alive): ``listeners``, ``churn pacer``, ``churn N``, ``flooder N``,
``stalled N`` and ``hostile``, stopped and joined by ``run_load``;
``server output``, joined by ``ServerProcess.stop``.  The main thread
prints the progress lines and owns everything.

The ``/proc`` figures exist on Linux only; elsewhere (and for a server given
by ``--port`` without ``--pid``) they show as ``n/a`` and are not judged.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"  # the soak never talks to anything else
SERVER_SCRIPT = Path(__file__).resolve().parent.parent / "server.py"
#: Every wait for the server in a load client ends after this many seconds.
IO_TIMEOUT = 5.0
RECV_BYTES = 65536

# Flooders: FLOOD_BATCH lines every FLOOD_PERIOD s (100 lines/s, 20 times the
# default flood rate), a new connection at least every FLOOD_CYCLE s.
FLOOD_BATCH = 5
FLOOD_PERIOD = 0.05
FLOOD_CYCLE = 10.0
RECONNECT_DELAY = 0.5
# A stalled reader is dropped only once the server's kernel send buffer (it
# grows to about 3 MB on loopback) and its outbox (1 MiB) are full.  Room
# traffic alone would take minutes, so each stalled reader is fed FEED_VISITS
# times a second by a short-lived connection sending it FEED_LINES private
# lines of FEED_TEXT_BYTES: within the flood burst, and nobody else gets them.
FEED_VISITS = 3.0
FEED_LINES = 15
FEED_TEXT_BYTES = 7000
STALL_RCVBUF = 4096  # the stalled side's receive buffer: as small as it gets
STALL_GIVE_UP = 60.0  # reconnect anyway if not dropped by then
CHURN_WORKERS = 4
HOSTILE_EVERY = 2.0
# Judging the end figures against the start.
THREAD_SLACK = 2
FD_SLACK = 4
RSS_GROWTH_MB = 25.0
CPU_GROWTH = 2.0  # the last interval's CPU use may be this many times the first
CPU_GROWTH_POINTS = 15.0  # ... or this many percentage points more
SETTLE_STABLE = 2.0  # threads and fds unchanged this long: settled
SETTLE_DEADLINE = 30.0
SERVER_START_TIMEOUT = 15.0
SERVER_STOP_TIMEOUT = 10.0

_LISTENING = re.compile(r"Server listening on 127\.0\.0\.1:(\d+)")
_SERVER_TROUBLE = re.compile(r"Traceback|error|did not stop|unfinished", re.I)


class SetupError(Exception):
    """The soak could not start (no server, a listener refused...)."""


# -- counting ---------------------------------------------------------------

#: The counters, in the order of the summary, with their labels.
COUNTS = {
    "connections": "connections made",
    "churn": "churn cycles",
    "churn_skipped": "churn cycles skipped (workers busy)",
    "delivered": "messages delivered to listeners",
    "pings": "pings answered by listeners",
    "flood_errors": "flood errors seen",
    "flood_disconnects": "flood disconnects",
    "slow_drops": "slow-consumer drops",
    "stalls_undropped": f"stalls not dropped within {STALL_GIVE_UP:g} s",
    "hostile": "hostile probes",
}


class Tally:
    """Counters and anomalies shared by every load thread.  Thread-safe."""

    EXAMPLES = 3  # details kept for each kind of anomaly; the rest are counted

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()  # guarded by _lock
        self._departures: Counter[str] = Counter()  # guarded by _lock
        # kind -> (how many, a few details); guarded by _lock
        self._anomalies: dict[str, tuple[int, list[str]]] = {}

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def departed(self, reason: str) -> None:
        """A ``left`` reason, as one listener saw it."""
        with self._lock:
            self._departures[reason] += 1

    def anomaly(self, kind: str, detail: str = "") -> None:
        """Something wrong: ``kind`` says what, ``detail`` which and how."""
        with self._lock:
            count, details = self._anomalies.get(kind, (0, []))
            if detail and len(details) < self.EXAMPLES:
                details.append(detail)
            self._anomalies[kind] = (count + 1, details)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {key: self._counts[key] for key in COUNTS} | {
                key: n for key, n in self._counts.items() if key not in COUNTS
            }

    def departures(self) -> dict[str, int]:
        with self._lock:
            return dict(self._departures.most_common())

    def anomalies(self) -> dict[str, dict[str, Any]]:
        """``{kind: {"count": n, "examples": [...]}}``, in order of first sight."""
        with self._lock:
            return {
                kind: {"count": count, "examples": list(details)}
                for kind, (count, details) in self._anomalies.items()
            }

    def anomaly_count(self) -> int:
        with self._lock:
            return sum(count for count, _ in self._anomalies.values())


# -- measuring the server ---------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The server process at one moment; ``None`` where it cannot be seen."""

    threads: int | None = None
    fds: int | None = None
    rss_mb: float | None = None
    cpu_s: float | None = None  # user + system time since it started


def sample_process(pid: int | None) -> Sample:
    """Read ``/proc/PID`` (Linux).  Never raises: what is missing is ``None``."""
    if pid is None:
        return Sample()
    proc = Path(f"/proc/{pid}")
    try:
        status = (proc / "status").read_text()
        fds = len(os.listdir(proc / "fd"))
        stat = (proc / "stat").read_text()
    except OSError:  # no /proc, or the process is gone
        return Sample()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").split()[:1] == ["Z"]:  # dead, not yet reaped
        return Sample()
    rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
    # Fields 14 and 15 of stat (after the ")" that ends the command name).
    ticks = stat.rsplit(")", 1)[1].split()[11:13]
    cpu = sum(int(t) for t in ticks) / os.sysconf("SC_CLK_TCK")
    return Sample(int(fields["Threads"]), fds, round(rss_kb / 1024, 1), cpu)


def listens_on(pid: int, port: int) -> bool | None:
    """Does process ``pid`` hold the TCP socket listening on ``port``?

    ``None`` where it cannot be told (no ``/proc``, someone else's process).
    """
    try:
        fd_dir = Path(f"/proc/{pid}/fd")
        sockets = {_link(fd_dir / fd) for fd in os.listdir(fd_dir)}
    except OSError:
        return None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state, inode = row.split()[1], row.split()[3], row.split()[9]
            listening = state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
            if listening and f"socket:[{inode}]" in sockets:
                return True
    return False


def _link(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed since it was listed
        return ""


def wait_until_settled(
    pid: int | None, target: Sample | None = None, deadline_s: float = SETTLE_DEADLINE
) -> Sample:
    """Wait until the server's threads and fds stop falling; return the sample.

    Returns at once when both are back at ``target``'s (or lower); otherwise
    when they have not changed for ``SETTLE_STABLE`` s, or at the deadline.
    Without ``/proc`` it just gives the server a few seconds (the writer
    lingers a second over each closing connection).
    """
    if sample_process(pid).threads is None:
        time.sleep(3 * SETTLE_STABLE)
        return Sample()
    deadline = time.monotonic() + deadline_s
    last = sample_process(pid)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        # Polling another process: nothing to wait on but the clock.
        time.sleep(0.25)
        now, current = time.monotonic(), sample_process(pid)
        if target is not None and _at_or_below(current, target):
            return current
        if (current.threads, current.fds) != (last.threads, last.fds):
            last, stable_since = current, now
        elif now - stable_since >= SETTLE_STABLE:
            return current
    return sample_process(pid)


def _at_or_below(current: Sample, target: Sample) -> bool:
    if None in (current.threads, current.fds, target.threads, target.fds):
        return False
    return current.threads <= target.threads and current.fds <= target.fds  # type: ignore[operator]


# -- the server under test --------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the server is and what it was told (what the clients expect)."""

    port: int
    pid: int | None
    flood_on: bool
    flood_burst: int
    max_line_bytes: int
    max_unterminated_bytes: int


class ServerProcess:
    """``server.py`` as a child process, started, watched and stopped by its PID.

    Its output is read by the ``server output`` thread: the line that gives
    the port, then anything it logs (with ``-q``, only warnings and errors).
    """

    def __init__(self, server_args: Sequence[str]) -> None:
        self.command = [
            sys.executable, str(SERVER_SCRIPT), "--port", "0", "-q", "--db", ":memory:"
        ]  # fmt: skip
        self.command += list(server_args)
        # The last lines it printed after the banner, and every line that
        # says something went wrong; the ``server output`` thread appends.
        self.log: deque[str] = deque(maxlen=200)
        self.troubles: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> int:
        """Start it and return its port.  Raises ``SetupError``."""
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=SERVER_SCRIPT.parent,
            # Its own session: Ctrl+C reaches the soak only, which then
            # stops the server itself, after the load.
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._read_output, name="server output", daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if match := _LISTENING.search(line):
                return int(match.group(1))
        raise SetupError("the server did not start:\n" + "".join(seen))

    def stop(self) -> dict[str, Any]:
        """SIGTERM; SIGKILL if it has not ended in time.  Joins the reader."""
        result: dict[str, Any] = {"exit_code": None, "stop_s": None, "killed": False}
        process = self._process
        if process is None:
            return result
        started = time.monotonic()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # to process.pid, our child
            try:
                process.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                result["killed"] = True
                process.kill()
                process.wait(SERVER_STOP_TIMEOUT)
        result["exit_code"] = process.returncode
        result["stop_s"] = round(time.monotonic() - started, 2)
        if self._reader is not None:
            self._reader.join(SERVER_STOP_TIMEOUT)
        return result

    def _read_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        banner_done = False
        for line in self._process.stdout:
            if banner_done:
                self.log.append(line.rstrip("\n"))
                if _SERVER_TROUBLE.search(line) and len(self.troubles) < 100:
                    self.troubles.append(line.rstrip("\n"))
            else:
                self._lines.put(line)
                banner_done = bool(_LISTENING.search(line))
        self._lines.put(None)


# -- one client connection --------------------------------------------------


def json_line(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode("utf-8") + b"\n"


def _hello(name: str) -> bytes:
    return json_line(type="hello", name=name)


class LineConn:
    """A blocking client socket to 127.0.0.1 with a line buffer.

    Every wait ends at a deadline (``TimeoutError``); the server's failures
    raise ``OSError``.  A context manager: leaving it closes the socket.
    """

    def __init__(self, port: int, rcvbuf: int = 0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:  # before connecting, so the window starts small
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(IO_TIMEOUT)
            sock.connect((HOST, port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._buffer = b""

    def __enter__(self) -> LineConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.settimeout(IO_TIMEOUT)
        self.sock.sendall(data)

    def take_buffer(self) -> bytes:
        """The bytes received but not yet read as lines (the buffer is emptied)."""
        data, self._buffer = self._buffer, b""
        return data

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the lines now complete."""
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return lines

    def read_line(self, deadline: float) -> bytes | None:
        """The next line, or ``None`` when the server has closed."""
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer in time")
            self.sock.settimeout(left)
            data = self.sock.recv(RECV_BYTES)
            if not data:
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def read_json_until(self, types: set[str], deadline: float) -> dict | None:
        """Skip lines until a JSON message of one of ``types``; ``None`` if closed."""
        while (line := self.read_line(deadline)) is not None:
            if line.startswith(b"{"):
                message = json.loads(line)
                if message.get("type") in types:
                    return message
        return None

    def read_until_closed(self, deadline: float) -> tuple[list[bytes], bool]:
        """Every line until the server closes: (lines, closed before the deadline)."""
        lines: list[bytes] = []
        try:
            while (line := self.read_line(deadline)) is not None:
                lines.append(line)
        except TimeoutError:
            return lines, False
        except ConnectionResetError:
            return lines, True
        return lines, True

    def reset(self) -> None:
        """Close with an RST instead of a FIN (``SO_LINGER`` on, 0 seconds)."""
        linger = struct.pack("ii", 1, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.sock.close()


class Names:
    """Unique client names for this run, such as ``s3fa2c17``.  Thread-safe."""

    def __init__(self, rng: random.Random) -> None:
        self.prefix = f"s{rng.randrange(16**4):04x}"
        self._lock = threading.Lock()
        self._next = 0  # guarded by _lock

    def new(self, role: str) -> str:
        with self._lock:
            self._next += 1
            return f"{self.prefix}{role}{self._next}"


# -- the load ---------------------------------------------------------------


class Load:
    """What every load generator has: a target, a tally, a stop, its threads."""

    def __init__(self, target: Target, tally: Tally, names: Names) -> None:
        self.target = target
        self.tally = tally
        self.names = names
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, options: argparse.Namespace) -> None:
        """Start the threads, as ``options`` say.  Called once."""
        raise NotImplementedError

    def spawn(self, name: str, run: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=run, args=args, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def stop(self, timeout: float = 4 * IO_TIMEOUT) -> list[str]:
        """Stop and join every thread; return the names of any still running."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0.01))
        return [t.name for t in self.threads if t.is_alive()]

    def connect(self, rcvbuf: int = 0) -> LineConn:
        conn = LineConn(self.target.port, rcvbuf)
        self.tally.add("connections")
        return conn

    def join_room(self, conn: LineConn, name: str) -> dict:
        """Say hello and return the welcome.  Raises ``OSError`` if refused."""
        conn.send(json_line(type="hello", name=name))
        reply = conn.read_json_until(
            {"welcome", "error"}, time.monotonic() + IO_TIMEOUT
        )
        if reply is None or reply["type"] != "welcome":
            raise ConnectionError(f"{name} was not welcomed: {reply}")
        return reply


@dataclass
class Listener:
    """One steady listener's state (owned by the ``listeners`` thread)."""

    name: str
    sock: socket.socket
    buffer: bytes = b""
    last_id: int | None = None  # the last message id seen
    counts_departures: bool = False  # one listener reports the room's ``left``s
    seen: int = 0  # messages since joining; the same for every listener
    id_sum: int = 0  # and the sum of their ids: the same too


class Listeners(Load):
    """JSON clients that stay and read everything, served by one selector thread.

    Message ids must only go up: each ``message`` must have an id above the
    one before (the welcome's history gives the first).  Gaps are allowed
    (private lines take ids too), so loss is found another way: every
    listener joins before the load starts, so in the end all of them must
    have seen the same messages (``check_agreement``).  Pings are answered,
    as any client must.
    """

    def __init__(self, target: Target, tally: Tally, names: Names) -> None:
        super().__init__(target, tally, names)
        self._selector = selectors.DefaultSelector()

    def connect_all(self, count: int) -> None:
        """Connect and welcome ``count`` listeners (main thread, before start)."""
        for index in range(count):
            name = self.names.new("L")
            try:
                conn = self.connect()
            except OSError as exc:
                raise SetupError(f"listener {name} could not connect: {exc}") from exc
            try:
                welcome = self.join_room(conn, name)
            except (OSError, ValueError) as exc:
                conn.sock.close()
                raise SetupError(f"listener {name} could not join: {exc}") from exc
            history = welcome.get("history") or []
            listener = Listener(name, conn.sock, counts_departures=index == 0)
            listener.last_id = history[-1]["id"] if history else None
            listener.buffer = conn.take_buffer()
            conn.sock.setblocking(False)
            self._selector.register(conn.sock, selectors.EVENT_READ, listener)
            self._handle_lines(listener, self._split(listener, b""))

    def start(self, options: argparse.Namespace) -> None:
        self.spawn("listeners", self._run)

    def connected(self) -> int:
        return len(self._selector.get_map() or {})

    def close_all(self) -> None:
        """Say bye and close every listener (after ``stop``)."""
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
            try:
                key.fileobj.send(json_line(type="bye"))  # type: ignore[union-attr]
            except OSError:
                pass
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _run(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                self._read(key.data)

    def _read(self, listener: Listener) -> None:
        try:
            data = listener.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(listener.sock)
            listener.sock.close()
            self.tally.anomaly("a listener was disconnected", listener.name)
            return
        self._handle_lines(listener, self._split(listener, data))

    @staticmethod
    def _split(listener: Listener, data: bytes) -> list[bytes]:
        *lines, listener.buffer = (listener.buffer + data).split(b"\n")
        return lines

    def _handle_lines(self, listener: Listener, lines: list[bytes]) -> None:
        delivered = 0
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                self.tally.anomaly(
                    "a listener got a line that is not JSON", repr(line[:80])
                )
                continue
            kind = message.get("type")
            if kind == "message":
                delivered += 1
                self._check_order(listener, message.get("id"))
            elif kind == "ping":
                self._pong(listener)
            elif kind == "left" and listener.counts_departures:
                self.tally.departed(message.get("reason", "?"))
        if delivered:
            self.tally.add("delivered", delivered)

    def _check_order(self, listener: Listener, message_id: object) -> None:
        last = listener.last_id
        if not isinstance(message_id, int):
            self.tally.anomaly("a message without an id", listener.name)
            return
        if last is not None and message_id <= last:
            what = "repeated" if message_id == last else "out of order"
            detail = f"{listener.name}: message {message_id} after {last}"
            self.tally.anomaly(f"message ids: {what}", detail)
        listener.last_id = message_id
        listener.seen += 1
        listener.id_sum += message_id

    def _tallies(self) -> dict[str, tuple[int, int]]:
        return {
            key.data.name: (key.data.seen, key.data.id_sum)
            for key in list(self._selector.get_map().values())
        }

    def check_agreement(self, timeout: float) -> None:
        """Every listener saw the same messages?  (Before ``stop``.)

        Waits up to ``timeout`` for the last lines to be read; then any
        listener whose count or id sum differs from the others' is an
        anomaly: it lost (or gained) messages.
        """
        deadline = time.monotonic() + timeout
        while True:
            tallies = self._tallies()
            if len(set(tallies.values())) <= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if len(set(tallies.values())) > 1:
            usual = max(set(tallies.values()), key=list(tallies.values()).count)
            for name, (seen, id_sum) in tallies.items():
                if (seen, id_sum) != usual:
                    self.tally.anomaly(
                        "a listener missed messages",
                        f"{name}: {seen} messages (others: {usual[0]})",
                    )

    def _pong(self, listener: Listener) -> None:
        try:
            listener.sock.send(json_line(type="pong"))
            self.tally.add("pings")
        except OSError:
            pass  # the read that follows finds the connection gone


CHURN_KINDS = ("plain", "json", "drop", "reset")


class Churn(Load):
    """Short visits at ``rate`` a second: a pacer thread hands out, workers visit.

    A visit that finds the workers all busy is skipped (and counted), so a
    slow server gets fewer visits, never a growing queue of them.
    """

    def __init__(self, target: Target, tally: Tally, names: Names) -> None:
        super().__init__(target, tally, names)
        self._visits: queue.Queue[str] = queue.Queue(maxsize=CHURN_WORKERS)
        self._visitors: dict[str, Callable[[str, random.Random], str | None]] = {
            "plain": self._visit_plain,
            "json": self._visit_json,
            "drop": self._visit_drop,
            "reset": self._visit_reset,
        }

    def start(self, options: argparse.Namespace) -> None:
        if options.churn_rate <= 0:
            return
        seed = options.seed
        self.spawn("churn pacer", self._pace, options.churn_rate, random.Random(seed))
        for number in range(1, CHURN_WORKERS + 1):
            self.spawn(f"churn {number}", self._work, random.Random(seed + number))

    def _pace(self, rate: float, rng: random.Random) -> None:
        interval = 1.0 / rate
        next_visit = time.monotonic()
        while not self.stopping.wait(max(next_visit - time.monotonic(), 0)):
            try:
                self._visits.put_nowait(rng.choice(CHURN_KINDS))
            except queue.Full:
                self.tally.add("churn_skipped")
            next_visit = max(next_visit + interval, time.monotonic() - 1.0)

    def _work(self, rng: random.Random) -> None:
        while not self.stopping.is_set():
            try:
                kind = self._visits.get(timeout=0.2)
            except queue.Empty:
                continue
            name = self.names.new("c")
            try:
                problem = self._visitors[kind](name, rng)
            except (OSError, ValueError) as exc:  # ValueError: a line not JSON
                problem = f"{type(exc).__name__}: {exc}"
            self.tally.add("churn")
            self.tally.add(f"churn_{kind}")
            if problem:
                self.tally.anomaly(f"churn {kind} failed", f"{name}: {problem}")

    def _visit_plain(self, name: str, rng: random.Random) -> str | None:
        with self.connect() as conn:
            conn.send(f"{name}\nchurn line {rng.random()}\nexit\n".encode())
            lines, closed = conn.read_until_closed(time.monotonic() + IO_TIMEOUT)
        if not any(f"Welcome, {name}!".encode() in line for line in lines):
            return f"no welcome in {lines[-3:]!r}"
        return None if closed else "not closed after exit"

    def _visit_json(self, name: str, rng: random.Random) -> str | None:
        with self.connect() as conn:
            self.join_room(conn, name)
            text = f"churn {rng.random()}"
            conn.send(
                json_line(type="say", text=text, cid=name) + json_line(type="bye")
            )
            lines, closed = conn.read_until_closed(time.monotonic() + IO_TIMEOUT)
        if not any(f'"cid":"{name}"'.encode() in line for line in lines):
            return "its own message did not come back before the close"
        return None if closed else "not closed after bye"

    def _visit_drop(self, name: str, rng: random.Random) -> str | None:
        """Connect, maybe say something (or half of it), and close."""
        opening = rng.choice([b"", _hello(name), b'{"type":"hel', f"{name}\n".encode()])
        with self.connect() as conn:
            if opening:
                conn.send(opening)
        return None

    def _visit_reset(self, name: str, rng: random.Random) -> str | None:
        """Join (or not), then close with an RST."""
        conn = self.connect()
        try:
            if rng.random() < 0.5:
                self.join_room(conn, name)
        finally:
            conn.reset()
        return None


class Flooders(Load):
    """JSON clients that send far faster than flood control allows.

    Each cycle: join, send ``FLOOD_BATCH`` lines every ``FLOOD_PERIOD`` s and
    read everything, until the server disconnects it (then it must have seen
    a ``flood`` error) or ``FLOOD_CYCLE`` s pass; then a new connection.
    """

    def start(self, options: argparse.Namespace) -> None:
        for number in range(1, options.flooders + 1):
            self.spawn(f"flooder {number}", self._run)

    def _run(self) -> None:
        while not self.stopping.is_set():
            name = self.names.new("f")
            try:
                with self.connect() as conn:
                    self.join_room(conn, name)
                    self._flood(conn, name)
            except (OSError, ValueError) as exc:
                self.tally.anomaly(
                    "flooder failed", f"{name}: {type(exc).__name__}: {exc}"
                )
            self.stopping.wait(RECONNECT_DELAY)

    def _flood(self, conn: LineConn, name: str) -> None:
        text = f"flood from {name} " + "x" * 80
        batch = json_line(type="say", text=text) * FLOOD_BATCH
        errors, closed = 0, False
        started = next_batch = time.monotonic()
        while not (closed or self.stopping.is_set()):
            now = time.monotonic()
            if now - started > FLOOD_CYCLE:
                conn.send(json_line(type="bye"))
                break
            if now >= next_batch:
                next_batch += FLOOD_PERIOD
                try:
                    conn.send(batch)
                except OSError:  # disconnected: the read below tells why
                    pass
            conn.sock.settimeout(max(next_batch - time.monotonic(), 0.001))
            try:
                data = conn.sock.recv(RECV_BYTES)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            closed = not data
            errors += sum(b'"code":"flood"' in line for line in conn.feed(data))
        self.tally.add("flood_errors", errors)
        if closed and errors:
            self.tally.add("flood_disconnects")
        elif closed:
            self.tally.anomaly("flooder disconnected without a flood error", name)


class StalledReaders(Load):
    """JSON clients that join and never read, until they are dropped.

    Each is fed private lines by short visits from a feeder (in the same
    thread), and sends a blank line (a free keep-alive) before each visit:
    once the server has dropped it, that send fails.  A reader not dropped
    within ``STALL_GIVE_UP`` s starts again.
    """

    def start(self, options: argparse.Namespace) -> None:
        for number in range(1, options.stalled + 1):
            self.spawn(f"stalled {number}", self._run)

    def _run(self) -> None:
        while not self.stopping.is_set():
            name = self.names.new("s")
            try:
                self._stall(name)
            except (OSError, ValueError) as exc:
                self.tally.anomaly(
                    "stalled reader failed", f"{name}: {type(exc).__name__}: {exc}"
                )
            self.stopping.wait(RECONNECT_DELAY)

    def _stall(self, name: str) -> None:
        conn = self.connect(rcvbuf=STALL_RCVBUF)
        try:
            conn.send(_hello(name))
            started = time.monotonic()
            while not self.stopping.wait(1.0 / FEED_VISITS):
                if time.monotonic() - started > STALL_GIVE_UP:
                    self.tally.add("stalls_undropped")
                    return
                try:
                    conn.send(b"\n")
                except OSError:  # the server has closed it: dropped
                    self.tally.add("slow_drops")
                    self.tally.add("slow_drop_s", round(time.monotonic() - started))
                    return
                self._feed(name)
        finally:
            conn.reset()  # unread data would make close() an RST anyway

    def _feed(self, name: str) -> None:
        """One visit that sends ``name`` private lines (and reads its copies)."""
        target = self.target
        lines = FEED_LINES
        if target.flood_on:  # hello and bye count too
            lines = max(min(lines, target.flood_burst - 2), 1)
        text = "p" * max(min(FEED_TEXT_BYTES, target.max_line_bytes - 200), 1)
        feeder = self.names.new("p")
        with self.connect() as conn:
            self.join_room(conn, feeder)
            conn.send(json_line(type="private", to=name, text=text) * lines)
            conn.send(json_line(type="bye"))
            _, closed = conn.read_until_closed(time.monotonic() + IO_TIMEOUT)
        if not closed:
            self.tally.anomaly("feeder not closed after bye", feeder)


@dataclass(frozen=True)
class HostileProbe:
    """Bytes a misbehaving peer sends, and a fragment the answer must hold.

    Every probe ends the conversation, so the server must close the connection.
    """

    what: str
    payload: Callable[[Target, str], bytes]
    expect: bytes


HOSTILE_PROBES = (
    HostileProbe(
        "over-long first line",
        lambda t, n: (
            b"x" * (t.max_line_bytes + 1) + b"\n" + _hello(n) + b'{"type":"bye"}\n'
        ),
        b'"code":"too_long"',
    ),
    HostileProbe(
        "over-long line after hello",
        lambda t, n: _hello(n) + b"y" * (t.max_line_bytes + 1) + b'\n{"type":"bye"}\n',
        b'"code":"too_long"',
    ),
    HostileProbe(
        "invalid UTF-8 (JSON)",
        lambda t, n: _hello(n) + b'{"type":"say","text":"\xff\xfe"}\n{"type":"bye"}\n',
        b'"code":"bad_utf8"',
    ),
    HostileProbe(
        "invalid UTF-8 (plain)",
        lambda t, n: f"{n}\n".encode() + b"caf\xe9 \xff\nexit\n",
        b"not valid UTF-8",
    ),
    HostileProbe(
        "HTTP GET",
        lambda t, n: b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"HTTP/1.0 400 Bad Request",
    ),
    HostileProbe(
        "TLS hello",
        lambda t, n: b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03" + bytes(32),
        b"not TLS",
    ),
    HostileProbe(
        "line with no end",
        lambda t, n: b"w" * (t.max_unterminated_bytes + 1),
        b"no end of line",
    ),
)


class Hostile(Load):
    """One probe from ``HOSTILE_PROBES`` every ``every`` seconds, in turn."""

    def start(self, options: argparse.Namespace) -> None:
        if options.hostile_every > 0:
            self.spawn("hostile", self._run, options.hostile_every)

    def _run(self, every: float) -> None:
        turn = 0
        while not self.stopping.wait(every):
            probe = HOSTILE_PROBES[turn % len(HOSTILE_PROBES)]
            turn += 1
            try:
                problem = self.try_probe(probe)
            except OSError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            self.tally.add("hostile")
            if problem:
                self.tally.anomaly(f"hostile probe {probe.what!r} failed", problem)

    def try_probe(self, probe: HostileProbe) -> str | None:
        """Send it, read until closed; a sentence if the answer was wrong."""
        with self.connect() as conn:
            try:
                conn.send(probe.payload(self.target, self.names.new("h")))
            except (BrokenPipeError, ConnectionResetError):
                pass  # it closed on us mid-send: the answer is already here
            lines, closed = conn.read_until_closed(time.monotonic() + IO_TIMEOUT)
        answer = b"\n".join(lines)
        if probe.expect not in answer:
            return f"expected {probe.expect!r}, got {answer[-200:]!r}"
        return None if closed else "the server did not close the connection"


# -- the run ----------------------------------------------------------------


@dataclass
class Report:
    """Everything the summary shows (and ``--json`` prints)."""

    duration_s: float
    seed: int
    port: int
    pid: int | None
    server_command: list[str] | None
    settings: dict[str, Any]
    idle_start: Sample = field(default_factory=Sample)
    start: Sample = field(default_factory=Sample)
    end: Sample = field(default_factory=Sample)
    idle_end: Sample = field(default_factory=Sample)
    load_s: float = 0.0
    soak_cpu_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    departures: dict[str, int] = field(default_factory=dict)
    listeners_left: int = 0
    server_stop: dict[str, Any] = field(default_factory=dict)
    server_log: list[str] = field(default_factory=list)
    anomaly_count: int = 0
    anomalies: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)  # one per report


def run_load(
    options: argparse.Namespace, target: Target, report: Report, tally: Tally
) -> None:
    """Warm up, measure, run the load for the duration, drain, measure again.

    Every thread started here is stopped and joined here, whatever happens
    (Ctrl+C included).
    """
    names = Names(random.Random(options.seed))
    out = progress_printer(options)
    report.idle_start = wait_until_settled(target.pid)
    listeners = Listeners(target, tally, names)
    loads: list[Load] = [
        Churn(target, tally, names),
        Flooders(target, tally, names),
        StalledReaders(target, tally, names),
        Hostile(target, tally, names),
    ]
    try:
        listeners.connect_all(options.listeners)
        listeners.start(options)
        report.start = wait_until_settled(target.pid)
        out(f"start: {describe(report.start)}; load for {options.duration:g} s")
        started = time.monotonic()
        try:
            for load in loads:
                load.start(options)
            watch(options, target, report, tally, out)
        finally:
            report.load_s = round(time.monotonic() - started, 1)
            stop_all(loads, tally)
        out("load stopped; waiting for the server to drain")
        report.end = wait_until_settled(target.pid, report.start)
        listeners.check_agreement(timeout=IO_TIMEOUT)
    finally:
        stop_all([listeners], tally)
        report.listeners_left = listeners.connected()
        listeners.close_all()
    report.idle_end = wait_until_settled(target.pid, report.idle_start)


def stop_all(loads: Sequence[Load], tally: Tally) -> None:
    for load in loads:
        for name in load.stop():
            tally.anomaly("a soak thread did not stop", name)


def watch(
    options: argparse.Namespace,
    target: Target,
    report: Report,
    tally: Tally,
    out: Callable[[str], None],
) -> None:
    """The main thread during the load: progress lines, and the server's health.

    Each progress line's figures also go to ``report.trace``.
    """
    started = time.monotonic()
    next_report = started + options.report_every
    end = started + options.duration
    last = sample_process(target.pid)
    while (now := time.monotonic()) < end:
        time.sleep(min(0.5, end - now, max(next_report - now, 0.01)))
        if target.pid is not None and not pid_alive(target.pid):
            tally.anomaly("the server process died during the load")
            return
        if time.monotonic() >= next_report:
            next_report += options.report_every
            sample = sample_process(target.pid)
            elapsed = time.monotonic() - started
            cpu = cpu_percent(last, sample, options.report_every)
            report.trace.append({"t": round(elapsed), **asdict(sample), "cpu%": cpu})
            out(progress_line(elapsed, sample, cpu, tally))
            last = sample


def cpu_percent(before: Sample, after: Sample, seconds: float) -> float | None:
    """The server's CPU use between two samples, in percent of one core."""
    if before.cpu_s is None or after.cpu_s is None:
        return None
    return round(100 * (after.cpu_s - before.cpu_s) / seconds, 1)


def pid_alive(pid: int) -> bool:
    """Is the process there (and not a zombie)?"""
    if Path("/proc").is_dir():
        return sample_process(pid).threads is not None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def describe(sample: Sample) -> str:
    def shown(value: object, unit: str = "") -> str:
        return "n/a" if value is None else f"{value}{unit}"

    return (
        f"threads {shown(sample.threads)}, fds {shown(sample.fds)}, "
        f"RSS {shown(sample.rss_mb, ' MB')}"
    )


def progress_line(
    elapsed: float, sample: Sample, cpu: float | None, tally: Tally
) -> str:
    """One line: the server now, its recent CPU use, and the counts."""
    c = tally.counts()
    anomalies = tally.anomaly_count()
    shown = "n/a" if cpu is None else f"{cpu:.0f}%"
    return (
        f"[{elapsed:5.0f} s] {describe(sample)}, CPU {shown} | "
        f"conns {c['connections']} churn {c['churn']} "
        f"delivered {c['delivered']} flood err {c['flood_errors']} "
        f"flood drops {c['flood_disconnects']} slow drops {c['slow_drops']} "
        f"anomalies {anomalies}"
    )


def progress_printer(options: argparse.Namespace) -> Callable[[str], None]:
    """Progress goes to stdout, or to stderr when stdout is for ``--json``."""
    stream = sys.stderr if options.json else sys.stdout

    def out(text: str) -> None:
        print(text, file=stream, flush=True)

    return out


def judge(
    report: Report, target: Target, tally: Tally, options: argparse.Namespace
) -> None:
    """Turn the figures into anomalies (added to ``tally``)."""
    limits = {
        "threads": THREAD_SLACK,
        "fds": FD_SLACK,
        "rss_mb": options.max_rss_growth_mb,
    }
    report.limits = limits
    for label, before, after in (
        ("with listeners", report.start, report.end),
        ("idle", report.idle_start, report.idle_end),
    ):
        for key, limit in limits.items():
            old, new = getattr(before, key), getattr(after, key)
            if old is not None and new is not None and new - old > limit:
                tally.anomaly(
                    f"{key} grew ({label})", f"{old} at the start, {new} at the end"
                )
    judge_cpu_trend(report, tally)
    flooded = options.flooders and report.load_s > 5
    if target.flood_on and flooded and not tally.counts()["flood_errors"]:
        tally.anomaly("flood control is on, yet no flooder saw a flood error")


def judge_cpu_trend(report: Report, tally: Tally) -> None:
    """The load is the same from start to end, and so should the server's CPU be.

    CPU use that keeps growing (a loop that spins, a list walked on every
    line) is a bug even when nothing else shows it.
    """
    cpu = [point["cpu%"] for point in report.trace if point["cpu%"] is not None]
    if len(cpu) < 3:
        return
    first, last = cpu[0], cpu[-1]
    if last > max(CPU_GROWTH * first, first + CPU_GROWTH_POINTS):
        tally.anomaly(
            "the server's CPU use grew under a steady load",
            f"{first:.0f}% of a core at first, {last:.0f}% at the end",
        )


def judge_server(report: Report, server: ServerProcess, tally: Tally) -> None:
    stop = report.server_stop
    if stop.get("killed"):
        tally.anomaly(
            f"the server did not stop within {SERVER_STOP_TIMEOUT:g} s of SIGTERM"
        )
    elif stop.get("exit_code") not in (0, None):
        tally.anomaly("the server exited with an error", f"code {stop['exit_code']}")
    report.server_log = list(server.log)[-40:]
    for line in server.troubles:
        tally.anomaly("the server logged trouble", line)


# -- options and output -----------------------------------------------------


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def not_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def how_many(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 500:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to 500)")
    return value


#: The soak's own options: (flag, type, default, metavar, help).
OPTIONS: tuple[tuple[str, Callable[[str], Any], Any, str, str], ...] = (
    ("--duration", positive, 60.0, "S", "seconds of load"),
    ("--report-every", positive, 10.0, "S", "seconds between progress lines"),
    ("--listeners", how_many, 20, "N", "steady listeners"),
    ("--churn-rate", not_negative, 20.0, "PER_S", "churn visits a second (0: none)"),
    ("--flooders", how_many, 2, "N", "flooding clients"),
    ("--stalled", how_many, 2, "N", "clients that never read"),
    ("--hostile-every", not_negative, HOSTILE_EVERY, "S", "seconds between probes"),
    ("--max-rss-growth-mb", not_negative, RSS_GROWTH_MB, "MB", "RSS growth allowed"),
    ("--port", int, None, "PORT", "soak the server already on 127.0.0.1:PORT"),
    ("--pid", int, None, "PID", "with --port: that server's process id"),
    ("--seed", int, None, "N", "random seed (default: a new one, printed)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chat.soak",
        description="Soak a chat server with churn, floods and stalled readers, "
        "and compare its threads, open files and memory before and after.",
        epilog="Options after -- (or each --server-arg=OPTION) go to server.py, "
        "e.g. python -m chat.soak -- --flood-rate 0.  With --port they only "
        "describe how that server was started (what to expect of it).",
    )
    for flag, kind, default, metavar, text in OPTIONS:
        shown = text if default is None else f"{text} (default %(default)s)"
        parser.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=shown
        )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="an option for server.py; repeat it (--server-arg=--flood-rate=0)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object, not a table"
    )
    return parser


def parse_options(argv: Sequence[str]) -> argparse.Namespace:
    """The soak's options; what follows ``--`` is for server.py."""
    argv = list(argv)
    tail: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    options = parser.parse_args(argv)
    options.server_args = options.server_arg + tail
    if options.pid is not None and options.port is None:
        parser.error("--pid needs --port")
    if options.seed is None:
        options.seed = random.randrange(2**31)
    options.settings = server_settings(parser, options.server_args)
    return options


def server_settings(
    parser: argparse.ArgumentParser, server_args: list[str]
) -> argparse.Namespace:
    """The server's options as ``server.py`` reads them (checked here, once)."""
    from .console import build_parser as server_parser

    try:
        settings = server_parser().parse_args(["--port", "0", "-q", *server_args])
    except SystemExit:
        parser.error(f"server.py does not accept: {' '.join(server_args)}")
    if settings.port != 0 or settings.host != HOST:
        parser.error("the soak chooses the server's --host and --port")
    if settings.echo or settings.password or settings.tls_cert or not settings.quiet:
        parser.error(
            "the soak needs a plain chat server: no --echo, --password, TLS or -v"
        )
    return settings


def print_summary(report: Report) -> None:
    def row(label: str, before: object, after: object, limit: object = "") -> None:
        def cell(value: object) -> str:
            return "n/a" if value is None else str(value)

        change = ""
        if isinstance(before, (int, float)) and isinstance(after, (int, float)):
            change = (
                f"{after - before:+.1f}"
                if isinstance(after, float)
                else f"{after - before:+d}"
            )
        print(
            f"  {label:<22}{cell(before):>10}{cell(after):>10}{change:>10}{limit!s:>10}"
        )

    s, e = report.start, report.end
    print()
    print(
        f"Soak of {report.load_s:g} s, seed {report.seed}, server pid "
        f"{report.pid or 'n/a'} on 127.0.0.1:{report.port}"
    )
    if report.server_command:
        print("  server: " + " ".join(report.server_command[1:]))
    print(f"  {'server':<22}{'start':>10}{'end':>10}{'change':>10}{'limit':>10}")
    limits = report.limits
    for prefix, before, after in (
        ("", s, e),
        ("idle ", report.idle_start, report.idle_end),
    ):
        row(f"{prefix}threads", before.threads, after.threads, f"+{limits['threads']}")
        row(f"{prefix}open fds", before.fds, after.fds, f"+{limits['fds']}")
        row(f"{prefix}RSS (MB)", before.rss_mb, after.rss_mb, f"+{limits['rss_mb']:g}")
    if s.cpu_s is not None and e.cpu_s is not None and report.load_s:
        used = e.cpu_s - s.cpu_s
        share = 100 * used / report.load_s
        print(f"  server CPU during the load: {used:.1f} s ({share:.0f}% of a core)")
    print(f"  soak's own CPU: {report.soak_cpu_s:.1f} s")
    print()
    for key, label in COUNTS.items():
        print(f"  {label:<42}{report.counts.get(key, 0):>10}")
    if report.counts.get("slow_drops"):
        average = report.counts["slow_drop_s"] / report.counts["slow_drops"]
        print(f"    (a stalled reader was dropped {average:.0f} s after joining)")
    kinds = ", ".join(f"{k} {report.counts.get('churn_' + k, 0)}" for k in CHURN_KINDS)
    print(f"    (churn: {kinds})")
    if report.departures:
        seen = ", ".join(f"{reason}: {n}" for reason, n in report.departures.items())
        print(f"  departures a listener saw: {seen}")
    stop = report.server_stop
    if stop:
        print(
            f"  server stopped in {stop['stop_s']} s, exit code {stop['exit_code']}"
            + (" (killed)" if stop["killed"] else "")
        )
    if report.server_log:
        print("  what the server logged (the last lines):")
        for line in report.server_log[-10:]:
            print(f"    {line}")
    print(f"  {'anomalies':<42}{report.anomaly_count:>10}")
    # The server's own troubles first: the rest often follows from them.
    ordered = sorted(report.anomalies.items(), key=lambda kv: "server" not in kv[0])
    for kind, entry in ordered:
        print(f"    - {kind} (x{entry['count']})")
        for example in entry["examples"]:
            print(f"        {example}")
    print("PASS" if report.anomaly_count == 0 else "FAIL")


def print_json(report: Report) -> None:
    print(json.dumps(asdict(report), default=str))


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    server = ServerProcess(options.server_args) if options.port is None else None
    tally = Tally()
    try:
        report = soak(options, server, tally)
    except SetupError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    finally:
        stopped = server.stop() if server is not None else {}
    if server is not None:
        report.server_stop = stopped
        judge_server(report, server, tally)
    report.soak_cpu_s = round(time.process_time(), 1)
    report.counts = tally.counts()
    report.departures = tally.departures()
    report.anomaly_count, report.anomalies = tally.anomaly_count(), tally.anomalies()
    (print_json if options.json else print_summary)(report)
    return 0 if report.anomaly_count == 0 else 1


def soak(
    options: argparse.Namespace, server: ServerProcess | None, tally: Tally
) -> Report:
    """Start (or find) the server, run the load and judge the figures.

    Raises ``SetupError``.  The caller stops ``server``.
    """
    port = server.start() if server else options.port
    pid = server.pid if server else options.pid
    if pid is not None and listens_on(pid, port) is False:
        raise SetupError(
            f"process {pid} is not the one listening on port {port} "
            "(a wrapper's PID, such as pyenv's, is not the server's)"
        )
    target = make_target(port, pid, options.settings)
    report = Report(
        duration_s=options.duration,
        seed=options.seed,
        port=port,
        pid=pid,
        server_command=server.command if server else None,
        settings=vars(options.settings),
    )
    progress_printer(options)(
        f"soak: server pid {pid or 'n/a'} on 127.0.0.1:{port}, seed {options.seed}"
    )
    try:
        run_load(options, target, report, tally)
    except KeyboardInterrupt:
        tally.anomaly("interrupted (Ctrl+C)")
    judge(report, target, tally, options)
    return report


def make_target(port: int, pid: int | None, settings: argparse.Namespace) -> Target:
    return Target(
        port=port,
        pid=pid,
        flood_on=settings.flood_rate > 0,
        flood_burst=settings.flood_burst,
        max_line_bytes=settings.max_line_bytes,
        max_unterminated_bytes=max(1024 * 1024, settings.max_line_bytes),
    )


if __name__ == "__main__":
    sys.exit(main())
