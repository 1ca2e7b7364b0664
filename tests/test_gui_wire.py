"""The wire panel on a real Tk (under Xvfb), fed from other threads.

Chunks go in through ``panel.feed`` from a background thread, as the
client's reader and writer threads call it; the test pumps Tk's event loop
with ``root.update()`` until the rows appear, so the panel's ``after()`` poll
runs exactly as in ``mainloop``.  The last test wires a real ``ChatClient``
to the panel against a real server.
"""

from __future__ import annotations

import gc
import threading
import tkinter as tk

import pytest

from chat.client import ChatClient
from chat.gui import wire as wire_module
from chat.gui.wire import WirePanel
from chat.wire import BAD, CUT, ESCAPE, IN, OUT, SPLIT
from tests.helpers import DEADLINE, running_server, wait_for

HELLO = b'{"type":"hello","name":"ada"}\n'
WAVE = "👋".encode()


@pytest.fixture
def root():
    root = tk.Tk()
    root.withdraw()
    yield root
    try:
        root.destroy()
    except tk.TclError:
        pass
    # Tk objects must be freed in the main thread (see tests/test_gui.py).
    del root
    gc.collect()


class Owner:
    """Stands in for the window that opened the panel."""

    def __init__(self) -> None:
        self.closes = 0

    def on_close(self) -> None:
        self.closes += 1


@pytest.fixture
def owner():
    return Owner()


@pytest.fixture
def make_panel(root, owner):
    panels = []

    def make(**options):
        panel = WirePanel(root, owner.on_close, **options)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.close()


def pump_until(root, condition, what="", timeout=DEADLINE):
    """Run Tk's event loop until ``condition()`` is true."""

    def step():
        root.update()
        return condition()

    return wait_for(step, timeout, what)


def feed_from_a_thread(panel, chunks) -> None:
    """Call ``panel.feed`` from another thread, as a ChatClient does."""
    thread = threading.Thread(
        target=lambda: [panel.feed(d, data) for d, data in chunks], name="feeder"
    )
    thread.start()
    thread.join(DEADLINE)


def tagged(panel, tag) -> list[str]:
    """The pieces of the panel's text that carry ``tag``."""
    ranges = panel.text.tag_ranges(tag)
    return [
        panel.text.get(a, b) for a, b in zip(ranges[::2], ranges[1::2], strict=True)
    ]


def rows(panel) -> list[str]:
    return panel.contents().splitlines()


def test_chunks_fed_from_another_thread_appear_as_rows(root, make_panel):
    panel = make_panel()
    chunks = [
        (OUT, HELLO),
        (IN, b'{"type":"welcome"}\r\n{"type":"joined"}\n{"ty'),
        (IN, b'pe":"x","text":"hi ' + WAVE[:2]),
        (IN, WAVE[2:] + b'"}\n\xff\x1b'),
    ]
    feed_from_a_thread(panel, chunks)
    pump_until(root, lambda: panel.row_count() == 4, "four rows")
    lines = rows(panel)
    assert len(lines) == 8  # a line of text and a line of hex per chunk
    assert lines[0].startswith("→ ")
    assert lines[0].endswith('    30 B  {"type":"hello","name":"ada"}⏎┃')
    assert lines[1].strip() == (
        "7b 22 74 79 70 65 22 3a  22 68 65 6c 6c 6f 22 2c  "
        "22 6e 61 6d 65 22 3a 22  61 64 61 22 7d 0a ┃"
    )
    assert lines[2].startswith("← ")
    assert lines[2].endswith('{"type":"welcome"}\\r⏎┃{"type":"joined"}⏎┃{"ty')
    assert lines[4].endswith('pe":"x","text":"hi ⟨f0 9f…⟩')
    assert lines[6].endswith('⟨…91 8b⟩👋"}⏎┃\\xff\\x1b')
    # Each mark has its own look, in the text and in the hex below it.
    assert tagged(panel, CUT) == ["⟨f0 9f…⟩", "f0 9f", "⟨…91 8b⟩", "91 8b"]
    assert tagged(panel, BAD) == ["\\xff", "ff"]
    assert tagged(panel, SPLIT) == ["┃"] * 8  # four in the text, four in the hex
    assert "⏎" in tagged(panel, ESCAPE)[0]
    # The direction is coloured.
    assert OUT in panel.text.tag_names("1.0")
    assert IN in panel.text.tag_names("3.0")
    assert panel.status.cget("text") == (
        f"1 chunk sent ({len(HELLO)} B), "
        f"3 chunks received ({sum(len(data) for _, data in chunks[1:])} B)"
    )


