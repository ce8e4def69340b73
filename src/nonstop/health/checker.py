"""The async shell around ``HealthState``: probe each watched server every ``interval``.

The checker only *reports*: each health flip goes to ``on_change(address, healthy,
detail)`` and the caller applies it (``upstream.set_health``), so the upstream keeps one
owner for its state — traefik's ``pkg/healthcheck`` does the same through its
``StatusUpdater``.  The probe function is a constructor argument so unit tests can script
verdicts without sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nonstop.config.model import HealthSpec
from nonstop.health.active import HealthState, Transition, Verdict, judge
from nonstop.health.client import fetch

__all__ = ["ChangeCallback", "HealthChecker", "ProbeFn", "probe"]

log = logging.getLogger("nonstop.health")

ProbeFn = Callable[[str, int, HealthSpec], Awaitable[Verdict]]
ChangeCallback = Callable[[str, bool, str], None]


async def probe(host: str, port: int, spec: HealthSpec) -> Verdict:
    """One real check: GET ``spec.path`` and judge the answer."""
    return judge(spec, await fetch(host, port, spec.path, spec.timeout))


@dataclass
class _Watch:
    host: str
    port: int
    state: HealthState
    task: asyncio.Task[None] | None = None


class HealthChecker:
    """Checks a set of servers against one ``HealthSpec`` (one upstream or app)."""

    def __init__(
        self, spec: HealthSpec, on_change: ChangeCallback, probe_fn: ProbeFn = probe
    ) -> None:
        self.spec = spec
        self.on_change = on_change
        self._probe = probe_fn
        self._watches: dict[str, _Watch] = {}

    def watch(self, address: str, host: str, port: int, healthy: bool = False) -> None:
        """Start checking ``address`` now.

        A new server counts as unhealthy until its first pass.  On a reload, pass the
        health the upstream carried over (``healthy=True``) so the next failures are
        counted against ``fall`` and reported, instead of starting from scratch.
        """
        if address in self._watches:
            return
        state = HealthState(self.spec.rise, self.spec.fall)
        if healthy:
            state.healthy = state.ever_passed = True
        entry = _Watch(host, port, state)
        entry.task = asyncio.get_running_loop().create_task(
            self._loop(address, entry), name=f"health {address}"
        )
        self._watches[address] = entry

    def update_spec(self, spec: HealthSpec) -> None:
        """A reloaded spec; watched servers keep their state, new counts apply at once."""
        self.spec = spec
        for entry in self._watches.values():
            entry.state.rise = max(1, spec.rise)
            entry.state.fall = max(1, spec.fall)

    async def unwatch(self, address: str) -> None:
        entry = self._watches.pop(address, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()
            await asyncio.gather(entry.task, return_exceptions=True)

    def healthy(self, address: str) -> bool:
        entry = self._watches.get(address)
        return entry is not None and entry.state.healthy

    def last(self, address: str) -> Verdict | None:
        """The latest verdict for ``address`` (for ``status``), None before the first."""
        entry = self._watches.get(address)
        return entry.state.last if entry is not None else None

    def addresses(self) -> list[str]:
        return list(self._watches)

    async def close(self) -> None:
        for address in list(self._watches):
            await self.unwatch(address)

    async def check_once(self, address: str) -> Transition | None:
        """Probe ``address`` now and apply the verdict (the loop calls this every interval)."""
        entry = self._watches[address]
        verdict = await self._probe(entry.host, entry.port, self.spec)
        if self._watches.get(address) is not entry:
            return None  # unwatched while the probe ran
        change = entry.state.observe(verdict)
        if change is not None:
            log.info("%s is %s: %s", address, "up" if change.healthy else "down", change.detail)
            self.on_change(address, change.healthy, change.detail)
        return change

    async def _loop(self, address: str, entry: _Watch) -> None:
        while True:
            await self.check_once(address)
            await asyncio.sleep(self.spec.interval)
