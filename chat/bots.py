"""Demo bots: a crowd of talkative clients, for showing broadcast and load to a class.

    python -m chat.bots 20                          # 20 bots on 127.0.0.1:12345
    python -m chat.bots 50 --rate 0.5 --seconds 60    # 25 lines a second, 1 min

``Bots`` keeps a crowd of N ``ChatClient``s in one room.  Each bot has a
friendly name (``ada``, ``alan``, ``grace``... then ``ada2``...; a name
somebody already has is skipped) and every few seconds says a line about
sockets, framing or threads; now and then a ``/me`` action, or an ``@name``
reply to someone who spoke lately.  Whoever comes in is greeted.  The
server's console owns one for its ``/bots N`` command; ``python -m
chat.bots`` runs one on its own.

Threads.  Each bot is a ``ChatClient``: a reader and a writer thread, joined
by its ``close()``.  Besides those, one thread tends the whole crowd:
``bots``.  It alone starts and closes the clients, empties their event
queues every ``TICK`` (so what they hear does not pile up) and decides who
speaks when.  To start or close many clients at once it borrows up to
``PARALLEL`` helper threads (``bots starter_N``, ``bots closer_N``) and joins
them before it goes on.  ``stop()`` joins ``bots``; it is a daemon only so
that a bug cannot keep a process alive.  As nothing else touches a client,
the clients need no lock; ``_lock`` guards only what the crowd's thread
shares with its callers: the size asked for and the figures it reports.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import operator
import queue
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from .client import ChatClient, Closed, Disconnected
from .protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Error,
    Joined,
    Message,
    Welcome,
    escape_text,
    name_key,
)

log = logging.getLogger("chat.bots")

_T = TypeVar("_T")
_R = TypeVar("_R")

#: The largest crowd.  Every bot is two threads and reads every line said in
#: the room, so a crowd's work grows as bots x lines per second, all in one
#: process.  On a 2-core machine 200 bots at the default rate kept their pace
#: on 2/3 of a core; 300 fell behind, and 500 took over 10 s to stop.
MAX_BOTS = 200
#: Lines per second per bot, on average: one every 3 to 7 seconds.
DEFAULT_RATE = 0.2
#: The fastest a bot may talk.  Its shortest gap is then 0.2 s: never more
#: than 5 lines a second, the server's default flood rate.
MAX_RATE = 3.0
#: The most lines per second the whole crowd says (the bots of a large crowd
#: slow down to share it): as much as MAX_BOTS at the default rate.
MAX_CROWD_RATE = 40.0
#: A gap between two lines of one bot is 1/rate, give or take this share.
JITTER = 0.4
#: How often the crowd's thread empties the queues and looks at the clock.
TICK = 0.1
#: Names one place in the crowd tries (each one taken) before it gives up.
MAX_NAME_TRIES = 10
#: Clients started or closed at once, in as many short-lived threads.  One at
#: a time, 200 bots took 0.6 s to start and 0.8 s to close on a 2-core
#: machine (each waits for its client's threads to get a turn); 16 at once,
#: 0.2 s and 0.25 s.  On a busy machine the difference grows.
PARALLEL = 16
#: Recent speakers remembered, for ``@name`` replies; newcomers not greeted
#: yet; and lines said, not to be said again too soon.
RECENT_SPEAKERS = 20
RECENT_ARRIVALS = 5
RECENT_LINES = 8
#: Shares of what a bot says: actions, replies (if anyone else spoke lately),
#: and the rest plain phrases.
ACTION_SHARE = 0.15
REPLY_SHARE = 0.2

NAMES = (
    "ada", "alan", "grace", "linus", "guido", "barbara", "dennis", "ken",
    "margaret", "tim", "vint", "radia", "edsger", "frances", "donald", "hedy",
    "katherine", "anita", "bjarne", "niklaus", "sophie", "leslie", "john",
    "karen", "brian", "annie", "lynn", "jean", "whitfield", "mary",
)  # fmt: skip

PHRASES = (
    "did you remember the newline?",
    "recv can return half a line!",
    "recv can also return two lines at once. Keep the rest for later.",
    "TCP is a stream of bytes, not a stream of messages",
    "framing: split on the newline, keep what comes after it",
    "an empty recv means the other side hung up",
    "sendall, not send: send may send only part of it",
    "is the server listening on 0.0.0.0, or only on 127.0.0.1?",
    "SYN, SYN-ACK, ACK: we're connected!",
    "one thread reads, one thread writes",
    "put a timeout on every blocking call",
    "port 0 means: any free port, please",
    "Address already in use? Wait for TIME_WAIT, or SO_REUSEADDR",
    "UTF-8 can split a character across two recvs",
    "a lock guards data, not code",
    "never hold a lock while you send",
    "one JSON object, one newline: that's the whole protocol",
    "nc 127.0.0.1 12345 and you're in",
    "Nagle's algorithm is why TCP_NODELAY exists",
    "queue.Queue: the safe way for threads to talk",
    "join your threads, or they haunt you",
    "a slow reader fills its outbox, and the server lets it go",
    "when the send buffer is full, sendall waits",
    "a socket is a file descriptor with opinions",
    "hello from the back row!",
    "can everyone see this?",
    "what happens if I send 10 MB without a newline?",
    "every message here went through one writer thread",
    "localhost: the computer talking to itself",
    "the server encodes a message once and sends it to everyone",
)
ACTIONS = (
    "waves at everyone",
    "draws the three-way handshake on the board",
    "counts bytes on their fingers",
    "opens Wireshark",
    "passes a note (one line, newline-terminated)",
    "takes notes",
    "sips coffee while the packets flow",
    "high-fives the TCP stack",
    "checks the firewall, just in case",
    "raises a hand",
)
REPLIES = (
    "good point!",
    "did you remember the newline?",
    "try it with nc and see",
    "+1",
    "which thread sent that?",
    "that's exactly what recv does",
    "I had the same bug yesterday",
    "framing is everything",
    "can you say that again, one line at a time?",
)
GREETINGS = (
    "welcome!",
    "hi, welcome to the room!",
    "hello! /help shows the commands",
    "welcome! Try /me waves",
)


def bot_names() -> Iterator[str]:
    """``ada``, ``alan``... then ``ada2``, ``alan2``...: endless, valid, distinct."""
    for round_ in itertools.count(1):
        suffix = "" if round_ == 1 else str(round_)
        for base in NAMES:
            yield base + suffix


def compose(
    rng: random.Random,
    speaker: str,
    recent: Sequence[str] = (),
    *,
    newcomer: str | None = None,
    said_lately: Collection[str] = (),
) -> tuple[str, bool]:
    """What ``speaker`` says next: ``(text, is_action)``.

    A ``newcomer`` (someone who just came in) is greeted.  Otherwise, now and
    then an action, or a reply to one of ``recent`` (who spoke lately; never
    the speaker), and else a phrase, one not in ``said_lately`` if
    possible.  Pure: the same ``rng`` state gives the same line.
    """
    if newcomer is not None:
        return f"@{newcomer} {rng.choice(GREETINGS)}", False
    roll = rng.random()
    if roll < ACTION_SHARE:
        return rng.choice(ACTIONS), True
    if roll < ACTION_SHARE + REPLY_SHARE:
        me = name_key(speaker)
        others = [name for name in recent if name_key(name) != me]
        if others:
            return f"@{rng.choice(others)} {rng.choice(REPLIES)}", False
    fresh = [phrase for phrase in PHRASES if phrase not in said_lately]
    return rng.choice(fresh or PHRASES), False


def _each(
    work: Callable[[_T], _R], items: Sequence[_T], name: str
) -> list[_R | Exception]:
    """``work(item)`` for every item, ``PARALLEL`` at a time: each one's result,
    or the exception it raised, in order.  The threads are called ``name``
    and joined before it returns."""
    if len(items) <= 1:
        return [_outcome(work, item) for item in items]
    workers = min(PARALLEL, len(items))
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        return list(pool.map(functools.partial(_outcome, work), items))


def _outcome(work: Callable[[_T], _R], item: _T) -> _R | Exception:
    try:
        return work(item)
    except Exception as exc:
        return exc


@dataclass
class _Bot:
    """One place in the crowd.  The crowd's thread only."""

    client: ChatClient
    tries: int = 1  # names tried for this place
    welcomed: bool = False  # in the room at least once: a refusal is not the name's
    refusal: str = ""  # what the server said when it turned this bot away
    next_talk: float | None = None  # monotonic time; None while not in the room


