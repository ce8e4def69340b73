"""What the deployer knows of each app right now, and of the deploy running on it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from nonstop.config.model import AppSpec, ServerSpec
from nonstop.deploy.events import Progress
from nonstop.deploy.server_set import ServerSet
from nonstop.deploy.store import DeployRecord
from nonstop.servers import ServerState, server_spec, slot_ports

__all__ = ["AppRuntime", "Run"]


@dataclass
class Run:
    """One deploy or rollback in progress, and how a person or a fleet steers it."""

    record: DeployRecord
    release: str
    progress: Progress
    spec: AppSpec  # the app as this deploy starts it (a reload meanwhile changes nothing)
    phase: str = "starting"
    rollback: asyncio.Event = field(default_factory=asyncio.Event)  # abort / rollback asked
    rollback_by: str = ""
    commit: asyncio.Event = field(default_factory=asyncio.Event)  # commit of a hold asked
    commit_by: str = ""
    decided: asyncio.Event = field(default_factory=asyncio.Event)  # either of the two
    held: asyncio.Event = field(default_factory=asyncio.Event)  # the hold step was reached
    hold_until: float | None = None  # wall clock
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: dict[str, Any] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    store_failure: str | None = None  # why the store refused a write during this deploy

    def stamp(self, name: str) -> None:
        """Record how long the deploy took to reach ``name``."""
        self.durations[name] = round(self.progress.elapsed(), 4)


@dataclass
class AppRuntime:
    """What the deployer knows of one app right now."""

    spec: AppSpec
    servers: ServerSet = field(default_factory=ServerSet)
    pushed: tuple[ServerState, ...] | None = None  # the set the engine last applied
    live_slot: int | None = None
    live_release: str | None = None
    # the app as the live release was started: a reload changes ``spec``, not what runs
    live_spec: AppSpec | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    run: Run | None = None
    gating: dict[int, asyncio.Task[None]] = field(default_factory=dict)

    @property
    def live_ports(self) -> tuple[int, ...]:
        if self.live_slot is None:
            return ()
        return slot_ports(self.live_spec or self.spec, self.live_slot)

    def set_live(self, slot: int, release: str, spec: AppSpec) -> None:
        self.live_slot, self.live_release, self.live_spec = slot, release, spec

    def server(self, port: int, new: AppSpec, backup: bool = False) -> ServerSpec:
        """The upstream server of ``port``: the live release's as it was started, any other
        as ``new`` (the deploy's app) starts it."""
        live = self.live_spec if port in self.live_ports else None
        return server_spec(live or new, port, backup)
