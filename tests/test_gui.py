"""The window, driven in-process on a real Tk (under Xvfb) against a real server.

Each test builds a ``ChatApp`` on a fresh ``Tk`` root and pumps Tk's event
loop with ``root.update()`` while it waits for a condition, so ``after()``
polls run exactly as in ``mainloop``.
"""

from __future__ import annotations

import gc
import os
import socket
import stat
import time
import tkinter as tk

import pytest

from chat import client as client_module
from chat.client import Disconnected
from chat.discovery import DiscoveryResponder
from chat.gui import app as app_module
from chat.gui.app import ChatApp
from chat.gui.format import notice_line
from chat.gui.settings import Settings
from chat.protocol import Message, Notice, Private, PrivateMessage, Welcome
from tests.helpers import (
    DEADLINE,
    json_client,
    plain_client,
    running_server,
    wait_for,
)


@pytest.fixture
def root():
    root = tk.Tk()
    root.geometry("800x500+0+0")
    yield root
    try:
        root.destroy()
    except tk.TclError:
        pass  # the test closed the window itself
    # The app and its root refer to each other: collect that cycle here, in
    # the main thread.  Left to chance, a client thread could run the garbage
    # collector and delete the Tcl interpreter from the wrong thread, which
    # aborts the process (Tcl_AsyncDelete).
    del root
    gc.collect()


