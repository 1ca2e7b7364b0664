"""Tests for ``chat.room``: membership, names, history and fan-out.

No sockets: each member's outbox is a ``FakeOutbox`` that keeps what the room
put on it, and the tests decode those bytes the way a client would.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading

import pytest

from chat import plain
from chat.history import History
from chat.protocol import (
    Joined,
    Left,
    LineDecoder,
    Message,
    Notice,
    PrivateMessage,
    ProtocolError,
    Renamed,
    Say,
    ServerMessage,
    Users,
    Welcome,
    decode_server,
    encode,
)
from chat.room import SERVER_NAME, Member, Room, put_each


class FakeOutbox:
    """An outbox that keeps every ``put`` as it came: what the writer would send."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.hung_up = False
        self._read = 0  # chunks already returned by new_chunks

    def put(self, data: bytes) -> None:
        assert type(data) is bytes and data, f"the room put {data!r}"
        self.chunks.append(data)

    def hang_up(self) -> None:
        self.hung_up = True

    def new_chunks(self) -> list[bytes]:
        """The chunks put since the last call."""
        chunks = self.chunks[self._read :]
        self._read = len(self.chunks)
        return chunks


def json_member(address: str = "") -> Member:
    return Member(FakeOutbox(), encode, echo=True, address=address)


def plain_member() -> Member:
    return Member(FakeOutbox(), plain.render_bytes, echo=False)


def decode_all(chunks: list[bytes]) -> list[ServerMessage]:
    """The messages in chunks of JSON lines, as a client would read them."""
    data = b"".join(chunks)
    assert data.endswith(b"\n") or not data
    lines = LineDecoder(max_line_bytes=len(data) + 1).feed(data)
    return [decode_server(line) for line in lines]


def received(member: Member) -> list[ServerMessage]:
    """Messages put on a JSON member's outbox since the last look."""
    return decode_all(member.outbox.new_chunks())


def text_received(member: Member) -> list[str]:
    """Lines put on a plain member's outbox since the last look."""
    data = b"".join(member.outbox.new_chunks()).decode("utf-8")
    assert data.endswith("\n") or not data
    return data.splitlines()


def joined(room: Room, *names: str, make=json_member) -> list[Member]:
    """Members joined under ``names``, in order, with their outboxes read."""
    members = []
    for name in names:
        member = make()
        room.join(member, name)
        members.append(member)
    for member in members:
        member.outbox.new_chunks()
    return members


def refusal_code(call, *args) -> str:
    """Call ``call(*args)``, which must raise ``ProtocolError``; its code."""
    with pytest.raises(ProtocolError) as caught:
        call(*args)
    return caught.value.code


# ---------------------------------------------------------------------------
# Joining


def test_first_member_is_welcomed_alone_with_no_history():
    room = Room()
    alice = json_member()
    room.join(alice, "alice")
    [welcome] = received(alice)
    assert welcome == Welcome("alice", ("alice",), (), welcome.room, last_id=0)
    assert welcome.room  # names this history, for a later "since"
    assert alice.name == "alice"
    assert room.names() == ("alice",)


def test_newcomer_gets_users_and_history_the_others_get_joined():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    room.say(alice, [Say("one"), Say("two")])
    room.say(bob, [Say("three", me=True)])
    said = received(alice)
    assert [m.text for m in said] == ["one", "two", "three"]
    assert received(bob) == said

    carol = json_member()
    room.join(carol, "carol")
    [welcome] = received(carol)
    assert welcome.name == "carol"
    assert welcome.users == ("alice", "bob", "carol")
    assert welcome.history == tuple(said)
    assert received(alice) == [Joined("carol")]
    assert received(bob) == [Joined("carol")]


def test_welcome_history_holds_the_last_n_messages():
    room = Room(history_size=3)
    [alice] = joined(room, "alice")
    for i in range(5):
        room.say(alice, [Say(f"line {i}")])
    bob = json_member()
    room.join(bob, "bob")
    [welcome] = received(bob)
    assert [m.text for m in welcome.history] == ["line 2", "line 3", "line 4"]
    assert room.history() == welcome.history


