"""The client core (``chat.client``) against a real server, and the console client."""

from __future__ import annotations

import contextlib
import errno
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat import client as client_module
from chat.client import (
    ChatClient,
    Closed,
    Connected,
    Connecting,
    Disconnected,
    describe_failure,
)
from chat.protocol import (
    MAX_LINE_BYTES,
    Error,
    Joined,
    Left,
    Message,
    Say,
    Welcome,
    encode,
)
from tests.helpers import (
    DEADLINE,
    LineClient,
    in_a_thread,
    json_client,
    running_server,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent


def next_event(client: ChatClient, kind: type, timeout: float = DEADLINE):
    """Skip events until one of ``kind`` comes; return it."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind.__name__} event within {timeout} s")
        try:
            event = client.events.get(timeout=remaining)
        except queue.Empty:
            continue
        if isinstance(event, kind):
            return event


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("user", "name"),
    [
        ("ada", "ada"),
        ("server", "guest"),
        ("Server", "guest"),
        ("ada lovelace", "adalovelace"),
        ("", "guest"),
    ],
)
def test_the_default_name_is_one_the_server_accepts(monkeypatch, user, name):
    """A user called "server" would be refused for good at the first try."""
    monkeypatch.setattr(client_module.getpass, "getuser", lambda: user)
    assert client_module.default_name() == name


def test_events_in_order_from_connect_to_welcome(server, make_client):
    client = make_client(server.port)
    kinds = [type(next_event(client, object)) for _ in range(3)]
    assert kinds == [Connecting, Connected, Welcome]
    assert client.connected


def test_say_reaches_the_room_and_comes_back(server, make_client):
    client = make_client(server.port)
    next_event(client, Welcome)
    with json_client(server.port, "bob") as bob:
        next_event(client, Joined)
        client.say("hi 👋")
        assert bob.expect_json("message")["text"] == "hi 👋"
        echoed = next_event(client, Message)
        assert (echoed.sender, echoed.text) == ("ada", "hi 👋")


@pytest.mark.parametrize("size", [MAX_LINE_BYTES, 2 * 1024 * 1024])
def test_a_line_too_long_for_the_protocol_is_refused_before_it_goes(
    server, make_client, size
):
    """The server would refuse it without its cid (or hang up, past 1 MiB,
    and the line would go again at every reconnect): it never leaves."""
    client = make_client(server.port)
    next_event(client, Welcome)
    assert client.say("x" * size) == ""
    refused = next_event(client, Error)
    assert refused.code == "too_long" and "at most 8,192" in refused.text
    assert client.unconfirmed() == []
    client.say("short")  # the connection is still fine
    assert next_event(client, Message).text == "short"
    assert [m.text for m in server.room.history()] == ["short"]


def test_a_line_just_within_the_limit_goes(server, make_client):
    client = make_client(server.port)
    next_event(client, Welcome)
    envelope = len(encode(Say("", cid="0" * 12)))  # a cid is 12 hex digits
    text = "x" * (MAX_LINE_BYTES + 1 - envelope)
    client.say(text)
    assert next_event(client, Message).text == text


def test_a_line_over_the_servers_own_limit_is_refused_before_it_goes():
    """A server started with ``--max-line-bytes`` below the protocol's says so
    in its welcome: a longer line would be refused there without its cid."""
    with running_server(max_line_bytes=100) as server:
        with json_client(server.port, "bob") as bob:
            assert bob.welcome["max_line"] == 100
        client = ChatClient("127.0.0.1", server.port, "ada")
        try:
            queued = client.say("q" * 150)  # before the welcome: the limit unknown
            client.say("first")
            client.start()
            refused = next_event(client, Error)
            assert (refused.code, refused.cid) == ("too_long", queued)
            assert "at most 100" in refused.text
            assert next_event(client, Message).text == "first"
            assert client.say("x" * 150) == ""  # after it: not even queued
            refused = next_event(client, Error)
            assert refused.code == "too_long" and refused.cid
            client.say("second")
            assert next_event(client, Message).text == "second"
            assert client.unconfirmed() == []
            assert [m.text for m in server.room.history()] == ["first", "second"]
        finally:
            client.close()


def test_a_server_on_the_protocols_limit_does_not_say_it(server):
    with json_client(server.port, "bob") as bob:
        assert "max_line" not in bob.welcome


def test_a_bug_in_the_reader_thread_ends_the_client_with_a_word(
    make_client, monkeypatch
):
    def broken(self, first):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ChatClient, "_connect_and_read", broken)
    failures = []
    monkeypatch.setattr("threading.excepthook", failures.append)
    client = make_client(free_port())
    gone = next_event(client, Disconnected)
    assert "error inside the program" in gone.reason and gone.retry_in is None
    next_event(client, Closed)
    assert failures == []  # no traceback on the screen


def test_lines_sent_before_the_welcome_go_after_it(server, make_client):
    client = make_client(server.port)
    client.say("early bird")  # queued: never blocks, never lost
    message = next_event(client, Message)
    assert message.text == "early bird"


def test_send_never_blocks_even_when_the_server_does_not_read(make_client):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = make_client(listener.getsockname()[1])
        started = time.monotonic()
        for _ in range(2000):
            client.say("x" * 1000)
        assert time.monotonic() - started < 1.0


def test_answers_the_servers_ping(make_client):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        make_client(listener.getsockname()[1])
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(DEADLINE)
            assert b'"hello"' in conn.recv(4096)
            conn.sendall(
                b'{"type":"welcome","name":"ada","users":["ada"],"history":[]}\n'
            )
            conn.sendall(b'{"type":"ping"}\n')
            assert conn.recv(4096) == b'{"type":"pong"}\n'


def test_a_line_refused_as_too_early_goes_again_after_the_next_welcome(
    make_client, monkeypatch
):
    """A line that reached a new connection before its hello is not lost."""
    monkeypatch.setattr(client_module, "BACKOFF", (0.05,))
    welcome = b'{"type":"welcome","name":"ada","users":["ada"],"history":[]}\n'
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = make_client(listener.getsockname()[1])
        server = LineClient.accept(listener)
        try:
            server.expect_json("hello")
            server.send_raw(welcome)
            cid = client.say("hello")
            assert server.expect_json("say")["cid"] == cid
            server.send_json(type="error", code="not_registered", text="", cid=cid)
            next_event(client, Error)
        finally:
            server.close()
        server = LineClient.accept(listener)  # the client reconnects
        try:
            server.expect_json("hello")
            server.send_raw(welcome)
            again = server.expect_json("say")
            assert (again["cid"], again["text"]) == (cid, "hello")
        finally:
            server.close()


def test_reconnects_with_backoff_and_the_same_name(make_client):
    with running_server() as first:
        port = first.port
        client = make_client(port)
        next_event(client, Welcome)
    lost = next_event(client, Disconnected)
    assert lost.retry_in == 1
    assert "shutting down" in lost.reason.lower()
    # Nothing listens for a moment: the next attempts back off 1, 2 ...
    failed = next_event(client, Disconnected, timeout=DEADLINE)
    assert (failed.failure, failed.retry_in) == ("refused", 2)
    with running_server(port=port) as second:
        welcome = next_event(client, Welcome, timeout=DEADLINE + 2)
        assert welcome.name == "ada"
        assert second.room.names() == ("ada",)


def test_backoff_schedule_doubles_up_to_thirty_seconds():
    assert client_module.BACKOFF == (1, 2, 4, 8, 16, 30)


def test_close_stops_reconnecting_at_once(make_client):
    client = make_client(free_port())
    next_event(client, Disconnected)
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 1.5
    next_event(client, Closed)


def test_close_says_bye(server, make_client):
    client = make_client(server.port)
    next_event(client, Welcome)
    with json_client(server.port, "bob") as bob:
        client.close("gone fishing")
        left = bob.expect_json("left")
        assert (left["name"], left["reason"]) == ("ada", "quit: gone fishing")


def test_a_taken_name_at_the_first_connect_is_final(server, make_client):
    with json_client(server.port, "ada"):
        client = make_client(server.port, "ADA")
        error = next_event(client, Error)
        assert error.code == "name_taken"
        final = next_event(client, Disconnected)
        assert final.retry_in is None
        next_event(client, Closed)


@contextlib.contextmanager
def not_a_chat_server(chatty: bool):
    """A port that accepts and never welcomes: silent, or saying a line
    every 50 ms (at most 200).  Yields the port."""
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)

        def serve() -> None:
            with contextlib.suppress(OSError), listener.accept()[0] as conn:
                for _ in range(200):
                    if stop.wait(0.05):
                        break
                    if chatty:
                        conn.sendall(b"220 hello from another program\r\n")
                stop.wait(DEADLINE)

        with in_a_thread(serve, "not a chat server", stop):
            yield listener.getsockname()[1]


@pytest.mark.parametrize("chatty", [False, True])
def test_no_welcome_from_a_first_server_ends_with_a_word(
    chatty, make_client, monkeypatch
):
    """Not "Connected" for ever: another program on that port."""
    monkeypatch.setattr(client_module, "WELCOME_TIMEOUT", 0.5)
    with not_a_chat_server(chatty) as port:
        client = make_client(port)
        ended = next_event(client, Disconnected)
        assert (ended.failure, ended.retry_in) == ("no_welcome", None)
        assert ended.reason == "no welcome within 0.5 s"
        next_event(client, Closed)


def test_an_echo_server_is_known_by_our_hello_coming_back(make_client):
    """Said at once, without waiting for the welcome's timeout."""
    with running_server(echo=True) as echo:
        client = make_client(echo.port)
        ended = next_event(
            client, Disconnected, timeout=client_module.WELCOME_TIMEOUT / 2
        )
        assert (ended.failure, ended.retry_in) == ("no_welcome", None)
        assert ended.reason == client_module.ECHOED
        next_event(client, Closed)


def test_no_welcome_after_a_first_one_is_tried_again(make_client, monkeypatch):
    """A server that welcomed us once is a chat server: a comeback that gets
    no welcome (it is stuck, say) is tried again, not given up."""
    monkeypatch.setattr(client_module, "WELCOME_TIMEOUT", 0.5)
    monkeypatch.setattr(client_module, "BACKOFF", (0.1,))
    with running_server() as first:
        port = first.port
        client = make_client(port)
        next_event(client, Welcome)
    next_event(client, Disconnected)
    with contextlib.ExitStack() as stack:
        stuck = socket.create_server(("127.0.0.1", port))  # takes, never welcomes
        stack.enter_context(stuck)
        ended = next_event(client, Disconnected)
        while ended.failure != "no_welcome":  # before the listener: refused
            ended = next_event(client, Disconnected)
        assert ended.retry_in == 0.1


def test_the_wire_hook_hears_each_connections_end(make_client):
    """So a character cut at the end of one connection is shown as never
    finished, and not joined to the first bytes of the next."""
    chunks: list[tuple[str, bytes]] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = make_client(
            listener.getsockname()[1],
            reconnect=False,
            wire=lambda direction, data: chunks.append((direction, data)),
        )
        with LineClient.accept(listener) as peer:
            peer.next_line()  # the hello
            peer.sock.sendall(b'{"type":"notice","text":"x"}\n' + "👋".encode()[:2])
        next_event(client, Closed)
    received = [data for direction, data in chunks if direction == "in"]
    assert received[-1] == b"" and b"".join(received).endswith(b"\xf0\x9f")
    assert received.count(b"") == 1


def test_a_kicked_client_does_not_come_back(server, make_client):
    client = make_client(server.port)
    next_event(client, Welcome)
    assert server.room.kick("ada", "spamming")
    left = next_event(client, Left)
    assert left.reason == "kicked: spamming"
    final = next_event(client, Disconnected)
    assert final.retry_in is None
    assert "kicked" in final.reason


def test_a_connect_that_hangs_can_be_cancelled(make_client):
    # A listener whose backlog is full: the kernel drops further SYNs, so a
    # connect to it hangs, all on 127.0.0.1.
    with socket.socket() as listener:
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
            client = make_client(port, connect_timeout=30)
            next_event(client, Connecting)
            time.sleep(0.3)  # let the attempt start hanging (not a sync point)
            started = time.monotonic()
            client.close()
            assert time.monotonic() - started < 1.0
        finally:
            for filler in fillers:
                filler.close()


def test_a_tls_handshake_that_hangs_can_be_cancelled(make_client):
    """A server that takes the connection and never answers the handshake."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)
        port = listener.getsockname()[1]
        client = make_client(port, tls=True, fingerprint="AA", connect_timeout=30)
        silent, _ = listener.accept()
        with silent:
            silent.settimeout(DEADLINE)
            assert silent.recv(1)  # its handshake began, and waits for us
            started = time.monotonic()
            client.close(timeout=1.0)
            assert not client._reader.is_alive()
            assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("exc", "word"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
        (TimeoutError("timed out"), "timeout"),
        (socket.gaierror(socket.EAI_NONAME, "unknown"), "unknown_host"),
        (OSError(errno.ENETUNREACH, "unreachable"), "unreachable"),
    ],
)
def test_failures_are_described_in_words(exc, word):
    failure, sentence = describe_failure(exc)
    assert failure == word
    assert sentence and "Errno" not in sentence


# -- the console client: python -m chat ---------------------------------------


def run_console_client(*args: str, stdin: str = "", timeout: float = DEADLINE):
    return subprocess.run(
        [sys.executable, "-m", "chat", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_echo_client_against_the_echo_server():
    with running_server(echo=True) as echo:
        done = run_console_client("--port", str(echo.port), "--send", "Hello, server!")
    assert done.stdout == "Received from server: Hello, server!\n"
    assert done.returncode == 0


def test_console_client_chats_and_prints_what_others_say(server):
    with LineClient(server.port) as bob:
        bob.send_line("bob")
        bob.expect_text("Welcome, bob!")
        process = subprocess.Popen(
            [sys.executable, "-m", "chat", "--port", str(server.port), "--name", "ann"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            bob.expect_text("* ann joined")
            bob.send_line("hello ann")
            lines = []
            wait_for(
                lambda: (
                    lines.append(process.stdout.readline())
                    or "bob: hello ann\n" in lines
                ),
                what="bob's line printed by the console client",
            )
            process.stdin.write("hi bob\n")
            process.stdin.flush()
            assert bob.expect_text("ann:") == "ann: hi bob"
            process.stdin.write("exit\n")
            process.stdin.flush()
            assert process.wait(DEADLINE) == 0
            assert bob.expect_text("* ann left") == "* ann left (quit)"
            rest = process.stdout.read()
            assert "ann: hi bob" not in rest  # your own lines are not printed again
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(DEADLINE)


def test_console_client_exits_non_zero_when_nothing_listens():
    done = run_console_client("--port", str(free_port()), "--name", "ann")
    assert done.returncode != 0
    assert re.search(r"connection refused", done.stdout)


# -- the console client's view --------------------------------------------------


def test_the_console_client_explains_a_failure_and_exits_non_zero():
    done = run_console_client("--port", str(free_port()), "--name", "ann")
    assert done.returncode == 1
    assert "Is the server running?" in done.stdout


def test_the_console_view_never_prints_a_line_twice_and_marks_what_was_missed():
    from chat.__main__ import ConsoleView

    client = ChatClient("127.0.0.1", 1, "ann")  # never started: just a name
    view = ConsoleView(client)
    first = view.lines(Welcome("ann", ("ann",), (Message(1, "bob", "old", 0.0),), "r1"))
    assert first[0] == "* The last message:"
    assert first[1].endswith("bob: old")
    assert view.lines(Message(2, "bob", "live", 0.0)) == ["bob: live"]
    assert view.lines(Message(2, "bob", "live", 0.0)) == []  # a second time: no
    replay = (Message(2, "bob", "live", 0.0), Message(3, "bob", "missed", 0.0))
    back = view.lines(Welcome("ann", ("ann",), replay, "r1"))
    assert back[0] == "---- while you were away ----"
    assert next(line for line in back if "bob:" in line).endswith("bob: missed")
    assert not any(line.endswith("bob: live") for line in back)
    assert back[-1] == "* Back in the room."


def test_an_address_with_bad_dots_is_an_unknown_host_not_a_bug(make_client):
    from chat.client import ChatClient

    client = ChatClient("127.0.0..1", 12345, "ada", reconnect=False)
    client.start()
    try:
        gone = next_event(client, Disconnected)
        assert gone.failure == "unknown_host", gone
        assert "error inside the program" not in gone.reason
    finally:
        client.close()


# -- the writer and a connection replaced under it -----------------------------


def welcome_on(server_side: LineClient) -> None:
    """A fake server's welcome for ada (no history, room "r")."""
    assert server_side.next_json()["type"] == "hello"
    server_side.send_json(
        type="welcome", name="ada", users=["ada"], history=[], room="r"
    )


def test_a_line_taken_for_a_connection_that_ended_is_not_sent_on_the_next():
    """The writer took 'two' for connection 1 and was held (as by the
    scheduler) while connection 2 began: it must not send it there out of
    turn; connection 2 gets everything kept, from the top, once."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)
        client = ChatClient("127.0.0.1", listener.getsockname()[1], "ada", keepalive=0)
        outgoing = client._outgoing
        real_take = outgoing.take
        hold, held, release = threading.Event(), threading.Event(), threading.Event()

        def take(timeout):
            taken = real_take(timeout)
            if taken is not None and hold.is_set():
                hold.clear()
                held.set()
                release.wait(DEADLINE)  # the writer is held here
            return taken

        outgoing.take = take
        client.start()
        try:
            first = LineClient.accept(listener)
            welcome_on(first)
            wait_for(lambda: client.connected)
            client.say("one")
            assert first.next_json()["text"] == "one"  # sent, its echo lost
            hold.set()
            client.say("two")
            assert held.wait(DEADLINE)  # 'two', taken for connection 1
            first.close()
            second = LineClient.accept(listener)
            welcome_on(second)
            wait_for(lambda: outgoing._generation == 2)
            release.set()
            assert [second.next_json()["text"] for _ in range(2)] == ["one", "two"]
            with pytest.raises(AssertionError):  # and nothing a second time
                second.next_json(timeout=0.5)
        finally:
            release.set()
            client.close()


def test_a_send_failing_on_an_old_connection_does_not_stop_the_new_one():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)
        client = ChatClient("127.0.0.1", listener.getsockname()[1], "ada", keepalive=0)
        real_send = client._send_on
        hold, inside, release = threading.Event(), threading.Event(), threading.Event()

        def send_on(link, data):
            if hold.is_set() and threading.current_thread() is client._writer:
                hold.clear()
                inside.set()
                release.wait(DEADLINE)  # a sendall blocked on a dead link
            return real_send(link, data)

        client._send_on = send_on
        client.start()
        try:
            first = LineClient.accept(listener)
            welcome_on(first)
            wait_for(lambda: client.connected)
            hold.set()
            client.say("one")
            assert inside.wait(DEADLINE)
            first.close()
            second = LineClient.accept(listener)
            welcome_on(second)
            wait_for(lambda: client._outgoing._generation == 2)
            release.set()  # the old socket is closed: that send fails
            client.say("two")
            texts = [second.next_json()["text"] for _ in range(2)]
            assert texts == ["one", "two"]
        finally:
            release.set()
            client.close()
