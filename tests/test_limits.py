"""Limits: flood control, registration and ping timeouts, connection caps.

Each limit is shown from both sides: what the offender sees, and that a
bystander is not affected.  (Line length and the outbox limit are in
test_server.py and test_hostile.py.)
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from chat import client as client_module
from chat import outbox as outbox_module
from chat.client import ChatClient, Disconnected, Welcome
from chat.limits import MIN_STRIKES, FloodGuard, TokenBucket
from tests.helpers import (
    DEADLINE,
    LineClient,
    json_client,
    plain_client,
    running_server,
    wait_for,
)
from tests.test_client import next_event


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the buckets, on a fake clock ------------------------------------------


def test_a_bucket_allows_a_burst_then_its_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=2, capacity=5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.5  # one token at 2 per second
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.now += 100  # it never holds more than its capacity
    assert sum(bucket.take() for _ in range(10)) == 5


def test_a_bucket_survives_a_clock_that_goes_back():
    clock = FakeClock()
    bucket = TokenBucket(rate=1, capacity=1, clock=clock)
    assert bucket.take()
    clock.now -= 50
    assert not bucket.take()


@pytest.mark.parametrize(("rate", "capacity"), [(0, 5), (-1, 5), (1, 0)])
def test_a_bucket_refuses_nonsense(rate, capacity):
    with pytest.raises(ValueError):
        TokenBucket(rate, capacity)


def test_the_guard_refuses_then_disconnects_a_flooder():
    clock = FakeClock()
    guard = FloodGuard(rate=1, burst=3, clock=clock)
    verdicts = [guard.check() for _ in range(3 + MIN_STRIKES + 1)]
    assert verdicts[:3] == ["ok"] * 3
    assert verdicts[3:-1] == ["refuse"] * MIN_STRIKES
    assert verdicts[-1] == "disconnect"


def test_the_guard_forgives_someone_who_slows_down():
    clock = FakeClock()
    guard = FloodGuard(rate=2, burst=2, clock=clock)
    for _ in range(200):  # 2 lines per second for 100 seconds: never refused
        assert guard.check() == "ok"
        clock.now += 0.5
    assert guard.check() == "ok"  # the burst refilled meanwhile
    assert guard.check() == "ok"
    assert guard.check() == "refuse"


# -- flood control on a real server -------------------------------------------

# So slow a refill that no token comes back during a test.
NO_REFILL = 0.001


def test_a_json_flooder_is_refused_with_its_cids_then_disconnected():
    # Every line counts, hello included: a burst of 4 is hello and 3 says.
    with (
        running_server(flood_rate=NO_REFILL, flood_burst=4) as server,
        plain_client(server.port, "bystander") as bystander,
        json_client(server.port, "flooder") as flooder,
    ):
        # In one write: the server hangs up part-way through these lines, and
        # a write after that would meet its reset, not test anything.
        flooder.send_raw(
            b"".join(
                json.dumps(dict(type="say", text=f"spam {i}", cid=f"c{i}")).encode()
                + b"\n"
                for i in range(3 + MIN_STRIKES + 5)
            )
        )
        said = [bystander.expect_text("flooder:") for _ in range(3)]
        assert said == ["flooder: spam 0", "flooder: spam 1", "flooder: spam 2"]
        errors = []
        while True:
            message = flooder.next_json()
            if message["type"] == "error":
                errors.append(message)
                if "disconnecting" in message["text"]:
                    break
        refused = [e for e in errors if "disconnecting" not in e["text"]]
        assert len(refused) == MIN_STRIKES
        assert {e["code"] for e in errors} == {"flood"}
        expected_cids = [f"c{i}" for i in range(3, 3 + MIN_STRIKES)]
        assert [e["cid"] for e in refused] == expected_cids
        assert flooder.expect_closed() == []
        assert bystander.expect_text("* flooder left") == "* flooder left (flooding)"
        # The bystander was never refused anything.
        with json_client(server.port, "witness") as witness:
            bystander.send_line("still fine")
            assert witness.expect_json("message")["text"] == "still fine"


def test_a_plain_flooder_is_told_in_words():
    with (
        running_server(flood_rate=NO_REFILL, flood_burst=3) as server,
        plain_client(server.port, "typist") as typist,  # the name: one token
    ):
        typist.send_raw(b"one\ntwo\nthree\n")
        line = typist.expect_text("!")
        assert line == "! Too many messages too fast; not sent."


def test_a_fast_typist_within_the_rate_is_never_refused():
    with (
        running_server(flood_rate=50, flood_burst=5) as server,
        json_client(server.port, "quick") as quick,
    ):
        for i in range(20):  # 20 lines at about 20 per second: under 50 per second
            quick.send_json(type="say", text=f"line {i}")
            assert quick.expect_json("message")["text"] == f"line {i}"
            time.sleep(0.05)  # pacing the sender, not synchronising


def test_flood_control_can_be_turned_off():
    with (
        running_server(flood_rate=0) as server,
        json_client(server.port, "bench") as bench,
    ):
        bench.send_raw(
            b"".join(b'{"type":"say","text":"%d"}\n' % i for i in range(500))
        )
        texts = [bench.expect_json("message")["text"] for _ in range(500)]
        assert texts == [str(i) for i in range(500)]


def test_blank_lines_cost_nothing():
    with (
        running_server(flood_rate=NO_REFILL, flood_burst=2) as server,
        json_client(server.port, "quiet") as quiet,  # hello: the first token
    ):
        quiet.send_raw(b"\n" * 1000 + b'{"type":"say","text":"after the blanks"}\n')
        assert quiet.next_json()["text"] == "after the blanks"


# -- registration timeout ------------------------------------------------------


def test_a_connection_that_never_gives_a_name_is_dropped():
    with (
        running_server(register_timeout=0.5) as server,
        LineClient(server.port) as silent,
    ):
        started = time.monotonic()
        lines = silent.expect_closed()
        assert time.monotonic() - started < 0.5 + DEADLINE / 2
        assert lines[0].startswith(b"Welcome to the chat!")  # the prompt
        assert lines[-1] == b"! No name after 0.5 s: goodbye."
        assert server.room.names() == ()


def test_a_json_client_stuck_before_hello_is_dropped_with_a_json_error():
    with (
        running_server(register_timeout=0.5) as server,
        LineClient(server.port) as slow,
    ):
        slow.send_json(type="ping")  # JSON, but no hello
        lines = slow.expect_closed()
        assert b'"code":"register_timeout"' in lines[-1]


def test_a_client_that_joined_is_never_dropped_for_registration():
    with (
        running_server(register_timeout=0.3, ping_interval=0) as server,
        plain_client(server.port, "ann") as ann,
    ):
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # well past the timeout
            ann.send_line("hello")
            time.sleep(0.1)  # pacing, not synchronising
        assert server.room.names() == ("ann",)


# -- pings ---------------------------------------------------------------------


def test_a_json_client_that_never_answers_is_dropped_for_ping_timeout():
    with (
        running_server(ping_interval=0.3) as server,
        plain_client(server.port, "watcher") as watcher,  # plain: not pinged
        json_client(server.port, "ghost") as ghost,
    ):
        assert ghost.expect_json("ping") == {"type": "ping"}
        assert watcher.expect_text("* ghost left") == "* ghost left (ping timeout)"
        assert server.room.names() == ("watcher",)


def test_a_client_that_answers_stays():
    with (
        running_server(ping_interval=0.2) as server,
        json_client(server.port, "alive") as alive,
    ):
        for _ in range(3):  # three rounds, each well past the interval
            alive.expect_json("ping")
            alive.send_json(type="pong")
        assert server.room.names() == ("alive",)


def test_the_chat_client_answers_pings_by_itself():
    with running_server(ping_interval=0.2) as server:
        client = ChatClient("127.0.0.1", server.port, "auto")
        client.start()
        try:
            next_event(client, Welcome)
            # Five intervals later it is still there: it answered every ping.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert server.room.names() == ("auto",)
                time.sleep(0.05)  # sampling, not synchronising
        finally:
            client.close()


def test_tcp_keepalive_is_set_for_clients_that_cannot_answer_pings():
    with (
        running_server(ping_interval=12) as server,
        plain_client(server.port, "nc"),
    ):
        [handler] = server.connections()
        sock = handler.request
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 12
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


def test_the_client_notices_a_dead_server_and_reconnects(monkeypatch):
    monkeypatch.setattr(client_module, "KEEPALIVE", 0.3)
    with socket.socket() as listener:  # a "server" that welcomes, then goes mute
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = ChatClient("127.0.0.1", listener.getsockname()[1], "ada")
        client.start()
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(DEADLINE)
                assert b'"hello"' in conn.recv(4096)
                conn.sendall(
                    b'{"type":"welcome","name":"ada","users":["ada"],"history":[]}\n'
                )
                assert conn.recv(4096) == b'{"type":"ping"}\n'
                lost = next_event(client, Disconnected)
                assert (lost.failure, lost.retry_in) == ("no_answer", 1)
                assert lost.reason == "the server stopped answering"
                again, _ = listener.accept()  # and it comes back by itself
                again.close()
        finally:
            client.close()


# -- connection caps -------------------------------------------------------------


def test_the_per_address_cap_tells_the_extra_connection_why():
    with running_server(max_per_address=2) as server:
        with (
            json_client(server.port, "one"),
            json_client(server.port, "two"),
            LineClient(server.port) as third,
        ):
            [line] = third.expect_closed()
            assert b'"code":"too_many_connections"' in line
            assert b"at most 2" in line
        # Once the server has let them go, the address may connect again.
        wait_for(lambda: server.connections_from("127.0.0.1") == 0, what="release")
        with json_client(server.port, "three") as three:
            assert three.welcome["name"] == "three"


def test_no_per_address_cap_by_default():
    with running_server() as server:
        clients = [json_client(server.port, f"c{i}") for i in range(12)]
        try:
            assert len(server.room.names()) == 12
        finally:
            for client in clients:
                client.close()


def test_an_old_quiet_connection_does_not_spin():
    # Regression: a deadline fixed at connect time + 60 s made every reader
    # poll with a zero timeout, in a busy loop, once its connection was old.
    with (
        running_server(ping_interval=0, register_timeout=0) as server,
        plain_client(server.port, "old"),
    ):
        [handler] = server.connections()
        handler._started -= 3600  # an hour old
        handler._heard -= 3600
        assert handler._time_to_next_check() > 30


# -- a room at capacity ----------------------------------------------------------


def test_a_room_at_capacity_slows_its_sender_instead_of_dropping_everyone():
    # Every receiver reads, but slower than one client can send: without the
    # room's back-pressure each outbox would pass its limit and all of them
    # would be dropped as slow consumers.
    count, size = 4000, 500
    with running_server(max_outbox_bytes=512 * 1024) as server:
        receivers = [json_client(server.port, f"r{i}") for i in range(4)]
        received = {}

        def read_slowly(client, name):
            for sock_buffer in (socket.SO_RCVBUF,):
                client.sock.setsockopt(socket.SOL_SOCKET, sock_buffer, 8192)
            got = 0
            while got < count:
                message = client.next_json(timeout=DEADLINE * 4)
                if message["type"] == "message":
                    got += 1
                    if got % 100 == 0:
                        time.sleep(0.01)  # a slow reader: pacing, not syncing
            received[name] = got

        threads = [
            threading.Thread(target=read_slowly, args=(c, i), name=f"slow reader {i}")
            for i, c in enumerate(receivers)
        ]
        try:
            # A plain sender: it gets no echoes, so it is never behind itself.
            with plain_client(server.port, "sender") as sender:
                for thread in threads:
                    thread.start()
                text = b"s" * size
                payload = b"".join(b"%s %d\n" % (text, i) for i in range(count))
                sender.sock.settimeout(DEADLINE * 6)
                started = time.monotonic()
                sender.send_raw(payload)  # blocks while the room catches up
                for thread in threads:
                    thread.join(DEADLINE * 6)
                took = time.monotonic() - started
                assert received == {i: count for i in range(4)}, took
                # Nobody was dropped as a slow consumer.
                assert server.room.names() == ("r0", "r1", "r2", "r3", "sender")
        finally:
            for client in receivers:
                client.close()


def non_reader(server, name: str) -> LineClient:
    """A JSON member that never reads after its welcome, with small buffers
    on both sides: what the room sends it piles up in its outbox at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(DEADLINE)
    sock.connect(("127.0.0.1", server.port))
    client = LineClient(server.port, sock=sock)
    client.send_json(type="hello", name=name)
    assert client.next_json()["type"] == "welcome"
    [handler] = [h for h in server.connections() if h.member.name == name]
    handler.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return client