@pytest.mark.parametrize("size", [0, -1])
def test_history_can_be_turned_off(size):
    room = Room(history_size=size)
    [alice] = joined(room, "alice")
    room.say(alice, [Say("gone")])
    assert room.history() == ()


@pytest.mark.parametrize("size", [0, 3])
def test_the_welcome_names_the_newest_id_shown_or_not(size):
    """A newcomer shown nothing still learns where its history starts."""
    room = Room(history_size=size)
    [alice] = joined(room, "alice")
    room.say(alice, [Say("one"), Say("two")])
    newest = received(alice)[-1]
    bob = json_member()
    room.join(bob, "bob")
    [welcome] = received(bob)
    assert newest.text == "two" and welcome.last_id == newest.id


@pytest.mark.parametrize(
    ("said", "since", "notice"),
    [
        (5, 0, "2 earlier messages were missed; only the last 3 are shown."),
        (5, 2, None),  # 3 missed: all shown
        # Lines 1-3 no longer kept: more than 2 were missed, and it says so.
        (8, 1, "More than 2 earlier messages were missed; only the last 3 are shown."),
        (8, 2, "More than 2 earlier messages were missed; only the last 3 are shown."),
        (8, 3, "2 earlier messages were missed; only the last 3 are shown."),
        (8, 5, None),
    ],
)
def test_a_comeback_is_told_how_much_it_missed(said, since, notice):
    room = Room(history=History(5, cap=3))  # keeps 5 lines, replays at most 3
    alice = json_member()
    room.join(alice, "alice")
    token = received(alice)[0].room
    for number in range(1, said + 1):
        room.say(alice, [Say(f"line {number}")])
    bob = json_member()
    room.join(bob, "bob", since, token)
    welcome, *notices = received(bob)
    shown = range(max(since, said - 3) + 1, said + 1)
    assert [m.id for m in welcome.history] == list(shown)
    assert notices == ([Notice(notice)] if notice else [])


def test_the_operators_log_shows_an_action_as_people_see_it(caplog):
    caplog.set_level(logging.INFO, logger="chat.room")
    room = Room()
    [alice] = joined(room, "alice")
    room.say(alice, [Say("waves", me=True), Say("hello")])
    said = [r.getMessage() for r in caplog.records if r.name == "chat.room"]
    assert said[-2:] == ["* alice waves", "alice: hello"]


def test_join_keeps_the_names_normal_form():
    room = Room()
    alice = json_member()
    room.join(alice, "ａｌｉｃｅ")  # full width
    assert alice.name == "alice"
    assert received(alice)[0].name == "alice"
    assert room.find("ALICE") is alice


@pytest.mark.parametrize("taken", ["alice", "ALICE", "Alice", "ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞"])
def test_names_are_unique_whatever_the_case_or_width(taken):
    room = Room()
    [alice] = joined(room, "alice")
    other = json_member()
    assert refusal_code(room.join, other, taken) == "name_taken"
    assert other.name is None
    assert other.outbox.chunks == []  # the session reports it, not the room
    assert received(alice) == []
    assert room.names() == ("alice",)
    room.join(other, "bob")  # and may try again
    assert room.names() == ("alice", "bob")


@pytest.mark.parametrize("name", ["", "a b", "server", "SERVER", "bob\n"])
def test_bad_names_are_refused(name):
    room = Room()
    member = json_member()
    assert refusal_code(room.join, member, name) == "bad_name"
    assert member.name is None
    assert room.names() == ()


def test_joining_twice_is_refused():
    room = Room()
    [alice] = joined(room, "alice")
    assert refusal_code(room.join, alice, "alicia") == "already_registered"
    assert alice.name == "alice"
    assert room.names() == ("alice",)


