"""The shell around a real nginx: render, check, swap, reload, supervise, switch, drain.

Files live under ``STATE_DIR/nginx/``: ``conf/`` is what the running master reads,
``next/`` is where each render is checked first, ``slots/`` holds the flag files that
pick each app's live slot, ``logs/`` and ``temp/`` are nginx's own.  A config change
goes: render (pure) -> same bytes as live? nothing to do -> write ``next/`` -> ``nginx
-t`` on it -> rejected? the live files stay and the error is nginx's own words -> copy
into ``conf/`` -> SIGHUP the master -> wait until it has started new workers.

A deploy changes no config.  The switch renames (or removes) ``slots/APP.slot1``; every
worker sees it within ``SLOT_SEEN`` (``render.py``), which ``switched`` waits out.  nginx
is not reloaded, so its workers keep every client connection: nothing is closed under a
client.

The drain is what a reload-then-kill script gets wrong: ``nginx -s reload`` returns
while the old workers still send requests to the old upstream servers.  Here, after a
switch, a request already passed to the old slot finishes there, and its connection
goes back to nginx's keep-alive cache, which closes it ``SLOT_IDLE`` after its last use.
The drain waits until no connection to the old slot's ports is open (read from
/proc/net/tcp) -- then nothing in nginx can still be sending to the old release -- and,
after a config reload, until every worker from before it has exited.

With ``system_pid`` (``[nginx] pid``) nonstop starts no nginx: it drives the master the
system runs (systemd's, say), found through that pid file, which must run nonstop's
``conf/nginx.conf``.  The files are written whether or not that master is up; nonstop
attaches when it appears (and again after the system restarts it), reloads it once so
it runs the current render, and leaves it running when nonstop stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import signal
import socket
import stat
from collections.abc import Callable, Mapping
from typing import Any

from nonstop.clock import SYSTEM_CLOCK, Clock
from nonstop.config.accounts import unreachable
from nonstop.config.model import Config, ServerSpec
from nonstop.config.vocabulary import BACKUP_METHODS
from nonstop.engines.base import check_static_server
from nonstop.engines.checks import UpstreamChecks
from nonstop.engines.nginx.command import (
    AttachFailed,
    Master,
    NginxCommand,
    process_title,
    read_pid,
)
from nonstop.engines.nginx.render import (
    MAIN_FILE,
    SLOT_SEEN,
    RenderOptions,
    render,
    slot_flag,
    slot_upstream,
    stats_log,
)
from nonstop.engines.nginx.stats import UpstreamStats
from nonstop.errors import ConfigError, NonstopError, UsageError
from nonstop.events import EventBus
from nonstop.health.checker import ProbeFn, probe
from nonstop.servers import ServerReport, ServerState, server_spec, slot_of, slot_ports
from nonstop.statedir import set_state_dir_mode
from nonstop.tasks import TaskOwner

__all__ = ["NginxEngine", "NginxFailed", "NginxRejected"]

log = logging.getLogger("nonstop")

POLL = 0.01
RELOAD_TIMEOUT = 10.0
START_TIMEOUT = 10.0
KILL_GRACE = 5.0
ATTACH_POLL = 0.5
SWITCH_MARGIN = 0.2  # nginx's cached clock ticks once per event-loop pass


class NginxRejected(ConfigError):
    """``nginx -t`` refused a render; the message is nginx's own output."""


class NginxFailed(NonstopError):
    """nginx did not start, or did not apply a reload its own check had passed."""