class Bots:
    """A crowd of demo clients in the room at ``host:port``.  See the module docstring.

    ``rate`` is each bot's average number of lines per second (above 0, at
    most ``MAX_RATE``); the room hears ``count * rate`` lines a second, but
    never more than ``MAX_CROWD_RATE``.  ``seed`` makes the
    talk repeatable.  ``password`` and ``fingerprint`` are passed to every
    ``ChatClient`` (a room with a password; a TLS server).

    Thread contract: ``resize``, ``stop`` and the figures (``count``,
    ``joined``, ``sent``, ``problem``) may be called from any thread; none
    blocks for more than its ``timeout``.  The crowd's thread starts at the
    first ``resize``; ``stop`` (or leaving a ``with`` block) ends and joins it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        rate: float = DEFAULT_RATE,
        seed: int | None = None,
        password: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be above 0 and at most {MAX_RATE}, not {rate}")
        self.host = host
        self.port = port
        self.rate = rate
        self.password = password
        self.fingerprint = fingerprint
        # The crowd's thread only:
        self._rng = random.Random(seed)
        self._bots: list[_Bot] = []  # oldest first; the newest leave first
        self._recent: deque[str] = deque(maxlen=RECENT_SPEAKERS)
        self._arrived: deque[str] = deque(maxlen=RECENT_ARRIVALS)
        self._said_lately: deque[str] = deque(maxlen=RECENT_LINES)
        self._taken: set[str] = set()  # name keys refused since the last resize
        self._done = 0  # the last request carried out
        self._said = 0
        self._warned = False  # a problem logged since the last resize
        # Shared with callers; guarded by _lock (_changed is its condition):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._target = 0
        self._asked = 0  # requests made (resize calls)
        self._applied = 0  # requests carried out
        self._stopping = False
        self._count = 0
        self._joined = 0
        self._sent = 0
        self._problem = ""
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    # -- the owner's side -------------------------------------------------

    def resize(self, n: int, timeout: float = 2.0) -> bool:
        """Make the crowd ``n`` bots: start new ones, or send the newest away.

        Returns True once the crowd's thread has done it: the new bots are
        started (they connect in the background: see ``joined``) and those
        sent away have said ``bye`` and their threads are joined.  Returns
        False if that takes more than ``timeout`` seconds; the work goes on
        in the background.  Any thread may call it (not the crowd's own).

        Raises ``TypeError`` unless ``n`` is a whole number, ``ValueError``
        unless ``0 <= n <= MAX_BOTS``, and ``RuntimeError`` after ``stop()``.
        """
        n = operator.index(n)
        if not 0 <= n <= MAX_BOTS:
            raise ValueError(f"the number of bots must be 0 to {MAX_BOTS}, not {n}")
        with self._lock:
            if self._stopping:
                raise RuntimeError("these bots were stopped; make new ones")
            self._target = n
            self._asked += 1
            asked = self._asked
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bots", daemon=True
                )
                # Under the lock, so that stop() never sees it unstarted;
                # start() only waits for the thread to exist, not to run.
                self._thread.start()
        self._wake.set()
        with self._changed:
            return self._changed.wait_for(lambda: self._applied >= asked, timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Send every bot away (``bye``) and join every thread.  Final.

        Blocks until done, or at most ``timeout`` seconds; True if done.
        Any thread may call it (not the crowd's own), any number of times.
        """
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def __enter__(self) -> Bots:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def count(self) -> int:
        """Bots in the crowd: in the room, or on their way in."""
        with self._lock:
            return self._count

    @property
    def joined(self) -> int:
        """Bots in the room now (as of the last tick)."""
        with self._lock:
            return self._joined

    @property
    def sent(self) -> int:
        """Lines the bots have said so far."""
        with self._lock:
            return self._sent

    @property
    def problem(self) -> str:
        """Why the last bot that gave up (or had a line refused) did, since the
        last ``resize``; ``""`` if none did."""
        with self._lock:
            return self._problem

    # -- the crowd's thread -----------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # our bug: say so; everyone is still sent away below
            log.exception("the bots' thread failed; sending every bot away")
        try:
            self._resize_to(0)
        except Exception:
            log.exception("a bot failed to close")
        with self._lock:
            self._stopping = True
        self._publish()

    def _serve(self) -> None:
        """Carry out each resize, and tend the crowd every ``TICK``, until stop."""
        while True:
            self._wake.clear()  # before reading: a later resize wakes us again
            with self._lock:
                stopping, target, asked = self._stopping, self._target, self._asked
            if stopping:
                return
            if asked != self._done:  # a new size: a fresh start for names, problems
                self._taken.clear()
                self._warned = False
                with self._lock:
                    self._problem = ""
                self._resize_to(target)
                self._done = asked
            self._tend(time.monotonic())
            self._publish()
            self._wake.wait(TICK)

    def _publish(self) -> None:
        """Share the figures, and mark the requests seen so far as carried out."""
        joined = sum(bot.client.connected for bot in self._bots)
        with self._changed:
            self._count = len(self._bots)
            self._joined = joined
            self._sent = self._said
            self._applied = self._done if not self._stopping else self._asked
            self._changed.notify_all()

    def _resize_to(self, target: int) -> None:
        """Start or close clients until there are ``target``.  Blocks until done."""
        missing = target - len(self._bots)
        if missing > 0:
            names = self._free_names(missing)
            outcomes = _each(self._start, names, "bots starter")
            for name, started in zip(names, outcomes, strict=True):
                if isinstance(started, Exception):  # out of threads, say
                    self._note(f"could not start {name}: {started}")
                else:
                    self._bots.append(_Bot(started))
        leaving = [bot.client for bot in self._bots[target:]]  # the newest
        del self._bots[target:]
        for outcome in _each(ChatClient.close, leaving, "bots closer"):
            if isinstance(outcome, Exception):
                raise outcome  # our bug: the others were closed all the same

    def _free_names(self, wanted: int) -> list[str]:
        """The first ``wanted`` names that no bot has and nobody refused."""
        used = {name_key(bot.client.name) for bot in self._bots} | self._taken
        # Among the first len(used) + wanted names, at least wanted are free.
        candidates = itertools.islice(bot_names(), len(used) + wanted)
        return [name for name in candidates if name not in used][:wanted]

    def _start(self, name: str) -> ChatClient:
        client = ChatClient(
            self.host,
            self.port,
            name,
            password=self.password,
            fingerprint=self.fingerprint,
            retry_first=False,  # a bot that never got in gives up (and says why)
        )
        client.start()
        return client

    def _tend(self, now: float) -> None:
        """Empty every bot's queue; replace refused names; let the due ones talk."""
        # One bot's view of the room is enough to know who came and spoke.
        listener = next((b for b in self._bots if b.next_talk is not None), None)
        for bot in list(self._bots):
            outcome = self._drain(bot, listening=bot is listener)
            if outcome == "name taken":
                bot.client.close()
                self._taken.add(name_key(bot.client.name))
                if bot.tries < MAX_NAME_TRIES:
                    bot.tries += 1
                    name = self._free_names(1)[0]
                    try:
                        bot.client = self._start(name)
                    except Exception as exc:  # out of threads, say: as in _resize_to
                        self._note(f"could not start {name}: {exc}")
                    else:
                        continue
                else:
                    self._note(f"no free name after {bot.tries} tries")
                outcome = "closed"
            if outcome == "closed":
                # Stopped by itself (its threads end right after Closed), or
                # given up on: close() ends it and joins its threads.
                bot.client.close()
                self._bots.remove(bot)
            elif not bot.client.connected:
                bot.next_talk = None
            elif bot.next_talk is None:  # just in: not everyone at once
                bot.next_talk = now + self._rng.uniform(0, self._gap())
            elif now >= bot.next_talk:
                self._speak(bot)
                bot.next_talk = now + self._gap()

    def _speak(self, bot: _Bot) -> None:
        text, action = compose(
            self._rng,
            bot.client.name,
            self._recent,
            newcomer=self._newcomer(),
            said_lately=self._said_lately,
        )
        bot.client.say(text, me=action)
        self._said_lately.append(text)
        self._said += 1

    def _newcomer(self) -> str | None:
        """Someone who came in lately and is not a bot, to greet (once)."""
        if not self._arrived:
            return None
        ours = {name_key(bot.client.name) for bot in self._bots}
        while self._arrived:
            name = self._arrived.popleft()
            if name_key(name) not in ours:
                return name
        return None

    def _drain(self, bot: _Bot, listening: bool) -> str:
        """Take every event from a bot's queue: ``""``, ``"name taken"`` or
        ``"closed"`` (the client stopped for good)."""
        events = bot.client.events
        while True:
            try:
                event = events.get_nowait()
            except queue.Empty:
                return ""
            if isinstance(event, Message):
                if listening:
                    self._recent.append(event.sender)
            elif isinstance(event, Joined):
                if listening:
                    self._arrived.append(event.name)
            elif isinstance(event, Welcome):
                bot.welcomed = True
            elif isinstance(event, Error):
                if event.code == "name_taken" and not bot.welcomed:
                    return "name taken"  # the rest of this queue is dropped with it
                if not bot.welcomed:
                    bot.refusal = event.text
                self._note(f"{bot.client.name}: {event.text}")
            elif isinstance(event, Disconnected) and event.retry_in is None:
                # Why the server turned it away says more than how it hung up
                # ("connection reset").
                self._note(f"{bot.client.name}: {bot.refusal or event.reason}")
            elif isinstance(event, Closed):
                return "closed"

    def _gap(self) -> float:
        """Seconds until a bot's next line: about 1/rate, or longer in a crowd
        too large for that (see ``MAX_CROWD_RATE``)."""
        rate = min(self.rate, MAX_CROWD_RATE / max(len(self._bots), 1))
        return self._rng.uniform(1 - JITTER, 1 + JITTER) / rate

    def _note(self, problem: str) -> None:
        """Report ``problem`` (the property, and the log's first line of this
        resize), escaped: it holds what a server said, and any may be hostile."""
        problem = escape_text(problem)
        with self._lock:
            self._problem = problem
        if not self._warned:  # one line per resize, not one per bot
            self._warned = True
            log.warning("bots: %s", problem)


# -- python -m chat.bots ------------------------------------------------------


def _bot_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_BOTS:
        raise argparse.ArgumentTypeError(f"{text} is out of range (1 to {MAX_BOTS})")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (use 1 to 65535)")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_RATE:
        raise argparse.ArgumentTypeError(
            f"{text} is out of range (above 0, at most {MAX_RATE})"
        )
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to 86400)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chat.bots",
        description="Fill a chat room with talkative demo clients.",
    )
    parser.add_argument("n", type=_bot_count, metavar="N", help="how many bots")
    parser.add_argument("--host", default=DEFAULT_HOST, help="default %(default)s")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="default %(default)s"
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULT_RATE,
        metavar="PER_S",
        help=f"lines per second per bot (default %(default)s; at most {MAX_RATE})",
    )
    parser.add_argument(
        "--seconds", type=_seconds, metavar="S", help="stop after S seconds"
    )
    parser.add_argument("--password", help="the room password, if any")
    parser.add_argument("--seed", type=int, help="make the talk repeatable")
    return parser