# ---------------------------------------------------------------------------
# Renaming


def test_rename_keeps_join_order_and_tells_everyone():
    room = Room()
    alice, bob, carol = joined(room, "alice", "bob", "carol")
    room.rename(bob, "robert")
    assert room.names() == ("alice", "robert", "carol")
    assert bob.name == "robert"
    assert room.find("robert") is bob
    assert room.find("bob") is None
    for member in (alice, bob, carol):
        assert received(member) == [Renamed("bob", "robert")]
    dave = json_member()
    room.join(dave, "bob")  # the old name is free again
    assert room.names() == ("alice", "robert", "carol", "bob")


def test_rename_to_a_taken_name_changes_nothing():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    assert refusal_code(room.rename, bob, "ALICE") == "name_taken"
    assert bob.name == "bob"
    assert room.names() == ("alice", "bob")
    assert received(alice) == received(bob) == []


def test_rename_to_own_name_in_another_case():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    room.rename(bob, "Bob")
    assert room.names() == ("alice", "Bob")
    assert received(alice) == [Renamed("bob", "Bob")]
    room.rename(bob, "Bob")  # no change, no news
    assert received(alice) == []


def test_rename_needs_a_joined_member_and_a_good_name():
    room = Room()
    [alice] = joined(room, "alice")
    assert refusal_code(room.rename, json_member(), "zed") == "not_registered"
    assert refusal_code(room.rename, alice, "a b") == "bad_name"
    assert refusal_code(room.rename, alice, "Server") == "bad_name"
    assert room.names() == ("alice",)


# ---------------------------------------------------------------------------
# Private lines


def test_private_goes_to_both_sides_only():
    room = Room()
    alice, bob, carol = joined(room, "alice", "bob", "carol")
    room.private(alice, "BOB", "psst", cid="c1")
    [to_bob] = received(bob)
    assert isinstance(to_bob, PrivateMessage)
    assert (to_bob.sender, to_bob.to, to_bob.text, to_bob.cid) == (
        "alice",
        "bob",
        "psst",
        "c1",
    )
    assert received(alice) == [to_bob]
    assert received(carol) == []
    assert room.history() == ()  # private lines are not kept


def test_private_to_oneself_arrives_once():
    room = Room()
    [alice] = joined(room, "alice")
    room.private(alice, "alice", "note to self")
    [message] = received(alice)
    assert (message.sender, message.to) == ("alice", "alice")


def test_private_to_nobody_is_refused():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    assert refusal_code(room.private, alice, "zed", "hello?") == "no_such_user"
    assert received(alice) == received(bob) == []


def test_private_needs_a_joined_sender():
    room = Room()
    [bob] = joined(room, "bob")
    assert refusal_code(room.private, json_member(), "bob", "hi") == "not_registered"
    assert received(bob) == []


def test_private_to_a_plain_member_is_rendered_for_it():
    room = Room()
    [alice] = joined(room, "alice")
    [bob] = joined(room, "bob", make=plain_member)
    room.private(alice, "bob", "psst")
    assert text_received(bob) == ["[private] alice -> bob: psst"]


# ---------------------------------------------------------------------------
# Saying


def test_a_batch_gets_consecutive_ids_and_arrives_as_one_piece():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    room.say(alice, [Say("a")])
    room.say(bob, [Say("b", cid="1"), Say("c", me=True), Say("d", cid="3")])
    chunks = alice.outbox.new_chunks()
    assert len(chunks) == 2  # "a", then the whole batch in one put, not three
    first, *batch = decode_all(chunks)
    assert [m.id for m in batch] == [first.id + 1, first.id + 2, first.id + 3]
    assert [(m.sender, m.text, m.me, m.cid) for m in batch] == [
        ("bob", "b", None, "1"),
        ("bob", "c", True, None),
        ("bob", "d", None, "3"),
    ]
    assert len({m.ts for m in batch}) == 1