class NginxEngine:
    """One nginx master under ``STATE_DIR/nginx``, driven from nonstop's model."""

    def __init__(
        self,
        config: Config,
        command: NginxCommand,
        *,
        user: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        poll: float = POLL,
        home: str | None = None,
        system_pid: str | None = None,
        slot_seen: float = SLOT_SEEN + SWITCH_MARGIN,
        probe_fn: ProbeFn = probe,
        events: EventBus | None = None,
    ) -> None:
        self.config = config
        self.command = command
        self.user = user
        self.system_pid = system_pid
        self.slot_seen = slot_seen
        self.clock = clock
        self.poll = poll
        self.home = home or os.path.join(config.state_dir, "nginx")
        self.reloads = 0
        self._switched_at: float | None = None
        self.stats = UpstreamStats(stats_log(self.home))
        self.master: Master | None = None
        self._live: dict[str, str] = {}
        self._down: set[tuple[str, str]] = set()
        self._drained: set[tuple[str, str]] = set()  # (static upstream, server) by hand
        self._old_workers: set[int] = set()
        self._lock = asyncio.Lock()
        self._want = False
        self._applier: asyncio.Task[None] | None = None
        self._failure: NonstopError | None = None
        self._tasks = TaskOwner("nginx engine")  # the applier, the master's supervisor
        self._stopping = False
        self._apps: dict[str, tuple[ServerState, ...]] = {}
        self._checks = UpstreamChecks(self._mark, probe_fn, events)

    # -- paths ----------------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        return os.path.join(self.home, *parts)

    @property
    def conf(self) -> str:
        return self.path("conf", MAIN_FILE)

    @property
    def error_log(self) -> str:
        return self.path("logs", "error.log")

    # -- run-time state the render depends on --------------------------------------------

    def set_slot(self, app: str, slot: int) -> None:
        """Make ``slot`` the live one of ``app``; every worker sees it within ``SLOT_SEEN``
        (``switched`` waits that long)."""
        self._switched_at = self.clock.monotonic()
        flag = slot_flag(self.home, app)
        if slot == 1:
            os.makedirs(os.path.dirname(flag), exist_ok=True)
            with open(flag + ".tmp", "w") as handle:
                os.fchmod(handle.fileno(), 0o644)  # nginx's workers open it, as any user
                handle.write("nonstop: this file makes slot 1 live\n")
            os.replace(flag + ".tmp", flag)
        else:
            try:
                os.unlink(flag)
            except FileNotFoundError:
                pass

    def slot(self, app: str) -> int:
        return 1 if os.path.exists(slot_flag(self.home, app)) else 0

    async def switched(self) -> None:
        """Wait until every worker has seen the latest slot flag (and pending reloads)."""
        await self.settle()
        if self._switched_at is not None:
            left = self._switched_at + self.slot_seen - self.clock.monotonic()
            if left > 0:
                await asyncio.sleep(left)

    def set_down(self, upstream: str, address: str, down: bool) -> None:
        key = (upstream, address)
        if (key in self._down) != down:
            if down:
                self._down.add(key)
            else:
                self._down.discard(key)
            self.request_apply()

    def is_down(self, upstream: str, address: str) -> bool:
        return (upstream, address) in self._down

    def options(self, config: Config | None = None) -> RenderOptions:
        return RenderOptions(
            home=self.home,
            down=frozenset(self._down | self._drained),
            user=self._user(config or self.config),
            pid=self.system_pid,
        )

    def _user(self, config: Config) -> tuple[str, ...]:
        """nginx's ``user`` line: nginx.conf's (TOML: ``worker_user``), else nonstop's own
        user when it runs as root (nginx's default, ``nobody``, could reach nothing)."""
        account = config.worker_user
        if account is None:
            return (self.user,) if self.user else ()
        try:
            return (account.user, grp.getgrgid(account.gid).gr_name)
        except KeyError:
            raise ConfigError(
                f"group {account.gid} of user {account.user!r} has no name for nginx's "
                '"user" directive'
            ) from None

    # -- the Engine interface ----------------------------------------------------------------

    async def apply(self, config: Config) -> None:
        """Render, check and reload onto ``config``; the apps' slots are files, untouched.
        Servers drained by hand stay drained while the config has them."""
        self._keeps_running_ports(config)
        kept = {(u, a) for u, a in self._drained if _has_server(config, u, a)}
        for upstream, address in self._drained - kept:
            log.warning("upstream %s server %s left the config: undrained", upstream, address)
        self._drained = kept
        await self.update(config)
        self._checks.sync(config.upstreams)

    def _keeps_running_ports(self, config: Config) -> None:
        """Refuse a config that moves a running app's servers: nginx's slot upstreams are
        rendered from the config's ports, so the live release would lose its traffic.
        (The embedded engine takes such a reload as a plan for the next deploy.)"""
        before = {app.name: app for app in self.config.apps}
        for app in config.apps:
            old = before.get(app.name)
            moved = [
                server.address
                for server in self._apps.get(app.name, ())
                if old is None
                or server_spec(app, server.spec.port).address != server.address
                or server.spec.port not in app.ports
                or slot_of(app, server.spec.port) != slot_of(old, server.spec.port)
            ]
            if moved:
                raise ConfigError(
                    f"with engine nginx, a reload cannot move {app.name}'s servers "
                    f"{', '.join(moved)} to other ports, host or slot while they run: keep "
                    "them for this reload (the embedded engine takes it as a plan for the "
                    "next deploy), or restart nonstop"
                )

    async def set_servers(self, app: str, servers: tuple[ServerState, ...]) -> None:
        """Move the app's slot flag to where its primary servers are, and wait until every
        worker has seen it.

        The app's servers are fixed in the render, one upstream per slot: the live slot
        is the one holding the primary (not draining, not backup) servers.  Health marks
        are kept for ``status`` but not rendered: a crashed instance is refused at
        connect and nginx passes the request on.  A server new to the set has its
        answers counted from now, as the embedded proxy counts them.
        """
        known = {s.address for s in self._apps.get(app, ())}
        for server in servers:
            if server.address not in known:
                self.stats.reset(server.address)
        self._apps[app] = servers
        spec = next((a for a in self.config.apps if a.name == app), None)
        if spec is not None:
            for server in servers:
                if not server.draining and not server.spec.backup:
                    slot = slot_of(spec, server.spec.port)
                    if slot != self.slot(app):
                        self.set_slot(app, slot)
                    break
        await self.switched()

    async def drain(self, app: str, addresses: frozenset[str], timeout: float) -> int:
        ports = frozenset(int(a.rsplit(":", 1)[1]) for a in addresses)
        return await self.drain_ports(ports, timeout)

    async def drain_server(self, upstream: str, address: str, timeout: float) -> int:
        """Render the server ``down`` and reload: nginx OSS has no API to take a server
        out, so new workers start without it, and the old ones finish what they hold.
        Drained once no worker from before the reload runs and nginx holds no connection
        to the server.  The reload closes idle client keep-alive connections (the old
        workers close theirs), as every nginx reload does."""
        check_static_server(self.config.upstream(upstream), upstream, address)
        peers = await _resolve(address)
        if (upstream, address) not in self._drained:
            self._drained.add((upstream, address))
            try:
                await self.update()
            except NonstopError:
                self._drained.discard((upstream, address))
                raise
            log.warning("upstream %s server %s is draining (nonstop drain)", upstream, address)
        return await self._drained_within(lambda: self.command.connections_to(peers), timeout)

    async def undrain_server(self, upstream: str, address: str) -> None:
        check_static_server(self.config.upstream(upstream), upstream, address)
        if (upstream, address) in self._drained:
            self._drained.discard((upstream, address))
            await self.update()
            log.warning("upstream %s server %s is back (nonstop undrain)", upstream, address)

    async def servers(self, app: str) -> tuple[ServerReport, ...]:
        reports = []
        for server in self._apps.get(app, ()):
            state = "draining" if server.draining else ("up" if server.healthy else "down")
            answers, errors = self.stats.counts(server.address)
            reports.append(ServerReport(server.address, state, 0, answers, errors))
        return tuple(reports)

    async def supports_backup(self, app: str) -> bool:
        up = self.config.upstream(app)
        return up is not None and up.method in BACKUP_METHODS

    async def status(self, app: str | None) -> Mapping[str, Any]:
        return {
            "engine": "nginx",  # which counts nginx keeps to itself: no "connections"
            "listen": list(self.listens()),
            "nginx": self.describe(),
            "upstreams": self.upstreams(app),
        }

    def listens(self) -> tuple[str, ...]:
        """The addresses the config listens on (nginx binds them)."""
        seen: dict[str, None] = {}
        for server in self.config.servers:
            for listen in server.listens:
                host = f"[{listen.host}]" if ":" in listen.host else listen.host
                seen[f"{host}:{listen.port}"] = None
        return tuple(seen)

    def _mark(self, upstream: str, address: str, healthy: bool) -> None:
        self.set_down(upstream, address, not healthy)

    # -- apply: render, check, swap, reload -------------------------------------------------

    async def update(self, config: Config | None = None) -> bool:
        """Make nginx run ``config`` (default: the current one) with the current state.

        Returns whether anything changed.  Raises ``NginxRejected`` (nginx's message)
        when the check fails, ``NginxFailed`` when nginx did not take a checked config;
        either way the files nginx runs from are the previous ones.
        """
        async with self._lock:
            config = config or self.config
            self._let_workers_in(config)
            files = dict(render(config, self.options(config)).files)
            if files == self._live:
                self.config = config
                return False
            self._prepare_dirs(config)
            await self._check(files)
            previous = self._live
            _write_tree(self.path("conf"), files, previous)
            self._live = files
            if self.master is not None and self.master.returncode is None:
                try:
                    await self._reload()
                except NginxFailed:
                    _write_tree(self.path("conf"), previous, files)
                    self._live = previous
                    raise
            self.config = config
            return True

    async def check(self) -> str:
        """``nginx -t`` on the render of the current config; nginx's words if it passed."""
        self._prepare_dirs()
        return await self._check(dict(render(self.config, self.options()).files))

    async def _check(self, files: Mapping[str, str]) -> str:
        staging = self.path("next")
        _write_tree(staging, files, {})
        result = await self.command.check(
            self.home, os.path.join(staging, MAIN_FILE), self.error_log
        )
        if not result.ok:
            raise NginxRejected(result.output.strip())
        return result.output.strip()

    async def _reload(self) -> None:
        assert self.master is not None
        before = self.command.workers(self.master.pid)
        self.command.signal(self.master.pid, signal.SIGHUP)
        deadline = self.clock.monotonic() + RELOAD_TIMEOUT
        while not self._reloaded(before):
            if self.master.returncode is not None or self.clock.monotonic() >= deadline:
                raise NginxFailed(f"nginx did not apply the new config: {self.log_tail()}")
            await asyncio.sleep(self.poll)
        self._old_workers |= before
        self.reloads += 1

    def _reloaded(self, before: frozenset[int]) -> bool:
        """New workers run the new config and none of the old ones takes new requests.

        The master starts the new workers first and tells the old ones to quit about
        100 ms later; until then an old worker still accepts, with the old config.
        """
        assert self.master is not None
        if not self.command.workers(self.master.pid) - before:
            return False
        return all(self.command.retiring(pid) for pid in before)

    def request_apply(self) -> None:
        """Apply soon (from synchronous code): changes made meanwhile share one reload."""
        self._want = True
        if self._applier is None or self._applier.done():
            self._applier = self._tasks.spawn(self._apply_pending(), "apply to nginx")

    async def _apply_pending(self) -> None:
        while self._want:
            self._want = False
            try:
                await self.update()
                self._failure = None
            except NonstopError as exc:
                log.error("nginx config not applied, the running one stays: %s", exc)
                self._failure = exc

    async def settle(self) -> None:
        """Wait until every requested change is applied; raise if the last one failed."""
        while self._applier is not None and not self._applier.done():
            await asyncio.shield(self._applier)
        if self._failure is not None:
            raise self._failure

    # -- drain ------------------------------------------------------------------------------

    async def drain_ports(self, ports: frozenset[int], timeout: float) -> int:
        """Wait until nginx holds no connection to ``ports`` and no pre-reload worker runs.

        Bounded by ``timeout``; returns what was still open when it ended (0 = drained):
        connections to those ports, plus workers from before the latest reload (the only
        processes that may still send to a server the new config no longer has).
        """
        await self.switched()  # a worker that has not seen the switch may still connect
        return await self._drained_within(lambda: self.command.connections(ports), timeout)

    async def _drained_within(self, connections: Callable[[], int], timeout: float) -> int:
        """Poll until no pre-reload worker runs and ``connections()`` is 0, at most
        ``timeout`` seconds; what was left (0 = drained)."""
        deadline = self.clock.monotonic() + timeout
        while True:
            left = len(self.old_workers()) + connections()
            if not left or self.clock.monotonic() >= deadline:
                return left
            await asyncio.sleep(self.poll)

    def old_workers(self) -> frozenset[int]:
        if self.master is None:
            self._old_workers.clear()
            return frozenset()
        self._old_workers &= self.command.workers(self.master.pid)
        return frozenset(self._old_workers)

    # -- the master's life ----------------------------------------------------------------

    async def start(self) -> tuple[str, ...]:
        """Check and write the config, start nginx in the foreground, wait for workers.

        With a system nginx: write the config, attach to its master if it is up (else
        keep looking for it), and reload it onto the render.
        """
        self._checks.sync(self.config.upstreams)
        if self.system_pid is None:
            self._adopt()
        await self.update()  # reloads an adopted master only if the render changed
        if self.system_pid is not None:
            await self._attach(first=True)
            self._tasks.spawn(self._watch_system(), "watch the system's nginx")
            return self.listens()
        if self.master is None:
            await self._spawn()
        self._tasks.spawn(self._supervise(), "supervise nginx")
        return self.listens()

    def _adopt(self) -> None:
        """Drive the nginx an earlier nonstop left running under this home (after an
        upgrade, a SIGKILL or a crash) instead of starting one: it keeps its workers, its
        listening sockets and every client connection.

        Only the master in our own pid file, titled as a master with our prefix and
        running our ``conf/nginx.conf``; the files it runs are taken as the live ones,
        so it is reloaded only if the render differs.
        """
        pid = _orphan_master(os.path.join(self.home, "nginx.pid"), self.home)
        if pid is None:
            return
        try:
            master = self.command.attach(os.path.join(self.home, "nginx.pid"), self.conf)
        except AttachFailed as exc:
            log.warning("not adopting nginx master %d: %s", pid, exc)
            return
        self.master = master
        self._old_workers.clear()
        self._live = _read_tree(self.path("conf"), render(self.config, self.options()).files)
        log.info("adopted nginx master %d left running by an earlier nonstop", master.pid)

    async def _attach(self, first: bool = False) -> bool:
        """Find the system's master; once found, reload it so it runs the current render."""
        assert self.system_pid is not None
        try:
            master = self.command.attach(self.system_pid, self.conf)
        except AttachFailed as exc:
            if first:
                log.warning("%s; nonstop drives it once it is up", exc)
            return False
        async with self._lock:
            self.master = master
            self._old_workers.clear()
            while not self.command.workers(master.pid) and master.returncode is None:
                await asyncio.sleep(self.poll)  # a master that is still starting
            await self._reload()
        log.info("driving nginx master %d (pid file %s)", master.pid, self.system_pid)
        return True

    async def _watch_system(self) -> None:
        """Attach again whenever the system's master is gone and another one is up."""
        while not self._stopping:
            if self.master is not None and self.master.returncode is None:
                await self.master.wait()
                if self._stopping:
                    return
                log.error(
                    "nginx master %d exited; waiting for the system to start it", self.master.pid
                )
                self.master = None
                self._old_workers.clear()
            if not await self._attach():
                await asyncio.sleep(ATTACH_POLL)

    async def _spawn(self) -> None:
        self._prepare_dirs()
        await self._reclaim_orphan()
        master = await self.command.start(
            self.home, self.conf, self.error_log, self.path("logs", "stderr.log")
        )
        deadline = self.clock.monotonic() + START_TIMEOUT
        while not self.command.workers(master.pid):
            if master.returncode is not None or self.clock.monotonic() >= deadline:
                if master.returncode is None:
                    await self._stop_master(master, 1.0)
                raise NginxFailed(f"nginx did not start: {self.log_tail()}")
            await asyncio.sleep(self.poll)
        self.master = master
        log.info("nginx master %d started with %s", master.pid, self.conf)

    async def _supervise(self) -> None:
        """Restart nginx if its master dies (not on our own stop)."""
        while not self._stopping:
            assert self.master is not None
            code = await self.master.wait()
            if self._stopping:
                return
            log.error("nginx master %d exited (code %d): restarting", self.master.pid, code)
            self._old_workers.clear()
            while not self._stopping:
                try:
                    await self._spawn()
                    break
                except NginxFailed as exc:
                    log.error("%s", exc)
                    await asyncio.sleep(1.0)

    async def shutdown(self, timeout: float, idle_grace: float = 0.0) -> None:
        """SIGQUIT (graceful: in-flight requests finish), then SIGTERM, then SIGKILL;
        nginx closes its idle connections as its own graceful quit does (``idle_grace``
        is the embedded proxy's)."""
        await self._let_go()
        if self.system_pid is not None:
            return  # the system's nginx keeps serving; it is not nonstop's to stop
        if self.master is not None and self.master.returncode is None:
            await self._stop_master(self.master, timeout)
            log.info("nginx master %d stopped", self.master.pid)

    def listening(self) -> list[tuple[int, int]]:
        return []  # nginx keeps its own listening sockets, and keeps running

    async def hand_over(self, timeout: float) -> None:
        """After an upgrade: nginx keeps serving, driven by the new nonstop (``_adopt``)."""
        await self._let_go()
        if self.master is not None and self.master.returncode is None:
            log.info("nginx master %d left serving for the new nonstop", self.master.pid)

    async def _let_go(self) -> None:
        """Stop driving nginx: no more checks, reloads or supervision."""
        self._stopping = True
        await self._checks.close()
        if self._applier is not None:  # a change being applied is finished, not cut
            await asyncio.gather(self._applier, return_exceptions=True)
        await self._tasks.close()

    async def _reclaim_orphan(self) -> None:
        """Stop an nginx a killed nonstop left running under this home: it holds our ports.

        Acts only on the pid in our own pid file, and only if that process is an nginx
        master started with our prefix (its title names it), never on anything else.
        """
        pid = _orphan_master(os.path.join(self.home, "nginx.pid"), self.home)
        if pid is None:
            return
        log.warning("stopping nginx master %d left running by an earlier nonstop", pid)
        for signum in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            try:
                self.command.signal(pid, signum)
            except ProcessLookupError:
                return
            deadline = self.clock.monotonic() + KILL_GRACE * 2
            while self.clock.monotonic() < deadline:
                if not os.path.exists(f"/proc/{pid}"):
                    return
                await asyncio.sleep(self.poll)

    async def _stop_master(self, master: Master, timeout: float) -> None:
        for signum, wait in (
            (signal.SIGQUIT, timeout),
            (signal.SIGTERM, KILL_GRACE),
            (signal.SIGKILL, KILL_GRACE),
        ):
            try:
                self.command.signal(master.pid, signum)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(master.wait(), wait)
                return
            except TimeoutError:
                continue

    async def metrics(self) -> Mapping[str, Any] | None:
        """None: nginx OSS counts no requests per upstream server that nonstop could
        read (its stub_status has connection totals only), so /metrics leaves the
        data-plane series out rather than report some of them."""
        return None

    async def reopen_logs(self) -> None:
        if self.master is not None and self.master.returncode is None:
            self.command.signal(self.master.pid, signal.SIGUSR1)

    # -- status -----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        master = self.master
        running = master is not None and master.returncode is None
        return {
            "mode": "system" if self.system_pid is not None else "child",
            "pid_file": self.system_pid or self.path("nginx.pid"),
            "master": master.pid if master is not None and running else None,
            "workers": sorted(self.command.workers(master.pid)) if master and running else [],
            "draining_workers": sorted(self.old_workers()),
            "reloads": self.reloads,
            "conf": self.conf,
            "error_log": self.error_log,
            "access_log": self.path("logs", "access.log"),
            "upstream_log": self.stats.path,
            "live_upstreams": {
                app.name: slot_upstream(app.name, self.slot(app.name)) for app in self.config.apps
            },
        }

    def upstreams(self, name: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """What each upstream's servers look like in the running config."""
        out: dict[str, list[dict[str, Any]]] = {}
        apps = {app.name: app for app in self.config.apps}
        for up in self.config.upstreams:
            if up.implicit or (name is not None and up.name != name):
                continue
            if up.app and up.name in apps:
                live = self.slot(up.name)
                servers = [server_spec(apps[up.name], p) for p in slot_ports(apps[up.name], live)]
            else:
                servers = list(up.servers)
            out[up.name] = [
                {
                    "address": s.address,
                    "state": self._state(up.name, s),
                    "backup": s.backup,
                    "weight": s.weight,
                }
                for s in servers
            ]
        return out

    def _state(self, upstream: str, server: ServerSpec) -> str:
        if (upstream, server.address) in self._drained:
            return "draining"
        return "down" if server.down or self.is_down(upstream, server.address) else "up"

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of nginx's error log (and its stderr), for error messages."""
        text = ""
        for name in ("error.log", "stderr.log"):
            try:
                with open(self.path("logs", name), errors="replace") as handle:
                    text += handle.read()[-4000:]
            except OSError:
                continue
        kept = [line for line in text.splitlines() if line.strip()]
        return " | ".join(kept[-lines:]) or "(nginx's error log is empty)"

    def _prepare_dirs(self, config: Config | None = None) -> None:
        """nginx's own directories, and those of the access logs the config names."""
        for sub in ("conf", "next", "logs", "temp", "slots"):
            os.makedirs(self.path(sub), exist_ok=True)
        if self.system_pid is not None:  # `nginx -t` opens the pid file, creating it
            os.makedirs(os.path.dirname(self.system_pid), exist_ok=True)
        for server in (config or self.config).servers:
            for logs in (server.access_log, *(loc.access_log for loc in server.locations)):
                for log_spec in logs or ():
                    os.makedirs(os.path.dirname(log_spec.path) or ".", exist_ok=True)

    def _let_workers_in(self, config: Config) -> None:
        """With nginx.conf's ``user``, nginx's workers are that user, and they open their
        temp files and look the slot flags up by name: nginx's home, its ``temp`` and
        ``slots`` and the state directory holding them let every user pass through
        (0711), not list; nginx makes each temp path the user's itself.  Done before the
        check and the reload, and never undone by nonstop: workers of an earlier config
        may still be that user, and a flag they could not see would send their traffic
        to the other slot (nothing in the directories is readable by others: 0600 files,
        0700 directories).  ConfigError if a directory above still bars the way: the
        workers would fail every spooled upload and never see a slot switch."""
        account = config.worker_user
        if account is None:
            return
        os.makedirs(self.path("temp"), exist_ok=True)
        os.makedirs(self.path("slots"), exist_ok=True)
        state_dir = os.path.realpath(config.state_dir)
        if os.path.commonpath((os.path.realpath(self.home), state_dir)) == state_dir:
            set_state_dir_mode(state_dir, passable=True)
        for directory in (self.home, self.path("temp"), self.path("slots")):
            _let_through(directory)
        for flag in os.listdir(self.path("slots")):  # written 0600 by an earlier nonstop
            with contextlib.suppress(OSError):
                os.chmod(self.path("slots", flag), 0o644)
        for directory in (self.path("temp"), self.path("slots")):
            barred = unreachable(directory, account)
            if barred is not None:
                where, bit = barred
                raise ConfigError(
                    f'nginx\'s workers run as "{account.user}" ("user") and cannot reach '
                    f"{directory}: {where} does not let them pass; let them search it "
                    f"(chmod {bit}+x {where}) or choose a state_dir they can reach"
                )


def _let_through(directory: str) -> None:
    """Every user may pass through ``directory`` (search, x), not list it."""
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(os.stat(directory).st_mode)
        if mode & 0o011 != 0o011:
            os.chmod(directory, mode | 0o011)


def _write_tree(root: str, files: Mapping[str, str], previous: Mapping[str, str]) -> None:
    """Write each file atomically (a rename), and remove the ones no longer rendered."""
    for relative, text in files.items():
        if previous.get(relative) == text:
            continue
        target = os.path.join(root, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + ".tmp", "w") as handle:
            handle.write(text)
        os.replace(target + ".tmp", target)
    for relative in set(previous) - set(files):
        try:
            os.unlink(os.path.join(root, relative))
        except FileNotFoundError:
            pass


def _read_tree(root: str, files: Mapping[str, str]) -> dict[str, str]:
    """The files of ``files`` as they are under ``root`` now (those that exist)."""
    found = {}
    for relative in files:
        try:
            with open(os.path.join(root, relative)) as handle:
                found[relative] = handle.read()
        except OSError:
            continue
    return found


def _orphan_master(pidfile: str, home: str, proc: str = "/proc") -> int | None:
    """The pid in ``pidfile`` if it is a running nginx master with prefix ``home``."""
    try:
        pid = read_pid(pidfile)
    except AttachFailed:
        return None
    title = process_title(pid, proc)
    if "nginx: master process" in title and home.rstrip("/") in title:
        return pid
    return None


def _has_server(config: Config, upstream: str, address: str) -> bool:
    spec = config.upstream(upstream)
    return spec is not None and any(s.address == address for s in spec.servers)


async def _resolve(address: str) -> frozenset[tuple[str, int]]:
    """The (IP, port) pairs nginx connects to for the server ``address`` (``HOST:PORT``;
    nginx resolves a name when it loads its config)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM
        )
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot resolve the server {address}: {exc}") from None
    return frozenset((str(sockaddr[0]), int(sockaddr[1])) for *_, sockaddr in found)
