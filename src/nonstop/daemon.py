"""``nonstop run``: the daemon's main loop.

Signal handlers only enqueue (as gunicorn's arbiter does); the loop dispatches: SIGHUP
and the admin ``reload`` re-read the config, SIGTERM/SIGINT shut down in one order:
stop taking admin requests, cancel running deploys (they are recorded ``interrupted``
and the next start resolves them with the old release serving), stop accepting
connections and let in-flight requests finish, then stop the app instances, then
close the state store.

On start: open the state store, resolve deploys a crash cut short, then — with the
proxy already listening and the admin socket open — stop orphaned instances and bring
each app's live release back (a deploy of that app waits for it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import pwd
import signal
import sys
import time
from collections.abc import Coroutine
from typing import Any

from nonstop.admin.server import AdminServer, Emit
from nonstop.config import load
from nonstop.config.model import Config, HealthSpec, NginxSpec
from nonstop.deploy.deployer import Deployer, describe_deploy
from nonstop.deploy.pool import AppPool, Pool
from nonstop.deploy.store import StateStore
from nonstop.engines.nginx import (
    NginxAppPool,
    NginxEngine,
    NginxUpstreamChecks,
    SystemNginx,
    find_nginx,
)
from nonstop.errors import ConfigError, NonstopError
from nonstop.health import HealthChecker
from nonstop.proxy.server import Backend, ProxyServer
from nonstop.supervisor import Supervisor, SupervisorEvent

__all__ = ["Daemon", "UpstreamChecks", "admin_socket_path", "setup_logging"]

log = logging.getLogger("nonstop")


class _NginxFormatter(logging.Formatter):
    """``2026/11/24 23:59:59 [error] 1234#0: message``, as nginx's error log reads."""

    _names = {
        logging.DEBUG: "debug",
        logging.INFO: "info",
        logging.WARNING: "warn",
        logging.ERROR: "error",
        logging.CRITICAL: "crit",
    }

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        level = getattr(record, "nginx_level", None) or self._names.get(record.levelno, "error")
        return f"{stamp} [{level}] {os.getpid()}#0: {record.getMessage()}"


def setup_logging(config: Config | None) -> None:
    root = logging.getLogger("nonstop")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    if config is not None and config.error_log and config.error_log != "stderr":
        os.makedirs(os.path.dirname(config.error_log) or ".", exist_ok=True)
        handler = logging.FileHandler(config.error_log)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_NginxFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    root.propagate = False


def admin_socket_path(config: Config) -> str:
    path = config.admin.socket
    if not os.path.isabs(path):
        path = os.path.join(config.prefix, path)
    return path


def with_engine(config: Config, engine: str | None, nginx_pid: str | None = None) -> Config:
    """``config`` with what the command line chose (``--engine``, ``--nginx-pid``)."""
    if nginx_pid is not None:
        config = dataclasses.replace(config, nginx=NginxSpec(pid=os.path.abspath(nginx_pid)))
    if engine is None or engine == config.engine:
        return config
    return dataclasses.replace(config, engine=engine)


def nginx_engine(config: Config) -> NginxEngine:
    """The nginx engine for ``config``, driving the nginx binary found on this host.

    Started as root, nginx would run its workers as ``nobody``, who cannot reach the
    state directory's temp paths; they run as nonstop's own user instead.
    """
    binary = find_nginx()
    if binary is None:
        raise ConfigError('engine "nginx" needs the nginx binary, and none was found on PATH')
    user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
    return NginxEngine(config, SystemNginx(binary), user=user, system_pid=config.nginx.pid)