def flood(lines: int) -> bytes:
    return b"".join(b"%d %s\n" % (i, b"x" * 1000) for i in range(lines))


def room_of_non_readers(monkeypatch, behind_limit: float) -> None:
    """Small marks, so that two members who never read fill the room at once."""
    monkeypatch.setattr(outbox_module, "HIGH_WATER", 16 * 1024)
    monkeypatch.setattr(outbox_module, "MAX_PENDING", 8 * 1024)
    monkeypatch.setattr(outbox_module, "BEHIND_LIMIT", behind_limit)


def test_members_who_never_read_cannot_hold_the_room_up_for_good(monkeypatch):
    # Regression: two of three members that stopped reading, each under its
    # outbox limit, kept the room at capacity: every reader waited for room,
    # nobody could say anything again, and no clock ran out.
    room_of_non_readers(monkeypatch, behind_limit=1.0)
    with running_server() as server:
        stalled = [non_reader(server, name) for name in ("a", "b")]
        try:
            # Plain: it gets no echoes, so it is never behind itself.
            with plain_client(server.port, "talker") as talker:
                talker.send_raw(flood(100))
                wait_for(lambda: not server.writer.wait_for_room(0), what="a full room")
                talker.send_line("/who")  # while the room is full
                talker.expect_text(" here: ")  # answered in the end
                wait_for(lambda: server.room.names() == ("talker",), what="a, b gone")
                talker.send_line("/who")
                talker.expect_text("* 1 user here: talker")
                left = sorted(line for line in talker.lines if b" left (" in line)
                assert left == [
                    b"* a left (slow consumer)",
                    b"* b left (slow consumer)",
                ]
        finally:
            for client in stalled:
                client.close()


def test_a_member_kicked_while_the_room_is_at_capacity_is_let_go(monkeypatch):
    # Its reader waits for room, not in recv: it must notice the kick there.
    room_of_non_readers(monkeypatch, behind_limit=600.0)  # no other way out
    with running_server() as server:
        stalled = [non_reader(server, name) for name in ("a", "b")]
        try:
            with plain_client(server.port, "talker") as talker:
                [handler] = [
                    h for h in server.connections() if h.member.name == "talker"
                ]
                talker.send_raw(flood(150))
                wait_for(lambda: not server.writer.wait_for_room(0), what="a full room")
                # Lines the server has not read: its reader is not in recv.
                assert handler.session.lines_in < 150
                assert server.room.kick("talker", "enough")
                wait_for(lambda: handler not in server.connections(), what="its end")
                assert server.room.names() == ("a", "b")
        finally:
            for client in stalled:
                client.close()
