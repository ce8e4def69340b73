"""An app's upstream as the deployer drives it: add, switch, drain, remove, re-apply.

The proxy's ``Upstream`` stays the one owner of peer state (STYLE.md, point 4); this is the
thin shell that tells it what to do and remembers what the app's server list should be,
because a reload builds a new ``Backend`` from the config, where an app has no servers.

Why a switch cannot lose a request: the new server is added healthy and the old one set
draining in the same event-loop step (no ``await`` in between), so every ``pick`` sees
either the old list or the new one.  A draining peer is never picked again; requests
already on it finish, and ``drain`` waits for its ``in_flight`` to reach 0 before its idle
keep-alive connections are closed — only then may its process be stopped.  This is
kamal-proxy's ``DeployService`` order (health, swap, drain with a deadline, return).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from nonstop.clock import SYSTEM_CLOCK, Clock
from nonstop.config.model import ServerSpec
from nonstop.proxy.balancers import BACKUP_METHODS
from nonstop.proxy.server import Backend
from nonstop.proxy.upstream import Upstream

__all__ = ["DRAIN_POLL", "AppPool", "Pool", "ServerList"]

log = logging.getLogger("nonstop")

DRAIN_POLL = 0.01


class Pool(Protocol):
    """What the deployer asks of an app's upstream, whichever engine serves it.

    Changes are synchronous so the embedded engine applies each in one event-loop step;
    an engine that applies them later (nginx: render and reload) finishes in ``applied``,
    which raises ``NonstopError`` when the change did not take effect.
    """

    def addresses(self) -> list[str]: ...

    def spec(self, address: str) -> ServerSpec | None: ...

    def in_flight(self, address: str) -> int: ...

    def supports_backup(self) -> bool: ...

    def describe(self, address: str) -> dict[str, object]: ...

    def add(self, specs: Iterable[ServerSpec], healthy: bool = True) -> None: ...

    def switch(self, new: Iterable[ServerSpec], old: Iterable[str]) -> None: ...

    def demote(self, address: str, spec: ServerSpec) -> None: ...

    def set_draining(self, addresses: Iterable[str]) -> None: ...

    def set_health(self, address: str, healthy: bool) -> None: ...

    def remove(self, addresses: Iterable[str]) -> None: ...

    async def applied(self) -> None: ...

    async def drain(self, addresses: Iterable[str], timeout: float) -> int: ...


@dataclass
class _Server:
    spec: ServerSpec
    draining: bool = False
    healthy: bool = True


class ServerList:
    """The app's server list as the deployer wants it; a subclass makes it live.

    Both engines keep the same bookkeeping (which servers, which draining, which
    unhealthy); they differ only in ``_commit`` (how the list takes effect), ``_retired``
    (what to do about servers just set draining or removed) and ``_joined`` (about a
    server new to the list).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._servers: dict[str, _Server] = {}

    def addresses(self) -> list[str]:
        return list(self._servers)

    def spec(self, address: str) -> ServerSpec | None:
        server = self._servers.get(address)
        return server.spec if server is not None else None

    # -- changes (each one synchronous: atomic for the embedded proxy) -----------------

    def add(self, specs: Iterable[ServerSpec], healthy: bool = True) -> None:
        for spec in specs:
            self._put(spec, healthy)
        self._commit()

    def switch(self, new: Iterable[ServerSpec], old: Iterable[str]) -> None:
        """New servers in, old ones draining — in one step, so no pick sees neither."""
        for spec in new:
            self._put(spec)
        old = list(old)
        self._mark_draining(old)
        self._commit()
        self._retired(old, removed=False)

    def demote(self, address: str, spec: ServerSpec) -> None:
        """Replace a drained server by ``spec`` (its backup form), selectable again."""
        self._servers[address] = _Server(spec)
        self._commit()

    def set_draining(self, addresses: Iterable[str]) -> None:
        self._mark_draining(addresses)
        self._commit()

    def set_health(self, address: str, healthy: bool) -> None:
        server = self._servers.get(address)
        if server is not None and server.healthy != healthy:
            server.healthy = healthy
            self._commit()

    def remove(self, addresses: Iterable[str]) -> None:
        addresses = [a for a in addresses if self._servers.pop(a, None) is not None]
        self._commit()
        self._retired(addresses, removed=True)

    def _put(self, spec: ServerSpec, healthy: bool = True) -> None:
        if spec.address not in self._servers:
            self._joined(spec)
        self._servers[spec.address] = _Server(spec, healthy=healthy)

    def _mark_draining(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            server = self._servers.get(address)
            if server is not None:
                server.draining = True

    def _commit(self) -> None:
        raise NotImplementedError

    def _retired(self, addresses: list[str], removed: bool) -> None:
        """Servers just set draining (``removed`` False) or taken out of the list."""

    def _joined(self, spec: ServerSpec) -> None:
        """A server that was not in the list until now (its answers count from here)."""


class AppPool(ServerList):
    """The servers of the upstream named like the app; ``backend()`` finds the live one."""

    def __init__(
        self, name: str, backend: Callable[[], Backend | None], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(name)
        self._backend = backend
        self._clock = clock

    # -- queries --------------------------------------------------------------------------

    def in_flight(self, address: str) -> int:
        backend = self._backend()
        return backend.balancer.in_flight(address) if backend is not None else 0

    def supports_backup(self) -> bool:
        backend = self._backend()
        return backend is not None and backend.spec.method in BACKUP_METHODS

    def describe(self, address: str) -> dict[str, object]:
        """The proxy's view of one server (state, in flight, fails), {} if not in the pool."""
        backend = self._backend()
        if backend is None:
            return {}
        for entry in backend.balancer.snapshot():
            if entry["address"] == address:
                return entry
        return {}

    async def applied(self) -> None:
        """Every change above is already live in the proxy: nothing to wait for."""

    async def drain(self, addresses: Iterable[str], timeout: float) -> int:
        """Wait until no request is in flight on ``addresses`` (at most ``timeout``).

        Returns how many were still in flight when the wait ended (0 = fully drained);
        the idle keep-alive connections to them are closed either way.
        """
        addresses = list(addresses)
        deadline = self._clock.monotonic() + timeout
        while True:
            left = sum(self.in_flight(address) for address in addresses)
            if left == 0 or self._clock.monotonic() >= deadline:
                break
            await asyncio.sleep(DRAIN_POLL)
        self._close_idle(addresses)
        return left

    def reapply(self, previous: Upstream | None) -> None:
        """After a reload: give the new ``Backend`` this app's servers again.

        ``previous`` is the balancer from before the reload; building the new one from it
        keeps every server's ``Peer`` (in-flight count, passive failures), so requests
        that started before the reload are still counted by ``drain``.
        """
        backend = self._backend()
        if backend is None:
            return
        spec = replace(backend.spec, servers=tuple(s.spec for s in self._servers.values()))
        backend.balancer = Upstream(spec, previous=previous)
        self._flags(backend.balancer)

    # -- internals ------------------------------------------------------------------------

    def _commit(self) -> None:
        backend = self._backend()
        if backend is None:
            log.error("app %s has no upstream in the running config", self.name)
            return
        backend.balancer.replace_servers(tuple(s.spec for s in self._servers.values()))
        self._flags(backend.balancer)

    def _flags(self, balancer: Upstream) -> None:
        for address, server in self._servers.items():
            balancer.set_draining(address, server.draining)
            balancer.set_health(address, server.healthy)

    def _retired(self, addresses: list[str], removed: bool) -> None:
        self._close_idle(addresses)

    def _close_idle(self, addresses: Iterable[str]) -> None:
        backend = self._backend()
        if backend is None:
            return
        for address in addresses:
            backend.idle.close_address(address)
