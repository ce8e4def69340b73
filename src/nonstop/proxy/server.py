"""The proxy's I/O shell: listeners, the state every connection shares, reload, shutdown.

``ProxyState`` is the one owner of what connections share (router, upstreams, idle
upstream connections, logs).  ``ProxyServer`` builds it from a ``Config``, opens the
listeners, runs the tick that enforces deadlines, swaps in a new config on reload and
shuts down in one order: stop accepting, let in-flight requests finish within a
deadline, close idle keep-alives, cancel the rest, flush logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, cast
from urllib.parse import urlsplit

from nonstop import listeners
from nonstop.config.model import Config, ServerSpec, UpstreamSpec
from nonstop.config.rewrite import defined_names
from nonstop.errors import ConfigError
from nonstop.proxy.acceptor import AcceptErrors, Acceptor
from nonstop.proxy.accesslog import AccessLogs
from nonstop.proxy.balancers.peers import Peer
from nonstop.proxy.connection_pool import IdlePool
from nonstop.proxy.guard import compile_guard
from nonstop.proxy.limits import Zones
from nonstop.proxy.metrics import ProxyMetrics, Tally
from nonstop.proxy.outbox import Outbox
from nonstop.proxy.protocol import ClientConnection
from nonstop.proxy.request import Request
from nonstop.proxy.resolver import Resolver, Unresolved
from nonstop.proxy.responses import DateCache
from nonstop.proxy.router import Router
from nonstop.proxy.tls import TlsContexts
from nonstop.proxy.tls_object import quiet_undecodable_sni
from nonstop.proxy.tls_stream import TlsStream
from nonstop.proxy.upstream import Upstream
from nonstop.proxy.variables import Getter, VariableTable
from nonstop.servers import ServerState

__all__ = [
    "AppServers",
    "Backend",
    "ProxyServer",
    "ProxyState",
    "SocketSource",
    "bind_error",
    "bind_keys",
    "inherited_or_bound",
    "listen_socket",
]

# Each app's servers as the control plane set them (``Engine.set_servers``): a config
# names an app's upstream but not its servers, so every state built for a config gets
# them from here.
AppServers = Mapping[str, tuple[ServerState, ...]]

# Where a proxy gets the listening socket of an address (host, port): by default one
# handed over (systemd, an upgrade) or one it binds (``inherited_or_bound``); a worker
# process is given its sockets by the control process (``nonstop.workers``).
SocketSource = Callable[[tuple[str, int]], socket.socket]

log = logging.getLogger("nonstop")

TICK = 0.25
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "crit": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emerg": logging.CRITICAL,
}


def bind_error(exc: OSError, host: str, port: int) -> OSError:
    """``exc`` from listening on host:port, naming the address (nginx's wording).

    A port below 1024 refused for want of privilege also says what to do about it.
    """
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    message = f"bind() to {address} failed ({reason})"
    if exc.errno == errno.EACCES and 0 < port < 1024:
        message += (
            "; ports below 1024 need root or the CAP_NET_BIND_SERVICE capability"
            " (docs/operations.md), or listen on a port above 1023"
        )
    return OSError(exc.errno, message)


def listen_socket(key: tuple[str, int], reuseport: bool = False) -> socket.socket:
    """A listening TCP socket bound to ``key`` (host, port), non-blocking; ``reuseport``:
    one of a group of sockets on that address (``SO_REUSEPORT``), one per worker."""
    host, port = key
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(511)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise bind_error(exc, host, port) from exc
    return sock


def inherited_or_bound(key: tuple[str, int]) -> socket.socket:
    """The socket systemd or the nonstop this one upgrades handed over for ``key``, used as
    it is; else a new one."""
    return listeners.inherited.take(*key) or listen_socket(key)


class Backend:
    """One upstream at run time: its balancer state and its idle connections."""

    __slots__ = ("balancer", "hash_fn", "idle", "keepalive", "name", "spec")

    balancer: Upstream
    idle: IdlePool

    def __init__(self, spec: UpstreamSpec, table: VariableTable, previous: Backend | None) -> None:
        self.spec = spec
        self.name = spec.name
        self.balancer = Upstream(spec, previous=previous.balancer if previous else None)
        self.keepalive = spec.keepalive > 0
        self.hash_fn: Getter | None = (
            table.compile(spec.hash_key) if spec.method == "hash" and spec.hash_key else None
        )
        if previous is not None and previous.spec.keepalive == spec.keepalive:
            self.idle = previous.idle
            self.idle.max_requests = spec.keepalive_requests
            self.idle.timeout = spec.keepalive_timeout
        else:
            self.idle = IdlePool(spec.keepalive, spec.keepalive_requests, spec.keepalive_timeout)


def _build(
    config: Config, old: dict[str, Backend], servers: AppServers, zones: Zones
) -> tuple[VariableTable, Router, dict[str, Backend]]:
    """The run-time objects for ``config``; ``old`` backends lend their state, ``servers``
    are the apps' servers (with their draining and health flags), ``zones`` the state of
    its limit_req and limit_conn zones."""
    set_names = frozenset(defined_names(config) - {m.target for m in config.maps})
    table = VariableTable(config.maps, set_names)
    router = Router.build(config, table)
    for route in router.routes():
        spec = route.spec
        if spec is not None:
            guard = compile_guard(spec.access, spec.limits, zones, table, str(spec.source or ""))
        else:
            block = route.block
            guard = compile_guard(block.access, block.limits, zones, table, str(block.source or ""))
        route.guard = guard
    upstreams = {
        spec.name: _backend(spec, table, old.get(spec.name), servers.get(spec.name))
        for spec in config.upstreams
    }
    for route in router.routes():
        if route.upstream is not None:
            if route.upstream not in upstreams:
                where = route.spec.source if route.spec is not None else None
                raise ConfigError(f'no upstream "{route.upstream}"', str(where or ""))
            route.backend = upstreams[route.upstream]
    return table, router, upstreams


def _backend(
    spec: UpstreamSpec,
    table: VariableTable,
    previous: Backend | None,
    servers: tuple[ServerState, ...] | None,
) -> Backend:
    """One upstream's backend; an app's with its servers in it from the start."""
    if servers is None or not spec.app:
        return Backend(spec, table, previous)
    backend = Backend(replace(spec, servers=tuple(s.spec for s in servers)), table, previous)
    for server in servers:
        backend.balancer.set_draining(server.address, server.draining)
        backend.balancer.set_health(server.address, server.healthy)
    return backend


class ProxyState:
    """Everything the connections share; swapped piecewise on reload."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, config: Config, servers: AppServers | None = None
    ) -> None:
        self.loop = loop
        self.now: Callable[[], float] = loop.time
        self.config = config
        self.connections: set[ClientConnection] = set()
        self.outbox = Outbox(loop, self.connections)  # writes held to the turn's end
        self.accepted = 0  # client connections ever accepted (stub_status)
        self.date = DateCache()
        self.shutting_down = False
        self.client_header_timeout = 60.0
        self.client_keepalive_timeout = 75.0
        self.max_connections = 10_000
        self.tunnels = 0
        self.router: Router
        self.upstreams: dict[str, Backend] = {}
        self.implicit: dict[str, Backend] = {}
        # upstreams of names a resolver answered, by "host:port": kept while the addresses
        # stay the same, so their peers and keep-alive connections are too
        self.resolved: dict[str, tuple[tuple[str, ...], Backend]] = {}
        self.table: VariableTable
        self.zones: Zones | None = None  # limit_req and limit_conn state (proxy/limits.py)
        self.access_logs = AccessLogs()
        self.metrics = ProxyMetrics()
        self.error_level = logging.ERROR
        self.install(config, None, servers or {})

    # -- config -----------------------------------------------------------------------
    @staticmethod
    def check(config: Config) -> None:
        """Build everything ``config`` needs from scratch, sharing nothing with a running
        state; raises ConfigError.  A reload runs this before it changes anything."""
        _build(config, {}, {}, Zones(config.zones))

    def install(self, config: Config, previous: ProxyState | None, servers: AppServers) -> None:
        """Build and switch to the run-time objects for ``config``.

        Servers whose spec did not change keep their passive-health state (the new
        Upstream shares their Peer objects), and idle connections stay cached when the
        upstream's keepalive did not change.  Each app's upstream is built with
        ``servers[app]`` in it, so the switch to the new state never shows an app without
        its servers.  Call ``check`` first: this mutates.
        """
        old = previous.upstreams if previous is not None else self.upstreams
        zones = Zones(config.zones, previous.zones if previous is not None else self.zones)
        table, router, upstreams = _build(config, old, servers, zones)
        self.zones = zones
        self.config = config
        self.table = table
        self.router = router
        self.upstreams = upstreams
        self.implicit = {}
        self.resolved = {}
        self.error_level = _LEVELS.get(config.error_log_level, logging.ERROR)
        self.max_connections = config.max_connections
        self.access_logs.reopen()  # lines pending under the old config are written now
        kept = {id(backend.idle) for backend in upstreams.values()}
        for backend in old.values():
            if id(backend.idle) not in kept:
                # in-flight requests of the old config hand their connections back to
                # a retired pool, which closes them
                backend.idle.retire()

    # -- used by connections ------------------------------------------------------------
    def upstream_for_url(
        self, url: str, tls: bool = False, resolver: Resolver | None = None
    ) -> tuple[Backend | None, str, str | None]:
        """A proxy_pass URL computed per request: a declared upstream, an address, or a
        name ``resolver`` knows (raises ``Unresolved`` when it must be asked first).

        As nginx does (ngx_http_proxy_eval): the host is first looked up among the
        upstream names; otherwise it is an address, or a name for the location's
        resolver.  ``tls``: the pass was written ``https://``, the scheme the URL must have.
        """
        scheme = "https" if tls else "http"
        default_port = 443 if tls else 80
        if "://" not in url:
            url = scheme + "://" + url
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            self.log_error("error", f'invalid URL prefix in "{url}"')
            return None, "", None
        if parts.scheme != scheme or not parts.hostname:
            self.log_error("error", f'invalid URL prefix in "{url}"')
            return None, "", None
        uri = parts.path or None
        if "?" in url.partition("://")[2]:  # arguments, even alone: "http://app?x=1" sends /?x=1
            uri = (uri or "/") + "?" + parts.query
        host = parts.hostname
        backend = self.upstreams.get(host) if port is None else None
        proxy_host = parts.netloc
        if backend is not None:
            return backend, proxy_host, uri
        key = f"{host}:{port or default_port}"
        backend = self.upstreams.get(key) or self.implicit.get(key)
        if backend is not None:
            return backend, proxy_host, uri
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if resolver is None:
                raise Unresolved(host) from None  # the caller answers 502, as nginx does
            port = port or default_port
            return self._resolved(host, port, resolver.cached(host)), proxy_host, uri
        port = port or default_port
        address = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        spec = UpstreamSpec(
            name=key,
            servers=(ServerSpec(address=address, host=str(ip), port=port),),
            implicit=True,
        )
        backend = Backend(spec, self.table, None)
        if len(self.implicit) >= 256:
            self.implicit.clear()
        self.implicit[key] = backend
        return backend, proxy_host, uri

    def _resolved(self, host: str, port: int, addresses: tuple[str, ...]) -> Backend:
        """The upstream of a resolved name: one server per address, as nginx makes."""
        key = f"{host}:{port}"
        known = self.resolved.get(key)
        if known is not None and known[0] == addresses:
            return known[1]
        servers = tuple(
            ServerSpec(address=f"[{a}]:{port}" if ":" in a else f"{a}:{port}", host=a, port=port)
            for a in addresses
        )
        backend = Backend(UpstreamSpec(name=key, servers=servers, implicit=True), self.table, None)
        if known is not None:
            known[1].idle.retire()
        if len(self.resolved) >= 256:
            self.resolved.clear()
        self.resolved[key] = (addresses, backend)
        return backend

    def log_error(self, level: str, message: str) -> None:
        number = _LEVELS.get(level, logging.ERROR)
        if number >= self.error_level:
            log.log(number, message)

    def record(
        self, req: Request, status: int, sent: int, now: float, backend: Backend | None
    ) -> None:
        """A request ended: count it and write its access log line, in one place, so
        that the counters equal the log's lines.  ``backend`` is the upstream it was
        passed to, if any; ``req.peer`` the last server tried."""
        peer = req.peer
        if peer is not None:
            tally = peer.tally
            if tally is None:
                tally = self._tally(peer, backend)
        elif backend is not None:
            tally = self.metrics.tally(backend.name, "")  # no live server to try
        else:
            tally = self.metrics.local
        tally.count(status, now - req.start)
        route = req.route
        if route is None:
            # refused before a location was found: the listen's default server logs it
            vhosts = req.conn.vhosts
            if vhosts is None:
                return
            route = vhosts.default.fallback
        logs = route.logs
        if logs is not None:
            self.access_logs.write(logs, req, status, sent, now)

    def count_failure(self, backend: Backend, peer: Peer, connecting: bool) -> None:
        """A try of ``peer`` failed: while connecting, or before its response was whole."""
        tally = peer.tally
        if tally is None:
            tally = self._tally(peer, backend)
        tally.failed(connecting)

    def _tally(self, peer: Peer, backend: Backend | None) -> Tally:
        tally = peer.tally = self.metrics.tally(
            backend.name if backend is not None else "", peer.address
        )
        return tally

    def gauges(self) -> dict[str, object]:
        """What is open now: requests in flight, tunnels, connections by listen port."""
        in_flight = 0
        ports: dict[str, int] = {}
        for conn in self.connections:
            if conn.req is not None:
                in_flight += 1
            port = str(conn.local_port)
            ports[port] = ports.get(port, 0) + 1
        return {"in_flight": in_flight, "tunnels": self.tunnels, "connections": ports}