def test_pause_stops_drawing_and_resume_says_what_was_missed(root, make_panel):
    panel = make_panel()
    feed_from_a_thread(panel, [(OUT, b"before\n")])
    pump_until(root, lambda: panel.row_count() == 1)
    panel.pause_button.invoke()
    assert panel.paused
    assert panel.pause_button.cget("text") == "Resume"
    feed_from_a_thread(panel, [(IN, b"while paused\n")] * 3)
    pump_until(root, lambda: panel.feed.queue.empty(), "the chunks to be read")
    root.update()
    assert panel.row_count() == 1
    assert "while paused" not in panel.contents()
    assert "paused: 3 chunks not shown" in panel.status.cget("text")
    panel.pause_button.invoke()
    assert not panel.paused
    assert rows(panel)[-1].strip() == "⋯ 3 chunks (39 B) not shown while paused"
    feed_from_a_thread(panel, [(OUT, b"after\n")])
    pump_until(root, lambda: "after⏎┃" in panel.contents(), "drawing again")


def test_clear_empties_the_panel(root, make_panel):
    panel = make_panel()
    feed_from_a_thread(panel, [(OUT, HELLO), (IN, b"x\n")])
    pump_until(root, lambda: panel.row_count() == 2)
    panel.clear_button.invoke()
    assert panel.contents() == ""
    assert panel.row_count() == 0
    assert panel.status.cget("text").startswith("0 chunks sent (0 B)")
    feed_from_a_thread(panel, [(IN, b"y\n")])
    pump_until(root, lambda: panel.row_count() == 1)


def test_old_rows_go_so_memory_stays_flat(root, make_panel):
    panel = make_panel(max_rows=10)
    feed_from_a_thread(panel, [(IN, f"line {i}\n".encode()) for i in range(100)])
    pump_until(root, lambda: "line 99⏎" in panel.contents(), "the last chunk")
    assert panel.row_count() == 10
    assert len(rows(panel)) == 20
    assert "line 89⏎" not in panel.contents()
    assert rows(panel)[0].endswith("line 90⏎┃")


def test_chunks_are_drawn_in_bounded_batches(root, make_panel, monkeypatch):
    panel = make_panel()
    sizes = []
    draw = panel._draw
    monkeypatch.setattr(
        panel, "_draw", lambda rows: (sizes.append(len(rows)), draw(rows))
    )
    feed_from_a_thread(panel, [(IN, b"x\n")] * 300)
    pump_until(root, lambda: panel.row_count() == 300, "every chunk")
    assert max(sizes) <= wire_module.CHUNK
    assert len(sizes) > 1


def test_a_panel_that_falls_behind_counts_what_it_lost(root, make_panel):
    panel = make_panel(max_queued=5)
    feed_from_a_thread(panel, [(IN, b"x\n")] * 12)  # nothing drains meanwhile
    pump_until(root, lambda: panel.row_count() == 6, "five rows and a note")
    assert rows(panel)[-1].strip() == "⋯ 7 chunks lost here: the panel fell behind"
    assert panel.status.cget("text").endswith("; 7 chunks lost")


def test_what_waits_to_be_drawn_is_bounded_in_bytes_too(root, make_panel):
    """A flood of 64 KiB chunks must not pile up hundreds of MB unseen."""
    panel = make_panel(max_queued_bytes=1000)
    feed_from_a_thread(panel, [(IN, b"y" * 400)] * 4)  # nothing drains meanwhile
    pump_until(root, lambda: panel.row_count() == 3, "two rows and a note")
    assert rows(panel)[-1].strip() == "⋯ 2 chunks lost here: the panel fell behind"
    feed_from_a_thread(panel, [(IN, b"z" * 900)])  # drained: room again
    pump_until(root, lambda: panel.row_count() == 4, "the next chunk")


def test_a_long_chunk_is_capped(root, make_panel):
    panel = make_panel(max_shown=100)
    feed_from_a_thread(panel, [(IN, b"z" * 5000)])
    pump_until(root, lambda: panel.row_count() == 1)
    assert rows(panel)[0].endswith("z" * 100 + " … (4900 more bytes)")
    assert rows(panel)[1].endswith("7a 7a …")


