"""An app's upstream inside nginx, with the interface the deployer drives.

The deployer speaks to an app pool (``nonstop.deploy.pool.Pool``); with the embedded
engine the proxy's upstream applies each change in one event-loop step.  Here a change
rewrites the app's include (``apps/NAME.conf``) and reloads nginx; ``applied`` waits for
that reload and raises nginx's reason if it did not happen, and ``drain`` waits until the
workers that existed before the reload have exited — nginx does not report requests in
flight per server, but an old worker still running is the only thing that may still
send to a server the new config dropped.

Answers and 5xx per server come from the upstream log nginx writes for nonstop
(``stats.py``), counted from the moment a server joins the pool, as the embedded
proxy counts them.

Draining servers are left out of the include (no new request reaches them); unhealthy
ones are rendered ``down``.  nginx's backups are not used to keep the previous release
warm during verify: each demotion would cost one more reload, and every reload closes the
keep-alive connections the old workers held.
"""

from __future__ import annotations

from collections.abc import Iterable

from nonstop.config.model import ServerSpec
from nonstop.deploy.pool import ServerList
from nonstop.engines.nginx.engine import NginxEngine

__all__ = ["NginxAppPool"]


class NginxAppPool(ServerList):
    """The servers of the app's upstream in nginx; every change is one render."""

    def __init__(self, name: str, engine: NginxEngine) -> None:
        super().__init__(name)
        self._engine = engine

    # -- changes: a server that joins is counted from zero --------------------------------

    def add(self, specs: Iterable[ServerSpec], healthy: bool = True) -> None:
        specs = list(specs)
        self._count_from_now(specs)
        super().add(specs, healthy)

    def switch(self, new: Iterable[ServerSpec], old: Iterable[str]) -> None:
        new = list(new)
        self._count_from_now(new)
        super().switch(new, old)

    def _count_from_now(self, specs: list[ServerSpec]) -> None:
        for spec in specs:
            if spec.address not in self._servers:
                self._engine.stats.reset(spec.address)

    # -- queries --------------------------------------------------------------------------

    def in_flight(self, address: str) -> int:
        return 0  # nginx does not tell; the drain waits for old workers instead

    def supports_backup(self) -> bool:
        return False

    def describe(self, address: str) -> dict[str, object]:
        server = self._servers.get(address)
        if server is None:
            return {}
        state = "draining" if server.draining else ("up" if server.healthy else "down")
        answers, errors = self._engine.stats.counts(address)
        return {
            "address": address,
            "state": state,
            "conns": 0,
            "responses": answers,
            "responses_5xx": errors,
        }

    async def applied(self) -> None:
        await self._engine.settle()

    async def drain(self, addresses: Iterable[str], timeout: float) -> int:
        return await self._engine.drain(timeout)

    # -- internals --------------------------------------------------------------------------

    def _retired(self, addresses: list[str], removed: bool) -> None:
        if removed:
            for address in addresses:
                self._engine.set_down(self.name, address, False)

    def _commit(self) -> None:
        for address, server in self._servers.items():
            self._engine.set_down(self.name, address, not server.healthy)
        live = tuple(s.spec for s in self._servers.values() if not s.draining)
        self._engine.set_app_servers(self.name, live)
