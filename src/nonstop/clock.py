"""The clock port: every decision that depends on time takes it from here.

Two readings, because they answer different questions: ``monotonic()`` measures intervals
(backoff, deadlines, drain) and never jumps; ``wall()`` is what people read in ``status``
and the deploy history.  ``FakeClock`` ships beside the real one so tests move time by
hand instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemClock:
    """``time.monotonic`` and ``time.time``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to; both readings move together."""

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._monotonic = monotonic
        self._wall = wall

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._monotonic += seconds
        self._wall += seconds