def bind_keys(config: Config) -> dict[tuple[str, int], bool]:
    """Addresses to bind, with their ssl flag; wildcards absorb specific addresses."""
    keys: dict[tuple[str, int], bool] = {}
    for block in config.servers:
        for listen in block.listens:
            keys[listen.key] = keys.get(listen.key, False) or listen.ssl
    wild = {(h, p) for (h, p) in keys if h in ("0.0.0.0", "::")}
    result: dict[tuple[str, int], bool] = {}
    for (host, port), ssl in keys.items():
        family_wild = "::" if ":" in host else "0.0.0.0"
        if (host, port) not in wild and (family_wild, port) in wild:
            continue
        result[(host, port)] = ssl
    return result


class ProxyServer:
    """Listeners and lifecycle around one ``ProxyState``."""

    def __init__(
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop | None = None,
        servers: AppServers | None = None,
        sockets: SocketSource = inherited_or_bound,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.state = ProxyState(self.loop, config, servers)
        self.tls = TlsContexts()
        self.listeners: dict[tuple[str, int], Acceptor] = {}
        self.accept_errors = AcceptErrors()
        self._sockets = sockets
        self._tick: asyncio.Task[None] | None = None

    @property
    def config(self) -> Config:
        return self.state.config

    async def start(self) -> None:
        self.tls.load(self.config)
        await self._open_listeners(self.config)
        self._tick = self.loop.create_task(self._run_tick())

    # -- listeners --------------------------------------------------------------------
    async def _open_listeners(self, config: Config) -> None:
        wanted = bind_keys(config)
        opened: dict[tuple[str, int], Acceptor] = {}
        try:
            for key, ssl in wanted.items():
                if key in self.listeners:
                    continue
                opened[key] = self._listen(key, ssl)
        except OSError:
            for server in opened.values():
                server.close()
            raise
        for key in list(self.listeners):
            if key not in wanted:
                self.listeners.pop(key).close()
        self.listeners.update(opened)

    def _listen(self, key: tuple[str, int], ssl: bool) -> Acceptor:
        sock = self._sockets(key)
        state = self.state
        scheme = "https" if ssl else "http"
        context = self.tls.context_for(key) if ssl else None
        factory: Callable[[], asyncio.Protocol]
        if context is not None:
            quiet_undecodable_sni()
            tls = context  # TLS is done by TlsStream, not by the event loop (see there)
            factory = cast(
                "Callable[[], asyncio.Protocol]",
                lambda: TlsStream(tls, ClientConnection(state, "https")),
            )
        else:
            factory = cast(
                "Callable[[], asyncio.Protocol]", lambda: ClientConnection(state, scheme)
            )
        return Acceptor(self.loop, sock, factory, self.accept_errors)

    def bound_ports(self) -> list[tuple[str, int]]:
        """The addresses actually listened on (port 0 in a config picks a free one)."""
        out = []
        for server in self.listeners.values():
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1]))
        return out

    def metrics_snapshot(self) -> dict[str, Any]:
        """This process's counters (``ProxyMetrics.snapshot``), connections by listener
        ("host:port"; "*:port" when several addresses listen on that port)."""
        gauges = self.state.gauges()
        listening: dict[str, list[str]] = {}
        for host, port in self.bound_ports():
            name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            listening.setdefault(str(port), []).append(name)
        by_listener: dict[str, int] = {}
        for key, count in cast("dict[str, int]", gauges["connections"]).items():
            names = listening.get(key, [])
            name = names[0] if len(names) == 1 else f"*:{key}"
            by_listener[name] = by_listener.get(name, 0) + count
        gauges["connections"] = by_listener
        return self.state.metrics.snapshot(gauges)

    # -- reload -----------------------------------------------------------------------
    async def reload(self, config: Config, servers: AppServers | None = None) -> None:
        """Apply ``config`` with the apps' ``servers`` in it; on any error the running
        config stays and the error is raised."""
        ProxyState.check(config)  # raises ConfigError; nothing has changed yet
        previous = self.state.config
        self.tls.load(config)  # raises on a bad certificate; old contexts stay
        try:
            await self._open_listeners(config)  # opens new ports first; on error closes them
        except OSError:
            self.tls.load(previous)  # the old config stays whole, certificates included
            raise
        state = self.state
        state.install(config, state, servers or {})
        for conn in list(state.connections):
            # Connections between requests keep their socket; their next request is
            # routed with the new config.  Refresh their listen table now.
            transport = conn.transport
            if transport is not None:
                local = transport.get_extra_info("sockname")
                if isinstance(local, tuple):
                    conn.vhosts = state.router.vhosts_for(local[0], local[1])

    # -- tick and shutdown --------------------------------------------------------------
    async def _run_tick(self) -> None:
        state = self.state
        last_expire = 0.0
        while True:
            await asyncio.sleep(TICK)
            now = state.now()
            state.date.update()
            for conn in list(state.connections):
                deadline = conn.deadline
                if deadline and deadline <= now:
                    conn.expire(now)
            if now - last_expire >= 1.0:
                last_expire = now
                for backend in list(state.upstreams.values()):
                    backend.idle.expire(now)
            state.access_logs.flush(now)

    async def shutdown(self, timeout: float = 30.0, idle_grace: float = 0.0) -> None:
        """Stop accepting, finish in-flight requests within ``timeout``, close the rest.

        For ``idle_grace`` seconds a connection between requests is not closed under a
        client that may be sending on it: its next response says ``Connection: close``
        (HAProxy's ``idle-close-on-response``).  After an upgrade the new nonstop accepts
        the clients' next connections, so none of their requests meets a closing socket.
        """
        state = self.state
        state.shutting_down = True
        for server in self.listeners.values():
            server.close()
        for server in self.listeners.values():
            # a connection accepted just before is being set up: it is one to finish too
            await server.wait_closed()
        now = time.monotonic()
        deadline = now + timeout
        close_idle_at = now + min(idle_grace, timeout)
        while True:
            if time.monotonic() >= close_idle_at:
                for conn in list(state.connections):
                    conn.close_idle()
            if not state.connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(state.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for backend in state.upstreams.values():
            backend.idle.close_all()
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
        for server in self.listeners.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self.listeners.clear()
        state.access_logs.close()
