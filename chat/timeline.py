"""Which lines a person has seen: the merge of replays with the screen.

Both clients show the room's lines as they come.  After a reconnect the
welcome replays what was missed, and a resent line comes back a second
time; ``Timeline`` decides, line by line, whether it is new, so that every
line shows once, in order.  No I/O, no Tk: ``tests/test_timeline.py``
drives it through any mix of live lines, echoes and overlapping replays.
"""

from __future__ import annotations

from .protocol import Message, PrivateMessage

Chat = Message | PrivateMessage


class Timeline:
    """Which lines the view shows already: the merge of replays with the screen.

    Within one history (the welcome's ``room``), ids only grow, and every
    line arrives in id order; so a line at or below the highest id shown is
    one we have.  A welcome from another history starts the count again.
    """

    def __init__(self) -> None:
        self.room: str | None = None
        self.highest = 0

    def welcome(
        self, room: str | None, history: tuple[Chat, ...]
    ) -> tuple[tuple[Chat, ...], bool]:
        """(the lines of ``history`` not shown yet, whether we are coming back)."""
        coming_back = room is not None and room == self.room
        if not coming_back:
            self.room, self.highest = room, 0
        missed = tuple(line for line in history if self.fresh(line))
        return missed, coming_back

    def fresh(self, line: Chat) -> bool:
        """Is ``line`` new to the view?  (Notes it as shown if so.)"""
        if line.id is None:
            return True  # a server without ids: nothing to go by
        if line.id <= self.highest:
            return False
        self.highest = line.id
        return True
