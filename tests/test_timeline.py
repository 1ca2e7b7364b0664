"""The clients' merge of replays with what they show (``chat.timeline``).

No screen needed: this is the rule that decides, line by line, whether the
view shows it.  Whatever mix of live lines, resent echoes and reconnects
(with replays that overlap what was seen) a client gets, the view must show
every line once, none twice, in id order.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chat.protocol import Message, PrivateMessage
from chat.timeline import Timeline


def line(id_: int, private: bool = False) -> Message | PrivateMessage:
    if private:
        return PrivateMessage("bob", "ada", f"psst {id_}", float(id_), None, id_)
    return Message(id_, "bob", f"line {id_}", float(id_))


def test_a_first_welcome_shows_its_history():
    timeline = Timeline()
    missed, coming_back = timeline.welcome("r1", (line(1), line(2)))
    assert [m.id for m in missed] == [1, 2]
    assert not coming_back


def test_coming_back_shows_only_what_was_missed():
    timeline = Timeline()
    timeline.welcome("r1", (line(1), line(2)))
    assert timeline.fresh(line(3))
    missed, coming_back = timeline.welcome("r1", (line(3), line(4), line(5)))
    assert coming_back
    assert [m.id for m in missed] == [4, 5]


def test_an_echo_of_a_resend_is_not_shown_twice():
    timeline = Timeline()
    timeline.welcome("r1", ())
    assert timeline.fresh(line(7))
    assert not timeline.fresh(line(7))


def test_another_history_starts_the_count_again():
    timeline = Timeline()
    timeline.welcome("r1", (line(40),))
    missed, coming_back = timeline.welcome("r2", (line(1), line(2)))
    assert not coming_back
    assert [m.id for m in missed] == [1, 2]
    assert timeline.fresh(line(3))


def test_lines_without_ids_are_always_shown():
    timeline = Timeline()
    timeline.welcome(None, ())
    assert timeline.fresh(Message(None, "x", "y", 0.0))  # type: ignore[arg-type]


# A client's life: live lines, lines said while it was away (it gets them
# only in a replay), echoes of resends (repeats of lines already delivered),
# and reconnects whose replay starts at or before what was seen.
events = st.lists(
    st.one_of(
        st.tuples(st.just("live"), st.booleans()),
        st.tuples(st.just("missed"), st.booleans()),
        st.tuples(st.just("repeat"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("reconnect"), st.integers(min_value=0, max_value=20)),
    ),
    max_size=60,
)


@given(events)
def test_every_line_once_in_order_whatever_happens(script):
    timeline = Timeline()
    server: list[Message | PrivateMessage] = []  # what the room said, by id
    shown: list[int] = []
    away = False  # lines said now reach the client only in the next replay
    missed, _ = timeline.welcome("room", ())
    for kind, value in script:
        if kind == "live" and not away:
            server.append(line(len(server) + 1, private=value))
            if timeline.fresh(server[-1]):
                shown.append(server[-1].id)
        elif kind in ("live", "missed"):
            server.append(line(len(server) + 1, private=value))
            away = True
        elif kind == "repeat" and server and not away:  # an old line again
            old = server[min(value, len(server) - 1)]
            if timeline.fresh(old):
                shown.append(old.id)
        elif kind == "reconnect":
            # The replay starts after what the client last saw, or earlier
            # (overlapping), as a server may send more than needed.
            since = max(timeline.highest - value, 0)
            replay = tuple(m for m in server if m.id > since)
            missed, coming_back = timeline.welcome("room", replay)
            assert coming_back
            shown.extend(m.id for m in missed)
            away = False
    # In the end the client comes back once more, and catches up.
    missed, _ = timeline.welcome("room", tuple(server))
    shown.extend(m.id for m in missed)
    assert shown == sorted(set(shown)), "a line shown twice, or out of order"
    assert shown == [m.id for m in server], "a line the room said is missing"
