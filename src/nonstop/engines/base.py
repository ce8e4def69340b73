"""``Engine``: the control plane's one way to the data plane.

The daemon, the deployer and the admin API reach whatever moves the bytes (the embedded
proxy, a real nginx) only through this interface.  Every operation is async and takes
and returns plain immutable data (a config, server sets, counts, a status mapping): no
live object crosses the boundary.  That is what lets an engine run its data plane
elsewhere — in worker processes fed over a control channel — without the control plane
noticing: ``set_servers`` returns once every part of the data plane applied the set,
``drain`` once none of them holds a request to the drained servers.

The contract of each operation:

- ``start`` opens the listeners and serves the config the engine was built with; it
  returns the addresses listened on.
- ``apply`` makes a new config live, or raises (``ConfigError``, ``OSError``,
  ``NonstopError``) and changes nothing.  Each app keeps the servers it was last given:
  they are part of the new state from the moment it is built, so no request finds an
  app's upstream empty.
- ``set_servers`` replaces an app's server set in one step: every pick sees either the
  old set or the new one (a switch is one call).  It returns once the set is applied, or
  raises ``NonstopError`` when it could not be.
- ``drain`` waits until no request is in flight to ``addresses`` (at most ``timeout``
  seconds), closes their idle keep-alive connections, and returns how many requests
  were still in flight when it ended (0: drained).  The data plane signals the end of
  the last request; nothing polls.
- ``servers`` reports an app's servers (state, in flight, answers and 5xx since each
  joined), for ``status`` and a deploy's verify step.
- ``status`` is the engine's part of ``nonstop status``: JSON-able and fresh.
- ``supports_backup`` says whether an app's balancing method has backup servers (how
  the previous release waits during verify).
- ``drain_server`` takes one server of a static upstream out of selection (``nonstop
  drain``, HAProxy's ``set server state drain``) and waits, like ``drain``, until nothing
  is in flight to it; it stays out across reloads until ``undrain_server`` puts it back.
  Both raise ``UsageError`` for an upstream or server the config does not have, or an
  app's upstream (its servers are the deployer's).
- ``metrics`` reports the data plane's request counters as plain data (the shape of
  ``nonstop.proxy.metrics.ProxyMetrics.snapshot``; a data plane of several processes
  sums theirs with ``merge``), or None when the engine cannot count requests itself
  (``GET /metrics`` then has no data-plane series; docs/observability.md).
- ``reopen_logs`` (SIGUSR1) and ``shutdown`` (stop accepting, finish in-flight within
  ``timeout``, close the rest; with ``idle_grace``, a keep-alive connection between
  requests is closed after its next response, or once idle that long, instead of at
  once: for a stop whose listening sockets outlive it, systemd's, where the next nonstop
  accepts the clients' next connections).
- ``listening`` and ``hand_over`` are an upgrade's (``nonstop.upgrade``): the listening
  sockets to pass to the new nonstop, as ``(worker index, fd)`` (index 0 for one
  process; none for nginx, which keeps its own); then, once the new one serves,
  ``hand_over`` is ``shutdown`` minus what the new nonstop took over: stop accepting,
  finish in-flight requests within ``timeout`` (an idle keep-alive connection closes
  after its next response, so the client's next one reaches the new nonstop), and leave
  a data plane the new one adopted running (nginx).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from nonstop.config.model import Config, UpstreamSpec
from nonstop.errors import UsageError
from nonstop.servers import ServerReport, ServerState

__all__ = ["IDLE_GRACE", "Engine", "check_static_server"]

IDLE_GRACE = 2.0
"""Seconds during which, after an upgrade or in a stop whose listening sockets outlive
it, a keep-alive connection between requests is not closed under a request the client
may be sending (``ProxyServer.shutdown``)."""


def check_static_server(spec: UpstreamSpec | None, upstream: str, address: str) -> None:
    """``UsageError`` unless ``address`` is a server of the static upstream ``spec`` (named
    ``upstream``): what ``drain_server`` and ``undrain_server`` accept."""
    if spec is None or spec.implicit:
        raise UsageError(f'no upstream "{upstream}" in the running config')
    if spec.app:
        raise UsageError(f'"{upstream}" is an app: its servers follow its deploys (nonstop deploy)')
    if all(server.address != address for server in spec.servers):
        known = ", ".join(s.address for s in spec.servers)
        raise UsageError(f'upstream "{upstream}" has no server {address} (it has {known})')


class Engine(Protocol):
    async def start(self) -> tuple[str, ...]: ...

    async def apply(self, config: Config) -> None: ...

    async def set_servers(self, app: str, servers: tuple[ServerState, ...]) -> None: ...

    async def drain(self, app: str, addresses: frozenset[str], timeout: float) -> int: ...

    async def servers(self, app: str) -> tuple[ServerReport, ...]: ...

    async def drain_server(self, upstream: str, address: str, timeout: float) -> int: ...

    async def undrain_server(self, upstream: str, address: str) -> None: ...

    async def supports_backup(self, app: str) -> bool: ...

    async def status(self, app: str | None) -> Mapping[str, Any]: ...

    async def metrics(self) -> Mapping[str, Any] | None: ...

    async def reopen_logs(self) -> None: ...

    async def shutdown(self, timeout: float, idle_grace: float = 0.0) -> None: ...

    def listening(self) -> list[tuple[int, int]]: ...

    async def hand_over(self, timeout: float) -> None: ...
