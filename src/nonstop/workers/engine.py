"""``WorkersEngine``: the embedded proxy in N worker processes, behind the ``Engine`` interface.

The control process (the daemon) keeps everything that is not moving bytes: the config,
the listening sockets, each app's server set, the servers drained by hand, the active
checks and their verdicts.  Each worker (``nonstop.workers.worker``) runs an
``EmbeddedEngine`` on duplicates of the listening sockets and is told every change over
its channel.  An engine call fans out to every worker and is answered from all of them:

- ``set_servers`` and ``apply`` return once every worker applied them, so a deploy's
  switch reaches every worker before the old release is drained;
- ``drain`` sums what each worker still has in flight, so it ends only when no worker
  holds a request to the drained servers;
- ``servers`` and ``status`` add up the workers' counts (balancer state is per worker,
  as in nginx without a ``zone``).

A worker that exits is logged as nginx logs it ("worker process 1234 exited on signal 9")
and replaced; the replacement is started with the state as it is now (config, sockets,
server sets, drains, health verdicts), and is in the fan-out from the moment it is
started, so no change can miss it.  A call to a worker that dies before answering counts
as answered: its requests died with it, and its replacement starts from the current state.
Each worker index has its own listening sockets (``SO_REUSEPORT``, ``workers/sockets.py``),
which stay open in the control process all along: the replacement inherits them with the
connections queued on them, so none is lost with the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from nonstop.config.model import Config
from nonstop.config.units import worker_cpus
from nonstop.config.vocabulary import BACKUP_METHODS
from nonstop.engines.base import IDLE_GRACE, check_static_server
from nonstop.engines.checks import UpstreamChecks
from nonstop.events import EventBus
from nonstop.health.checker import ProbeFn, probe
from nonstop.proxy.metrics import merge as merge_metrics
from nonstop.proxy.server import ProxyState
from nonstop.proxy.tls import TlsContexts
from nonstop.servers import ServerReport, ServerState
from nonstop.workers.channel import Channel, Message
from nonstop.workers.privileges import Handover, for_workers, prepare
from nonstop.workers.replies import BadReply, checked
from nonstop.workers.sockets import WorkerSockets

__all__ = ["WorkerGone", "WorkersEngine"]

log = logging.getLogger("nonstop")

# what a worker's answers are made of, besides plain data and exceptions (the control
# process unpickles nothing else from a worker: nonstop.workers.channel)
REPLY_TYPES: frozenset[type] = frozenset({ServerReport})
# a worker that has not applied a reload (or reopened its logs) by then is stuck (or
# stopped with SIGSTOP): it is killed and replaced from the new config, so one worker
# cannot hold every later reload.  Applying takes milliseconds, a big TLS config seconds:
# the limit is this, or ten times what checking the config took this process, if longer.
APPLY_LIMIT = 10.0
START_LIMIT = 60.0  # a new worker that does not serve by then is killed (and started again)
RESPAWN_PAUSE = 1.0  # a worker that dies within this long of its start is restarted after it


class WorkerGone(Exception):
    """The worker exited before it answered."""


class _Worker:
    """One worker process as the control process sees it: its process and its channel."""

    def __init__(self, index: int, process: asyncio.subprocess.Process, channel: Channel) -> None:
        self.index = index
        self.process = process
        self.channel = channel
        self.started = time.monotonic()
        self._next = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, name: str, *args: Any, fds: Sequence[int] = ()) -> asyncio.Future[Any]:
        """Send a call; the future gets its answer, or ``WorkerGone``."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.channel.closed:
            future.set_exception(WorkerGone())
            return future
        self._next += 1
        self._pending[self._next] = future
        self.channel.send(("call", self._next, (name, args)), fds)
        return future

    def cast(self, name: str, *args: Any) -> None:
        self.channel.send(("cast", 0, (name, args)))

    def answered(self, message: Message, fds: list[int]) -> None:
        try:
            ident, ok, value = checked(message)  # fds: none, the channel closed them
        except BadReply as exc:  # not what nonstop sends: the worker is let go, replaced
            log.error("worker process %d sent %s: killed", self.pid, exc)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.channel.close()
            return
        future = self._pending.pop(ident, None)
        if future is None or future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def gone(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerGone())
                future.exception()  # retrieved: a fan-out may have stopped listening
        self._pending.clear()


