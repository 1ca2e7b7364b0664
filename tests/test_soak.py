"""The soak's own checks on what its listeners read (no server needed).

The soak is a release tool (``python -m chat.soak``), not a test; but what
it calls an anomaly must be right, or a passing soak proves nothing.
"""

import json
import selectors
import socket

import pytest

from chat.soak import Listener, Listeners, Tally


@pytest.fixture
def room():
    """Three listeners on socketpairs (never read from here), and the tally."""
    tally = Tally()
    listeners = Listeners(target=None, tally=tally, names=None)  # type: ignore[arg-type]
    pairs = [socket.socketpair() for _ in range(3)]
    members = []
    for index, (mine, _theirs) in enumerate(pairs):
        member = Listener(f"L{index}", mine, last_id=10)
        listeners._selector.register(mine, selectors.EVENT_READ, member)
        members.append(member)
    yield listeners, members, tally
    listeners._selector.close()
    for pair in pairs:
        for sock in pair:
            sock.close()


def messages(*ids):
    return [
        json.dumps({"type": "message", "id": i, "from": "a", "text": "x"}).encode()
        for i in ids
    ]


def test_gaps_in_ids_are_not_anomalies(room):
    listeners, members, tally = room
    for member in members:
        listeners._handle_lines(member, messages(11, 14, 20))
    listeners.check_agreement(timeout=0)
    assert tally.anomalies() == {}
    assert [m.seen for m in members] == [3, 3, 3]


def test_an_id_that_goes_back_or_repeats_is_an_anomaly(room):
    listeners, members, tally = room
    listeners._handle_lines(members[0], messages(12, 12, 11))
    found = tally.anomalies()
    assert found["message ids: repeated"]["count"] == 1
    assert found["message ids: out of order"]["count"] == 1


def test_a_listener_that_missed_a_message_is_named(room):
    listeners, members, tally = room
    listeners._handle_lines(members[0], messages(11, 12, 13))
    listeners._handle_lines(members[1], messages(11, 13))
    listeners._handle_lines(members[2], messages(11, 12, 13))
    listeners.check_agreement(timeout=0)
    missed = tally.anomalies()["a listener missed messages"]
    assert missed["count"] == 1
    assert missed["examples"] == ["L1: 2 messages (others: 3)"]


def test_the_same_count_with_other_ids_is_still_caught(room):
    listeners, members, tally = room
    listeners._handle_lines(members[0], messages(11, 12))
    listeners._handle_lines(members[1], messages(11, 13))
    listeners._handle_lines(members[2], messages(11, 12))
    listeners.check_agreement(timeout=0)
    assert tally.anomaly_count() == 1
