"""An app inside nginx, with the interface the deployer drives.

The deployer speaks to an app pool (``nonstop.deploy.pool.Pool``); with the embedded
engine the proxy's upstream applies each change in one event-loop step.  Here the app's
servers are fixed in the render, one upstream per slot, and a change of the live servers
moves the app's slot flag (``NginxEngine.set_slot``): no reload, no client connection
closed.  ``drain`` waits until nginx holds no connection to the drained servers' ports.

The slot that is not live is the live slot's ``backup`` (where the method allows it), so
during ``verify`` the previous release takes the retry of a request the new release
failed, as with the embedded engine.  Health marks are kept for ``status`` but not
rendered: a crashed instance is refused at connect and nginx passes the request on.

Answers and 5xx per server come from the upstream log nginx writes for nonstop
(``stats.py``), counted from the moment a server joins the pool, as the embedded
proxy counts them.
"""

from __future__ import annotations

from collections.abc import Iterable

from nonstop.config.model import ServerSpec
from nonstop.config.validate import BACKUP_METHODS
from nonstop.deploy.plan import slot_ports
from nonstop.deploy.pool import ServerList
from nonstop.engines.nginx.engine import NginxEngine

__all__ = ["NginxAppPool"]


class NginxAppPool(ServerList):
    """The servers of the app's upstream in nginx; every change is one render."""

    def __init__(self, name: str, engine: NginxEngine) -> None:
        super().__init__(name)
        self._engine = engine

    # -- queries --------------------------------------------------------------------------

    def in_flight(self, address: str) -> int:
        return 0  # nginx does not tell; the drain waits for its connections instead

    def supports_backup(self) -> bool:
        up = self._engine.config.upstream(self.name)
        return up is not None and up.method in BACKUP_METHODS

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
        await self._engine.switched()

    async def drain(self, addresses: Iterable[str], timeout: float) -> int:
        ports = frozenset(int(a.rsplit(":", 1)[1]) for a in addresses)
        return await self._engine.drain(ports, timeout)

    # -- internals --------------------------------------------------------------------------

    def _joined(self, spec: ServerSpec) -> None:
        self._engine.stats.reset(spec.address)  # its answers count from now on

    def _commit(self) -> None:
        """The live slot is the one holding the primary (not draining, not backup) servers."""
        app = next((a for a in self._engine.config.apps if a.name == self.name), None)
        if app is None:
            return
        for server in self._servers.values():
            if not server.draining and not server.spec.backup:
                slot = 0 if server.spec.port in slot_ports(app, 0) else 1
                if slot != self._engine.slot(self.name):
                    self._engine.set_slot(self.name, slot)
                return
