"""``FakeEngine``: an engine in memory, for tests of the control plane without sockets.

It keeps each app's server set as it was last given, lets a test hold requests "in
flight" on a server and end them, and answers ``drain`` when the last one ends — the
same contract as the real engines, so the deployer's tests need no data plane.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from nonstop.config.model import Config
from nonstop.servers import ServerReport, ServerState

__all__ = ["FakeEngine"]


class FakeEngine:
    """Server sets, in-flight counts and answers per server, all set by the test."""

    def __init__(self, backup: bool = True) -> None:
        self.sets: dict[str, tuple[ServerState, ...]] = {}
        self.history: list[tuple[str, tuple[ServerState, ...]]] = []
        self.in_flight: dict[str, int] = {}
        self.answers: dict[str, tuple[int, int]] = {}
        self.configs: list[Config] = []
        self.drained: set[tuple[str, str]] = set()  # (upstream, address) drained by hand
        self.backup = backup
        self.started = False
        self.stopped = False
        self._idle = asyncio.Condition()

    # -- what a test drives ---------------------------------------------------------------

    def primaries(self, app: str) -> list[tuple[str, bool]]:
        """(address, taken out of selection) of the app's non-backup servers."""
        return [
            (s.address, s.draining or not s.healthy)
            for s in self.sets.get(app, ())
            if not s.spec.backup
        ]

    def backups(self, app: str) -> list[str]:
        return [s.address for s in self.sets.get(app, ()) if s.spec.backup]

    async def finish(self, address: str) -> None:
        """One request in flight to ``address`` ends."""
        async with self._idle:
            self.in_flight[address] = max(0, self.in_flight.get(address, 0) - 1)
            self._idle.notify_all()

    # -- the Engine interface -------------------------------------------------------------

    async def start(self) -> tuple[str, ...]:
        self.started = True
        return ()

    async def apply(self, config: Config) -> None:
        self.configs.append(config)

    async def set_servers(self, app: str, servers: tuple[ServerState, ...]) -> None:
        self.sets[app] = servers
        self.history.append((app, servers))

    async def drain(self, app: str, addresses: frozenset[str], timeout: float) -> int:
        def left() -> int:
            return sum(self.in_flight.get(a, 0) for a in addresses)

        async with self._idle:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait_for(lambda: left() == 0), timeout)
            return left()

    async def servers(self, app: str) -> tuple[ServerReport, ...]:
        reports = []
        for server in self.sets.get(app, ()):
            state = "draining" if server.draining else ("up" if server.healthy else "unhealthy")
            answered, errors = self.answers.get(server.address, (0, 0))
            reports.append(
                ServerReport(
                    server.address, state, self.in_flight.get(server.address, 0), answered, errors
                )
            )
        return tuple(reports)

    async def drain_server(self, upstream: str, address: str, timeout: float) -> int:
        self.drained.add((upstream, address))
        return await self.drain(upstream, frozenset({address}), timeout)

    async def undrain_server(self, upstream: str, address: str) -> None:
        self.drained.discard((upstream, address))

    async def supports_backup(self, app: str) -> bool:
        return self.backup

    async def status(self, app: str | None) -> Mapping[str, Any]:
        return {"upstreams": {}}

    async def metrics(self) -> Mapping[str, Any] | None:
        return None

    async def reopen_logs(self) -> None:
        pass

    async def shutdown(self, timeout: float, idle_grace: float = 0.0) -> None:
        self.stopped = True

    def listening(self) -> list[tuple[int, int]]:
        return []

    async def hand_over(self, timeout: float) -> None:
        self.stopped = True
