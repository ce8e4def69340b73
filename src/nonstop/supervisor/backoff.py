"""When to restart a crashed instance: exponential backoff, capped, reset by a stable run.

Pure: it gets the crash times and ``now`` and answers with a time; the supervisor sleeps.
The shape is systemd's ``RestartSec`` with ``RestartSteps``/``RestartMaxDelaySec`` and
Kubernetes' CrashLoopBackOff: 0.5 s, 1 s, 2 s, ... up to ``cap``; crashes more than
``reset_after`` apart start a new streak, so an app that ran fine for an hour and then
crashed once comes back after ``base`` again, not after the cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RestartPolicy"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 60.0  # > cap, so a capped crash loop keeps its streak

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base:
            raise ValueError("backoff needs base > 0, factor >= 1 and cap >= base")
        if self.reset_after <= self.cap:
            raise ValueError("reset_after must exceed cap, or a crash loop would never grow")

    def streak(self, crashes: Sequence[float]) -> int:
        """How many of the latest crashes follow each other closer than ``reset_after``."""
        if not crashes:
            return 0
        count = 1
        for earlier, later in zip(reversed(crashes[:-1]), reversed(crashes[1:]), strict=True):
            if later - earlier >= self.reset_after:
                break
            count += 1
        return count

    def delay(self, streak: int) -> float:
        """The wait before restart number ``streak`` of a streak (1 = after the first crash)."""
        if streak <= 0:
            return 0.0
        exponent = min(streak - 1, 64)  # beyond this the cap has long been reached
        return float(min(self.cap, self.base * self.factor**exponent))

    def restart_at(self, crashes: Sequence[float], now: float) -> float:
        """The monotonic time to restart at (``now`` or later) after the last crash."""
        if not crashes:
            return now
        return max(now, crashes[-1] + self.delay(self.streak(crashes)))

    def prune(self, crashes: Sequence[float], now: float) -> list[float]:
        """The crash times still worth keeping (the rest can no longer change a delay)."""
        kept = list(crashes[-64:])
        if kept and now - kept[-1] >= self.reset_after:
            return []
        return kept
