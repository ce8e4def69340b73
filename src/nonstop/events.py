"""The control plane's one event stream: typed events, subscribers with bounded queues.

Whatever happens that someone may watch — a deploy's steps, a server's health flips, a
drain starting and ending, a reload, an app instance starting, crashing or restarting —
is published here once.  Interfaces read it: the admin API streams a deploy's events to
the CLI (its progress and ``--json``), and metrics or a live page subscribe the same way.

Publishing never blocks and never fails: each subscriber has its own bounded queue, and
a subscriber that falls behind loses its oldest events (counted in ``dropped``), never
the publisher's time.  Events are frozen dataclasses; ``as_dict`` gives the flat JSON
object a client reads (``event`` names the kind).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DeployEvent",
    "DrainEvent",
    "Event",
    "EventBus",
    "HealthEvent",
    "InstanceEvent",
    "ReloadEvent",
    "Subscription",
    "as_dict",
]


@dataclass(frozen=True, slots=True)
class DeployEvent:
    """One step of a deploy as it happens (the kinds are ``deploy.events.EVENT_KINDS``)."""

    app: str
    deploy: int  # the deploy's id in the history
    kind: str
    t: float  # seconds since the deploy started
    message: str
    fields: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """An active check flipped a server of a static upstream up or down."""

    upstream: str
    address: str
    healthy: bool
    detail: str


@dataclass(frozen=True, slots=True)
class DrainEvent:
    """A drain of an app's servers began (``left`` None) or ended (requests left)."""

    app: str
    addresses: tuple[str, ...]
    left: int | None = None


@dataclass(frozen=True, slots=True)
class ReloadEvent:
    """A reload was applied (``ok``) or refused (``error`` says why)."""

    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class InstanceEvent:
    """An app instance started, crashed, stopped or is being restarted."""

    app: str
    port: int
    release: str
    kind: str  # "started", "crashed", "stopped", "restarting", ...
    pid: int | None = None
    returncode: int | None = None


Event = DeployEvent | HealthEvent | DrainEvent | ReloadEvent | InstanceEvent

_NAMES: dict[type[Any], str] = {
    DeployEvent: "deploy",
    HealthEvent: "health",
    DrainEvent: "drain",
    ReloadEvent: "reload",
    InstanceEvent: "instance",
}


def as_dict(event: Event) -> dict[str, Any]:
    """The event as one flat JSON-able object.

    A deploy event reads as it always has on the admin socket: ``event`` is its step
    kind, then ``app``, ``t``, ``message`` and the step's own fields.  Any other event has
    ``event`` set to its type (``health``, ``drain``, ``reload``, ``instance``).
    """
    if isinstance(event, DeployEvent):
        return {
            "event": event.kind,
            "app": event.app,
            "t": event.t,
            "message": event.message,
            **dict(event.fields),
        }
    return {"event": _NAMES[type(event)], **dataclasses.asdict(event)}


@dataclass(eq=False)
class Subscription:
    """One subscriber's bounded queue of events; iterate it, or ``pending`` to flush."""

    bus: EventBus
    accepts: Callable[[Event], bool]
    limit: int
    dropped: int = 0
    _queue: collections.deque[Event] = field(default_factory=collections.deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def offer(self, event: Event) -> None:
        if self.closed or not self.accepts(event):
            return
        if len(self._queue) >= self.limit:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._ready.set()

    def pending(self) -> list[Event]:
        """Every event queued now, taken off the queue."""
        events = list(self._queue)
        self._queue.clear()
        self._ready.clear()
        return events

    async def get(self) -> Event:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        event = self._queue.popleft()
        return event

    async def __aiter__(self) -> AsyncIterator[Event]:
        while not self.closed:
            yield await self.get()

    def close(self) -> None:
        self.closed = True
        self.bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _everything(_event: Event) -> bool:
    return True


class EventBus:
    """Publish once, deliver to every subscriber's own queue."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(event)

    def subscribe(
        self, accepts: Callable[[Event], bool] = _everything, limit: int = 10_000
    ) -> Subscription:
        subscription = Subscription(self, accepts, limit)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