@pytest.fixture
def make_app(root, tmp_path):
    """A ChatApp on ``root`` whose settings live in the test's folder."""
    apps = []

    def make(**settings):
        app = ChatApp(
            root, Settings(**settings), settings_path=tmp_path / "settings.json"
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
    apps.clear()


@pytest.fixture
def quick_comebacks(monkeypatch):
    """Reconnect attempts 0.1 - 0.5 s apart, not 1, 2, 4... s: a test whose
    server is away for a few seconds on a loaded machine must not find the
    window waiting 8 s for its next try.  (The schedule itself is tested in
    test_client.py.)"""
    monkeypatch.setattr(client_module, "BACKOFF", (0.1, 0.2, 0.5))


def pump_until(root, condition, what="", timeout=DEADLINE):
    """Run Tk's event loop until ``condition()`` is true."""

    def step():
        root.update()
        return condition()

    return wait_for(step, timeout, what)


def connected(app, server, name="ada"):
    app.connect("127.0.0.1", server.port, name)
    pump_until(app.root, lambda: app.client and app.client.connected, "welcome")
    pump_until(app.root, lambda: name in app.users.names(), "the user list")


def type_into(root, widget, text, key="Return"):
    """Put text in an entry and press a key, as a person would."""
    root.focus_force()
    widget.focus_force()
    root.update()
    widget.delete(0, "end")
    widget.insert(0, text)  # insert(): xdotool-free, and fine for any Unicode
    widget.event_generate(f"<{key}>")
    root.update()


def test_a_line_typed_reaches_others_and_theirs_reach_the_view(server, make_app):
    app = make_app()
    connected(app, server)
    with plain_client(server.port, "bob") as bob:
        pump_until(app.root, lambda: "bob" in app.users.names(), "bob in the list")
        type_into(app.root, app.entry, "hello bob")
        assert bob.expect_text("ada:") == "ada: hello bob"
        assert app.entry.get() == ""
        bob.send_line("hi ada, nice window")
        pump_until(
            app.root,
            lambda: "bob: hi ada, nice window" in app.view.contents(),
            "bob's line in the view",
        )
    pump_until(app.root, lambda: "bob" not in app.users.names(), "bob leaving")
    assert "bob left" in app.view.contents()


def test_status_bar_and_title_say_where_we_are(server, make_app):
    app = make_app()
    connected(app, server, "ada")
    assert app.status.cget("text") == f"Connected to 127.0.0.1:{server.port} as ada"
    assert app.root.title().startswith("ada")


@pytest.mark.parametrize(
    "text",
    ["héllo wörld", "emoji 👋🏽 and 🧑‍💻 together", "世界 and العربية", "a\ttab"],
)
def test_unicode_round_trips_both_ways(server, make_app, text):
    app = make_app()
    connected(app, server)
    with json_client(server.port, "bob") as bob:
        type_into(app.root, app.entry, text)
        assert bob.expect_json("message")["text"] == text
        bob.send_json(type="say", text=f"back: {text}")
        pump_until(app.root, lambda: f"bob: back: {text}" in app.view.contents())
    # The widget gives back exactly what it was given: no index drift.
    line = next(
        ln for ln in app.view.contents().splitlines() if ln.endswith(f"ada: {text}")
    )
    assert line.endswith(text)


def test_mention_is_highlighted_without_index_arithmetic(server, make_app):
    app = make_app()
    connected(app, server, "ada")
    with plain_client(server.port, "bob") as bob:
        bob.send_line("🎉🎉 @ada look 🎉")
        pump_until(app.root, lambda: "look" in app.view.contents())
    ranges = app.view.text.tag_ranges("mention")
    assert ranges, "no mention highlighted"
    highlighted = app.view.text.get(ranges[0], ranges[1])
    assert highlighted == "@ada"


def test_commands_in_the_entry(server, make_app):
    app = make_app()
    connected(app, server, "ada")
    with json_client(server.port, "bob") as bob:
        type_into(app.root, app.entry, "/msg bob just for you")
        private = bob.expect_json("private")
        assert (private["from"], private["to"], private["text"]) == (
            "ada",
            "bob",
            "just for you",
        )
        type_into(app.root, app.entry, "/me waves")
        action = bob.expect_json("message")
        assert (action["text"], action.get("me")) == ("waves", True)
        type_into(app.root, app.entry, "/nick ada2")
        pump_until(app.root, lambda: app.me == "ada2", "the rename")
        assert "ada2" in app.users.names()
        assert app.status.cget("text").endswith("as ada2")
        type_into(app.root, app.entry, "/who")
        pump_until(app.root, lambda: "Here now (2)" in app.view.contents())
        type_into(app.root, app.entry, "/help")
        assert "/msg NAME TEXT" in app.view.contents()
        type_into(app.root, app.entry, "/frobnicate")
        assert "Unknown command /frobnicate" in app.view.contents()


def test_up_and_down_recall_sent_lines(server, make_app):
    app = make_app()
    connected(app, server)
    for text in ("first", "second"):
        type_into(app.root, app.entry, text)
    app.entry.event_generate("<Up>")
    assert app.entry.get() == "second"
    app.entry.event_generate("<Up>")
    assert app.entry.get() == "first"
    app.entry.event_generate("<Down>")
    assert app.entry.get() == "second"
    app.entry.event_generate("<Down>")
    assert app.entry.get() == ""


def test_double_click_on_a_name_starts_a_private_message(server, make_app):
    app = make_app()
    connected(app, server, "ada")
    with plain_client(server.port, "bob"):
        pump_until(app.root, lambda: "bob" in app.users.names())
        listbox = app.users.listbox
        x, y, _, height = listbox.bbox(app.users.names().index("bob"))
        for _ in range(2):  # two quick clicks make Tk's double-click
            listbox.event_generate("<ButtonPress-1>", x=x + 2, y=y + height // 2)
            listbox.event_generate("<ButtonRelease-1>", x=x + 2, y=y + height // 2)
        app.root.update()
        assert app.entry.get() == "/msg bob "


def test_unread_count_in_the_title_while_unfocused(server, make_app):
    app = make_app()
    connected(app, server, "ada")
    app.focused = False  # as after the window lost focus
    with plain_client(server.port, "bob") as bob:
        bob.send_line("one")
        bob.send_line("two")
        pump_until(app.root, lambda: app.unread == 2, "two unread")
    assert app.root.title().startswith("(2) ")
    app._focus_in(None)
    assert app.unread == 0
    assert not app.root.title().startswith("(")


def test_refused_connection_is_a_message_not_a_traceback(make_app):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app()
    app.connect("127.0.0.1", port, "ada")
    pump_until(app.root, lambda: "Could not connect" in app.view.contents())
    assert "connection refused" in app.view.contents()
    assert app.status.cget("text").startswith("Reconnecting in ")
    app.disconnect()
    assert app.status.cget("text") == "Not connected"


def test_unknown_host_is_explained(make_app, monkeypatch):
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    app = make_app()
    app.connect("no-such-host.invalid", 12345, "ada")
    pump_until(app.root, lambda: "unknown host name" in app.view.contents())


def test_taken_name_offers_another(server, make_app):
    with json_client(server.port, "ada"):
        app = make_app()
        app.connect("127.0.0.1", server.port, "ada")
        pump_until(app.root, lambda: app._dialog is not None, "the connect dialog")
        dialog = app._dialog
        assert "ada2" in dialog.message.cget("text")
        assert dialog.name.get() == "ada2"
        dialog.submit()
        pump_until(app.root, lambda: app.me == "ada2" and app.client.connected)


def test_connect_dialog_checks_fields_then_connects(server, make_app):
    app = make_app(host="127.0.0.1", port=server.port, name="")
    app.ask_connect()
    dialog = app._dialog
    dialog.submit()  # no name yet
    assert "name" in dialog.message.cget("text")
    dialog.name.insert(0, "ada")
    dialog.port.delete(0, "end")
    dialog.port.insert(0, "port")
    dialog.submit()
    assert "number" in dialog.message.cget("text")
    dialog.port.delete(0, "end")
    dialog.port.insert(0, str(server.port))
    dialog.submit()
    pump_until(app.root, lambda: app.client and app.client.connected)
    assert not dialog.winfo_exists()
    saved = Settings.load(app.settings_path)
    assert (saved.host, saved.port, saved.name) == ("127.0.0.1", server.port, "ada")


def test_server_going_away_then_coming_back(make_app, quick_comebacks):
    with running_server() as first:
        port = first.port
        app = make_app()
        connected(app, first, "ada")
    pump_until(app.root, lambda: app.status.cget("text").startswith("Reconnecting"))
    assert "Server shutting down" in app.view.contents()
    with running_server(port=port) as second:
        pump_until(
            app.root,
            lambda: app.status.cget("text").startswith("Connected to"),
            "the reconnect, as the window shows it",
            timeout=DEADLINE,
        )
        assert second.room.names() == ("ada",)
        assert app.users.names() == ["ada"]


def test_typing_while_disconnected_says_so(make_app):
    app = make_app()
    type_into(app.root, app.entry, "anyone?")
    assert "Not connected" in app.view.contents()


def test_a_bug_in_a_callback_is_shown_and_the_window_goes_on(server, make_app):
    app = make_app()
    connected(app, server)
    app.root.after(0, lambda: 1 / 0)
    pump_until(app.root, lambda: "ZeroDivisionError" in app.view.contents())
    with json_client(server.port, "bob") as bob:
        type_into(app.root, app.entry, "still working")
        assert bob.expect_json("message")["text"] == "still working"


def test_a_flood_is_drawn_in_batches_and_scrollback_is_capped(server, make_app):
    app = make_app()
    app.view.max_lines = 300
    connected(app, server)
    sizes = []
    original_add = app.view.add

    def counting_add(lines):
        lines = list(lines)
        sizes.append(len(lines))
        original_add(lines)

    app.view.add = counting_add
    with json_client(server.port, "bob") as bob:
        total = 2000
        for start in range(0, total, 250):
            bob.send_raw(
                b"".join(
                    b'{"type":"say","text":"line %d"}\n' % i
                    for i in range(start, start + 250)
                )
            )
        pump_until(
            app.root,
            lambda: f"bob: line {total - 1}" in app.view.contents(),
            "the last line",
            timeout=20,
        )
    assert app.view.line_count() <= 300
    assert max(sizes) <= app_module.CHUNK
    assert len(sizes) > 1  # drawn in several batches, repainting between


def test_reconnect_countdown_in_the_status_bar(make_app):
    app = make_app()
    app.client = None
    lines = app.handle(Disconnected("the server closed the connection", 4))
    assert "Trying again in 4 s" in lines[0].plain
    assert app.status.cget("text") == "Reconnecting in 4 s"
    app._cancel_countdown()


def test_larger_and_smaller_text(make_app):
    app = make_app(font_size=11)
    app.zoom(+1)
    assert app.font.cget("size") == 12
    app.zoom(-1)
    app.zoom(-1)
    assert app.font.cget("size") == 10
    assert app.settings.font_size == 10


def test_save_transcript(server, make_app, tmp_path):
    app = make_app()
    connected(app, server)
    type_into(app.root, app.entry, "for the record")
    pump_until(app.root, lambda: "ada: for the record" in app.view.contents())
    target = tmp_path / "transcript.txt"
    app.write_transcript(target)
    assert "ada: for the record" in target.read_text(encoding="utf-8")


def test_closing_says_bye_and_stops_the_threads(server, make_app):
    app = make_app()
    connected(app, server, "ada")
    with json_client(server.port, "bob") as bob:
        app.close()
        left = bob.expect_json("left")
        assert (left["name"], left["reason"]) == ("ada", "quit")
    # conftest's thread check proves the client's threads were joined.


def test_own_message_styled_apart(server, make_app):
    app = make_app()
    connected(app, server, "ada")
    lines = app.handle(Message(1, "ada", "mine", 0.0))
    assert lines[0].kind == "own"
    lines = app.handle(Message(2, "bob", "theirs", 0.0))
    assert lines[0].kind == "chat"


def test_autoscroll_only_when_already_at_the_bottom(make_app):
    app = make_app()
    app.root.update()  # mapped and laid out, as a window is when lines come
    view = app.view
    many = [notice_line(f"line {i}") for i in range(200)]
    view.add(many)
    app.root.update()
    assert view.at_bottom()
    view.add([notice_line("one more")])
    app.root.update()
    assert view.at_bottom(), "at the bottom, a new line keeps the view there"
    view.text.yview_moveto(0.0)  # the reader scrolls up to read something old
    app.root.update()
    top = view.text.yview()[0]
    view.add([notice_line("and another")])
    app.root.update()
    assert view.text.yview()[0] == top, "scrolled up, the view must stay put"
    assert not view.at_bottom()


def test_the_bell_rings_when_someone_names_me(server, make_app, monkeypatch):
    app = make_app()
    connected(app, server, "ada")
    rings = []
    monkeypatch.setattr(app.root, "bell", lambda *args: rings.append(args))
    with plain_client(server.port, "bob") as bob:
        bob.send_line("nothing for you")
        bob.send_line("hey @ada, look")
        pump_until(app.root, lambda: "look" in app.view.contents())
    assert len(rings) == 1


def test_a_hanging_connect_can_be_cancelled_from_the_window(make_app):
    with socket.socket() as listener:  # full backlog: connects to it hang
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            app = make_app()
            app.connect("127.0.0.1", port, "ada")
            app.root.update()
            assert app.status.cget("text").startswith("Connecting to")
            started = time.monotonic()
            app.disconnect()  # Chat → Disconnect
            assert time.monotonic() - started < 1.0
            assert app.status.cget("text") == "Not connected"
        finally:
            for filler in fillers:
                filler.close()


def test_ctrl_plus_and_ctrl_minus_change_the_text_size(make_app):
    app = make_app(font_size=11)
    app.root.focus_force()
    app.entry.focus_force()
    app.root.update()
    app.entry.event_generate("<Control-plus>")
    app.root.update()
    assert app.font.cget("size") == 12
    app.entry.event_generate("<Control-minus>")
    app.entry.event_generate("<Control-minus>")
    app.root.update()
    assert app.font.cget("size") == 10


def test_the_menus_offer_what_the_issue_asks_for(make_app):
    app = make_app()

    def labels(menu):
        return [
            menu.entrycget(i, "label")
            for i in range(menu.index("end") + 1)
            if menu.type(i) == "command"
        ]

    assert labels(app.menus["chat"]) == [
        "Connect…",
        "Disconnect",
        "Save transcript…",
        "Quit",
    ]
    assert labels(app.menus["view"])[:2] == ["Larger text", "Smaller text"]
    assert labels(app.menus["help"]) == ["Commands", "About"]


def test_control_characters_are_shown_escaped_not_obeyed(server, make_app):
    app = make_app()
    connected(app, server, "ada")
    with json_client(server.port, "bob") as bob:
        bob.send_json(type="say", text="red\x1b[31m \u202eevil\u200b\x07 ok 👋")
        pump_until(app.root, lambda: "ok 👋" in app.view.contents())
    shown = app.view.contents().splitlines()[-1]
    assert shown.endswith("bob: red\\x1b[31m \\u202eevil\\u200b\\x07 ok 👋")
    assert not any(ord(c) < 32 or 0x200B <= ord(c) <= 0x202E for c in shown)


# -- nothing lost (issue 8) ------------------------------------------------------


def pending_texts(app):
    """The view's lines still waiting for the server (greyed, with a clock)."""
    text = app.view.text
    ranges = text.tag_ranges("pending")
    return {
        text.get(ranges[i], ranges[i + 1]).strip() for i in range(0, len(ranges), 2)
    }


def test_lines_typed_while_the_server_is_away_go_once_in_order(
    make_app, tmp_path, quick_comebacks
):
    db = str(tmp_path / "history.db")
    with running_server(db=db) as first:
        port = first.port
        app = make_app()
        connected(app, first, "ada")
        type_into(app.root, app.entry, "before the outage")
        pump_until(app.root, lambda: "ada: before the outage" in app.view.contents())
    pump_until(app.root, lambda: app.status.cget("text").startswith("Reconnecting"))
    for text in ("one", "two", "three"):
        type_into(app.root, app.entry, text)
    shown = pending_texts(app)  # at once, greyed, with a clock, in order
    assert [line.split("⏲ ")[1] for line in sorted(shown)] == [
        "ada: one",
        "ada: three",
        "ada: two",
    ]
    with running_server(port=port, db=db) as second, json_client(port, "bob") as bob:
        pump_until(
            app.root,
            lambda: not app._pending and app.client.connected,
            "the three lines to be confirmed",
            timeout=DEADLINE + 3,
        )
        said = [m.text for m in second.room.history() if m.sender == "ada"]
        assert said == ["before the outage", "one", "two", "three"]
        bob.send_json(type="say", text="welcome back")
        pump_until(app.root, lambda: "bob: welcome back" in app.view.contents())
    lines = app.view.contents().splitlines()
    ada = [line.split("ada: ", 1)[1] for line in lines if "ada: " in line]
    assert ada == ["before the outage", "one", "two", "three"]  # once each, in order
    assert not app.view.text.tag_ranges("pending")


def test_what_was_missed_comes_under_a_divider_without_duplicates(
    make_app, tmp_path, quick_comebacks
):
    db = str(tmp_path / "history.db")
    with running_server(db=db) as first:
        port = first.port
        with json_client(port, "bob") as bob:
            app = make_app()
            connected(app, first, "ada")
            bob.send_json(type="say", text="seen before")
            pump_until(app.root, lambda: "bob: seen before" in app.view.contents())
    pump_until(app.root, lambda: app.status.cget("text").startswith("Reconnecting"))
    with running_server(port=port, db=db) as second, json_client(port, "carl") as carl:
        carl.send_json(type="say", text="missed one")
        carl.send_json(type="say", text="missed two")
        wait_for(lambda: len(second.room.history()) == 3, what="the missed lines")
        pump_until(
            app.root,
            lambda: app.status.cget("text").startswith("Connected"),
            "the reconnect",
            timeout=DEADLINE + 3,
        )
        pump_until(app.root, lambda: "carl: missed two" in app.view.contents())
    lines = app.view.contents().splitlines()
    divider = next(i for i, line in enumerate(lines) if "while you were away" in line)
    assert "carl: missed one" in lines[divider + 1]
    assert "carl: missed two" in lines[divider + 2]
    assert sum("bob: seen before" in line for line in lines) == 1


def test_a_refused_line_is_shown_failed_and_a_click_sends_it_again(server, make_app):
    app = make_app()
    connected(app, server, "ada")
    server.room.mute("ada")
    type_into(app.root, app.entry, "let me speak")
    pump_until(app.root, lambda: "not sent" in app.view.contents())
    assert "click to send again" in app.view.contents()
    assert app.view.text.tag_ranges("failed")
    server.room.unmute("ada")
    x, y = app.view.text.bbox(app.view.text.tag_ranges("retry")[0])[:2]
    # Tk finds the tag under the mouse by its motion: move there, then click.
    for event in ("<Motion>", "<ButtonPress-1>", "<ButtonRelease-1>"):
        app.view.text.event_generate(event, x=x + 2, y=y + 2)
    pump_until(  # shown at once as pending, then confirmed by the server
        app.root,
        lambda: (
            "not sent" not in app.view.contents()
            and "ada: let me speak" in app.view.contents()
            and not app.view.text.tag_ranges("pending")
        ),
        "the line sent again and confirmed",
    )
    assert not app.view.text.tag_ranges("failed")
    assert [m.text for m in server.room.history()] == ["let me speak"]


def test_find_servers_fills_in_the_address(make_app):
    with running_server() as chat_server:
        responder = DiscoveryResponder(
            "127.0.0.1",
            chat_server.port,
            lambda: {
                "name": "classroom",
                "port": chat_server.port,
                "users": 0,
                "password": False,
                "tls": False,
            },
        )
        responder.start()
        try:
            app = make_app(host="", port=chat_server.port, name="ada")
            app.find_targets = lambda: ["127.0.0.1"]  # never the real network
            app.ask_connect()
            dialog = app._dialog
            dialog.find_button.invoke()
            pump_until(app.root, lambda: dialog.found.size() == 1, "an answer")
            assert "classroom" in dialog.found.get(0)
            assert f"127.0.0.1:{chat_server.port}" in dialog.found.get(0)
            dialog.found.selection_set(0)
            dialog.found.event_generate("<<ListboxSelect>>")
            assert dialog.host.get() == "127.0.0.1"
            assert dialog.port.get() == str(chat_server.port)
            dialog.submit()
            pump_until(app.root, lambda: app.client and app.client.connected)
        finally:
            responder.stop()


def test_find_servers_says_when_nobody_answers(make_app):
    app = make_app(host="127.0.0.1", port=12345, name="ada")
    app.find_targets = lambda: ["127.0.0.1"]
    app.ask_connect()
    dialog = app._dialog
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))  # a port where nobody answers
        dialog.port.delete(0, "end")
        dialog.port.insert(0, str(quiet.getsockname()[1]))
        dialog.find_button.invoke()
        label = dialog.found_label
        pump_until(app.root, lambda: "No server answered" in label.cget("text"))
    assert dialog.found.size() == 0


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
def test_find_servers_refuses_a_port_out_of_range(make_app, port):
    """Not a search that dies in its thread with a traceback."""
    app = make_app(host="127.0.0.1", port=12345, name="ada")
    asked = []
    app.find_targets = lambda: asked.append(1) or ["127.0.0.1"]
    app.ask_connect()
    dialog = app._dialog
    dialog.port.delete(0, "end")
    dialog.port.insert(0, port)
    dialog.find_button.invoke()
    assert dialog.found_label.cget("text") == "The port is a number from 1 to 65535."
    assert asked == [] and dialog._finder is None


def test_closing_the_dialog_stops_a_search_of_many_networks(make_app):
    app = make_app(host="127.0.0.1", port=12345, name="ada")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))  # nobody answers: each target takes 1 s
        app.find_targets = lambda: ["127.0.0.1"] * 5
        app.ask_connect()
        dialog = app._dialog
        dialog.port.delete(0, "end")
        dialog.port.insert(0, str(quiet.getsockname()[1]))
        dialog.find_button.invoke()
        finder = dialog._finder
        dialog.destroy()
        assert not finder.is_alive()  # joined, not left behind for 4 s more


