"""The deploy's health gate: poll a new instance until it passes, dies, or runs out of time.

The seed slept a fixed 10 s and then curled ten times, accepting any body containing
``UP`` from whatever answered on the port (defects 4, 5, 7, 8).  Here the gate polls from
the first moment, so a deploy takes the app's own start time plus at most one
``interval``; it needs ``rise`` passes in a row; it fails fast when the process exits; and
after each passing probe it checks the process is still alive — if it is not, the answer
came from someone else on that port and the gate fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nonstop.clock import SYSTEM_CLOCK, Clock
from nonstop.config.model import HealthSpec
from nonstop.health.active import Verdict
from nonstop.health.checker import ProbeFn, probe

__all__ = ["GateResult", "GateWait", "wait_healthy"]

_TAIL_LINES = 20


@dataclass(frozen=True, slots=True)
class GateResult:
    ok: bool
    reason: str = ""  # why it failed; "" when ok
    last_status: int | None = None
    body_excerpt: str = ""
    error: str | None = None  # the connection error of the last probe
    log_tail: str = ""  # of the instance, when it failed
    elapsed: float = 0.0
    probes: int = 0

    def message(self) -> str:
        """The full text for a refused deploy: reason, then the log tail."""
        if self.ok:
            return f"healthy after {self.elapsed:.2f}s ({self.probes} probes)"
        text = self.reason
        if self.log_tail:
            text += "\n--- last lines of the instance's log ---\n" + self.log_tail
        return text


@dataclass(frozen=True, slots=True)
class GateWait:
    """The gate is still waiting: what a progress line says while an app starts."""

    elapsed: float  # seconds since the gate began
    timeout: float  # how long it waits at most (the spec's ``start_timeout``)
    detail: str  # the last probe's outcome: "connection refused", "status 503 ..."


def _failed(
    reason: str, last: Verdict | None, tail: Callable[[], str] | None, elapsed: float, probes: int
) -> GateResult:
    return GateResult(
        ok=False,
        reason=reason,
        last_status=last.status if last else None,
        body_excerpt=last.body_excerpt if last else "",
        error=last.error if last else None,
        log_tail=tail() if tail is not None else "",
        elapsed=elapsed,
        probes=probes,
    )


async def wait_healthy(
    host: str,
    port: int,
    spec: HealthSpec,
    deadline: float | None = None,
    is_alive: Callable[[], bool] = lambda: True,
    tail: Callable[[], str] | None = None,
    *,
    on_wait: Callable[[GateWait], None] | None = None,
    probe_fn: ProbeFn = probe,
    clock: Clock = SYSTEM_CLOCK,
) -> GateResult:
    """Poll every ``spec.interval`` until ``spec.rise`` passes in a row.

    ``deadline`` is on ``clock.monotonic()``; None means ``spec.start_timeout`` from now.
    ``is_alive`` says whether the instance's process still runs; ``tail`` returns the end
    of its log for the failure message.  ``on_wait`` hears how the wait goes after a probe
    that did not pass, from one second on (an app that starts at once is not worth a line):
    at most once a second, and whenever the probe's outcome changes.
    """
    start = clock.monotonic()
    end = start + spec.start_timeout if deadline is None else deadline
    last: Verdict | None = None
    probes = passes = 0
    told: tuple[int, str] | None = None  # the whole second and detail last reported
    while True:
        if not is_alive():
            why = "the process exited before passing its health check"
            if last is not None:
                why += f" (last check: {last.detail})"
            return _failed(why, last, tail, clock.monotonic() - start, probes)
        last = await probe_fn(host, port, spec)
        probes += 1
        now = clock.monotonic()
        if last.ok and not is_alive():
            why = f"port {port} answered the health check but the new process had exited"
            return _failed(why, last, tail, now - start, probes)
        passes = passes + 1 if last.ok else 0
        if passes >= max(1, spec.rise):
            return GateResult(
                True,
                last_status=last.status,
                body_excerpt=last.body_excerpt,
                elapsed=now - start,
                probes=probes,
            )
        if now >= end:
            why = f"not healthy after {spec.start_timeout:g}s: {last.detail}"
            return _failed(why, last, tail, now - start, probes)
        if on_wait is not None and not last.ok and now - start >= 1.0:
            news = (int(now - start), last.detail)
            if told is None or news[0] > told[0] or news[1] != told[1]:
                told = news
                on_wait(GateWait(now - start, end - start, last.detail))
        await clock.sleep(min(spec.interval, max(0.0, end - now)))