def test_close_cancels_the_poll_and_tells_the_owner(root, make_panel, owner):
    panel = make_panel()
    poll_id = panel._poll_id
    assert poll_id in root.tk.call("after", "info")
    feed = panel.feed
    panel.close()
    assert owner.closes == 1
    assert poll_id not in root.tk.call("after", "info")
    assert not root.winfo_children()
    feed(OUT, HELLO)  # a client thread that has not heard yet: no effect
    assert feed.queue.empty()
    panel.close()  # twice is harmless
    assert owner.closes == 1


def test_the_window_close_button_closes_it(root, make_panel, owner):
    panel = make_panel()
    panel.tk.call(panel.protocol("WM_DELETE_WINDOW"))
    assert owner.closes == 1
    assert not root.winfo_children()


def test_a_panel_whose_parent_goes_away_stops_too(root, owner):
    parent = tk.Toplevel(root)
    panel = WirePanel(parent, owner.on_close)
    poll_id = panel._poll_id
    parent.destroy()
    assert owner.closes == 1
    assert poll_id not in root.tk.call("after", "info")
    assert not panel.feed.open


def test_a_real_client_shows_its_hello_and_the_welcome(root, make_panel):
    panel = make_panel()
    with running_server() as server:
        client = ChatClient("127.0.0.1", server.port, "ada", wire=panel.feed)
        client.start()
        try:
            pump_until(root, lambda: '"type":"welcome"' in panel.contents(), "welcome")
            client.say("hi 👋")
            pump_until(root, lambda: '"type":"message"' in panel.contents(), "echo")
        finally:
            client.close()
    lines = rows(panel)
    hello = next(line for line in lines if '"type":"hello"' in line)
    welcome = next(line for line in lines if '"type":"welcome"' in line)
    say = next(line for line in lines if '"type":"say"' in line)
    assert hello.startswith("→ ") and hello.endswith('"name":"ada"}⏎┃')
    assert welcome.startswith("← ")
    assert say.startswith("→ ") and '"text":"hi 👋"' in say
    assert lines.index(hello) < lines.index(welcome) < lines.index(say)
    client.wire = None  # what the owner does when the panel closes


# ---------------------------------------------------------------------------
# Review: a hostile stream must not freeze the window


def test_chunks_full_of_marks_do_not_freeze_the_window(root, make_panel):
    """Newlines, bad bytes and controls give a row hundreds of coloured
    marks; Tk's text widget slows down with the square of the tag changes
    in one line, so one poll drawing such rows used to take seconds."""
    import time

    panel = make_panel()
    polls = []
    poll = panel._poll

    def timed_poll():  # the poll reschedules itself as panel._poll: this
        started = time.monotonic()
        poll()
        polls.append(time.monotonic() - started)

    panel._poll = timed_poll
    pump_until(root, lambda: polls, "a timed poll")  # the first one is not
    hostile = [b"\n" * 256, b"a\xff" * 128, bytes(range(32)) * 8, b"\n" * 65536]
    feed_from_a_thread(panel, [(IN, hostile[i % 4]) for i in range(12)])
    pump_until(root, lambda: panel.row_count() == 12, "every row", timeout=60)
    assert max(polls) < 0.25, f"the window froze for {max(polls):.1f} s"
    assert tagged(panel, SPLIT)  # still coloured
    assert "\\xff" in panel.contents()


def test_a_loss_is_shown_where_it_happened(root, make_panel, monkeypatch):
    """Chunks lost to a full queue are noted between the chunks they came
    between, and the cut character they held is forgotten before the next
    chunk: a client thread may queue more while the panel is draining."""
    panel = make_panel(max_queued=1)
    euro = "€".encode()  # e2 82 ac
    panel.feed(IN, b"a" + euro[:2])  # queued, and ends inside €
    panel.feed(IN, euro[2:] + b"b" + WAVE[:2])  # lost: the queue is full
    get = panel.feed.queue.get_nowait

    def get_then_the_client_goes_on():
        chunk = get()
        monkeypatch.setattr(panel.feed.queue, "get_nowait", get)
        panel.feed(IN, WAVE[2:] + b"c")  # there is room again
        return chunk

    monkeypatch.setattr(panel.feed.queue, "get_nowait", get_then_the_client_goes_on)
    pump_until(root, lambda: panel.row_count() == 3, "two rows and a note")
    lines = rows(panel)
    assert lines[0].endswith("a⟨e2 82…⟩")
    assert lines[2].strip() == "⋯ 1 chunk lost here: the panel fell behind"
    # Not "⟨…91⟩\u2091": e2 82 91 is a character, but not one that was sent.
    assert lines[3].endswith("B  \\x91\\x8bc")