def test_every_json_member_gets_the_very_same_bytes():
    room = Room()
    alice, bob, carol = joined(room, "alice", "bob", "carol")
    room.say(alice, [Say("encoded once")])
    [a], [b], [c] = (m.outbox.new_chunks() for m in (alice, bob, carol))
    assert a is b is c


def test_json_members_get_their_own_lines_plain_members_do_not():
    room = Room()
    [jay] = joined(room, "jay")
    [pat] = joined(room, "pat", make=plain_member)
    assert received(jay) == [Joined("pat")]
    room.say(pat, [Say("from pat")])
    room.say(jay, [Say("from jay")])
    assert [(m.sender, m.text) for m in received(jay)] == [
        ("pat", "from pat"),
        ("jay", "from jay"),
    ]
    assert text_received(pat) == ["jay: from jay"]


def test_say_needs_a_joined_member():
    room = Room()
    [alice] = joined(room, "alice")
    assert refusal_code(room.say, json_member(), [Say("hi")]) == "not_registered"
    assert received(alice) == []
    room.say(json_member(), [])  # nothing to say is not an error
    assert received(alice) == []


def test_everyone_sees_one_order():
    room = Room()
    members = joined(room, "a", "b", "c", "d")
    for turn in range(20):
        speaker = members[turn * 7 % len(members)]
        room.say(speaker, [Say(f"{turn}.{i}") for i in range(turn % 3 + 1)])
    seen = [[(m.id, m.sender, m.text) for m in received(x)] for x in members]
    assert all(view == seen[0] for view in seen)
    ids = [entry[0] for entry in seen[0]]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_announce_is_a_numbered_line_from_the_server():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    room.say(alice, [Say("before")])
    room.announce("maintenance at noon")
    before, announced = received(bob)
    assert (announced.sender, announced.text) == (SERVER_NAME, "maintenance at noon")
    assert announced.id == before.id + 1
    assert room.history()[-1] == announced


def test_notice_goes_to_everyone_and_is_not_kept():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    room.notice("hello all")
    assert received(alice) == received(bob) == [Notice("hello all")]
    room.say(alice, [Say("first line")])
    assert received(bob)[0].id == 1  # a notice takes no id
    assert len(room.history()) == 1


def test_tell_reaches_one_member():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    room.tell(bob, Notice("just you"))
    assert received(bob) == [Notice("just you")]
    assert received(alice) == []


# ---------------------------------------------------------------------------
# Leaving, kicking, closing


def test_leave_tells_the_others_why():
    room = Room()
    alice, bob, carol = joined(room, "alice", "bob", "carol")
    room.leave(bob, "quit: tea time")
    assert room.names() == ("alice", "carol")
    assert received(alice) == received(carol) == [Left("bob", "quit: tea time")]
    assert received(bob) == []
    room.leave(bob, "connection lost")  # a second leave is not news
    assert received(alice) == []
    room.join(json_member(), "bob")  # the name is free
    assert room.names() == ("alice", "carol", "bob")


def test_leaving_without_having_joined_is_silent():
    room = Room()
    [alice] = joined(room, "alice")
    room.leave(json_member(), "connection lost")
    assert received(alice) == []


def test_kick_shows_the_reason_to_everyone_then_hangs_up():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    assert room.kick("BOB", "spam") is True
    assert received(alice) == [Left("bob", "kicked: spam")]
    assert received(bob) == [Left("bob", "kicked: spam")]
    assert bob.outbox.hung_up and not alice.outbox.hung_up
    assert room.names() == ("alice",)
    assert refusal_code(room.say, bob, [Say("still here?")]) == "not_registered"
    room.leave(bob, "connection lost")  # its reader ending later is not news
    assert received(alice) == []


def test_kick_of_nobody_does_nothing():
    room = Room()
    [alice] = joined(room, "alice")
    assert room.kick("zed", "spam") is False
    assert received(alice) == []
    assert not alice.outbox.hung_up


