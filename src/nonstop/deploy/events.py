"""Progress of a deploy as it happens: one flat JSON-able dict per step.

The admin API streams these as JSON lines on the deploy's connection and the CLI prints
them as they arrive (``--json`` passes them through for CI).  Every event has ``event``
(its kind), ``app``, ``t`` (seconds since the deploy started) and a ``message`` for
people; the other fields depend on the kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nonstop.clock import Clock

__all__ = ["EVENT_KINDS", "Emit", "Progress"]

log = logging.getLogger("nonstop")

Emit = Callable[[dict[str, Any]], None]

EVENT_KINDS = (
    "begin",  # lock taken, plan made
    "started",  # a new instance's process runs
    "healthy",  # the health gate passed
    "refused",  # the gate (or the start) failed; the new instance is stopped
    "switched",  # traffic moved to the new release
    "drained",  # no request left on the old release, its idle connections closed
    "verify",  # watching the new release
    "hold",  # switched, the old release warm: waiting for commit or abort
    "commit",  # a held deploy was committed
    "rollback",  # switching back to the previous release
    "stopped",  # an instance was stopped
    "done",  # the deploy finished (any outcome)
)


class Progress:
    """Stamps, logs and forwards the events of one deploy."""

    def __init__(self, app: str, emit: Emit | None, clock: Clock) -> None:
        self.app = app
        self._emits: list[Emit] = [] if emit is None else [emit]
        self._clock = clock
        self.start = clock.monotonic()

    def elapsed(self) -> float:
        return self._clock.monotonic() - self.start

    def __call__(self, event: str, message: str, **fields: Any) -> None:
        data: dict[str, Any] = {
            "event": event,
            "app": self.app,
            "t": round(self.elapsed(), 4),
            "message": message,
            **fields,
        }
        log.info("deploy %s: %s", self.app, message)
        for emit in self._emits:
            emit(data)

    def listen(self, emit: Emit) -> None:
        """Also send the events from now on to ``emit`` (a ``commit`` or ``abort`` client)."""
        self._emits.append(emit)
