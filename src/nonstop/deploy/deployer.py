"""Deploys of every app: the entry points, the live instances, and the plans' executor.

The order is the guarantee (docs/deploys.md), written down as a plan by
``blue_green.plan`` and run by the one ``Executor``:

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
6. with ``hold``, wait there — switched, the old release warm — for ``commit`` or
   ``abort``; past the hold's deadline, roll back;
7. only then is the old instance taken out, drained again and stopped (``stop_signal``,
   SIGKILL after ``stop_timeout``) and R recorded as live.

A deploy returns only after all of that, so exit 0 means R serves all traffic and the
old release is drained and stopped (a held deploy returns once it holds, and ``commit``
returns after the rest).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from nonstop.clock import SYSTEM_CLOCK, Clock
from nonstop.config.model import AppSpec
from nonstop.deploy import blue_green
from nonstop.deploy.errors import UnknownApp
from nonstop.deploy.events import Progress
from nonstop.deploy.executor import Executor, own_tail
from nonstop.deploy.plan import server_spec, slot_ports
from nonstop.deploy.runtime import AppRuntime, Run
from nonstop.deploy.steps import Plan, Step
from nonstop.deploy.store import DeployRecord, StateStore, StoreError
from nonstop.engines.base import Engine
from nonstop.errors import DeployFailed, UsageError
from nonstop.events import EventBus
from nonstop.health.checker import ProbeFn, probe
from nonstop.servers import ServerReport, slot_of
from nonstop.supervisor import (
    AdoptedProcess,
    StartFailed,
    Supervisor,
    SupervisorEvent,
    process_cmdline,
    process_started_at,
    reclaim,
)
from nonstop.supervisor.logfile import describe_exit
from nonstop.supervisor.process import UNKNOWN_EXIT
from nonstop.tasks import TaskOwner

__all__ = ["AppRuntime", "Deployer", "describe_deploy", "own_tail"]

log = logging.getLogger("nonstop")

OWED_RETRY = 2.0  # seconds between tries of the writes the state store refused


class Deployer:
    """Owns every app's deploys; the daemon feeds it supervisor events and reloads."""

    def __init__(
        self,
        store: StateStore,
        supervisor: Supervisor,
        engine: Engine,
        clock: Clock = SYSTEM_CLOCK,
        probe_fn: ProbeFn = probe,
        on_step: Callable[[str, Step], None] | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.events = events if events is not None else EventBus()
        self.store = store
        self.supervisor = supervisor
        self.engine = engine
        self.clock = clock
        self._probe = probe_fn
        self.executor = Executor(store, supervisor, engine, clock, probe_fn, self.events, on_step)
        self.apps: dict[str, AppRuntime] = {}
        self.tasks = TaskOwner("deployer")  # deploys, health gates, health marks
        # writes the store refused, in order, each with what it records
        self._owed: list[tuple[str, Callable[[], object]]] = []
        self._settling = False  # a task retries them until the store takes them

    # -- configuration ------------------------------------------------------------------

    def configure(self, apps: tuple[AppSpec, ...]) -> None:
        """The apps of the running config (on start and after every reload).

        A reload is applied as a plan, not to what runs: the next deploy starts the new
        release as ``spec`` says, and drains and stops the live release where and as it
        was started (``AppRuntime.live_spec``); until then it keeps serving unchanged.
        """
        for spec in apps:
            runtime = self.apps.get(spec.name)
            if runtime is None:
                self.apps[spec.name] = AppRuntime(spec)
            else:
                runtime.spec = spec

    def runtime(self, name: str) -> AppRuntime:
        runtime = self.apps.get(name)
        if runtime is None:
            raise UnknownApp(name, sorted(self.apps))
        return runtime

    # -- start of the daemon ------------------------------------------------------------

    async def adopt(self) -> int:
        """Take over the live instances an earlier nonstop left running, before the
        engine serves: a process still recorded (pid, start time, command line) and
        passing its health check serves from the first request, unrestarted.  Returns
        how many were adopted; ``restore`` deals with the rest."""
        counts = await asyncio.gather(*(self._adopt(r) for r in list(self.apps.values())))
        return sum(counts)

    async def _adopt(self, runtime: AppRuntime) -> int:
        spec = runtime.spec
        live = self.store.live(spec.name)
        if live is None:
            return 0
        taken: list[tuple[int, AdoptedProcess]] = []
        for port in slot_ports(spec, live.slot):
            if self.supervisor.get(spec.name, port) is not None:
                continue  # supervised already
            record = self.store.instance(spec.name, port)
            if record is None or (record.release, record.slot) != (live.release, live.slot):
                continue
            handle = AdoptedProcess.take(record.pid, record.pid_start, record.cmdline)
            if handle is None:
                continue
            verdict = await self._probe(spec.host, port, spec.health)
            if not verdict.ok:
                handle.close()
                log.warning(
                    "%s on port %d (pid %d) left running but not healthy (%s): replacing it",
                    spec.name,
                    port,
                    handle.pid,
                    verdict.reason,
                )
                continue
            taken.append((port, handle))
        runtime.set_live(live.slot, live.release, spec)
        for port, handle in taken:
            assert handle.start_ticks is not None
            started = process_started_at(handle.start_ticks)
            self.supervisor.adopt(spec, live.slot, port, live.release, handle, started)
            runtime.servers.add([server_spec(spec, port)], healthy=True)
            self.store.set_instance_state(spec.name, port, "running")
            log.info(
                "adopted %s release %s on port %d (pid %d)",
                spec.name,
                live.release,
                port,
                handle.pid,
            )
        if taken:
            await self.executor.push(runtime, quiet=True)
        return len(taken)

    async def restore(self) -> None:
        """Stop orphans that were not adopted, then bring every live release back."""
        await asyncio.gather(*(self._restore(r) for r in list(self.apps.values())))

    async def _restore(self, runtime: AppRuntime) -> None:
        spec = runtime.spec
        try:
            for record in self.store.instances(spec.name):
                if self.supervisor.get(spec.name, record.port) is not None:
                    continue  # adopted
                if record.pid is not None and await reclaim(
                    record.pid, record.pid_start, spec.stop_signal, spec.stop_timeout
                ):
                    log.info("stopped orphaned %s instance pid %d", spec.name, record.pid)
                self.store.forget_instance(spec.name, record.port)
            live = self.store.live(spec.name)
            if live is None:
                return
            runtime.set_live(live.slot, live.release, spec)
            missing = [
                port
                for port in slot_ports(spec, live.slot)
                if self.supervisor.get(spec.name, port) is None
            ]
            if missing:
                log.info("restoring %s release %s on slot %d", spec.name, live.release, live.slot)
            for port in missing:
                try:
                    await self.supervisor.start(spec, live.slot, port, live.release, restart=True)
                except StartFailed as exc:
                    log.error("cannot restore %s on port %d: %s", spec.name, port, exc)
                    continue
                runtime.servers.add([server_spec(spec, port)], healthy=False)
                await self.executor.push(runtime, quiet=True)
                self._gate_live(runtime, port)
        finally:
            runtime.ready.set()

    # -- the live instances: crashes and restarts ----------------------------------------

    def on_supervisor_event(self, event: SupervisorEvent) -> None:
        """Record every start and exit; keep the upstream in step with live restarts.

        The records are bookkeeping: a store that cannot write them (``StoreError``) is
        logged and fails the deploy running on the app, never what the event is about.
        """
        runtime = self.apps.get(event.app)
        try:
            self._record(runtime, event)
        except StoreError as exc:
            self.store_failed(runtime, exc)
        if event.kind == "started":
            if runtime is not None and event.port in runtime.live_ports and runtime.ready.is_set():
                self._gate_live(runtime, event.port)  # a restart after a crash
        elif runtime is not None and event.kind == "crashed" and event.port in runtime.live_ports:
            log.error(
                "%s release %s on port %d crashed: %s",
                event.app,
                event.release,
                event.port,
                describe_exit(UNKNOWN_EXIT if event.returncode is None else event.returncode),
            )
            address = runtime.server(event.port, runtime.spec).address
            if runtime.servers.set_health(address, False):
                self.tasks.spawn(self.executor.push(runtime, quiet=True))

    def _record(self, runtime: AppRuntime | None, event: SupervisorEvent) -> None:
        if event.kind == "started":
            slot = self._slot_of(runtime, event.port)
            self.store.record_instance(
                event.app,
                slot,
                event.port,
                event.release,
                event.pid,
                event.start_ticks,
                cmdline=None if event.pid is None else process_cmdline(event.pid),
            )
        elif event.kind in ("crashed", "stopped"):
            record = self.store.instance(event.app, event.port)
            if record is not None and record.pid == event.pid:
                if event.kind == "crashed":
                    self.store.set_instance_state(event.app, event.port, "crashed")
                else:
                    self.store.forget_instance(event.app, event.port)

    def store_failed(self, runtime: AppRuntime | None, exc: StoreError) -> None:
        """A write the store refused: logged; the app's running deploy stops at its next
        step and goes back (``Executor.execute``)."""
        log.error("%s", exc)
        if runtime is not None and runtime.run is not None:
            runtime.run.store_failure = runtime.run.store_failure or exc.reason

    def _slot_of(self, runtime: AppRuntime | None, port: int) -> int:
        if runtime is None:
            return 0
        if runtime.live_slot is not None and port in runtime.live_ports:
            return runtime.live_slot
        return slot_of(runtime.spec, port)

    def _gate_live(self, runtime: AppRuntime, port: int) -> None:
        """Put a (re)started live instance back into the pool once it passes its check."""
        old = runtime.gating.pop(port, None)
        if old is not None:
            old.cancel()
        runtime.gating[port] = self.tasks.spawn(self._regate(runtime, port))

    async def _regate(self, runtime: AppRuntime, port: int) -> None:
        instance = self.supervisor.get(runtime.spec.name, port)
        while instance is not None and instance.is_alive():
            result = await self.executor.gate(instance.app, instance)  # as it was started
            if result.ok:
                if runtime.servers.set_health(instance.address, True):
                    await self.executor.push(runtime, quiet=True)
                try:
                    self.store.set_instance_state(
                        runtime.spec.name, port, "running", instance.cmdline()
                    )
                except StoreError as exc:
                    self.store_failed(runtime, exc)
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
        kind: str = "deploy",
        hold: float | None = None,
    ) -> dict[str, Any]:
        """Deploy ``release`` (None: the live one again); the result, or ``DeployFailed``.

        With ``hold`` (seconds), the result comes once the deploy holds: switched, the old
        release warm, waiting for ``commit`` or ``abort``.
        """
        runtime = self.runtime(name)
        await runtime.ready.wait()
        if release is None:
            if runtime.live_release is None:
                raise UsageError(f"{name} has no live release yet: name one with --release")
            release = runtime.live_release
        self.settle_owed()
        spec = runtime.spec
        planned = blue_green.plan(
            spec, runtime.live_slot, blue_green.Options(hold), runtime.live_ports or None
        )
        record = self.store.begin_deploy(name, release, holder, pid, kind)
        run = Run(record, release, Progress(name, record.id, self.events, self.clock), spec)
        runtime.run = run
        task = self.tasks.spawn(self._execute(runtime, run, planned, kind))

        def finished(_: asyncio.Task[dict[str, Any]]) -> None:
            runtime.run = None
            run.done.set()

        task.add_done_callback(finished)
        if hold is None:
            # shielded: a client that hangs up mid-deploy must not cut the deploy short
            return await asyncio.shield(task)
        held = asyncio.ensure_future(run.held.wait())
        try:
            await asyncio.wait((held, task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            held.cancel()
        if task.done():
            return await task
        return {**describe_deploy(record), "outcome": "held", "hold_until": run.hold_until}

    async def _execute(
        self, runtime: AppRuntime, run: Run, planned: Plan, kind: str
    ) -> dict[str, Any]:
        try:
            run.progress(
                "begin",
                f"deploy #{run.record.id}: {run.release} on slot {planned.slot} (ports "
                f"{', '.join(map(str, planned.ports))})"
                + (f", replacing {runtime.live_release}" if runtime.live_release else ""),
                id=run.record.id,
                release=run.release,
                previous=runtime.live_release,
                slot=planned.slot,
                ports=list(planned.ports),
            )
            await self.executor.execute(runtime, run, planned)
        except DeployFailed as exc:
            failed = self._finish(run, kind, getattr(exc, "outcome", "failed"), str(exc))
            if failed is not None:
                raise StoreError(f"{failed.reason}; {exc}") from None
            raise
        except StoreError as exc:
            raise self._store_outcome(runtime, run, planned, kind, exc) from None
        except asyncio.CancelledError:
            reason = "nonstop stopped while the deploy was running"
            self._finish(run, kind, "interrupted", reason, announce=False)
            raise
        except BaseException as exc:  # the lock must never stay held
            self._finish(run, kind, "failed", f"internal error: {exc!r}", announce=False)
            raise
        failed = self._finish(run, kind, "ok", "")
        if failed is not None:
            raise StoreError(f"{failed.reason}; {run.release} serves all traffic") from None
        return run.result

    def _store_outcome(
        self, runtime: AppRuntime, run: Run, planned: Plan, kind: str, exc: StoreError
    ) -> StoreError:
        """A deploy the store failed: rolled back, or — when it failed only once the old
        release was stopped — done but not recorded; what the CLI is told."""
        if runtime.live_release == run.release and runtime.live_slot == planned.slot:
            slot, release = planned.slot, run.release
            self._owe(
                f"{release} live for {runtime.spec.name}",
                lambda: self.store.set_live(runtime.spec.name, slot, release),
            )
            outcome = "ok"
            why = f"{exc.reason}; {run.release} serves all traffic, not yet recorded as live"
        else:
            outcome = "rolled_back"
            why = f"{exc.reason}; the {kind} of {run.release} was rolled back: " + (
                f"{runtime.live_release} serves" if runtime.live_release else "nothing deployed"
            )
        failure = StoreError(why)
        self._finish(run, kind, outcome, str(failure))
        return failure

    def _finish(
        self, run: Run, kind: str, outcome: str, reason: str, announce: bool = True
    ) -> StoreError | None:
        """Record the deploy's end and free its lock; while the store refuses, the record
        is owed (written before the next deploy) and the refusal returned."""
        durations = run.durations
        durations["total"] = round(run.progress.elapsed(), 4)
        failed: StoreError | None = None
        try:
            record = self.store.finish_deploy(run.record.id, outcome, reason, durations)
        except StoreError as exc:
            failed = exc
            # dated when the deploy ended, in the store's time, however late it is written
            deploy_id, owed, ended = run.record.id, dict(durations), self.store.clock.wall()
            self._owe(
                f"the end of deploy #{deploy_id} ({outcome})",
                lambda: self.store.finish_deploy(deploy_id, outcome, reason, owed, ended),
            )
            record = dataclasses.replace(
                run.record,
                outcome=outcome,
                reason=reason,
                finished_at=ended,
                durations=owed,
            )
        run.result = describe_deploy(record)
        if announce:
            if outcome == "ok":
                message = f"{run.release} serves all traffic ({durations['total']:.2f}s)"
            else:
                message = f"{kind} of {run.release} {outcome.replace('_', ' ')}"
            run.progress("done", message, outcome=outcome, kind=kind)
        return failed

    def settle_owed(self) -> None:
        """Write what the store refused before (deploy ends, live releases), in order;
        ``StoreError`` while it still refuses."""
        while self._owed:
            self._owed[0][1]()
            self._owed.pop(0)

    def _owe(self, what: str, write: Callable[[], object]) -> None:
        """A write the store refused: retried every ``OWED_RETRY`` seconds (so it lands
        once the disk has room, before a stop could lose it), and before every deploy."""
        self._owed.append((what, write))
        if not self._settling:
            self._settling = True
            self.tasks.spawn(self._settle_later())

    async def _settle_later(self) -> None:
        try:
            while self._owed:
                await self.clock.sleep(OWED_RETRY)
                try:
                    self.settle_owed()
                except StoreError:
                    continue
                log.info("state store: what it could not record before is recorded now")
        finally:
            self._settling = False

    def owed(self) -> list[str]:
        """What the store has not recorded yet (it refused the writes)."""
        return [what for what, _ in self._owed]

    # -- steering a running deploy: rollback, commit, abort -----------------------------

    async def rollback(self, name: str, holder: str, pid: int) -> dict[str, Any]:
        """Back to the previous release: instant while a deploy verifies or holds, else a
        deploy of it."""
        runtime = self.runtime(name)
        await runtime.ready.wait()
        run = runtime.run
        if run is not None and run.phase in ("verify", "hold"):
            return await self._decide(run, holder, commit=False)
        live = self.store.live(name)
        if live is None or live.previous_release is None:
            raise DeployFailed(f"{name} has no previous release to roll back to")
        return await self.deploy(name, live.previous_release, holder, pid, "rollback")

    async def commit(self, name: str, holder: str) -> dict[str, Any]:
        """Let a held deploy finish: drain and stop the old release, record the new live."""
        return await self._decide(self._holding(name), holder, commit=True)

    async def abort(self, name: str, holder: str) -> dict[str, Any]:
        """Roll a held deploy back to the warm old release."""
        return await self._decide(self._holding(name), holder, commit=False)

    def _holding(self, name: str) -> Run:
        run = self.runtime(name).run
        if run is None or run.phase != "hold":
            raise DeployFailed(f"no deploy of {name} is holding")
        return run

    async def _decide(self, run: Run, holder: str, commit: bool) -> dict[str, Any]:
        if commit:
            run.commit_by = holder
            run.commit.set()
        else:
            run.rollback_by = holder
            run.rollback.set()
        run.decided.set()
        await run.done.wait()
        return run.result

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
                    **_counts(report),
                    "uptime": round(instance.uptime(), 3),
                }
            )
        run = runtime.run
        shown: dict[str, Any] | None = None
        if live is not None:
            shown = {
                "release": live.release,
                "slot": live.slot,
                "ports": list(runtime.live_ports or slot_ports(spec, live.slot)),
                "since": live.since,
                "previous_release": live.previous_release,
            }
        serving = (runtime.live_release, runtime.live_slot)
        if (
            serving[0] is not None
            and serving[1] is not None
            and (live is None or (live.release, live.slot) != serving)
        ):
            # what serves, which the store refused to record (a full disk): not the
            # store's last word, which a restart would read
            shown = {
                "release": serving[0],
                "slot": serving[1],
                "ports": list(runtime.live_ports or slot_ports(spec, serving[1])),
                "since": None,
                "previous_release": live.release if live is not None else None,
                "recorded": False,
            }
        return {
            "live": shown,
            "instances": instances,
            "deploy": None
            if run is None
            else {
                "id": run.record.id,
                "release": run.release,
                "phase": run.phase,
                "elapsed": round(run.progress.elapsed(), 3),
                "holder": run.record.holder,
                "hold_until": run.hold_until,
            },
            "history": [
                describe_deploy(r, self.clock.wall()) for r in self.store.history(spec.name, 10)
            ],
        }

    def busy(self) -> str | None:
        """What would be cut short by handing the apps over now (an upgrade), if anything."""
        for name, runtime in sorted(self.apps.items()):
            if not runtime.ready.is_set():
                return f"{name}'s live release is still being restored"
            if runtime.run is not None:
                return f"deploy #{runtime.run.record.id} of {name} is running ({runtime.run.phase})"
        return None

    def hand_over(self) -> None:
        """Stop supervising, leave every instance running: a new nonstop adopts them."""
        for runtime in self.apps.values():
            for task in runtime.gating.values():
                task.cancel()
            runtime.gating.clear()
        self.supervisor.leave_running()

    async def cancel(self) -> None:
        """Cancel deploys (recorded ``interrupted``) and health gates: the first step of
        the daemon's shutdown."""
        await self.tasks.close()

    async def close(self, timeout: float | None = None, *, stop_apps: bool = True) -> None:
        """Cancel what runs, then stop every instance — or, without ``stop_apps``, leave
        them running for the next daemon to adopt (the daemon's last step but one)."""
        await self.cancel()
        try:
            self.settle_owed()  # a last try: what is still owed is lost with this process
        except StoreError as exc:
            log.error(
                "%s; not recorded before this stop: %s: the next start reads the state as "
                "it was before them (a deploy not recorded as done is taken as interrupted)",
                exc,
                "; ".join(self.owed()),
            )
        if stop_apps:
            await self.supervisor.close(timeout)
        else:
            self.supervisor.leave_running()


def _counts(report: ServerReport | None) -> dict[str, int]:
    """An instance's answers and 5xx since it joined the pool: 0 while it is out of it,
    left out where the engine does not count them (never ``null``)."""
    if report is None:
        return {"responses": 0, "responses_5xx": 0}
    if report.responses is None or report.responses_5xx is None:
        return {}
    return {"responses": report.responses, "responses_5xx": report.responses_5xx}


def describe_deploy(record: DeployRecord, now: float | None = None) -> dict[str, Any]:
    """A deploy as the admin API shows it; with ``now`` (wall clock), one still running
    has the ``duration`` it has taken so far."""
    duration = record.duration
    if duration is None and now is not None:
        duration = max(0.0, now - record.started_at)
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
        "duration": None if duration is None else round(duration, 4),
        "durations": dict(record.durations),
    }
