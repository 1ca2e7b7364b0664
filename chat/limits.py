"""Flood control, with no I/O: token buckets on an injectable clock.

A client may send ``burst`` lines at once, then ``rate`` lines per second.
A line over that is refused (the server answers ``error {code: "flood"}``).
Refusals are counted in a second bucket of their own: a person pasting a few
lines too many gets a few refusals, a program that keeps flooding runs out of
them and is disconnected.  Both buckets refill at ``rate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Refusals allowed before a flooder is disconnected (at least this many).
MIN_STRIKES = 20


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; ``take`` spends one."""

    def __init__(
        self,
        rate: float,
        capacity: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("need rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()

    def take(self) -> bool:
        """Spend a token if there is one; False if the bucket is empty."""
        now = self._clock()
        elapsed = max(now - self._updated, 0.0)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class FloodGuard:
    """One connection's flood control.  Not thread-safe: its reader owns it.

    ``check()`` returns ``"ok"`` for a line that may go through, ``"refuse"``
    for one to refuse, and ``"disconnect"`` once the refusals are used up.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lines = TokenBucket(rate, max(burst, 1), clock)
        self._strikes = TokenBucket(rate, max(2 * burst, MIN_STRIKES), clock)

    def check(self) -> str:
        if self._lines.take():
            return "ok"
        if self._strikes.take():
            return "refuse"
        return "disconnect"
