"""TLS: a server with a certificate, and every way a client comes to trust it.

The server runs with the test certificate ``tests/data/localhost.pem``
(self-signed, for 127.0.0.1).  A client trusts it because it was given that
file (``cafile``), or because it pinned its SHA-256 fingerprint, the one the
server prints when it starts (trust on first use, as the window does).  Every
other case must stop the client for good with a word that says why:
``tls_unknown``, ``tls_changed``, ``tls_untrusted``, ``tls_mismatch``,
``tls_required``.

A hello that arrives together with the client's last handshake message must
be read at once (``test_a_hello_sent_with_the_last_handshake_message_is_read``):
if it stayed inside TLS, the client would be greeted as a person on nc.
Tests that wait for a TLS client to get in fail with ``HELLO_LOST`` on exactly
that symptom.
"""

from __future__ import annotations

import contextlib
import gc
import json
import queue
import re
import select
import socket
import ssl
import subprocess
import sys
import time
import tkinter as tk
from pathlib import Path

import pytest

from chat.client import ChatClient, Closed, Disconnected, Untrusted
from chat.gui.app import ChatApp
from chat.gui.settings import Settings
from chat.plain import PROMPT
from chat.protocol import Joined, Left, Message, Notice, Welcome
from chat.tls import file_fingerprint
from tests.helpers import DEADLINE, LineClient, running_server, wait_for
from tests.test_client import next_event
from tests.test_console import running_launcher
from tests.test_gui import pump_until

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CERT, KEY = str(DATA / "localhost.pem"), str(DATA / "localhost.key")
OTHER_CERT, OTHER_KEY = str(DATA / "other.pem"), str(DATA / "other.key")
FINGERPRINT = file_fingerprint(CERT)
OTHER_FINGERPRINT = file_fingerprint(OTHER_CERT)
#: The start of the line a TLS server sends to someone speaking plain text.
READABLE = "This chat server speaks TLS"

HELLO_LOST = (
    "the hello that came with the last TLS handshake message was left unread: "
    "the client got the nc prompt, not a welcome"
)


# ---------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def tls_server():
    """A chat server on 127.0.0.1 that speaks only TLS, with localhost.pem."""
    with running_server(tls_cert=CERT, tls_key=KEY) as server:
        yield server


def welcomed(client: ChatClient, timeout: float = DEADLINE) -> Welcome:
    """The client's welcome (failing with HELLO_LOST if its hello was lost)."""
    deadline = time.monotonic() + timeout
    while True:
        event = next_event(client, object, max(deadline - time.monotonic(), 0.001))
        if isinstance(event, Notice) and event.text == PROMPT:
            raise AssertionError(HELLO_LOST)
        if isinstance(event, Disconnected):
            raise AssertionError(f"{client.name} was not let in: {event}")
        if isinstance(event, Welcome):
            return event


def message_from(client: ChatClient, sender: str) -> Message:
    """The next chat line ``sender`` said, as ``client`` got it."""
    deadline = time.monotonic() + DEADLINE
    while True:
        message = next_event(client, Message, max(deadline - time.monotonic(), 0.001))
        if message.sender == sender:
            return message


def tls_json_client(port: int, name: str) -> LineClient:
    """A JSON client over the standard library's own TLS socket, welcomed."""
    client = LineClient(port)
    try:
        context = ssl.create_default_context(cafile=CERT)
        client.sock = context.wrap_socket(client.sock, server_hostname="127.0.0.1")
        client.send_json(type="hello", name=name)
        first = client.next_line()
        if first == PROMPT.encode():
            raise AssertionError(HELLO_LOST)
        assert json.loads(first)["type"] == "welcome", first
    except BaseException:
        client.close()
        raise
    return client