def test_a_kicked_member_cannot_speak_for_the_next_owner_of_its_name():
    room = Room()
    alice, old_bob = joined(room, "alice", "bob")
    room.kick("bob", "spam")
    new_bob = json_member()
    room.join(new_bob, "bob")
    received(alice)
    # The kicked connection may still be reading; it keeps its old name.
    assert refusal_code(room.say, old_bob, [Say("I am bob")]) == "not_registered"
    assert refusal_code(room.rename, old_bob, "bobby") == "not_registered"
    assert refusal_code(room.private, old_bob, "alice", "hi") == "not_registered"
    assert received(alice) == []
    assert room.names() == ("alice", "bob")
    assert room.find("bob") is new_bob


def test_close_tells_everyone_and_hangs_up_on_all():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    room.close("the server is shutting down")
    for member in (alice, bob):
        assert received(member) == [Notice("the server is shutting down")]
        assert member.outbox.hung_up
    assert room.names() == ()
    assert room.members() == []


def test_members_and_find():
    room = Room()
    alice, bob = joined(room, "alice", "bob")
    assert room.members() == [alice, bob]
    assert room.find("Alice") is alice
    assert room.find("nobody") is None
    assert "alice" in repr(alice)


# ---------------------------------------------------------------------------
# Threads


def test_concurrent_speakers_leave_every_member_the_same_story():
    """Speakers on several threads, a member coming and going on another.

    Afterwards every member that stayed must have received the same messages,
    with strictly increasing ids, and each speaker's lines in its own order.
    """
    speakers, lines_each = 6, 150
    room = Room(history_size=10)
    talkers = joined(room, *(f"t{i}" for i in range(speakers)))
    listeners = joined(room, "json_listener") + joined(
        room, "plain_listener", make=plain_member
    )
    start = threading.Barrier(speakers + 1)
    failures: list[BaseException] = []

    def talk(member: Member) -> None:
        try:
            start.wait()
            for i in range(lines_each):
                room.say(member, [Say(f"{member.name} {i}")])
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    def come_and_go() -> None:
        try:
            start.wait()
            for _ in range(lines_each):
                visitor = json_member()
                room.join(visitor, "visitor")
                room.rename(visitor, "guest")
                room.leave(visitor, "quit")
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=talk, args=(m,), name=f"talk {m.name}") for m in talkers
    ]
    threads.append(threading.Thread(target=come_and_go, name="come and go"))
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, to shake out races
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        sys.setswitchinterval(old_interval)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []

    def said(member: Member) -> list[Message]:
        return [m for m in received(member) if isinstance(m, Message)]

    stories = {m.name: said(m) for m in [*talkers, listeners[0]]}
    reference = stories["json_listener"]
    assert len(reference) == speakers * lines_each
    ids = [m.id for m in reference]
    assert all(a < b for a, b in itertools.pairwise(ids)), "ids out of order"
    for name, story in stories.items():
        assert story == reference, f"{name} saw another order"
    for talker in talkers:
        own = [m.text for m in reference if m.sender == talker.name]
        assert own == [f"{talker.name} {i}" for i in range(lines_each)]
    # The plain listener got the same lines, in the same order, as text.
    texts = [line for line in text_received(listeners[1]) if not line.startswith("*")]
    assert texts == [f"{m.sender}: {m.text}" for m in reference]
    assert room.names() == tuple(m.name for m in talkers + listeners)


# ---------------------------------------------------------------------------
# Found in review


def test_a_long_history_never_makes_the_welcome_too_big():
    room = Room(history_size=50, max_welcome_bytes=20_000)
    (alice,) = joined(room, "alice")
    room.say(alice, [Say("\x01" * 1000)] * 50)  # 6 bytes each once JSON-escaped
    newcomer = json_member()
    room.join(newcomer, "bob")
    data = b"".join(newcomer.outbox.chunks)
    assert len(data) <= 20_000 + 200  # the welcome, plus one short notice
    welcome, notice = decode_all(newcomer.outbox.chunks)
    assert isinstance(welcome, Welcome) and isinstance(notice, Notice)
    kept = len(welcome.history)
    assert 0 < kept < 50
    assert [m.id for m in welcome.history] == list(range(51 - kept, 51))  # newest
    assert notice.text.startswith(f"{50 - kept} earlier messages")


