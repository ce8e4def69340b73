"""Progress of a deploy as it happens: one ``DeployEvent`` per step, on the event stream.

The admin API subscribes to the stream (``nonstop.events``) for the length of a deploy
request and sends each event as a JSON line on its connection; the CLI prints them as
they arrive (``--json`` passes them through for CI).  Every event has ``event`` (its
kind), ``app``, ``t`` (seconds since the deploy started) and a ``message`` for people;
the other fields depend on the kind.
"""

from __future__ import annotations

import logging
from typing import Any

from nonstop.clock import Clock
from nonstop.events import DeployEvent, EventBus

__all__ = ["EVENT_KINDS", "Progress"]

log = logging.getLogger("nonstop")

EVENT_KINDS = (
    "begin",  # lock taken, plan made
    "started",  # a new instance's process runs
    "waiting",  # the health gate still waits (at most once a second, or when its answer changes)
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
    """Stamps, logs and publishes the events of one deploy."""

    def __init__(self, app: str, deploy: int, events: EventBus, clock: Clock) -> None:
        self.app = app
        self.deploy = deploy
        self._events = events
        self._clock = clock
        self.start = clock.monotonic()

    def elapsed(self) -> float:
        return self._clock.monotonic() - self.start

    def __call__(self, event: str, message: str, **fields: Any) -> None:
        # A wait is progress for whoever watches, not news for the daemon's log.
        level = logging.DEBUG if event == "waiting" else logging.INFO
        log.log(level, "deploy %s: %s", self.app, message)
        self._events.publish(
            DeployEvent(
                self.app,
                self.deploy,
                event,
                round(self.elapsed(), 4),
                message,
                tuple(fields.items()),
            )
        )
