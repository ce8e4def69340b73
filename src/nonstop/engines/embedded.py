"""``engine = "embedded"``: nonstop's own proxy (``nonstop.proxy``) serves the traffic.

The engine owns the proxy, each app's server set and the active checks of the static
upstreams.  An app's set is kept here as the control plane gave it, because a config
names an app's upstream but not its servers: every state a reload builds gets them when
it is built (``ProxyState.install``), so the swap to it never shows an app without its
servers.

A switch cannot lose a request: ``set_servers`` replaces the app's list and its flags in
one event-loop step (no ``await`` in between), so every ``pick`` sees either the old
list or the new one.  A draining server is never picked again; requests already on it
finish, and the drain ends when ``Upstream.free`` reports the last of them over — only
then are its idle keep-alive connections closed and may its process be stopped.  This is
kamal-proxy's ``DeployService`` order (health, swap, drain with a deadline, return).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from nonstop.config.model import Config
from nonstop.config.vocabulary import BACKUP_METHODS
from nonstop.engines.base import IDLE_GRACE, check_static_server
from nonstop.engines.checks import UpstreamChecks
from nonstop.events import EventBus
from nonstop.health.checker import ProbeFn, probe
from nonstop.proxy.server import Backend, ProxyServer, SocketSource, inherited_or_bound
from nonstop.servers import ServerReport, ServerState

__all__ = ["EmbeddedEngine"]

log = logging.getLogger("nonstop")


class EmbeddedEngine:
    """The embedded proxy behind the ``Engine`` interface."""

    def __init__(
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        probe_fn: ProbeFn = probe,
        events: EventBus | None = None,
        sockets: SocketSource = inherited_or_bound,
        checked: bool = True,
    ) -> None:
        """``sockets``: where the listeners come from; ``checked`` False: the active checks
        run elsewhere (a worker's are the control process's) and arrive as ``mark_health``."""
        self._servers: dict[str, tuple[ServerState, ...]] = {}
        self._drained: dict[str, set[str]] = {}  # static upstream -> servers drained by hand
        self.proxy = ProxyServer(config, loop, sockets=sockets)
        self._checks = UpstreamChecks(self.mark_health, probe_fn, events)
        self._checked = checked

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> tuple[str, ...]:
        await self.proxy.start()
        self._sync_checks()
        return tuple(f"{h}:{p}" for h, p in self.proxy.bound_ports())

    async def apply(self, config: Config) -> None:
        # no await between the new state going live and the checks marking its servers
        await self.proxy.reload(config, self._servers)
        self._mark_drained()
        self._sync_checks()

    async def metrics(self) -> Mapping[str, Any] | None:
        return self.proxy.metrics_snapshot()

    def listening(self) -> list[tuple[int, int]]:
        """The listening sockets' descriptors, all worker 0's (one process)."""
        return [
            (0, sock.fileno())
            for server in self.proxy.listeners.values()
            for sock in getattr(server, "sockets", ())
        ]

    async def hand_over(self, timeout: float) -> None:
        await self.shutdown(timeout, IDLE_GRACE)

    async def reopen_logs(self) -> None:
        self.proxy.state.access_logs.reopen()

    async def shutdown(self, timeout: float, idle_grace: float = 0.0) -> None:
        """``idle_grace``: see ``ProxyServer.shutdown`` (after an upgrade)."""
        await self._checks.close()
        await self.proxy.shutdown(timeout, idle_grace)

    # -- an app's servers -----------------------------------------------------------------

    async def set_servers(self, app: str, servers: tuple[ServerState, ...]) -> None:
        before = {s.address: s for s in self._servers.get(app, ())}
        self._servers[app] = servers
        backend = self._backend(app)
        if backend is None:
            log.error("app %s has no upstream in the running config", app)
            return
        balancer = backend.balancer
        balancer.replace_servers(tuple(s.spec for s in servers))
        for server in servers:
            balancer.set_draining(server.address, server.draining)
            balancer.set_health(server.address, server.healthy)
        now = {s.address: s for s in servers}
        retired = [
            address
            for address, was in before.items()
            if address not in now or (now[address].draining and not was.draining)
        ]
        self._close_idle(backend, retired)

    async def drain(self, app: str, addresses: frozenset[str], timeout: float) -> int:
        backend = self._backend(app)
        if backend is None:
            return 0
        idle = asyncio.get_running_loop().create_future()

        def ended() -> None:
            found = self._backend(app)
            if found is not None and _in_flight(found, addresses) == 0 and not idle.done():
                idle.set_result(None)

        for address in addresses:
            backend.balancer.on_idle(address, ended)
        try:
            if _in_flight(backend, addresses):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(idle, max(0.0, timeout))
        finally:
            backend = self._backend(app) or backend
            for address in addresses:
                backend.balancer.on_idle(address, None)
        left = _in_flight(backend, addresses)
        self._close_idle(backend, addresses)
        return left

    # -- a static upstream's server, drained by hand -------------------------------------

    async def drain_server(self, upstream: str, address: str, timeout: float) -> int:
        backend = self._static(upstream, address)
        self._drained.setdefault(upstream, set()).add(address)
        backend.balancer.set_draining(address, True)
        log.warning("upstream %s server %s is draining (nonstop drain)", upstream, address)
        return await self.drain(upstream, frozenset({address}), timeout)

    async def undrain_server(self, upstream: str, address: str) -> None:
        backend = self._static(upstream, address)
        self._drained.get(upstream, set()).discard(address)
        backend.balancer.set_draining(address, False)
        log.warning("upstream %s server %s is back (nonstop undrain)", upstream, address)

    def _static(self, upstream: str, address: str) -> Backend:
        backend = self.proxy.state.upstreams.get(upstream)
        check_static_server(None if backend is None else backend.spec, upstream, address)
        assert backend is not None
        return backend

    def _mark_drained(self) -> None:
        """After a reload: servers drained by hand stay drained while the config has them."""
        for upstream, addresses in self._drained.items():
            backend = self.proxy.state.upstreams.get(upstream)
            for address in list(addresses):
                if backend is None or not backend.balancer.set_draining(address, True):
                    addresses.discard(address)
                    log.warning(
                        "upstream %s server %s left the config: undrained", upstream, address
                    )

    async def servers(self, app: str) -> tuple[ServerReport, ...]:
        backend = self._backend(app)
        if backend is None:
            return ()
        balancer = backend.balancer
        reports = []
        for entry in balancer.snapshot():
            address = str(entry["address"])
            answered, errors = balancer.response_counts(address)
            reports.append(
                ServerReport(
                    address, str(entry["state"]), balancer.in_flight(address), answered, errors
                )
            )
        return tuple(reports)

    async def supports_backup(self, app: str) -> bool:
        backend = self._backend(app)
        return backend is not None and backend.spec.method in BACKUP_METHODS

    async def status(self, app: str | None) -> Mapping[str, Any]:
        state = self.proxy.state
        return {
            "connections": len(state.connections),
            "listen": [f"{h}:{p}" for h, p in self.proxy.bound_ports()],
            "upstreams": {
                name: backend.balancer.snapshot(state.now())
                for name, backend in state.upstreams.items()
                if app is None or name == app
            },
        }

    # -- internals ------------------------------------------------------------------------

    def _backend(self, app: str) -> Backend | None:
        return self.proxy.state.upstreams.get(app)

    def mark_health(self, upstream: str, address: str, healthy: bool) -> None:
        """An active check's verdict on a server of a static upstream."""
        backend = self.proxy.state.upstreams.get(upstream)
        if backend is not None:
            backend.balancer.set_health(address, healthy)

    def _sync_checks(self) -> None:
        if not self._checked:
            return
        upstreams = self.proxy.state.upstreams

        def known(name: str, address: str) -> bool:
            backend = upstreams.get(name)
            peer = backend.balancer.peer(address) if backend is not None else None
            return peer is not None and peer.health_ok

        self._checks.sync((b.spec for b in upstreams.values()), known)

    @staticmethod
    def _close_idle(backend: Backend, addresses: Iterable[str]) -> None:
        for address in addresses:
            backend.idle.close_address(address)


def _in_flight(backend: Backend, addresses: Iterable[str]) -> int:
    return sum(backend.balancer.in_flight(address) for address in addresses)