def test_the_doctor_explains_a_refused_connection_once(make_app):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app()
    app.connect("127.0.0.1", port, "ada")
    pump_until(app.root, lambda: "Is the server running?" in app.view.contents())
    pump_until(
        app.root,
        lambda: app.view.contents().count("Could not connect") >= 2,
        "a second attempt",
        timeout=DEADLINE + 2,
    )
    assert app.view.contents().count("Is the server running?") == 1
    app.disconnect()


def test_view_wire_shows_the_bytes_and_costs_nothing_when_closed(server, make_app):
    app = make_app()
    app.show_wire()
    connected(app, server, "ada")
    panel = app._wire_panel
    assert app.client.wire is panel.feed
    type_into(app.root, app.entry, "hello wire")
    pump_until(app.root, lambda: "hello wire" in panel.contents(), "the chunk shown")
    assert "→" in panel.contents() and "←" in panel.contents()
    panel.close()
    app.root.update()
    assert app._wire_panel is None
    assert app.client.wire is None  # closed: no hook, no cost


def test_settings_never_replace_what_is_not_a_file(tmp_path, caplog):
    """Saving to /dev/null or a folder leaves it as it was, and says why."""
    folder = tmp_path / "settings.json"
    folder.mkdir()
    Settings(font_size=14).save(folder)
    assert folder.is_dir()
    assert "not a regular file" in caplog.text
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    Settings(font_size=14).save(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


# -- lines of ours through lost links, refusals and replays ---------------------


def click_send_again(app):
    """Click the first failed line's "click to send again", as a person would."""
    text = app.view.text
    x, y = text.bbox(text.tag_ranges("retry")[0])[:2]
    for event in ("<Motion>", "<ButtonPress-1>", "<ButtonRelease-1>"):
        text.event_generate(event, x=x + 2, y=y + 2)


def shown_once(app, fragment):
    return sum(fragment in line for line in app.view.contents().splitlines()) == 1


def test_a_replay_may_hold_a_private_line(server, make_app):
    """With --store-private a comeback's history holds private lines."""
    app = make_app()
    connected(app, server)
    room = app.timeline.room
    private = PrivateMessage("bob", "ada", "kept for you", time.time(), id=999)
    app.client.events.put(Welcome("ada", ("ada",), (private,), room))
    pump_until(app.root, lambda: "kept for you" in app.view.contents())
    assert "Something went wrong" not in app.view.contents()


def test_an_event_that_fails_stops_nothing_after_it(server, make_app, monkeypatch):
    app = make_app()
    connected(app, server)
    handle = app.handle

    def buggy(event):
        if isinstance(event, Notice) and event.text == "boom":
            raise RuntimeError("a bug in the window")
        return handle(event)

    monkeypatch.setattr(app, "handle", buggy)
    app.client.events.put(Notice("boom"))
    app.client.events.put(Notice("after the bug"))
    pump_until(app.root, lambda: "after the bug" in app.view.contents())
    assert "RuntimeError: a bug in the window" in app.view.contents()
    app.client.events.put(Notice("and later"))  # the poll goes on
    pump_until(app.root, lambda: "and later" in app.view.contents())


def test_our_line_confirmed_with_an_older_id_is_shown(server, make_app):
    """A resend is answered with the first copy, whose id may be below lines
    shown since (the echo was lost with the link): it is shown all the same."""
    app = make_app()
    connected(app, server)
    app._show_pending("c9", Private("bob", "see you at 5", cid="c9"))
    now = time.time()
    app.client.events.put(Message(100, "bob", "a newer line", now))
    app.client.events.put(PrivateMessage("ada", "bob", "see you at 5", now, "c9", 50))
    pump_until(app.root, lambda: "a newer line" in app.view.contents())
    pump_until(app.root, lambda: not app.view.text.tag_ranges("pending"))
    assert shown_once(app, "see you at 5")  # confirmed, not dropped


def test_a_line_unconfirmed_at_a_disconnect_is_settled_by_the_replay(server, make_app):
    app = make_app()
    connected(app, server)
    app.submit("hello")
    wait_for(lambda: [m.text for m in server.room.history()] == ["hello"])
    app.disconnect()  # before the window took the echo
    assert "not confirmed: disconnected" in app.view.contents()
    connected(app, server)
    pump_until(app.root, lambda: "not confirmed" not in app.view.contents())
    assert shown_once(app, "ada: hello")
    assert [m.text for m in server.room.history()] == ["hello"]


def test_send_again_sends_the_same_line_not_a_second_copy(server, make_app):
    with json_client(server.port, "bob") as bob:
        app = make_app()
        connected(app, server)
        app.submit("/msg bob see you at 5")
        assert bob.expect_json("private")["text"] == "see you at 5"
        app.disconnect()  # before the window took the echo
        connected(app, server)  # private lines are not replayed by default
        click_send_again(app)
        pump_until(
            app.root,
            lambda: not app._pending and not app.view.text.tag_ranges("failed"),
            "the line confirmed",
        )
        assert shown_once(app, "see you at 5")
        app.submit("after that")
        seen = []
        while not seen or seen[-1].get("text") != "after that":
            seen.append(bob.next_json())
        assert [m for m in seen if m["type"] == "private"] == []  # not twice


def test_send_again_while_not_connected_keeps_the_line(server, make_app):
    app = make_app()
    connected(app, server)
    app.submit("my careful answer")
    app.disconnect()
    click_send_again(app)
    app.root.update()
    assert "Not connected" in app.view.contents()
    assert "my careful answer" in app.view.contents()
    assert app.view.text.tag_ranges("failed")  # still there, to click again


def test_a_comeback_that_finds_our_name_still_taken_keeps_trying(
    make_app, quick_comebacks
):
    with running_server() as first:
        port = first.port
        app = make_app()
        connected(app, first)
    pump_until(app.root, lambda: app.status.cget("text").startswith("Reconnecting"))
    # The server came back with our name held, as by our own old connection
    # that it has not dropped yet; it hangs up on a nameless one after 1 s.
    with running_server(port=port, register_timeout=1.0) as second:
        with json_client(port, "ada"):
            pump_until(
                app.root,
                lambda: "old connection has not ended yet" in app.view.contents(),
                "the refusal",
                timeout=DEADLINE + 3,
            )
            assert app._dialog is None and app.client is not None
        pump_until(
            app.root,
            lambda: app.client.connected and "ada" in app.users.names(),
            "back in, once the name is free",
            timeout=DEADLINE + 8,
        )
        assert "ada" in second.room.names()


def test_a_line_too_long_to_send_gives_the_text_back(server, make_app):
    app = make_app()
    connected(app, server)
    text = "z" * 9000
    type_into(app.root, app.entry, text)
    pump_until(app.root, lambda: "too long to send" in app.view.contents())
    assert app.entry.get() == text  # to be cut down, not typed again
    assert not app._pending and not app.view.text.tag_ranges("pending")


def test_a_damaged_trusted_certificate_entry_is_ignored(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"trusted": {"h:1": 12345, "h:2": "AB:CD", "h:3": null}}')
    assert Settings.load(path).trusted == {"h:2": "AB:CD"}


# -- what another program's server or a user may send, and typing mistakes ------


def test_a_host_with_bad_dots_is_refused_by_the_dialog():
    from chat.gui.dialogs import check_connect_fields

    for host in ("127.0.0..1", ".127.0.0.1", "a" * 64 + ".example"):
        said = check_connect_fields(host, "12345", "ada")
        assert isinstance(said, str) and "not valid" in said


def test_names_from_the_server_are_escaped_like_text():
    from chat.gui.format import message_line, private_line

    forged = "mallory: hi\n23:59 teacher"
    shown = "".join(
        piece for piece, _ in message_line(Message(1, forged, "x", 0.0), "ada").pieces
    )
    assert "\n" not in shown and "\\n" in shown
    private = PrivateMessage("x\u202eevil", "ada", "hello", 0.0, id=2)
    shown = "".join(piece for piece, _ in private_line(private, "ada").pieces)
    assert "\u202e" not in shown


def test_a_line_padded_with_spaces_cannot_pass_for_a_new_line(server, make_app):
    app = make_app()
    connected(app, server)
    padded = "ok" + " " * 400 + "12:05 carol: class is cancelled"
    app.client.events.put(Message(7, "bob", padded, time.time()))
    pump_until(app.root, lambda: "class is cancelled" in app.view.contents())
    text = app.view.text
    fake = text.search("12:05 carol", "1.0")
    text.see(fake)
    app.root.update()
    x_fake, x_line = text.bbox(fake)[0], text.bbox(f"{fake} linestart")[0]
    assert x_fake >= x_line + 20  # a wrapped part is indented


def test_a_transcript_path_that_cannot_be_written_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        app_module.main(["--log", str(tmp_path / "no such folder" / "log.txt")])
    assert stopped.value.code == 2
    assert "cannot write" in capsys.readouterr().err


def click(root, widget):
    """Press and release mouse button 1 over ``widget``, as a person would."""
    root.update()
    x, y = widget.winfo_width() // 2, widget.winfo_height() // 2
    widget.event_generate("<Enter>", x=x, y=y)
    widget.event_generate("<ButtonPress-1>", x=x, y=y)
    widget.event_generate("<ButtonRelease-1>", x=x, y=y)
    root.update()


def test_the_send_button_gives_the_keyboard_back_to_the_entry(server, make_app):
    app = make_app()
    connected(app, server)
    app.root.focus_force()
    app.entry.focus_force()
    app.entry.insert(0, "sent with the button")
    click(app.root, app.send_button)
    pump_until(app.root, lambda: "ada: sent with the button" in app.view.contents())
    assert app.root.focus_get() is app.entry, "typing on must go to the entry"


def test_a_pasted_text_of_several_lines_goes_as_several_lines(server, make_app):
    app = make_app()
    connected(app, server)
    with plain_client(server.port, "bob") as bob:
        pump_until(app.root, lambda: "bob" in app.users.names())
        type_into(app.root, app.entry, "line one\nline two\r\n\nline three\n")
        assert bob.expect_text("ada:") == "ada: line one"
        assert bob.expect_text("ada:") == "ada: line two"
        assert bob.expect_text("ada:") == "ada: line three"
    assert "\\n" not in app.view.contents()


def test_a_reason_ending_in_a_mark_gets_no_second_full_stop(make_app):
    app = make_app()
    app.client = None
    lines = app.handle(Disconnected("Server shutting down. Goodbye!", 1))
    assert "Goodbye!. " not in lines[0].plain
    assert "Disconnected: Server shutting down. Goodbye! Trying again" in (
        lines[0].plain
    )
    app._cancel_countdown()


def test_a_window_made_smaller_still_shows_the_newest_lines(make_app):
    app = make_app()
    app.root.update()
    view = app.view
    view.add([notice_line(f"line {i}") for i in range(200)])
    app.root.update()
    assert view.at_bottom()
    app.root.geometry("500x340")
    pump_until(app.root, lambda: app.root.winfo_height() <= 340, "the resize")
    assert view.at_bottom(), "the newest line must stay in sight"
    view.add([notice_line("someone else talks")])
    app.root.update()
    assert view.at_bottom()
