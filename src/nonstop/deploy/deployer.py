"""Blue-green deploys on one host: start, gate, switch, drain, verify, stop — or roll back.

The order is the guarantee (PRODUCT.md section 5):

1. take the app's lock in the store (a second deploy is refused, naming the holder);
2. start release R on the idle slot's ports, refusing a port something listens on;
3. ``wait_healthy``: exact body, ``interval``, ``timeout``, ``start_timeout``; on failure
   stop the new instance and refuse, with the reason and its log tail — the old release
   never stopped serving;
4. switch in one step (``Engine.set_servers``), then drain the old instance: its
   in-flight requests finish (up to ``drain_timeout``), its idle connections are closed;
5. ``verify``: the old instance stays warm — as a backup server where the balancing
   method has backups, so a GET the new release failed is retried on it — while the new
   one is watched for a crash, failed health checks or a 5xx ratio over the threshold;
   any of them switches back at once;
6. only then is the old instance taken out, drained again and stopped (``stop_signal``,
   SIGKILL after ``stop_timeout``) and R recorded as live.

A deploy returns only after all of that, so exit 0 means R serves all traffic and the
old release is drained and stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from nonstop.clock import SYSTEM_CLOCK, Clock
from nonstop.config.model import AppSpec, ServerSpec
from nonstop.deploy.errors import DeployRefused, RolledBack, UnknownApp
from nonstop.deploy.events import Emit, Progress
from nonstop.deploy.plan import VerifyCounts, idle_slot, server_spec, slot_ports, verify_failure
from nonstop.deploy.server_set import ServerSet
from nonstop.deploy.store import DeployRecord, StateStore
from nonstop.engines.base import Engine
from nonstop.errors import DeployFailed, NonstopError, UsageError
from nonstop.health.checker import ProbeFn, probe
from nonstop.health.gate import GateResult, wait_healthy
from nonstop.servers import slot_of
from nonstop.supervisor import Instance, StartFailed, Supervisor, SupervisorEvent, reclaim

__all__ = ["AppRuntime", "Deployer", "describe_deploy", "own_tail"]

log = logging.getLogger("nonstop")

_VERIFY_POLL = 0.02


def own_tail(text: str, lines: int = 20) -> str:
    """The log lines of the latest run only: the log file holds every run on that port."""
    kept = text.splitlines()
    for i in range(len(kept) - 1, -1, -1):
        if kept[i].startswith("=== nonstop ") and " start app=" in kept[i]:
            kept = kept[i:]
            break
    return "\n".join(kept[-lines:])


@dataclass
class _Run:
    """One deploy or rollback in progress."""

    record: DeployRecord
    release: str
    progress: Progress
    phase: str = "starting"
    rollback: asyncio.Event = field(default_factory=asyncio.Event)
    rollback_by: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class AppRuntime:
    """What the deployer knows of one app right now."""

    spec: AppSpec
    servers: ServerSet = field(default_factory=ServerSet)
    live_slot: int | None = None
    live_release: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    run: _Run | None = None
    gating: dict[int, asyncio.Task[None]] = field(default_factory=dict)

    @property
    def live_ports(self) -> tuple[int, ...]:
        return () if self.live_slot is None else slot_ports(self.spec, self.live_slot)


class Deployer:
    """Owns every app's deploys; the daemon feeds it supervisor events and reloads."""

    def __init__(
        self,
        store: StateStore,
        supervisor: Supervisor,
        engine: Engine,
        clock: Clock = SYSTEM_CLOCK,
        probe_fn: ProbeFn = probe,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.engine = engine
        self.clock = clock
        self._probe = probe_fn
        self.apps: dict[str, AppRuntime] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- configuration ------------------------------------------------------------------

    def configure(self, apps: tuple[AppSpec, ...]) -> None:
        """The apps of the running config (on start and after every reload)."""
        for spec in apps:
            runtime = self.apps.get(spec.name)
            if runtime is None:
                self.apps[spec.name] = AppRuntime(spec)
            else:
                runtime.spec = spec
            self.supervisor.update_app(spec)

    def runtime(self, name: str) -> AppRuntime:
        runtime = self.apps.get(name)
        if runtime is None:
            raise UnknownApp(name, sorted(self.apps))
        return runtime

    # -- start of the daemon ------------------------------------------------------------

    async def restore(self) -> None:
        """Stop orphans of a crashed nonstop, then bring every live release back."""
        await asyncio.gather(*(self._restore(r) for r in list(self.apps.values())))

    async def _restore(self, runtime: AppRuntime) -> None:
        spec = runtime.spec
        try:
            for record in self.store.instances(spec.name):
                if record.pid is not None and await reclaim(
                    record.pid, record.pid_start, spec.stop_signal, spec.stop_timeout
                ):
                    log.info("stopped orphaned %s instance pid %d", spec.name, record.pid)
                self.store.forget_instance(spec.name, record.port)
            live = self.store.live(spec.name)
            if live is None:
                return
            runtime.live_slot, runtime.live_release = live.slot, live.release
            log.info("restoring %s release %s on slot %d", spec.name, live.release, live.slot)
            for port in slot_ports(spec, live.slot):
                try:
                    await self.supervisor.start(spec, live.slot, port, live.release, restart=True)
                except StartFailed as exc:
                    log.error("cannot restore %s on port %d: %s", spec.name, port, exc)
                    continue
                runtime.servers.add([server_spec(spec, port)], healthy=False)
                await self._push(runtime, quiet=True)
                self._gate_live(runtime, port)
        finally:
            runtime.ready.set()

    # -- the live instances: crashes and restarts ----------------------------------------

    def on_supervisor_event(self, event: SupervisorEvent) -> None:
        """Record every start and exit; keep the upstream in step with live restarts."""
        runtime = self.apps.get(event.app)
        if event.kind == "started":
            slot = self._slot_of(runtime, event.port)
            self.store.record_instance(
                event.app, slot, event.port, event.release, event.pid, event.start_ticks
            )
            if runtime is not None and event.port in runtime.live_ports and runtime.ready.is_set():
                self._gate_live(runtime, event.port)  # a restart after a crash
        elif event.kind in ("crashed", "stopped"):
            record = self.store.instance(event.app, event.port)
            if record is not None and record.pid == event.pid:
                if event.kind == "crashed":
                    self.store.set_instance_state(event.app, event.port, "crashed")
                else:
                    self.store.forget_instance(event.app, event.port)
            if runtime is not None and event.kind == "crashed" and event.port in runtime.live_ports:
                log.error(
                    "%s release %s on port %d crashed (code %s)",
                    event.app,
                    event.release,
                    event.port,
                    event.returncode,
                )
                address = server_spec(runtime.spec, event.port).address
                if runtime.servers.set_health(address, False):
                    self._own(self._push(runtime, quiet=True))

    def _slot_of(self, runtime: AppRuntime | None, port: int) -> int:
        return 0 if runtime is None else slot_of(runtime.spec, port)

    async def _push(self, runtime: AppRuntime, quiet: bool = False) -> None:
        """Hand the app's server set to the engine; back once it is live.

        ``quiet``: a health mark, which must not end the task that made it when the
        engine cannot apply it now (the error is logged; the next change carries it).
        """
        try:
            await self.engine.set_servers(runtime.spec.name, runtime.servers.states())
        except NonstopError as exc:
            if not quiet:
                raise
            log.error("%s: server set not applied: %s", runtime.spec.name, exc)

    def _own(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` as a task of the deployer's (cancelled and awaited by ``close``)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _gate_live(self, runtime: AppRuntime, port: int) -> None:
        """Put a (re)started live instance back into the pool once it passes its check."""
        old = runtime.gating.pop(port, None)
        if old is not None:
            old.cancel()
        runtime.gating[port] = self._own(self._regate(runtime, port))

    async def _regate(self, runtime: AppRuntime, port: int) -> None:
        instance = self.supervisor.get(runtime.spec.name, port)
        while instance is not None and instance.is_alive():
            result = await self._gate(runtime.spec, instance)
            if result.ok:
                if runtime.servers.set_health(instance.address, True):
                    await self._push(runtime, quiet=True)
                self.store.set_instance_state(runtime.spec.name, port, "running")
                log.info("%s on port %d is healthy: serving", runtime.spec.name, port)
                return
            log.error("%s on port %d is not healthy: %s", runtime.spec.name, port, result.reason)

    # -- deploy -------------------------------------------------------------------------

    async def deploy(
        self,
        name: str,
        release: str | None,
        holder: str,
        pid: int,
        emit: Emit | None = None,
        kind: str = "deploy",
    ) -> dict[str, Any]:
        """Deploy ``release`` (None: the live one again); the result, or ``DeployFailed``."""
        runtime = self.runtime(name)
        await runtime.ready.wait()
        if release is None:
            if runtime.live_release is None:
                raise UsageError(f"{name} has no live release yet: name one with --release")
            release = runtime.live_release
        record = self.store.begin_deploy(name, release, holder, pid, kind)
        run = _Run(record, release, Progress(name, emit, self.clock))
        runtime.run = run
        task = self._own(self._execute(runtime, run, kind))

        def finished(_: asyncio.Task[dict[str, Any]]) -> None:
            runtime.run = None
            run.done.set()

        task.add_done_callback(finished)
        # shielded: a client that hangs up mid-deploy must not cut the deploy short
        return await asyncio.shield(task)

    async def _execute(self, runtime: AppRuntime, run: _Run, kind: str) -> dict[str, Any]:
        durations: dict[str, float] = {}
        try:
            await self._deploy(runtime, run, durations)
        except DeployFailed as exc:
            outcome = getattr(exc, "outcome", "failed")
            durations["total"] = round(run.progress.elapsed(), 4)
            record = self.store.finish_deploy(run.record.id, outcome, str(exc), durations)
            run.result = describe_deploy(record)
            run.progress("done", f"{kind} of {run.release} {outcome}", outcome=outcome)
            raise
        except asyncio.CancelledError:
            reason = "nonstop stopped while the deploy was running"
            self.store.finish_deploy(run.record.id, "interrupted", reason, durations)
            raise
        except BaseException as exc:  # the lock must never stay held
            self.store.finish_deploy(run.record.id, "failed", f"internal error: {exc!r}")
            raise
        durations["total"] = round(run.progress.elapsed(), 4)
        record = self.store.finish_deploy(run.record.id, "ok", "", durations)
        run.result = describe_deploy(record)
        run.progress(
            "done",
            f"{run.release} serves all traffic ({durations['total']:.2f}s)",
            outcome="ok",
        )
        return run.result

    async def _deploy(self, runtime: AppRuntime, run: _Run, durations: dict[str, float]) -> None:
        spec, say = runtime.spec, run.progress
        slot = idle_slot(runtime.live_slot)
        ports = slot_ports(spec, slot)
        old_ports = runtime.live_ports
        say(
            "begin",
            f"deploy #{run.record.id}: {run.release} on slot {slot} (ports "
            f"{', '.join(map(str, ports))})"
            + (f", replacing {runtime.live_release}" if runtime.live_release else ""),
            id=run.record.id,
            release=run.release,
            previous=runtime.live_release,
            slot=slot,
            ports=list(ports),
        )
        new = await self._start_new(runtime, run, slot, ports)
        durations["healthy"] = round(say.elapsed(), 4)
        old_specs = [server_spec(spec, port) for port in old_ports]
        new_specs = [server_spec(spec, i.port) for i in new]
        old_addresses = [s.address for s in old_specs]
        run.phase = "switching"
        await self._switch(runtime, run, new, new_specs, old_specs)
        durations["switched"] = round(say.elapsed(), 4)
        for instance in new:
            self.store.set_instance_state(spec.name, instance.port, "running")
        say(
            "switched",
            f"traffic switched to {run.release}",
            addresses=[s.address for s in new_specs],
        )
        reason = None
        if old_addresses:  # a first deploy has nothing to drain, verify against or go back to
            await self._drain(runtime, run, old_addresses, durations)
            keep_backup = await self.engine.supports_backup(spec.name)
            for port, address in zip(old_ports, old_addresses, strict=True):
                if keep_backup:
                    runtime.servers.demote(address, server_spec(spec, port, backup=True))
                else:
                    runtime.servers.remove([address])
            await self._push(runtime)
            reason = await self._verify(runtime, run, new)
            durations["verified"] = round(say.elapsed(), 4)
        if reason is not None:
            await self._switch_back(runtime, run, new, old_specs)
            raise RolledBack(reason)
        run.phase = "stopping old"
        if old_addresses:
            runtime.servers.set_draining(old_addresses)
            await self._push(runtime)
            await self.engine.drain(spec.name, frozenset(old_addresses), spec.drain_timeout)
            runtime.servers.remove(old_addresses)
            await self._push(runtime)
            await self._stop(runtime, run, old_ports, "old")
        durations["old_stopped"] = round(say.elapsed(), 4)
        self.store.set_live(spec.name, slot, run.release)
        runtime.live_slot, runtime.live_release = slot, run.release
        for instance in new:
            self.supervisor.set_restart(instance, True)

    async def _start_new(
        self, runtime: AppRuntime, run: _Run, slot: int, ports: tuple[int, ...]
    ) -> list[Instance]:
        spec, say = runtime.spec, run.progress
        new: list[Instance] = []
        run.phase = "starting"
        try:
            for port in ports:
                instance = await self.supervisor.start(spec, slot, port, run.release)
                new.append(instance)
                say(
                    "started",
                    f"started {run.release} on port {port} (pid {instance.pid})",
                    port=port,
                    pid=instance.pid,
                )
        except StartFailed as exc:
            await self._discard(runtime, new)
            say("refused", f"refused: {exc}", reason=str(exc))
            raise DeployRefused(f"{run.release} was not started: {exc}") from None
        run.phase = "health gate"
        results = await asyncio.gather(*(self._gate(spec, i) for i in new))
        failed = [(i, r) for i, r in zip(new, results, strict=True) if not r.ok]
        if failed:
            await self._discard(runtime, new)
            instance, result = failed[0]
            say(
                "refused",
                f"refused: {run.release} on port {instance.port}: {result.reason}",
                reason=result.reason,
                last_status=result.last_status,
                body=result.body_excerpt,
                error=result.error,
                log_tail=result.log_tail,
            )
            raise DeployRefused(
                f"{run.release} did not pass its health check on port {instance.port}: "
                f"{result.message()}"
            )
        say(
            "healthy",
            f"{run.release} is healthy ({max(r.elapsed for r in results):.2f}s)",
            probes=sum(r.probes for r in results),
        )
        return new

    async def _switch(
        self,
        runtime: AppRuntime,
        run: _Run,
        new: list[Instance],
        new_specs: list[ServerSpec],
        old_specs: list[ServerSpec],
    ) -> None:
        """Switch to the new servers; if the engine cannot, undo it and refuse."""
        runtime.servers.switch(new_specs, [s.address for s in old_specs])
        try:
            await self._push(runtime)
        except NonstopError as exc:
            new_addresses = [i.address for i in new]
            runtime.servers.switch(old_specs, new_addresses)
            runtime.servers.remove(new_addresses)
            try:
                await self._push(runtime)
            except NonstopError as again:
                log.error("%s: the switch back was not applied either: %s", run.release, again)
            await self._discard(runtime, new)
            run.progress("refused", f"refused: the switch was not applied: {exc}", reason=str(exc))
            raise DeployRefused(f"the switch to {run.release} was not applied: {exc}") from None

    async def _gate(self, spec: AppSpec, instance: Instance) -> GateResult:
        return await wait_healthy(
            spec.host,
            instance.port,
            spec.health,
            is_alive=instance.is_alive,
            tail=lambda: own_tail(instance.tail(200)),
            probe_fn=self._probe,
            clock=self.clock,
        )

    async def _discard(self, runtime: AppRuntime, instances: list[Instance]) -> None:
        await asyncio.gather(*(self.supervisor.stop(i) for i in instances))

    async def _drain(
        self, runtime: AppRuntime, run: _Run, addresses: list[str], durations: dict[str, float]
    ) -> None:
        run.phase = "draining"
        left = await self.engine.drain(
            runtime.spec.name, frozenset(addresses), runtime.spec.drain_timeout
        )
        durations["drained"] = round(run.progress.elapsed(), 4)
        if left:
            message = (
                f"drain_timeout ({runtime.spec.drain_timeout:g}s) passed with {left} "
                "request(s) still in flight on the old release"
            )
        else:
            message = "old release drained: no request in flight, idle connections closed"
        run.progress("drained", message, in_flight=left)

    async def _verify(self, runtime: AppRuntime, run: _Run, new: list[Instance]) -> str | None:
        """Watch the new release for ``verify`` seconds; why it failed, or None."""
        spec = runtime.spec
        if spec.verify <= 0:
            return None
        run.phase = "verify"
        run.progress("verify", f"verifying {run.release} for {spec.verify:g}s")
        failures = [0]
        watcher = asyncio.get_running_loop().create_task(self._watch_health(spec, new, failures))
        deadline = self.clock.monotonic() + spec.verify
        try:
            while self.clock.monotonic() < deadline:
                if run.rollback.is_set():
                    return f"rollback requested by {run.rollback_by}"
                responses, errors = await self._response_counts(spec, new)
                counts = VerifyCounts(
                    alive=all(i.is_alive() for i in new),
                    health_failures=failures[0],
                    responses=responses,
                    errors=errors,
                )
                reason = verify_failure(spec, counts)
                if reason is not None:
                    return reason
                try:
                    await asyncio.wait_for(run.rollback.wait(), _VERIFY_POLL)
                except TimeoutError:
                    pass
            return None
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch_health(self, spec: AppSpec, new: list[Instance], failures: list[int]) -> None:
        while True:
            await asyncio.sleep(spec.health.interval)
            verdicts = await asyncio.gather(
                *(self._probe(spec.host, i.port, spec.health) for i in new)
            )
            failures[0] = 0 if all(v.ok for v in verdicts) else failures[0] + 1

    async def _response_counts(self, spec: AppSpec, new: list[Instance]) -> tuple[int | None, int]:
        """Answers and 5xx of the new instances since they joined; None: not counted."""
        reports = {r.address: r for r in await self.engine.servers(spec.name)}
        if not reports:
            return None, 0
        total = errors = 0
        for instance in new:
            report = reports.get(instance.address)
            if report is None:
                continue
            if report.responses is None or report.responses_5xx is None:
                return None, 0
            total += report.responses
            errors += report.responses_5xx
        return total, errors

    async def _switch_back(
        self, runtime: AppRuntime, run: _Run, new: list[Instance], old_specs: list[ServerSpec]
    ) -> None:
        spec, say = runtime.spec, run.progress
        run.phase = "rolling back"
        new_addresses = [i.address for i in new]
        if old_specs:
            runtime.servers.switch(old_specs, new_addresses)
            await self._push(runtime)
            say("rollback", f"traffic switched back to {runtime.live_release}")
        else:
            runtime.servers.set_draining(new_addresses)
            await self._push(runtime)
            say("rollback", "no previous release: taking the new one out")
        await self.engine.drain(spec.name, frozenset(new_addresses), spec.drain_timeout)
        runtime.servers.remove(new_addresses)
        await self._push(runtime)
        await self._stop(runtime, run, tuple(i.port for i in new), "new", instances=new)

    async def _stop(
        self,
        runtime: AppRuntime,
        run: _Run,
        ports: tuple[int, ...],
        which: str,
        instances: list[Instance] | None = None,
    ) -> None:
        name = runtime.spec.name
        if instances is None:
            found = (self.supervisor.get(name, port) for port in ports)
            instances = [i for i in found if i is not None]
        for port in ports:
            task = runtime.gating.pop(port, None)
            if task is not None:
                task.cancel()
        codes = await asyncio.gather(*(self.supervisor.stop(i) for i in instances))
        for instance, code in zip(instances, codes, strict=True):
            run.progress(
                "stopped",
                f"stopped the {which} instance {instance.release} on port {instance.port} "
                f"(pid {instance.pid}, code {code})",
                port=instance.port,
                pid=instance.pid,
                returncode=code,
            )

    # -- rollback -----------------------------------------------------------------------

    async def rollback(
        self, name: str, holder: str, pid: int, emit: Emit | None = None
    ) -> dict[str, Any]:
        """Back to the previous release: instant while a deploy verifies, else a deploy."""
        runtime = self.runtime(name)
        await runtime.ready.wait()
        run = runtime.run
        if run is not None and run.phase == "verify":
            run.rollback_by = holder
            run.rollback.set()
            if emit is not None:
                emit({"event": "rollback", "app": name, "t": 0.0, "message": "rolling back"})
            await run.done.wait()
            return run.result
        live = self.store.live(name)
        if live is None or live.previous_release is None:
            raise DeployFailed(f"{name} has no previous release to roll back to")
        return await self.deploy(name, live.previous_release, holder, pid, emit, "rollback")

    # -- status and shutdown --------------------------------------------------------------

    async def status(self, name: str | None = None) -> dict[str, Any]:
        names = [name] if name is not None else sorted(self.apps)
        return {n: await self._app_status(self.runtime(n)) for n in names}

    async def _app_status(self, runtime: AppRuntime) -> dict[str, Any]:
        spec = runtime.spec
        live = self.store.live(spec.name)
        reports = {r.address: r for r in await self.engine.servers(spec.name)}
        instances = []
        for instance in self.supervisor.instances(spec.name):
            report = reports.get(instance.address)
            instances.append(
                {
                    "port": instance.port,
                    "slot": instance.slot,
                    "release": instance.release,
                    "pid": instance.pid,
                    "state": instance.state.value,
                    "live": instance.port in runtime.live_ports,
                    "health": report.state if report is not None else "not in pool",
                    "in_flight": report.in_flight if report is not None else 0,
                    "responses": report.responses if report is not None else None,
                    "responses_5xx": report.responses_5xx if report is not None else None,
                    "uptime": round(instance.uptime(), 3),
                }
            )
        run = runtime.run
        return {
            "live": None
            if live is None
            else {
                "release": live.release,
                "slot": live.slot,
                "ports": list(slot_ports(spec, live.slot)),
                "since": live.since,
                "previous_release": live.previous_release,
            },
            "instances": instances,
            "deploy": None
            if run is None
            else {
                "id": run.record.id,
                "release": run.release,
                "phase": run.phase,
                "elapsed": round(run.progress.elapsed(), 3),
                "holder": run.record.holder,
            },
            "history": [describe_deploy(r) for r in self.store.history(spec.name, 10)],
        }

    async def close(self, timeout: float | None = None) -> None:
        """Cancel deploys and health gates, then stop every instance (daemon shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.supervisor.close(timeout)


def describe_deploy(record: DeployRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "app": record.app,
        "kind": record.kind,
        "release": record.release,
        "from_release": record.from_release,
        "holder": record.holder,
        "outcome": record.outcome,
        "reason": record.reason,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration": None if record.duration is None else round(record.duration, 4),
        "durations": dict(record.durations),
    }