def _on_stop_signals(handler: Callable[[], None]) -> Callable[[], None]:
    """Call ``handler`` on Ctrl+C or SIGTERM; returns what puts things back.

    Signals are for the main thread only: elsewhere nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signums = [signal.SIGINT, signal.SIGTERM]
    previous = {
        signum: signal.signal(signum, lambda *_: handler()) for signum in signums
    }

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore


def _watch(bots: Bots, args: argparse.Namespace, stop: threading.Event) -> int:
    """Report how the crowd is doing until ``stop`` or ``--seconds``.  Exit status."""
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    announced = False
    been_in = False  # any bot in the room at any time
    while not stop.wait(TICK):
        if deadline is not None and time.monotonic() >= deadline:
            break
        count, joined = bots.count, bots.joined
        been_in = been_in or joined > 0
        if count == 0 and bots.problem:  # every bot gave up, or was sent away
            if been_in:
                _say(f"No bot is left in the room: {bots.problem}")
            else:
                _say(f"No bot could join: {bots.problem}")
            return 1
        if not announced and 0 < count == joined:
            announced = True
            place = f"{args.host}:{args.port}"
            if count == args.n:
                _say(f"All {count} bots are in the room at {place}. Ctrl+C stops them.")
            else:
                _say(f"{count} of {args.n} bots are in the room at {place}.")
                _say(f"The others could not join: {bots.problem}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    stop = threading.Event()
    restore = _on_stop_signals(stop.set)
    started = time.monotonic()
    bots = Bots(
        args.host, args.port, rate=args.rate, seed=args.seed, password=args.password
    )
    try:
        bots.resize(args.n)
        status = _watch(bots, args, stop)
    finally:
        stopped = bots.stop()
        restore()
    elapsed = time.monotonic() - started
    _say(f"Stopped. The bots said {bots.sent} lines in {elapsed:.1f} s.")
    if not stopped:
        _say("Some bots did not stop in time.")
        return 1
    return status


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
