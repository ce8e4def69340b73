"""The clock port: every decision that depends on time takes it from here.

Two readings, because they answer different questions: ``monotonic()`` measures intervals
(backoff, deadlines, drain) and never jumps; ``wall()`` is what people read in ``status``
and the deploy history.  ``sleep`` waits on the same clock.  ``FakeClock`` ships beside
the real one so tests run in virtual time instead of sleeping: time moves by hand
(``advance``), or by itself to the next sleeper's deadline once every other task has
had its turn.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "FakeClock", "SystemClock", "wait_event"]


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()

# How many event-loop passes a sleeper lets every other ready task take before it moves
# virtual time to its own deadline: enough for a chain of wake-ups to settle.
_SETTLE_PASSES = 20


class FakeClock:
    """A clock that moves only in virtual time; both readings move together.

    ``sleep(s)`` returns when virtual time reaches now + s: either a test ``advance``s
    it, or — when the sleeper is the earliest one and the loop has run every ready task
    ``_SETTLE_PASSES`` times — the sleeper moves time to its deadline itself.  So code
    that waits on the clock runs in microseconds, in the order its deadlines say.
    """

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._sleepers: list[tuple[float, int]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._monotonic += seconds
        self._wall += seconds

    async def sleep(self, seconds: float) -> None:
        deadline = self._monotonic + max(0.0, seconds)
        entry = (deadline, next(self._order))
        heapq.heappush(self._sleepers, entry)
        try:
            while self._monotonic < deadline:
                for _ in range(_SETTLE_PASSES):
                    await asyncio.sleep(0)
                if self._monotonic < deadline and self._sleepers[0] == entry:
                    self.advance(deadline - self._monotonic)
        finally:
            self._sleepers.remove(entry)
            heapq.heapify(self._sleepers)


async def wait_event(event: asyncio.Event, clock: Clock, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` passed on ``clock``; whether it was set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, timer):
            task.cancel()
        await asyncio.gather(waiter, timer, return_exceptions=True)
    return event.is_set()