def run_chat_client(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """``python -m chat ARGS``; killed by its PID if it is still running after
    ``DEADLINE`` (then the result holds what it had printed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chat", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        try:
            out, err = process.communicate(stdin, timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate(timeout=DEADLINE)  # loses no output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# ---------------------------------------------------------------------------
# Clients that trust the server


def test_a_client_given_the_certificate_chats_with_a_tls_bystander(
    tls_server, make_client
):
    ann = make_client(tls_server.port, "ann", cafile=CERT)
    welcomed(ann)
    assert ann.server_fingerprint == FINGERPRINT
    with tls_json_client(tls_server.port, "bob") as bob:
        assert next_event(ann, Joined).name == "bob"
        ann.say("over TLS 🔒")
        message = bob.expect_json("message")
        assert (message["from"], message["text"]) == ("ann", "over TLS 🔒")
        bob.send_json(type="say", text="and back, encrypted")
        assert message_from(ann, "bob").text == "and back, encrypted"
    assert next_event(ann, Left).name == "bob"


@pytest.mark.parametrize(
    "pinned",
    [FINGERPRINT, FINGERPRINT.lower(), FINGERPRINT.replace(":", "")],
    ids=["as printed", "lower case", "without colons"],
)
def test_a_client_with_the_fingerprint_pinned_connects(tls_server, make_client, pinned):
    ann = make_client(tls_server.port, "ann", fingerprint=pinned)
    assert welcomed(ann).name == "ann"
    ann.say("pinned")
    assert message_from(ann, "ann").text == "pinned"


def test_many_tls_clients_get_every_message_in_the_same_order(tls_server, make_client):
    names = [f"user{n}" for n in range(10)]
    clients = [make_client(tls_server.port, name, cafile=CERT) for name in names]
    for client in clients:
        welcomed(client)
    wait_for(lambda: len(tls_server.room.names()) == len(names), what="everyone in")
    rounds = 3
    for round_ in range(rounds):
        for name, client in zip(names, clients, strict=True):
            client.say(f"{name} line {round_}")
    total = rounds * len(names)
    seen = {}
    for client in clients:
        got = seen[client.name] = []
        while len(got) < total:
            message = next_event(client, Message)
            got.append((message.id, message.sender, message.text))
    first = seen[names[0]]
    assert all(got == first for got in seen.values())
    ids = [number for number, _, _ in first]
    assert ids == sorted(ids) and len(set(ids)) == total
    for name in names:
        said = [text for _, sender, text in first if sender == name]
        assert said == [f"{name} line {r}" for r in range(rounds)]


# ---------------------------------------------------------------------------
# Clients that must stop, and say why


def test_an_unknown_certificate_stops_the_client_with_its_fingerprint(
    tls_server, make_client
):
    ann = make_client(tls_server.port, "ann", tls=True)
    untrusted = next_event(ann, Untrusted)
    assert untrusted == Untrusted("127.0.0.1", tls_server.port, FINGERPRINT)
    gone = next_event(ann, Disconnected)
    assert (gone.failure, gone.retry_in) == ("tls_unknown", None)
    next_event(ann, Closed)
    assert tls_server.room.names() == ()


def test_another_certificates_fingerprint_means_it_changed(tls_server, make_client):
    ann = make_client(tls_server.port, "ann", fingerprint=OTHER_FINGERPRINT)
    gone = next_event(ann, Disconnected)
    assert (gone.failure, gone.retry_in) == ("tls_changed", None)
    assert FINGERPRINT in gone.reason  # what it is now, to compare
    next_event(ann, Closed)
    assert tls_server.room.names() == ()


def test_a_certificate_the_cafile_did_not_sign_is_not_trusted(tls_server, make_client):
    ann = make_client(tls_server.port, "ann", cafile=OTHER_CERT)
    gone = next_event(ann, Disconnected)
    assert (gone.failure, gone.retry_in) == ("tls_untrusted", None)
    next_event(ann, Closed)


def test_a_tls_client_to_a_plain_server_is_told_it_is_a_mismatch(server, make_client):
    ann = make_client(server.port, "ann", tls=True)
    gone = next_event(ann, Disconnected)
    assert (gone.failure, gone.retry_in) == ("tls_mismatch", None)
    next_event(ann, Closed)


def test_a_plain_client_to_a_tls_server_shows_the_servers_words(
    tls_server, make_client
):
    ann = make_client(tls_server.port, "ann")
    notice = next_event(ann, Notice)
    assert notice.text.startswith(READABLE)
    gone = next_event(ann, Disconnected)
    assert (gone.failure, gone.retry_in) == ("tls_required", None)
    next_event(ann, Closed)


@pytest.mark.parametrize(
    "typed",
    [
        b"alice\n",
        b'{"type":"hello","name":"alice"}\n',
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"bob\n",
    ],
    ids=["a name", "json hello", "a browser", "a short name"],
)
def test_plain_text_to_a_tls_server_gets_a_readable_line_and_the_end(tls_server, typed):
    with LineClient(tls_server.port) as person:
        person.send_raw(typed)
        lines = person.expect_closed()
    assert len(lines) == 1, lines
    assert lines[0].decode("ascii").startswith(READABLE)


def test_what_crosses_the_wire_is_not_readable(tls_server):
    """A relay between a client and the server sees only TLS records."""
    secret = "meet me by the old oak at noon"
    with socket.create_server(("127.0.0.1", 0)) as relay:
        relay.settimeout(DEADLINE)
        ann = ChatClient("127.0.0.1", relay.getsockname()[1], "ann", cafile=CERT)
        ann.start()
        try:
            ann.say(secret)  # goes once ann is in the room
            near, _ = relay.accept()
            far = socket.create_connection(("127.0.0.1", tls_server.port))
            with near, far:
                sent, received = pass_bytes(near, far, lambda: echoed(ann, secret))
        finally:
            ann.close()
    assert sent[:1] == received[:1] == b"\x16"  # TLS handshake records
    for readable in (secret.encode(), b'"type":'):
        assert readable not in sent
        assert readable not in received


def pass_bytes(near, far, done) -> tuple[bytes, bytes]:
    """Relay both ways until ``done()``; return what each side sent."""
    wire = {near: bytearray(), far: bytearray()}
    other = {near: far, far: near}
    deadline = time.monotonic() + DEADLINE
    while not done():
        assert time.monotonic() < deadline, "timed out relaying"
        readable, _, _ = select.select([near, far], [], [], 0.05)
        for sock in readable:
            data = sock.recv(65536)
            assert data, "one side hung up"
            wire[sock] += data
            other[sock].sendall(data)
    return bytes(wire[near]), bytes(wire[far])


def echoed(client: ChatClient, text: str) -> bool:
    """Has ``client`` got its own line ``text`` back?  (Never waits.)"""
    while True:
        try:
            event = client.events.get_nowait()
        except queue.Empty:
            return False
        if isinstance(event, Notice) and event.text == PROMPT:
            raise AssertionError(HELLO_LOST)
        if isinstance(event, Message) and event.text == text:
            return True


def test_a_hello_sent_with_the_last_handshake_message_is_read(tls_server):
    """The client's Finished and its hello in one write, as a fast client does."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context(cafile=CERT)
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", tls_server.port), DEADLINE) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "the server hung up during the handshake"
                incoming.write(data)
        tls.write(b'{"type":"hello","name":"ann"}\n')
        sock.sendall(outgoing.read())  # Finished and hello: one segment
        first = read_line(sock, tls, incoming)
    assert first.startswith(b'{"type":"welcome"')


def read_line(sock: socket.socket, tls: ssl.SSLObject, incoming) -> bytes:
    """The first line of plain text that comes through ``tls``."""
    deadline = time.monotonic() + DEADLINE
    text = b""
    while b"\n" not in text:
        try:
            text += tls.read(65536)
            continue
        except ssl.SSLWantReadError:
            pass
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        data = sock.recv(65536)  # TimeoutError at the deadline
        assert data, f"closed; got {text!r}"
        incoming.write(data)
    return text.split(b"\n", 1)[0]


# ---------------------------------------------------------------------------
# The real programs: server.py --tls-cert, python -m chat --tls


def test_the_console_client_pins_the_fingerprint_the_server_printed():
    with running_launcher("--tls-cert", CERT, "--tls-key", KEY) as (server, port):
        line = server.expect("TLS is on.")
        match = re.fullmatch(
            r"TLS is on\. Certificate fingerprint \(SHA-256\): ([0-9A-F:]+)", line
        )
        assert match, line
        printed = match.group(1)
        assert printed == FINGERPRINT
        done = run_chat_client(
            *("--port", str(port), "--name", "ann", "--tls"),
            *("--fingerprint", printed),
            stdin="hello over TLS\n",
        )
        if PROMPT in done.stdout:
            raise AssertionError(HELLO_LOST)
        assert done.returncode == 0, done.stdout
        assert done.stderr == ""
        assert server.expect("ann: hello over TLS").endswith("ann: hello over TLS")


def test_the_console_client_without_a_fingerprint_says_how_to_pin_it():
    with running_launcher("--tls-cert", CERT, "--tls-key", KEY) as (server, port):
        server.expect("TLS is on.")
        done = run_chat_client("--port", str(port), "--name", "ann", "--tls")
    assert done.returncode != 0
    lines = done.stdout.splitlines()
    assert f"* The server's certificate has the fingerprint {FINGERPRINT}" in lines
    assert f"*     --fingerprint {FINGERPRINT}" in lines
    assert done.stderr == ""  # no traceback


@pytest.mark.parametrize(
    "case",
    ["missing file", "not a certificate", "no key", "the wrong key", "a bad key"],
)
def test_a_bad_certificate_is_a_clear_message(tmp_path, case):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n", encoding="ascii")
    cert, key = {
        "missing file": (str(tmp_path / "nowhere.pem"), KEY),
        "not a certificate": (str(garbage), KEY),
        "no key": (CERT, None),
        "the wrong key": (CERT, OTHER_KEY),
        "a bad key": (CERT, str(garbage)),
    }[case]
    options = ["--tls-cert", cert] + (["--tls-key", key] if key else [])
    done = subprocess.run(
        [sys.executable, "server.py", "--port", "0", "--db", ":memory:", *options],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 1
    assert done.stdout.startswith(f"Cannot use the TLS certificate {cert}: ")
    assert "--tls-key" in done.stdout  # what to do about it
    assert "listening" not in done.stdout
    assert done.stderr == ""  # no traceback


# ---------------------------------------------------------------------------
# The window: trust on first use


@pytest.fixture
def settings_path(tmp_path) -> Path:
    return tmp_path / "settings.json"


@pytest.fixture
def make_window(settings_path):
    """Chat windows, each on a Tk root of its own, sharing one settings file."""
    apps = []

    def make() -> ChatApp:
        app = ChatApp(tk.Tk(), Settings.load(settings_path), settings_path)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()  # destroys its root; does nothing the second time
    # As in test_gui: collect the app/root cycles here, in the main thread.
    apps.clear()
    gc.collect()


def window_joined(app: ChatApp) -> None:
    """Pump Tk until the window is in the room (failing with ``HELLO_LOST`` if
    its hello was lost)."""

    def state():
        app.root.update()
        if PROMPT in app.view.contents():
            return "hello lost"
        return app.client is not None and app.client.connected and "joined"

    if wait_for(state, what="the window to join") == "hello lost":
        raise AssertionError(HELLO_LOST)


def test_a_trusted_certificate_is_remembered_and_not_asked_about_again(
    tls_server, make_window, settings_path, monkeypatch
):
    key = f"127.0.0.1:{tls_server.port}"
    asked = []
    first = make_window()
    monkeypatch.setattr(first, "ask_trust", lambda *seen: asked.append(seen) or True)
    first.connect("127.0.0.1", tls_server.port, "ada", tls=True)
    window_joined(first)
    assert asked == [("127.0.0.1", tls_server.port, FINGERPRINT)]
    assert first.settings.trusted == {key: FINGERPRINT}
    assert Settings.load(settings_path).trusted == {key: FINGERPRINT}
    first.close()
    wait_for(lambda: tls_server.room.names() == (), what="the first window to leave")
    second = make_window()
    monkeypatch.setattr(second, "ask_trust", lambda *seen: asked.append(seen) or True)
    second.connect("127.0.0.1", tls_server.port, "ada", tls=True)
    window_joined(second)
    assert len(asked) == 1  # not asked again
    assert second.client.server_fingerprint == FINGERPRINT


def test_a_certificate_not_trusted_is_not_remembered(
    tls_server, make_window, settings_path, monkeypatch
):
    asked = []
    app = make_window()
    monkeypatch.setattr(app, "ask_trust", lambda *seen: asked.append(seen) or False)
    app.connect("127.0.0.1", tls_server.port, "ada", tls=True)
    pump_until(app.root, lambda: "not trusted" in app.view.contents(), "the refusal")
    pump_until(app.root, lambda: app.client is None, "the window to give up")
    assert asked == [("127.0.0.1", tls_server.port, FINGERPRINT)]
    assert app.settings.trusted == {}
    assert Settings.load(settings_path).trusted == {}
    assert tls_server.room.names() == ()


def test_a_changed_certificate_is_refused_without_asking(
    tls_server, make_window, settings_path, monkeypatch
):
    key = f"127.0.0.1:{tls_server.port}"
    Settings(trusted={key: OTHER_FINGERPRINT}).save(settings_path)
    asked = []
    app = make_window()
    monkeypatch.setattr(app, "ask_trust", lambda *seen: asked.append(seen) or True)
    app.connect("127.0.0.1", tls_server.port, "ada", tls=True)
    pump_until(
        app.root, lambda: "not the one expected" in app.view.contents(), "the refusal"
    )
    pump_until(app.root, lambda: app.client is None, "the window to give up")
    assert asked == []
    assert Settings.load(settings_path).trusted == {key: OTHER_FINGERPRINT}
    assert tls_server.room.names() == ()


def test_a_clients_close_notify_ends_its_session(tls_server):
    """A clean TLS shutdown from the client is the end of its stream: it
    leaves the room at once (it used to stay, a ghost, until keepalive)."""
    with tls_json_client(tls_server.port, "vic") as vic:
        wait_for(lambda: "vic" in tls_server.room.names(), what="vic in")
        vic.sock.settimeout(DEADLINE)
        with contextlib.suppress(OSError):  # the server closes, not answers
            vic.sock.unwrap()
        wait_for(lambda: "vic" not in tls_server.room.names(), what="vic gone")


def test_a_tls_key_without_its_certificate_is_refused_not_run_in_clear():
    command = [sys.executable, "server.py", "--port", "0", "--tls-key", KEY]
    started = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE * 2
    )
    assert started.returncode == 1
    assert "--tls-key needs --tls-cert" in started.stdout + started.stderr
