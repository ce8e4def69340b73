"""What the deployer knows of each app right now, and of the deploy running on it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from nonstop.config.model import AppSpec
from nonstop.deploy.events import Progress
from nonstop.deploy.server_set import ServerSet
from nonstop.deploy.store import DeployRecord
from nonstop.servers import ServerState, slot_ports

__all__ = ["AppRuntime", "Run"]


@dataclass
class Run:
    """One deploy or rollback in progress, and how a person or a fleet steers it."""

    record: DeployRecord
    release: str
    progress: Progress
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
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    run: Run | None = None
    gating: dict[int, asyncio.Task[None]] = field(default_factory=dict)

    @property
    def live_ports(self) -> tuple[int, ...]:
        return () if self.live_slot is None else slot_ports(self.spec, self.live_slot)
