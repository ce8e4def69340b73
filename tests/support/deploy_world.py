"""A deployer on fakes — ``FakeEngine``, ``FakeLauncher``, ``FakeClock`` — for unit tests.

No socket, no process, no data plane: a 30-second verify runs in virtual time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nonstop.clock import FakeClock
from nonstop.config.model import AppSpec, HealthSpec
from nonstop.deploy import StateStore
from nonstop.deploy.deployer import Deployer
from nonstop.deploy.steps import Step
from nonstop.engines.fake import FakeEngine
from nonstop.events import DeployEvent, as_dict
from nonstop.health.active import Verdict
from nonstop.supervisor import FakeLauncher, Supervisor


class World:
    """A deployer of ``app`` that records every step it runs and every event it sends."""

    def __init__(self, tmp: Path, app: AppSpec) -> None:
        self.clock = FakeClock()
        self.launcher = FakeLauncher()
        self.engine = FakeEngine()
        self.unhealthy: set[int] = set()
        self.steps: list[Step] = []
        self.store = StateStore.open(tmp / "state")
        supervisor = Supervisor(tmp / "state", launcher=self.launcher, clock=self.clock)
        self.deployer = Deployer(
            self.store,
            supervisor,
            self.engine,
            clock=self.clock,
            probe_fn=self.probe,
            on_step=lambda _app, step: self.steps.append(step),
        )
        self._events = self.deployer.events.subscribe(lambda e: isinstance(e, DeployEvent))
        self._seen: list[dict[str, Any]] = []
        supervisor.on_event = self.deployer.on_supervisor_event
        self.deployer.configure((app,))

    @property
    def events(self) -> list[dict[str, Any]]:
        """The deploy events so far, as the admin API sends them."""
        self._seen += [as_dict(e) for e in self._events.pending()]
        return self._seen

    async def probe(self, host: str, port: int, spec: HealthSpec) -> Verdict:
        if port in self.unhealthy:
            return Verdict(False, 503, "DOWN", reason="status 503 (expected 200)")
        return Verdict(True, 200, "UP")

    async def deploy(self, release: str, hold: float | None = None) -> dict[str, Any]:
        return await self.deployer.deploy("web", release, "tester", 1, hold=hold)

    async def deployed_v1(self) -> None:
        await self.deploy("v1")
        self.steps.clear()

    async def until(self, event: str) -> None:
        while not any(e["event"] == event for e in self.events):
            await asyncio.sleep(0)

    def kinds(self) -> list[str]:
        return [step.kind for step in self.steps]


def run(world: World, body: Callable[[World], Awaitable[Any]]) -> Any:
    """``body(world)`` in a fresh event loop, the deployer restored first, closed after."""

    async def main() -> Any:
        await world.deployer.restore()
        try:
            return await body(world)
        finally:
            await world.deployer.close(1.0)

    return asyncio.run(main())
