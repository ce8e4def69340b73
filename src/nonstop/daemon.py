"""``nonstop run``: the daemon's main loop.

Signal handlers only enqueue (as gunicorn's arbiter does); the loop dispatches: SIGHUP
and the admin ``reload`` re-read the config, SIGTERM/SIGINT and the admin ``stop`` shut
down in one order: stop taking admin requests, cancel the daemon's own tasks (the
restore of live releases), cancel running deploys and health gates (deploys are
recorded ``interrupted`` and the next start resolves them with the old release
serving), shut the engine down (stop accepting connections, let in-flight requests
finish, stop its active checks), then leave the app instances running for the next
start to adopt — or stop them, for SIGINT (Ctrl-C) and ``nonstop stop --apps`` — then
close the state store.  Every task has an owner (``nonstop.tasks.TaskOwner``) that this
order closes.

On start: open the state store, resolve deploys a crash cut short, build the engine the
config names (``nonstop.engines.build``), adopt the live instances an earlier nonstop
left running and healthy (so they serve from the first request), start the engine,
then — with the engine listening and the admin socket open — stop orphaned instances
that were not adopted and bring each app's live release back where it is missing (a
deploy of that app waits for it).

The daemon holds one ``Engine`` and reaches the data plane only through it: which engine
serves is decided in ``build_engine`` and nowhere here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

from nonstop import listeners, upgrade
from nonstop.admin.http import AdminHttp
from nonstop.admin.metrics import EventCounts, Scrape, add_metrics, build_info
from nonstop.admin.page import StatusFeed, add_status_page
from nonstop.admin.server import AdminServer, Emit, Handler, StreamHandler
from nonstop.config import load
from nonstop.config.accounts import Account
from nonstop.config.model import Config, NginxSpec
from nonstop.deploy.deployer import Deployer, describe_deploy
from nonstop.deploy.store import StateStore, StoreError
from nonstop.engines.base import IDLE_GRACE, Engine
from nonstop.engines.build import build_engine
from nonstop.errorlog import setup_logging
from nonstop.errors import ConfigError, NonstopError
from nonstop.events import (
    DeployEvent,
    DrainEvent,
    Event,
    EventBus,
    InstanceEvent,
    ReloadEvent,
    Subscription,
    as_dict,
)
from nonstop.statedir import StateDirLock, restrict_umask
from nonstop.supervisor import Supervisor, SupervisorEvent
from nonstop.tasks import TaskOwner
from nonstop.upgrade import Handoff

__all__ = ["Daemon", "admin_socket_path"]

log = logging.getLogger("nonstop")


def check_workers_change(running: Config, config: Config) -> None:
    """What a reload cannot change in the processes serving: raises ConfigError."""
    if _ids(config.worker_user) != _ids(running.worker_user):
        were = running.worker_user.user if running.worker_user else "nonstop's own user"
        raise ConfigError(
            f'"user" cannot change on reload: the workers run as {were} and no longer '
            "may switch users; restart nonstop or run `nonstop upgrade` for that"
        )
    if config.separate_workers != running.separate_workers:
        now = "worker processes" if running.separate_workers else "the control process"
        raise ConfigError(
            f'"master_process" cannot change on reload: the proxy runs in {now}; restart '
            "nonstop or run `nonstop upgrade` for that"
        )


def _ids(account: Account | None) -> tuple[int, int] | None:
    """Who the workers are: a user given groups since is still that user (they keep the
    groups they started with)."""
    return None if account is None else (account.uid, account.gid)


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
        self.engine_name = engine
        self.nginx_pid = nginx_pid
        self.commands: asyncio.Queue[str] = asyncio.Queue()  # from signals and the admin API
        self.events = EventBus()
        self.tasks = TaskOwner("daemon")
        self.engine: Engine | None = None
        self.admin: AdminServer | None = None
        self.http: AdminHttp | None = None  # [admin] listen
        self.feed: StatusFeed | None = None  # the status page's event stream
        self.counts = EventCounts()  # deploys and reloads, for GET /metrics
        self.build = build_info()
        self.store: StateStore | None = None
        self.deployer: Deployer | None = None
        self.running: Config | None = None
        self.started = time.time()
        # the listening sockets came from systemd (LISTEN_FDS), which keeps them open
        # across a stop for the next nonstop (set by `nonstop run`)
        self.listeners_outlive = False
        self.reloads = 0
        self.lock: StateDirLock | None = None  # handed to the new nonstop on an upgrade
        self.handoff: Handoff | None = None  # set when this nonstop is the new one
        self.upgrade_timeout = 60.0
        self._upgrading = False

    async def run(self, config: Config) -> None:
        await self._run(with_engine(config, self.engine_name, self.nginx_pid))

    async def _run(self, config: Config) -> None:
        loop = asyncio.get_running_loop()
        # Signals are queued from the very start: a SIGTERM that arrives while the engine
        # is still starting is handled as a graceful stop once it has started.
        for signum, event in _SIGNALS.items():
            loop.add_signal_handler(signum, self.commands.put_nowait, event)
        store = self.store = StateStore.open(config.state_dir)
        for record in store.resolve_interrupted():
            log.warning(
                "deploy #%d of %s %s was interrupted by a stop of nonstop; the previous "
                "release stays live",
                record.id,
                record.app,
                record.release,
            )
        try:
            handed = len(listeners.inherited.workers())
            if not config.separate_workers and handed > 1:
                raise NonstopError(
                    f"the nonstop handing over runs {handed} "
                    "workers; with master_process off, one process would take the first "
                    "one's sockets and cut the connections queued on the others': restart "
                    "nonstop for that"
                )
            engine = self.engine = build_engine(config, self.events)
            supervisor = Supervisor(config.state_dir, on_event=self._on_instance)
            deployer = self.deployer = Deployer(store, supervisor, engine, events=self.events)
            deployer.configure(config.apps)
            self.running = config
            adopted = await deployer.adopt()
            listening = await engine.start()
            listeners.inherited.close()  # handed over but named by no listen directive
        except BaseException:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)
            if self.engine is not None:
                await self.engine.shutdown(1.0)
            store.close()
            raise
        handlers: dict[str, Handler] = {
            "reload": self._admin_reload,
            "status": self._admin_status,
            "stop": self._stop,
            "undrain": self._admin_undrain,
            "upgrade": self._admin_upgrade,
        }
        streams: dict[str, StreamHandler] = {
            "drain": self._admin_drain,
            "deploy": self._admin_deploy,
            "rollback": self._admin_rollback,
            "commit": self._admin_commit,
            "abort": self._admin_abort,
        }
        if config.admin.listen is not None:
            # before the admin socket: that one opening is what says the daemon is up
            try:
                await self._start_http(config, handlers, streams)
            except OSError:
                await engine.shutdown(1.0)
                store.close()
                raise
        admin = AdminServer(admin_socket_path(config), handlers, streams)
        try:
            await admin.start(None if self.handoff is None else self.handoff.admin)
        except BaseException:
            if self.http is not None:
                await self.http.close()
            raise
        self.admin = admin  # set once it listens: an upgrade asked before is refused as starting
        restore = self.tasks.spawn(deployer.restore(), "restore live releases")
        if self.handoff is not None:
            self.tasks.spawn(self._ready_after(restore, self.handoff), "take over")
        else:
            sd_notify(f"READY=1\nMAINPID={os.getpid()}")
        log.info("nonstop %s started, listening on %s", os.getpid(), ", ".join(listening))
        if adopted:
            log.info("%d app instance(s) left running by an earlier nonstop adopted", adopted)
        stop_apps = handed_over = False
        try:
            while True:
                event = await self.commands.get()
                if event in ("stop", "stop apps", "handed over"):
                    stop_apps = event == "stop apps"
                    handed_over = event == "handed over"
                    break
                if event == "upgrade":
                    self.tasks.spawn(self._upgrade(), "upgrade (SIGUSR2)")
                if event == "reload":
                    await self.reload()
                if event == "reopen":
                    setup_logging(self.running)  # the error log, as nginx reopens it
                    await engine.reopen_logs()
        finally:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)
            log.info("shutting down: finishing in-flight requests")
            if not handed_over:
                sd_notify("STOPPING=1")
            await self.admin.close(unlink=not handed_over)
            if self.http is not None:
                await self.http.close()
            if self.feed is not None:
                await self.feed.close()
            await self.tasks.close()
            await deployer.cancel()
            if handed_over:
                # the clients' next connections go to the new nonstop: an idle keep-alive
                # connection is closed after its next response, not under its next request
                await engine.hand_over(self.shutdown_timeout)
            else:
                # systemd's sockets outlive this process and the next nonstop accepts
                # from them: close no idle keep-alive connection under a request the
                # client may be sending (its next answer says Connection: close)
                grace = IDLE_GRACE if self.listeners_outlive else 0.0
                await engine.shutdown(self.shutdown_timeout, grace)
            if stop_apps:
                log.info("stopping app instances")
            elif deployer.supervisor.instances():
                log.info(
                    "leaving app instances running for the next start "
                    "(nonstop stop --apps stops them)"
                )
            await deployer.close(stop_apps=stop_apps)
            store.close()
            log.info("exit")

    async def _start_http(
        self,
        config: Config,
        handlers: dict[str, Handler],
        streams: dict[str, StreamHandler],
    ) -> None:
        """``[admin] listen``: the admin API, the status page and its event stream."""
        assert config.admin.listen is not None
        http = self.http = AdminHttp(config.admin.listen, config.admin.token, handlers, streams)
        self.feed = add_status_page(http, self._page_snapshot, self._page_events)
        add_metrics(http, self._scrape)
        self.tasks.spawn(self.counts.follow(self.events), "deploys and reloads for /metrics")
        await http.start()
        log.info("admin listener on %s", ", ".join(http.addresses()))

    async def _scrape(self) -> Scrape:
        """What GET /metrics shows, gathered when it is asked for."""
        assert self.engine is not None and self.deployer is not None
        status = await self.engine.status(None)
        return Scrape(
            data_plane=await self.engine.metrics(),
            upstreams=status.get("upstreams", {}),
            apps=await self.deployer.status(),
            events=self.counts,
            build=self.build,
        )

    async def _page_snapshot(self) -> Mapping[str, Any]:
        return await self._admin_status({})

    async def _page_events(self) -> AsyncIterator[Mapping[str, Any]]:
        """The control plane's events as the page reads them (docs/observability.md)."""
        with self.events.subscribe() as events:
            async for event in events:
                for shown in _for_page(event):
                    yield shown

    def _on_instance(self, event: SupervisorEvent) -> None:
        if self.deployer is not None:
            self.deployer.on_supervisor_event(event)
        self.events.publish(
            InstanceEvent(
                event.app, event.port, event.release, event.kind, event.pid, event.returncode
            )
        )

    async def reload(self) -> dict[str, Any]:
        """Re-read the config; a config that fails validation changes nothing."""
        try:
            config = with_engine(
                load(self.path, self.prefix, engine=self.engine_name),
                self.engine_name,
                self.nginx_pid,
            )
            await self._apply(config)
        except (ConfigError, OSError, NonstopError) as exc:
            log.error("reload refused, the running config stays: %s", exc)
            self.events.publish(ReloadEvent(False, str(exc)))
            return {"ok": False, "error": str(exc)}
        self.reloads += 1
        restrict_umask(config.group)  # files opened from now on; the state dir at start
        setup_logging(config)
        for notice in config.notices:
            log.info("%s", notice)
        log.info("configuration reloaded from %s", self.path)
        self.events.publish(ReloadEvent(True))
        return {"ok": True, "files": list(config.files)}

    async def _apply(self, config: Config) -> None:
        assert self.engine is not None and self.running is not None
        if config.engine != self.running.engine:
            raise ConfigError("the engine cannot change on reload: restart nonstop for that")
        if config.engine == "embedded":
            check_workers_change(self.running, config)
        await self.engine.apply(config)  # the apps' servers go into the new state whole
        self.running = config
        if self.deployer is not None:
            self.deployer.configure(config.apps)

    async def _admin_reload(self, _request: dict[str, Any]) -> dict[str, Any]:
        return await self.reload()

    async def _admin_status(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.deployer is not None and self.engine is not None
        app = request.get("app")
        name = None if app is None else str(app)
        engine = dict(await self.engine.status(name))
        answer: dict[str, Any] = {
            "ok": True,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "config": self.path,
            "admin_socket": None if self.admin is None else self.admin.path,
        }
        if "engine" in engine:
            answer["engine"] = engine.pop("engine")
        answer["reloads"] = self.reloads
        answer.update(engine)
        answer["apps"] = await self.deployer.status(name)
        return answer

    async def _admin_deploy(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        assert self.deployer is not None
        app, holder, pid = _who(request)
        release = request.get("release")
        hold = request.get("hold")
        if hold is not None and (not isinstance(hold, int | float) or hold <= 0):
            raise ValueError('"hold" must be a number of seconds above 0')
        deploy = self.deployer.deploy(
            app,
            None if release is None else str(release),
            holder,
            pid,
            hold=None if hold is None else float(hold),
        )
        return await self._streamed(app, emit, deploy)

    async def _admin_rollback(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        assert self.deployer is not None
        app, holder, pid = _who(request)
        return await self._streamed(app, emit, self.deployer.rollback(app, holder, pid))

    async def _admin_commit(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        assert self.deployer is not None
        app, holder, _ = _who(request)
        answer = await self._streamed(app, emit, self.deployer.commit(app, holder))
        result = answer.get("result") or {}
        if answer["ok"] and result.get("outcome") != "ok":  # committed, then failed
            reason = str(result.get("reason") or result.get("outcome"))
            return {"ok": False, "error": reason, "exit_code": 1, "result": result}
        return answer

    async def _admin_abort(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """An abort that rolled the deploy back did what was asked: ok."""
        assert self.deployer is not None
        app, holder, _ = _who(request)
        return await self._streamed(app, emit, self.deployer.abort(app, holder))

    async def _streamed(
        self, app: str, emit: Emit, work: Coroutine[Any, Any, dict[str, Any]]
    ) -> dict[str, Any]:
        """Run a deploy operation, sending ``app``'s deploy events to the client as they
        come (read from the event stream), then its answer."""
        assert self.deployer is not None

        def of_app(event: Event) -> bool:
            return isinstance(event, DeployEvent) and event.app == app

        with self.events.subscribe(of_app) as events:
            relay = self.tasks.spawn(_relay(events, emit), f"{app} deploy events")
            try:
                result = await work
            except NonstopError as exc:
                return _failure(exc, self.deployer, app)
            finally:
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)
                for event in events.pending():
                    emit(as_dict(event))
        return {"ok": True, "result": result}

    async def _admin_drain(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """``nonstop drain``: out of selection now; answered once nothing is in flight.

        ``addresses`` (a list) drains several servers of the upstream in one request, as a
        fleet deploy does with the hosts of a batch: all leave selection at once, and the
        answer comes once none of them has a request in flight."""
        assert self.engine is not None
        engine = self.engine
        upstream, addresses = _servers(request)
        timeout = request.get("timeout", 30.0)
        if not isinstance(timeout, int | float) or timeout < 0:
            raise ValueError('"timeout" must be a number of seconds, 0 or more')
        for address in addresses:
            emit({"event": "draining", "upstream": upstream, "address": address})
        self.events.publish(DrainEvent(upstream, addresses))
        lefts = await asyncio.gather(
            *(engine.drain_server(upstream, a, float(timeout)) for a in addresses)
        )
        left = sum(lefts)
        self.events.publish(DrainEvent(upstream, addresses, left))
        named = _named(request, addresses)
        if left:
            busy = ", ".join(a for a, n in zip(addresses, lefts, strict=True) if n)
            return {
                "ok": False,
                "error": f"{left} request(s) still in flight to {busy} after {timeout:g}s; "
                f"{'it stays' if len(addresses) == 1 else 'they stay'} drained: no new "
                f"request goes to {'it' if len(addresses) == 1 else 'them'}",
                "exit_code": 1,
                "in_flight": left,
            }
        return {"ok": True, "upstream": upstream, **named, "in_flight": 0}

    async def _admin_undrain(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.engine is not None
        engine = self.engine
        upstream, addresses = _servers(request)
        await asyncio.gather(*(engine.undrain_server(upstream, a) for a in addresses))
        return {"ok": True, "upstream": upstream, **_named(request, addresses)}

    # -- upgrade: a new nonstop takes over (nonstop.upgrade) -----------------------------

    async def _admin_upgrade(self, request: dict[str, Any]) -> dict[str, Any]:
        timeout = request.get("timeout", self.upgrade_timeout)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError('"timeout" must be a number of seconds above 0')
        return await self._upgrade(float(timeout))

    async def _upgrade(self, timeout: float | None = None) -> dict[str, Any]:
        """Start the new nonstop and hand it everything; exit once it is ready."""
        refusal = self._why_no_upgrade()
        if refusal is not None:
            log.error("upgrade refused: %s", refusal)
            return {"ok": False, "error": f"upgrade refused: {refusal}", "exit_code": 1}
        assert self.deployer is not None and self.admin is not None and self.lock is not None
        assert self.engine is not None and self.running is not None
        self._upgrading = True
        log.info("upgrade: starting a new nonstop and handing it the sockets and the apps")
        self.deployer.hand_over()
        if self.http is not None:
            await self.http.close()  # the new one opens [admin] listen again
            self.http = None
        try:
            new = upgrade.start_new(
                upgrade.this_command(),
                self.lock.fileno(),
                self.admin.fileno(),
                self.engine.listening(),
                self.listeners_outlive,
            )
            pid = await new.wait_ready(timeout or self.upgrade_timeout)
        except upgrade.UpgradeFailed as exc:
            log.error("upgrade failed, this nonstop keeps serving: %s", exc)
            await self._take_back()
            self._upgrading = False
            return {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
        log.info("upgrade: nonstop %d is ready and serves; this one finishes and exits", pid)
        self.commands.put_nowait("handed over")
        return {"ok": True, "old_pid": os.getpid(), "new_pid": pid}

    def _why_no_upgrade(self) -> str | None:
        if self._upgrading:
            return "an upgrade is already in progress"
        if self.lock is None or self.admin is None or self.deployer is None:
            return "nonstop is still starting"
        busy = self.deployer.busy()
        if busy is not None:
            return busy
        return None

    async def _take_back(self) -> None:
        """After a failed upgrade: supervise the instances again, reopen [admin] listen."""
        assert self.deployer is not None and self.running is not None
        await self.deployer.adopt()
        self.tasks.spawn(self.deployer.restore(), "restore after a failed upgrade")
        if self.running.admin.listen is not None and self.admin is not None:
            try:
                await self._start_http(self.running, self.admin.handlers, self.admin.streams)
            except OSError as exc:
                log.error("[admin] listen not reopened: %s", exc)

    async def _ready_after(self, restore: asyncio.Task[None], handoff: Handoff) -> None:
        """The new nonstop: tell the old one once the apps are back (adopted or started)."""
        try:
            await restore
        except Exception as exc:
            handoff.failed(f"restoring the apps failed: {exc}")
            self.commands.put_nowait("stop")
            raise
        handoff.ready()
        sd_notify(f"READY=1\nMAINPID={os.getpid()}")
        log.info("took over from the previous nonstop")

    async def _stop(self, request: dict[str, Any]) -> dict[str, Any]:
        apps = request.get("apps", False)
        if not isinstance(apps, bool):
            raise ValueError('"apps" must be true or false')
        self.commands.put_nowait("stop apps" if apps else "stop")
        running = len(self.deployer.supervisor.instances()) if self.deployer is not None else 0
        return {
            "ok": True,
            "pid": os.getpid(),
            "apps": "stopped" if apps else "left running",
            "instances": running,  # app instances running as the stop began
        }


_SIGNALS = {
    signal.SIGTERM: "stop",
    signal.SIGINT: "stop apps",
    signal.SIGHUP: "reload",
    signal.SIGUSR1: "reopen",
    signal.SIGUSR2: "upgrade",
}


def sd_notify(state: str) -> None:
    """Tell systemd (``Type=notify``, ``NotifyAccess=all``) our state; nothing without it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)


async def _relay(events: Subscription, emit: Emit) -> None:
    async for event in events:
        emit(as_dict(event))


def _for_page(event: Event) -> list[dict[str, Any]]:
    """One control-plane event as the status page's stream carries it, ``kind`` first."""
    if isinstance(event, DeployEvent):
        return [{"kind": "deploy", **as_dict(event)}]
    if isinstance(event, DrainEvent):
        return [
            {
                "kind": "drain",
                "upstream": event.app,
                "address": address,
                "draining": event.left is None,
                "left": event.left,
            }
            for address in event.addresses
        ]
    if isinstance(event, InstanceEvent):
        return [
            {
                "kind": "instance",
                "app": event.app,
                "port": event.port,
                "pid": event.pid,
                "state": event.kind,
                "release": event.release,
                "returncode": event.returncode,
            }
        ]
    if isinstance(event, ReloadEvent):
        return [{"kind": "reload", "ok": event.ok, "message": event.error}]
    return [{"kind": "health", **dataclasses.asdict(event)}]


def _servers(request: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """The upstream and the server addresses a drain request names: ``address``, or a
    list of them in ``addresses``."""
    upstream = request.get("upstream")
    if not isinstance(upstream, str) or not upstream:
        raise ValueError('"upstream" must be a non-empty string')
    if "addresses" in request:
        addresses = request["addresses"]
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and a for a in addresses)
        ):
            raise ValueError('"addresses" must be a non-empty list of HOST:PORT strings')
        return upstream, tuple(dict.fromkeys(addresses))
    address = request.get("address")
    if not isinstance(address, str) or not address:
        raise ValueError('"address" must be a non-empty string (HOST:PORT)')
    return upstream, (address,)


def _named(request: dict[str, Any], addresses: tuple[str, ...]) -> dict[str, Any]:
    """The servers as the request named them, for its answer."""
    return {"addresses": list(addresses)} if "addresses" in request else {"address": addresses[0]}


def _who(request: dict[str, Any]) -> tuple[str, str, int]:
    """The app a deploy request names and who asks (for the lock's holder)."""
    app = request.get("app")
    if not isinstance(app, str) or not app:
        raise ValueError('"app" must be a non-empty string')
    holder = str(request.get("holder") or "admin client")
    pid = request.get("pid")
    return app, holder, pid if isinstance(pid, int) else 0


def _failure(exc: NonstopError, deployer: Deployer, app: str) -> dict[str, Any]:
    try:
        history = deployer.store.history(app, 1) if app in deployer.apps else []
    except StoreError:  # the answer is the failure itself, whatever the store says now
        history = []
    answer: dict[str, Any] = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
    if history and history[0].reason == str(exc):
        answer["result"] = describe_deploy(history[0])
    return answer
