"""An app's upstream inside nginx, with the interface the deployer drives.

The deployer speaks to an app pool (``nonstop.deploy.pool.Pool``); with the embedded
engine the proxy's upstream applies each change in one event-loop step.  Here a change
rewrites the app's include (``apps/NAME.conf``) and reloads nginx; ``applied`` waits for
that reload and raises nginx's reason if it did not happen, and ``drain`` waits until the
workers that existed before the reload have exited — nginx does not report requests in
flight per server, but an old worker still running is the only thing that may still
send to a server the new config dropped.

Draining servers are left out of the include (no new request reaches them); unhealthy
ones are rendered ``down``.  nginx's backups are not used to keep the previous release
warm during verify: each demotion would cost one more reload, and every reload closes the
keep-alive connections the old workers held.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nonstop.config.model import ServerSpec
from nonstop.engines.nginx.engine import NginxEngine

__all__ = ["NginxAppPool"]


@dataclass
class _Server:
    spec: ServerSpec
    draining: bool = False
    healthy: bool = True


class NginxAppPool:
    """The servers of the app's upstream in nginx; every change is one render."""

    def __init__(self, name: str, engine: NginxEngine) -> None:
        self.name = name
        self._engine = engine
        self._servers: dict[str, _Server] = {}

    # -- queries --------------------------------------------------------------------------

    def addresses(self) -> list[str]:
        return list(self._servers)

    def spec(self, address: str) -> ServerSpec | None:
        server = self._servers.get(address)
        return server.spec if server is not None else None

    def in_flight(self, address: str) -> int:
        return 0  # nginx does not tell; the drain waits for old workers instead

    def supports_backup(self) -> bool:
        return False

    def describe(self, address: str) -> dict[str, object]:
        server = self._servers.get(address)
        if server is None:
            return {}
        state = "draining" if server.draining else ("up" if server.healthy else "down")
        return {"address": address, "state": state, "conns": 0}

    # -- changes ----------------------------------------------------------------------------

    def add(self, specs: Iterable[ServerSpec], healthy: bool = True) -> None:
        for spec in specs:
            self._servers[spec.address] = _Server(spec, healthy=healthy)
        self._render()

    def switch(self, new: Iterable[ServerSpec], old: Iterable[str]) -> None:
        for spec in new:
            self._servers[spec.address] = _Server(spec)
        self._mark_draining(old)
        self._render()

    def demote(self, address: str, spec: ServerSpec) -> None:
        self._servers[address] = _Server(spec)
        self._render()

    def set_draining(self, addresses: Iterable[str]) -> None:
        self._mark_draining(addresses)
        self._render()

    def set_health(self, address: str, healthy: bool) -> None:
        server = self._servers.get(address)
        if server is not None and server.healthy != healthy:
            server.healthy = healthy
            self._render()

    def remove(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            if self._servers.pop(address, None) is not None:
                self._engine.set_down(self.name, address, False)
        self._render()

    async def applied(self) -> None:
        await self._engine.settle()

    async def drain(self, addresses: Iterable[str], timeout: float) -> int:
        return await self._engine.drain(timeout)

    # -- internals --------------------------------------------------------------------------

    def _mark_draining(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            server = self._servers.get(address)
            if server is not None:
                server.draining = True

    def _render(self) -> None:
        for address, server in self._servers.items():
            self._engine.set_down(self.name, address, not server.healthy)
        live = tuple(s.spec for s in self._servers.values() if not s.draining)
        self._engine.set_app_servers(self.name, live)