def test_who_answers_in_the_rooms_order():
    room = Room()
    alice, _ = joined(room, "alice", "bob")
    room.who(alice)
    assert received(alice) == [Users(("alice", "bob"))]
    with pytest.raises(ProtocolError):
        room.who(json_member())  # not in the room


def test_me_false_is_the_same_as_no_me():
    room = Room()
    (alice,) = joined(room, "alice")
    room.say(alice, [Say("plain words", me=False)])
    (message,) = received(alice)
    assert message.me is None
    assert b'"me"' not in alice.outbox.chunks[-1]


def test_renaming_to_the_same_name_is_answered():
    room = Room()
    (alice,) = joined(room, "alice")
    room.rename(alice, "alice")
    assert received(alice) == [Notice("You are already alice.")]


def test_a_broadcast_is_one_deliver_call_per_wire_format_whoever_is_in():
    calls = []

    def deliver(outboxes, data, exclude):
        calls.append((outboxes, data, exclude))
        put_each(outboxes, data, exclude)

    room = Room(deliver=deliver)
    jsons = joined(room, *(f"j{i}" for i in range(30)))
    plains = joined(room, *(f"p{i}" for i in range(20)), make=plain_member)
    calls.clear()
    room.say(plains[0], [Say("hello")])
    assert len(calls) == 2  # one for the JSON members, one for the plain ones
    by_size = sorted(calls, key=lambda call: len(call[0]))
    assert [len(call[0]) for call in by_size] == [20, 30]
    assert by_size[0][2] is plains[0].outbox  # a plain sender is left out
    # Who is in changes: the next broadcast follows (a leaver, a newcomer).
    room.leave(jsons[0], "bye")
    [late] = joined(room, "late")
    calls.clear()
    room.say(late, [Say("again")])
    outboxes = {o for call in calls for o in call[0]}
    assert late.outbox in outboxes and jsons[0].outbox not in outboxes
    assert received(late)[-1].text == "again"


def test_one_unmute_lifts_the_mute_from_every_name_it_followed():
    """The operator unmutes the person as they are called now: going back to
    the old name must not find them muted again."""
    room = Room()
    alice = json_member()
    room.join(alice, "alice")
    assert room.mute("alice")
    room.rename(alice, "carol")
    room.rename(alice, "dora")
    assert room.unmute("dora")
    room.rename(alice, "alice")
    room.say(alice, [Say("free again")])  # raises ProtocolError if still muted
    assert room.history()[-1].text == "free again"
    assert not room.unmute("carol")  # nothing left of that mute


def test_a_mute_stays_with_the_name_through_renames():
    """A mute belongs to the name: renaming away neither frees the old name
    for someone else nor frees the renamed member."""
    room = Room()
    alice = json_member()
    room.join(alice, "alice")
    assert room.mute("alice")
    room.rename(alice, "carol")
    with pytest.raises(ProtocolError):  # still muted under the new name
        room.say(alice, [Say("hi as carol")])
    room.leave(alice, "quit")
    again = json_member()
    room.join(again, "alice")
    with pytest.raises(ProtocolError):  # and the old name is muted still
        room.say(again, [Say("I speak as alice again")])
    bob = json_member()
    room.join(bob, "bob")
    room.leave(again, "quit")
    room.rename(bob, "alice")
    room.rename(bob, "bob")  # passing through the name does not carry it off
    back = json_member()
    room.join(back, "alice")
    with pytest.raises(ProtocolError):
        room.say(back, [Say("free?")])
