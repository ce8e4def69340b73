"""An app's server set as the deployer wants it served: add, switch, demote, drain, remove.

Pure bookkeeping on the control plane's side; every change is handed whole to the
engine (``Engine.set_servers``), which makes it live in one step.  A switch is one
change — the new servers in and the old ones draining together — so no pick sees
neither.
"""

from __future__ import annotations

from collections.abc import Iterable

from nonstop.config.model import ServerSpec
from nonstop.servers import ServerState

__all__ = ["ServerSet"]


class ServerSet:
    """Which servers, which draining, which unhealthy; in the order they joined."""

    def __init__(self) -> None:
        self._servers: dict[str, ServerState] = {}

    def states(self) -> tuple[ServerState, ...]:
        return tuple(self._servers.values())

    def addresses(self) -> list[str]:
        return list(self._servers)

    def add(self, specs: Iterable[ServerSpec], healthy: bool = True) -> None:
        for spec in specs:
            self._servers[spec.address] = ServerState(spec, healthy=healthy)

    def switch(self, new: Iterable[ServerSpec], old: Iterable[str]) -> None:
        """New servers in, old ones draining."""
        self.add(new)
        self.set_draining(old)

    def demote(self, address: str, spec: ServerSpec) -> None:
        """Replace a drained server by ``spec`` (its backup form), selectable again."""
        self._servers[address] = ServerState(spec)

    def set_draining(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            server = self._servers.get(address)
            if server is not None:
                self._servers[address] = ServerState(server.spec, True, server.healthy)

    def set_health(self, address: str, healthy: bool) -> bool:
        """Mark a server (un)healthy; whether that changed anything."""
        server = self._servers.get(address)
        if server is None or server.healthy == healthy:
            return False
        self._servers[address] = ServerState(server.spec, server.draining, healthy)
        return True

    def remove(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            self._servers.pop(address, None)