class WorkersEngine:
    """N worker processes serving the config; this process owns what they share."""

    def __init__(
        self,
        config: Config,
        *,
        probe_fn: ProbeFn = probe,
        events: EventBus | None = None,
        grace: float = 30.0,
    ) -> None:
        self._config = config
        self._grace = grace
        self._sockets = WorkerSockets()
        self._servers: dict[str, tuple[ServerState, ...]] = {}
        self._drained: dict[str, set[str]] = {}  # static upstream -> servers drained by hand
        self._marks: dict[tuple[str, str], bool] = {}  # the active checks' verdicts
        self._workers: dict[int, _Worker] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._checks = UpstreamChecks(self._mark, probe_fn, events)
        self.respawns = 0
        # the CPUs this process may run on: worker_cpu_affinity auto picks among them, and
        # a worker no longer bound gets them all back
        self._allowed = frozenset(os.sched_getaffinity(0))
        # nginx.conf's user: the files the workers are handed (nonstop.workers.privileges)
        self._handover = Handover()
        self._handing = asyncio.Lock()  # one reload or log reopening at a time

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> tuple[str, ...]:
        self._sockets.open(self._config, range(self._config.workers))
        try:
            self._handover = prepare(self._config)
            await asyncio.gather(*(self._spawn(i) for i in range(self._config.workers)))
        except BaseException:
            await self.shutdown(1.0)
            raise
        self._sync_checks()
        log.info(
            "%d worker processes: %s",
            len(self._workers),
            ", ".join(str(w.pid) for w in self._workers.values()),
        )
        return tuple(self._sockets.addresses())

    async def apply(self, config: Config) -> None:
        checking = time.monotonic()
        ProxyState.check(config)  # raises ConfigError; nothing has changed yet
        TlsContexts().load(config)  # a bad certificate is refused here, not in a worker
        limit = max(APPLY_LIMIT, 10 * (time.monotonic() - checking))
        # one at a time with log reopening (which would hand over the old files) and with
        # replacing a dead worker (which would start it from the old config)
        async with self._handing:
            await self._apply(config, limit)

    async def _apply(self, config: Config, limit: float) -> None:
        handover = prepare(config)
        try:
            # every socket the config needs, the new workers' too, before any worker
            # applies it: a reload refused for want of one changes nothing
            opened = self._sockets.open(config, {*self._workers, *range(config.workers)})
        except BaseException:
            handover.close()
            raise
        try:
            await self._all(
                "apply", for_workers(config), sockets=config, handover=handover, limit=limit
            )
        except BaseException:
            self._sockets.close(opened)
            handover.close()
            raise
        self._handover.close()
        self._handover = handover
        old, self._config = self._config, config
        if (old.cpu_affinity, old.worker_priority) != (config.cpu_affinity, config.worker_priority):
            for worker in self._workers.values():
                self._place(worker.index, worker.pid, old)
        # a worker that died meanwhile keeps its sockets, with what is queued on them, for
        # the one that replaces it
        self._sockets.keep(config, {*self._workers, *range(config.workers)})
        self._forget_drained(config)
        await self._resize(config.workers)
        self._sync_checks()

    async def reopen_logs(self) -> None:
        async with self._handing:
            old = self._handover
            self._handover = prepare(self._config, old.handed.pem)
            old.close()  # the logs opened anew; a worker started from now on gets them too
            await self._all("reopen_logs", handover=self._handover, limit=APPLY_LIMIT)

    async def shutdown(self, timeout: float, idle_grace: float = 0.0) -> None:
        """Every worker stops accepting and finishes its in-flight requests within
        ``timeout``; then the listening sockets close (in this process: after an upgrade
        the new nonstop holds them open)."""
        self._stopping = True
        await self._checks.close()
        workers = list(self._workers.values())
        for worker in workers:
            worker.call("shutdown", timeout, idle_grace)
        exits = [asyncio.ensure_future(w.process.wait()) for w in workers]
        if exits:
            _done, late = await asyncio.wait(exits, timeout=timeout + 5.0)
            for worker in workers:
                if worker.process.returncode is None:
                    log.error("worker process %d did not stop: killed", worker.pid)
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            if late:
                await asyncio.wait(late, timeout=5.0)
        for worker in workers:
            worker.channel.close()
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._sockets.close()
        self._handover.close()

    def listening(self) -> list[tuple[int, int]]:
        return self._sockets.all()

    async def hand_over(self, timeout: float) -> None:
        await self.shutdown(timeout, IDLE_GRACE)

    # -- an app's servers -------------------------------------------------------------

    async def set_servers(self, app: str, servers: tuple[ServerState, ...]) -> None:
        self._servers[app] = servers
        await self._all("set_servers", app, servers)

    async def drain(self, app: str, addresses: frozenset[str], timeout: float) -> int:
        left = await self._all("drain", app, addresses, timeout)
        return sum(int(n) for n in left)

    async def servers(self, app: str) -> tuple[ServerReport, ...]:
        answers: list[tuple[ServerReport, ...]] = await self._all("servers", app)
        return merge_reports(answers)

    async def drain_server(self, upstream: str, address: str, timeout: float) -> int:
        check_static_server(self._config.upstream(upstream), upstream, address)
        self._drained.setdefault(upstream, set()).add(address)
        left = await self._all("drain_server", upstream, address, timeout)
        return sum(int(n) for n in left)

    async def undrain_server(self, upstream: str, address: str) -> None:
        check_static_server(self._config.upstream(upstream), upstream, address)
        self._drained.get(upstream, set()).discard(address)
        await self._all("undrain_server", upstream, address)

    async def supports_backup(self, app: str) -> bool:
        spec = self._config.upstream(app)
        return spec is not None and spec.method in BACKUP_METHODS

    async def status(self, app: str | None) -> Mapping[str, Any]:
        workers = list(self._workers.values())
        answers = await asyncio.gather(
            *(w.call("status", app) for w in workers), return_exceptions=True
        )
        each = [a for a in answers if isinstance(a, Mapping)]
        upstreams: dict[str, list[dict[str, Any]]] = {}
        for answer in each:
            for name, snapshot in answer.get("upstreams", {}).items():
                upstreams[name] = merge_snapshots(upstreams.get(name), snapshot)
        return {
            "connections": sum(int(a.get("connections", 0)) for a in each),
            "listen": self._sockets.addresses(),
            "workers": [
                {
                    "pid": w.pid,
                    "connections": a.get("connections") if isinstance(a, Mapping) else None,
                }
                for w, a in zip(workers, answers, strict=True)
            ],
            "worker_restarts": self.respawns,
            "upstreams": upstreams,
        }

    async def metrics(self) -> Mapping[str, Any] | None:
        """The workers' request counters added up (a worker replaced starts from zero, so
        a counter may go down once: Prometheus reads that as a reset)."""
        return merge_metrics(await self._all("metrics"))

    # -- workers ----------------------------------------------------------------------

    async def _spawn(self, index: int) -> None:
        """Start worker ``index`` and give it the state as it is now; answered once it
        serves."""
        await self._serving(*await self._launch(index))

    async def _serving(self, worker: _Worker, started: asyncio.Future[Any]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(started), START_LIMIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()  # its watcher replaces it, after RESPAWN_PAUSE
            raise OSError(
                f"worker process {worker.pid} did not start in {START_LIMIT:.0f} s: killed"
            ) from None
        except WorkerGone:
            raise OSError(f"worker process {worker.pid} exited while starting") from None

    async def _launch(self, index: int) -> tuple[_Worker, asyncio.Future[Any]]:
        """Worker ``index`` started and sent the state as it is now (its ``start`` call
        not answered yet: from here on, every change reaches it anyway)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "nonstop.workers",
                "--channel",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            # the interpreter itself, as this process runs it (a venv under a directory
            # the user cannot enter, a Python removed by an upgrade of the system)
            raise OSError(
                f"cannot start a worker process: {sys.executable}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._place(index, process.pid, None)
        loop = asyncio.get_running_loop()
        box: list[_Worker] = []
        channel = Channel(
            loop,
            ours,
            lambda m, fds: box[0].answered(m, fds),
            lambda: box[0].gone(),
            replies=REPLY_TYPES,
        )
        worker = _Worker(index, process, channel)
        box.append(worker)
        # from here on every change reaches it: the snapshot and the fan-out are one step
        self._workers[index] = worker
        keys, fds = self._sockets.of(self._config, index)
        handover = self._handover
        started = worker.call(
            "start",
            for_workers(self._config),
            keys,
            dict(self._servers),
            {up: sorted(addresses) for up, addresses in self._drained.items()},
            dict(self._marks),
            self._grace,
            handover.handed,
            fds=[*fds, *handover.fds],
        )
        watcher = loop.create_task(self._watch(worker))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return worker, started

    def _place(self, index: int, pid: int, before: Config | None) -> None:
        """worker_cpu_affinity and worker_priority for worker ``index`` (``before``: the
        config it ran under, on a reload).  A failure is logged; the worker serves anyway,
        as nginx's does."""
        config = self._config
        cpus = worker_cpus(config.cpu_affinity, index, self._allowed)
        if cpus is not None or (before is not None and before.cpu_affinity):
            target = cpus if cpus is not None else self._allowed  # unbound again: all of them
            shown = ",".join(map(str, sorted(target)))
            try:
                os.sched_setaffinity(pid, target)
            except OSError as exc:
                log.error(
                    "sched_setaffinity() of worker process %d to CPUs %s failed (%s)",
                    pid,
                    shown,
                    exc.strerror or exc,
                )
            else:
                if cpus is not None:
                    log.info("worker process %d: using CPU %s", pid, shown)
        if config.worker_priority or (before is not None and before.worker_priority):
            try:
                if os.getpriority(os.PRIO_PROCESS, pid) != config.worker_priority:
                    os.setpriority(os.PRIO_PROCESS, pid, config.worker_priority)
            except OSError as exc:
                log.error(
                    "setpriority(%d) of worker process %d failed (%s)",
                    config.worker_priority,
                    pid,
                    exc.strerror or exc,
                )

    async def _watch(self, worker: _Worker) -> None:
        """Replace ``worker`` when it exits, unless nonstop is stopping."""
        code = await worker.process.wait()
        worker.channel.close()
        if self._stopping or self._workers.get(worker.index) is not worker:
            return
        if code < 0:
            log.critical(
                "worker process %d exited on signal %d",
                worker.pid,
                -code,
                extra={"nginx_level": "alert"},
            )
        else:
            log.critical(
                "worker process %d exited with code %d",
                worker.pid,
                code,
                extra={"nginx_level": "alert"},
            )
        del self._workers[worker.index]
        if time.monotonic() - worker.started < RESPAWN_PAUSE:
            await asyncio.sleep(RESPAWN_PAUSE)  # a worker that cannot start: not in a loop
        if self._stopping or worker.index in self._workers:
            return
        try:
            # after a reload in progress, from the config it sets (the lock is not held
            # while the new worker starts: one that hangs cannot hold every later reload)
            async with self._handing:
                if self._stopping or worker.index in self._workers:
                    return  # the reload started it again
                self.respawns += 1
                launched = await self._launch(worker.index)
            await self._serving(*launched)
        except (OSError, Exception) as exc:
            log.error("worker process %d could not be replaced: %s", worker.index, exc)
            return
        log.warning("start worker process %d", launched[0].pid)

    async def _resize(self, count: int) -> None:
        """After a reload that changed ``worker_processes``: start or stop the difference
        (the new workers' sockets were opened by ``_apply``, before any worker applied)."""
        for index in [i for i in self._workers if i >= count]:
            worker = self._workers.pop(index)
            worker.call("shutdown", self._grace)
        missing = [i for i in range(count) if i not in self._workers]
        self._sockets.keep(self._config, range(count))
        await asyncio.gather(*(self._spawn(i) for i in missing))

    async def _all(
        self,
        name: str,
        *args: Any,
        sockets: Config | None = None,
        handover: Handover | None = None,
        limit: float | None = None,
    ) -> list[Any]:
        """``name`` called in every worker at once; their answers (a worker that died
        before answering is left out); the first error any of them raised.  With
        ``sockets``, each worker is also passed its listening sockets for that config
        (their keys an argument); with ``handover``, the files handed to it (its
        ``Handed`` the last argument, the descriptors after the sockets').  A worker
        that has not answered within ``limit`` seconds is killed (and replaced)."""
        futures = []
        workers = list(self._workers.values())
        for worker in workers:
            more: list[Any] = []
            fds: list[int] = []
            if sockets is not None:
                keys, fds = self._sockets.of(sockets, worker.index)
                more.append(keys)
            if handover is not None:
                more.append(handover.handed)
                fds = [*fds, *handover.fds]
            futures.append(worker.call(name, *args, *more, fds=fds))
        if limit is not None and futures:
            await asyncio.wait(futures, timeout=limit)
            for worker, future in zip(workers, futures, strict=True):
                if not future.done():
                    log.critical(
                        "worker process %d did not answer %s in %.0f s: killed",
                        worker.pid,
                        name,
                        limit,
                        extra={"nginx_level": "alert"},
                    )
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()  # its channel closes: the call is answered
        answers = await asyncio.gather(*futures, return_exceptions=True)
        errors = [a for a in answers if isinstance(a, BaseException) and not _gone(a)]
        if errors:
            raise errors[0]
        return [a for a in answers if not isinstance(a, BaseException)]

    # -- active checks, drained servers -----------------------------------------------

    def _mark(self, upstream: str, address: str, healthy: bool) -> None:
        self._marks[(upstream, address)] = healthy
        for worker in list(self._workers.values()):
            worker.cast("mark_health", upstream, address, healthy)

    def _sync_checks(self) -> None:
        def known(name: str, address: str) -> bool:
            # a server no check has marked has never passed one (new at start or in a
            # reload, or checks just turned on): no traffic until it does, as the
            # workers' own upstreams hold it and the proxy in one process does
            return self._marks.get((name, address), False)

        self._checks.sync(self._config.upstreams, known)

    def _forget_drained(self, config: Config) -> None:
        """Servers drained by hand stay drained while the config has them (the workers
        log the ones that left)."""
        for upstream, addresses in self._drained.items():
            spec = config.upstream(upstream)
            have = {s.address for s in spec.servers} if spec is not None else set()
            addresses &= have


def _gone(answer: BaseException) -> bool:
    return isinstance(answer, WorkerGone)


def _worst(states: list[str]) -> str:
    """One state for a server the workers see differently: the first that is not "up"."""
    return next((state for state in states if state != "up"), states[0])


def merge_reports(answers: list[tuple[ServerReport, ...]]) -> tuple[ServerReport, ...]:
    """Each worker's reports of an app's servers, added up by address."""
    merged: dict[str, list[ServerReport]] = {}
    for reports in answers:
        for report in reports:
            merged.setdefault(report.address, []).append(report)
    out = []
    for address, each in merged.items():
        responses = [r.responses for r in each]
        errors = [r.responses_5xx for r in each]
        out.append(
            ServerReport(
                address,
                _worst([r.state for r in each]),
                sum(r.in_flight for r in each),
                None if None in responses else sum(n or 0 for n in responses),
                None if None in errors else sum(n or 0 for n in errors),
            )
        )
    return tuple(out)


_SUMMED = ("conns", "fails")


def merge_snapshots(
    merged: list[dict[str, Any]] | None, snapshot: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One worker's balancer snapshot of an upstream added to the others': counts summed,
    the state the first worker that does not see it "up" reports."""
    if merged is None:
        return [dict(entry) for entry in snapshot]
    by_address = {entry["address"]: entry for entry in merged}
    for entry in snapshot:
        into = by_address.get(entry["address"])
        if into is None:
            merged.append(dict(entry))
            continue
        for key in _SUMMED:
            into[key] = int(into.get(key) or 0) + int(entry.get(key) or 0)
        into["state"] = _worst([str(into["state"]), str(entry["state"])])
    return merged