class Daemon:
    def __init__(
        self,
        path: str,
        prefix: str | None,
        shutdown_timeout: float = 30.0,
        engine: str | None = None,
        nginx_pid: str | None = None,
    ) -> None:
        self.path = path
        self.prefix = prefix
        self.shutdown_timeout = shutdown_timeout
        self.engine = engine
        self.nginx_pid = nginx_pid
        self.nginx: NginxEngine | None = None
        self.nginx_checks: NginxUpstreamChecks | None = None
        self.events: asyncio.Queue[str] = asyncio.Queue()
        self.proxy: ProxyServer | None = None
        self.admin: AdminServer | None = None
        self.store: StateStore | None = None
        self.deployer: Deployer | None = None
        self.checks: UpstreamChecks | None = None
        self.started = time.time()
        self.reloads = 0

    async def run(self, config: Config) -> None:
        config = with_engine(config, self.engine, self.nginx_pid)
        if config.engine == "nginx":
            await self._run(config, self._start_nginx(config))
        else:
            await self._run(config, self._start_embedded(config))

    async def _start_embedded(self, config: Config) -> list[str]:
        loop = asyncio.get_running_loop()
        self.proxy = ProxyServer(config, loop)
        deployer = self.deployer = self._deployer(config.state_dir)
        deployer.configure(config.apps)
        await self.proxy.start()
        self.checks = UpstreamChecks(self.proxy)
        self.checks.sync()
        return [f"{h}:{p}" for h, p in self.proxy.bound_ports()]

    async def _start_nginx(self, config: Config) -> list[str]:
        self.nginx = nginx_engine(config)
        deployer = self.deployer = self._deployer(config.state_dir)
        deployer.configure(config.apps)
        self.nginx_checks = NginxUpstreamChecks(self.nginx)
        self.nginx_checks.sync(config)
        await self.nginx.start()
        return _listens(config)

    async def _run(self, config: Config, start: Coroutine[Any, Any, list[str]]) -> None:
        loop = asyncio.get_running_loop()
        # Signals are queued from the very start: a SIGTERM that arrives while the engine
        # is still starting is handled as a graceful stop once it has started.
        for signum, event in (
            (signal.SIGTERM, "stop"),
            (signal.SIGINT, "stop"),
            (signal.SIGHUP, "reload"),
            (signal.SIGUSR1, "reopen"),
        ):
            loop.add_signal_handler(signum, self.events.put_nowait, event)
        self.store = StateStore.open(config.state_dir)
        for record in self.store.resolve_interrupted():
            log.warning(
                "deploy #%d of %s %s was interrupted by a stop of nonstop; the previous "
                "release stays live",
                record.id,
                record.app,
                record.release,
            )
        try:
            listening = await start
        except BaseException:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(signum)
            if self.nginx_checks is not None:
                await self.nginx_checks.close()
            if self.nginx is not None:
                await self.nginx.shutdown(1.0)
            self.store.close()
            raise
        deployer = self.deployer
        assert deployer is not None
        self.admin = AdminServer(
            admin_socket_path(config),
            {"reload": self._admin_reload, "status": self._admin_status, "stop": self._stop},
            {"deploy": self._admin_deploy, "rollback": self._admin_rollback},
        )
        await self.admin.start()
        restore = loop.create_task(deployer.restore(), name="restore live releases")
        log.info("nonstop %s started, listening on %s", os.getpid(), ", ".join(listening))
        try:
            while True:
                event = await self.events.get()
                if event == "stop":
                    break
                if event == "reload":
                    await self.reload()
                if event == "reopen":
                    self._reopen()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(signum)
            log.info("shutting down: finishing in-flight requests")
            await self.admin.close()
            restore.cancel()
            await asyncio.gather(restore, return_exceptions=True)
            await self._stop_engine()
            log.info("stopping app instances")
            await deployer.close()
            self.store.close()
            log.info("exit")

    def _reopen(self) -> None:
        if self.proxy is not None:
            self.proxy.state.access_logs.reopen()
        if self.nginx is not None:
            self.nginx.reopen_logs()

    async def _stop_engine(self) -> None:
        if self.checks is not None:
            await self.checks.close()
        if self.proxy is not None:
            await self.proxy.shutdown(self.shutdown_timeout)
        if self.nginx_checks is not None:
            await self.nginx_checks.close()
        if self.nginx is not None:
            await self.nginx.shutdown(self.shutdown_timeout)

    def _deployer(self, state_dir: str) -> Deployer:
        assert self.store is not None
        supervisor = Supervisor(state_dir, on_event=lambda e: self._on_instance(e))
        if self.nginx is not None:
            nginx = self.nginx

            def nginx_pool(name: str) -> Pool:
                return NginxAppPool(name, nginx)

            def nginx_counts(name: str, address: str) -> tuple[int, int] | None:
                return nginx.stats.counts(address)

            return Deployer(self.store, supervisor, nginx_pool, counts=nginx_counts)
        assert self.proxy is not None
        state = self.proxy.state

        def backend(name: str) -> Backend | None:
            return state.upstreams.get(name)

        def pool(name: str) -> Pool:
            return AppPool(name, lambda: backend(name))

        def counts(name: str, address: str) -> tuple[int, int] | None:
            found = backend(name)
            return found.balancer.response_counts(address) if found is not None else None

        return Deployer(self.store, supervisor, pool, counts=counts)

    def _on_instance(self, event: SupervisorEvent) -> None:
        if self.deployer is not None:
            self.deployer.on_supervisor_event(event)

    async def reload(self) -> dict[str, Any]:
        """Re-read the config; a config that fails validation changes nothing."""
        try:
            config = with_engine(load(self.path, self.prefix), self.engine, self.nginx_pid)
            if self.nginx is not None:
                await self._reload_nginx(config)
            else:
                await self._reload_embedded(config)
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            return {"ok": False, "error": str(exc)}
        except OSError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            return {"ok": False, "error": str(exc)}
        except NonstopError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            return {"ok": False, "error": str(exc)}
        self.reloads += 1
        setup_logging(config)
        for notice in config.notices:
            log.info("%s", notice)
        log.info("configuration reloaded from %s", self.path)
        return {"ok": True, "files": list(config.files)}

    async def _reload_nginx(self, config: Config) -> None:
        assert self.nginx is not None
        if config.engine != "nginx":
            raise ConfigError("the engine cannot change on reload: restart nonstop for that")
        await self.nginx.apply(config)
        if self.deployer is not None:
            self.deployer.configure(config.apps)
        if self.nginx_checks is not None:
            self.nginx_checks.sync(config)

    async def _reload_embedded(self, config: Config) -> None:
        assert self.proxy is not None
        if config.engine != "embedded":
            raise ConfigError("the engine cannot change on reload: restart nonstop for that")
        previous = dict(self.proxy.state.upstreams)
        await self.proxy.reload(config)
        # no await between the new backends going live and the apps' servers going
        # back into them: no request can find an app's upstream empty
        if self.deployer is not None:
            self.deployer.reapply(previous)
            self.deployer.configure(config.apps)
        if self.checks is not None:
            self.checks.sync()

    async def _admin_reload(self, _request: dict[str, Any]) -> dict[str, Any]:
        return await self.reload()

    async def _admin_status(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.deployer is not None
        app = request.get("app")
        if self.nginx is not None:
            return self._nginx_status(None if app is None else str(app))
        assert self.proxy is not None
        state = self.proxy.state
        return {
            "ok": True,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "config": self.path,
            "reloads": self.reloads,
            "connections": len(state.connections),
            "listen": [f"{h}:{p}" for h, p in self.proxy.bound_ports()],
            "upstreams": {
                name: backend.balancer.snapshot(state.now())
                for name, backend in state.upstreams.items()
                if app is None or name == app
            },
            "apps": self.deployer.status(None if app is None else str(app)),
        }

    def _nginx_status(self, app: str | None) -> dict[str, Any]:
        assert self.nginx is not None and self.deployer is not None
        return {
            "ok": True,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "config": self.path,
            "engine": "nginx",
            "reloads": self.reloads,
            "connections": "n/a",
            "listen": _listens(self.nginx.config),
            "nginx": self.nginx.describe(),
            "upstreams": self.nginx.upstreams(app),
            "apps": self.deployer.status(app),
        }

    async def _admin_deploy(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        assert self.deployer is not None
        app, holder, pid = _who(request)
        release = request.get("release")
        try:
            result = await self.deployer.deploy(
                app, None if release is None else str(release), holder, pid, emit
            )
        except NonstopError as exc:
            return _failure(exc, self.deployer, app)
        return {"ok": True, "result": result}

    async def _admin_rollback(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        assert self.deployer is not None
        app, holder, pid = _who(request)
        try:
            result = await self.deployer.rollback(app, holder, pid, emit)
        except NonstopError as exc:
            return _failure(exc, self.deployer, app)
        return {"ok": True, "result": result}

    async def _stop(self, _request: dict[str, Any]) -> dict[str, Any]:
        self.events.put_nowait("stop")
        return {"ok": True}


def _listens(config: Config) -> list[str]:
    seen: dict[str, None] = {}
    for server in config.servers:
        for listen in server.listens:
            host = f"[{listen.host}]" if ":" in listen.host else listen.host
            seen[f"{host}:{listen.port}"] = None
    return list(seen)


def _who(request: dict[str, Any]) -> tuple[str, str, int]:
    """The app a deploy request names and who asks (for the lock's holder)."""
    app = request.get("app")
    if not isinstance(app, str) or not app:
        raise ValueError('"app" must be a non-empty string')
    holder = str(request.get("holder") or "admin client")
    pid = request.get("pid")
    return app, holder, pid if isinstance(pid, int) else 0


def _failure(exc: NonstopError, deployer: Deployer, app: str) -> dict[str, Any]:
    history = deployer.store.history(app, 1) if app in deployer.apps else []
    answer: dict[str, Any] = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
    if history and history[0].reason == str(exc):
        answer["result"] = describe_deploy(history[0])
    return answer


class UpstreamChecks:
    """Active health checks of the static ``[upstreams.*]`` that have a ``health`` table.

    One ``HealthChecker`` per upstream reports flips, applied through the upstream (its one
    owner of peer state).  ``sync`` runs after start and after every reload: checkers
    follow the server lists, and each watched server's known health is put on the new
    ``Backend`` — a server whose line changed gets a new peer, which would otherwise wait
    unhealthy for a flip that never comes.  A server never seen passing gets no traffic.
    """

    def __init__(self, proxy: ProxyServer) -> None:
        self._proxy = proxy
        self._checkers: dict[str, HealthChecker] = {}

    def sync(self) -> None:
        upstreams = self._proxy.state.upstreams
        for name in [n for n in self._checkers if _checked(upstreams.get(n)) is None]:
            self._drop(name)
        for name, backend in upstreams.items():
            health = _checked(backend)
            if health is None:
                continue
            checker = self._checkers.get(name)
            if checker is None:
                checker = HealthChecker(health, functools.partial(self._change, name))
                self._checkers[name] = checker
            else:
                checker.update_spec(health)
            wanted = {s.address: s for s in backend.spec.servers if not s.is_unix}
            for address in checker.addresses():
                if address not in wanted:
                    asyncio.get_running_loop().create_task(checker.unwatch(address))
            for address, server in wanted.items():
                peer = backend.balancer.peer(address)
                checker.watch(
                    address, server.host, server.port, peer is not None and peer.health_ok
                )
                backend.balancer.set_health(address, checker.healthy(address))

    def _change(self, name: str, address: str, healthy: bool, detail: str) -> None:
        backend = self._proxy.state.upstreams.get(name)
        if backend is not None:
            backend.balancer.set_health(address, healthy)
            log.warning(
                "upstream %s server %s is %s: %s",
                name,
                address,
                "up" if healthy else "down",
                detail,
            )

    def _drop(self, name: str) -> None:
        checker = self._checkers.pop(name)
        asyncio.get_running_loop().create_task(checker.close())

    async def close(self) -> None:
        for checker in self._checkers.values():
            await checker.close()
        self._checkers.clear()


def _checked(backend: Backend | None) -> HealthSpec | None:
    if backend is None or backend.spec.app or backend.spec.implicit:
        return None
    return backend.spec.health
