"""The one executor: runs a plan's steps against the engine, the supervisor and the store.

A planner (``blue_green.py``) decides which steps; this module only performs them, in
order, and when one fails — a release refused at its gate, a crash or 5xx during verify,
an abort or an expired hold — runs the planner's ``undo`` steps and raises the failure.
Every step reports its progress (``events.py``) as it happens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nonstop.clock import Clock, wait_event
from nonstop.config.model import AppSpec
from nonstop.deploy import blue_green
from nonstop.deploy.errors import DeployRefused, RolledBack
from nonstop.deploy.plan import VerifyCounts, verify_failure
from nonstop.deploy.runtime import AppRuntime, Run
from nonstop.deploy.steps import (
    Commit,
    Drain,
    Gate,
    Hold,
    Plan,
    Rollback,
    Start,
    Step,
    Stop,
    Switch,
    Verify,
)
from nonstop.deploy.store import StateStore, StoreError
from nonstop.engines.base import Engine
from nonstop.errors import DeployFailed, NonstopError
from nonstop.events import DrainEvent, EventBus
from nonstop.health.checker import ProbeFn
from nonstop.health.gate import GateResult, GateWait, wait_healthy
from nonstop.supervisor import Instance, StartFailed, Supervisor
from nonstop.supervisor.logfile import describe_exit
from nonstop.supervisor.process import UNKNOWN_EXIT

__all__ = ["Executor", "own_tail"]

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


class Executor:
    """Performs steps for the deployer; holds no state of its own between steps."""

    def __init__(
        self,
        store: StateStore,
        supervisor: Supervisor,
        engine: Engine,
        clock: Clock,
        probe_fn: ProbeFn,
        events: EventBus,
        on_step: Callable[[str, Step], None] | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.supervisor = supervisor
        self.engine = engine
        self.clock = clock
        self._probe = probe_fn
        self._on_step = on_step

    async def execute(self, runtime: AppRuntime, run: Run, planned: Plan) -> None:
        """Run every step; on a failure, the undo steps, then raise it.

        A store that refused a write (``run.store_failure``, or a ``StoreError`` of the
        step itself) fails the deploy like a refused release: back to the old release,
        which never stopped serving.  Only the last step, ``Commit``, comes after the old
        release is stopped: a store failure there leaves the new release serving and
        supervised, recorded live in memory, and is raised for the deployer to report.
        """
        for step in planned.steps:
            try:
                if run.store_failure is not None and not isinstance(step, Commit):
                    raise StoreError(run.store_failure)
                await self.perform(runtime, run, step)
            except (DeployFailed, StoreError) as exc:
                if isinstance(exc, StoreError) and isinstance(step, Commit):
                    raise
                if isinstance(exc, StoreError):
                    log.error("%s: %s; rolling back", runtime.spec.name, exc)
                for back in blue_green.undo(planned, step):
                    await self.perform(runtime, run, back)
                raise

    async def perform(self, runtime: AppRuntime, run: Run, step: Step) -> None:
        if self._on_step is not None:
            self._on_step(runtime.spec.name, step)
        if isinstance(step, Start):
            await self._start(runtime, run, step)
        elif isinstance(step, Gate):
            await self._gate_all(runtime, run, step)
        elif isinstance(step, Switch):
            await self._switch(runtime, run, step)
        elif isinstance(step, Drain):
            await self._drain(runtime, run, step)
        elif isinstance(step, Verify):
            await self._verify(runtime, run, step)
        elif isinstance(step, Hold):
            await self._hold(runtime, run, step)
        elif isinstance(step, Stop):
            await self._stop(runtime, run, step)
        elif isinstance(step, Commit):
            self._commit(runtime, run, step)
        else:
            await self._rollback(runtime, run, step)

    # -- shared with the deployer -----------------------------------------------------------

    async def push(self, runtime: AppRuntime, quiet: bool = False) -> None:
        """Hand the app's server set to the engine; back once it is live.

        ``quiet``: a change that must not end the task making it when the engine cannot
        apply it now (the error is logged; the next change carries it).
        """
        states = runtime.servers.states()
        if states == runtime.pushed:
            return
        try:
            await self.engine.set_servers(runtime.spec.name, states)
        except NonstopError as exc:
            if not quiet:
                raise
            log.error("%s: server set not applied: %s", runtime.spec.name, exc)
            return
        runtime.pushed = states

    async def drain(self, spec: AppSpec, addresses: list[str]) -> int:
        """Drain ``addresses`` through the engine; the stream sees it begin and end."""
        self.events.publish(DrainEvent(spec.name, tuple(addresses)))
        left = await self.engine.drain(spec.name, frozenset(addresses), spec.drain_timeout)
        self.events.publish(DrainEvent(spec.name, tuple(addresses), left))
        return left

    async def gate(
        self, spec: AppSpec, instance: Instance, on_wait: Callable[[GateWait], None] | None = None
    ) -> GateResult:
        return await wait_healthy(
            spec.host,
            instance.port,
            spec.health,
            is_alive=instance.is_alive,
            tail=lambda: own_tail(instance.tail(200)),
            on_wait=on_wait,
            probe_fn=self._probe,
            clock=self.clock,
        )

    # -- the steps ----------------------------------------------------------------------------

    def _instances(self, runtime: AppRuntime, ports: tuple[int, ...]) -> list[Instance]:
        found = (self.supervisor.get(runtime.spec.name, port) for port in ports)
        return [i for i in found if i is not None]

    async def _start(self, runtime: AppRuntime, run: Run, step: Start) -> None:
        spec, say = run.spec, run.progress
        run.phase = "starting"
        for port in step.ports:
            try:
                instance = await self.supervisor.start(spec, step.slot, port, run.release)
            except StartFailed as exc:
                say("refused", f"refused: {exc}", reason=str(exc))
                raise DeployRefused(f"{run.release} was not started: {exc}") from None
            say(
                "started",
                f"started {run.release} on port {port} (pid {instance.pid})",
                port=port,
                pid=instance.pid,
            )

    async def _gate_all(self, runtime: AppRuntime, run: Run, step: Gate) -> None:
        spec, say = run.spec, run.progress
        run.phase = "health gate"
        new = self._instances(runtime, step.ports)

        def waiting(instance: Instance) -> Callable[[GateWait], None]:
            where = f"{instance.address} to answer {spec.health.path}"

            def tell(wait: GateWait) -> None:
                say(
                    "waiting",
                    f"waiting for {where} — {wait.elapsed:.0f} s of {wait.timeout:g}"
                    f" ({wait.detail})",
                    port=instance.port,
                    elapsed=round(wait.elapsed, 3),
                    timeout=wait.timeout,
                    detail=wait.detail,
                )

            return tell

        results = await asyncio.gather(*(self.gate(spec, i, waiting(i)) for i in new))
        failed = [(i, r) for i, r in zip(new, results, strict=True) if not r.ok]
        if failed:
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
        run.stamp("healthy")
        say(
            "healthy",
            f"{run.release} is healthy ({max(r.elapsed for r in results):.2f}s)",
            probes=sum(r.probes for r in results),
        )

    async def _switch(self, runtime: AppRuntime, run: Run, step: Switch) -> None:
        spec = run.spec
        run.phase = "switching"
        new_specs = [runtime.server(port, spec) for port in step.to]
        runtime.servers.switch(new_specs, [runtime.server(p, spec).address for p in step.away])
        try:
            await self.push(runtime)
        except NonstopError as exc:
            run.progress("refused", f"refused: the switch was not applied: {exc}", reason=str(exc))
            raise DeployRefused(f"the switch to {run.release} was not applied: {exc}") from None
        run.stamp("switched")
        for port in step.to:
            instance = self.supervisor.get(spec.name, port)
            cmdline = instance.cmdline() if instance is not None else None
            try:
                self.store.set_instance_state(spec.name, port, "running", cmdline)
            except StoreError as exc:  # bookkeeping: the next step goes back
                run.store_failure = run.store_failure or exc.reason
        run.progress(
            "switched",
            f"traffic switched to {run.release}",
            addresses=[s.address for s in new_specs],
        )

    async def _drain(self, runtime: AppRuntime, run: Run, step: Drain) -> None:
        spec = run.spec
        addresses = [runtime.server(port, spec).address for port in step.ports]
        if not step.warm:
            if step.ports == runtime.live_ports:
                run.phase = "stopping old"
            runtime.servers.set_draining(addresses)
            await self.push(runtime)
            await self.drain(spec, addresses)
            runtime.servers.remove(addresses)
            await self.push(runtime)
            return
        run.phase = "draining"
        left = await self.drain(spec, addresses)
        run.stamp("drained")
        if left:
            message = (
                f"drain_timeout ({spec.drain_timeout:g}s) passed with {left} "
                "request(s) still in flight on the old release"
            )
        else:
            message = "old release drained: no request in flight, idle connections closed"
        run.progress("drained", message, in_flight=left)
        keep_backup = await self.engine.supports_backup(spec.name)
        for port, address in zip(step.ports, addresses, strict=True):
            if keep_backup:
                runtime.servers.demote(address, runtime.server(port, spec, backup=True))
            else:
                runtime.servers.remove([address])
        await self.push(runtime)

    async def _verify(self, runtime: AppRuntime, run: Run, step: Verify) -> None:
        reason = await self._watch(runtime, run, step)
        run.stamp("verified")
        if reason is not None:
            raise RolledBack(reason)

    async def _watch(self, runtime: AppRuntime, run: Run, step: Verify) -> str | None:
        """Watch the new release for ``step.seconds``; why it failed, or None."""
        spec = run.spec
        if step.seconds <= 0:
            return None
        new = self._instances(runtime, step.ports)
        run.phase = "verify"
        run.progress("verify", f"verifying {run.release} for {step.seconds:g}s")
        failures = [0]
        watcher = asyncio.get_running_loop().create_task(self._watch_health(spec, new, failures))
        deadline = self.clock.monotonic() + step.seconds
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
                await wait_event(run.rollback, self.clock, _VERIFY_POLL)
            return None
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch_health(self, spec: AppSpec, new: list[Instance], failures: list[int]) -> None:
        while True:
            await self.clock.sleep(spec.health.interval)
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

    async def _hold(self, runtime: AppRuntime, run: Run, step: Hold) -> None:
        """Wait for a commit, an abort or the deadline, the old release warm meanwhile."""
        run.phase = "hold"
        run.hold_until = self.clock.wall() + step.seconds
        run.progress(
            "hold",
            f"{run.release} serves; holding "
            + (f"{runtime.live_release} warm " if runtime.live_release else "")
            + f"until commit or abort (at most {step.seconds:g}s)",
            seconds=step.seconds,
        )
        run.held.set()
        deadline = self.clock.monotonic() + step.seconds
        while not run.commit.is_set():
            if run.rollback.is_set():
                raise RolledBack(f"aborted by {run.rollback_by}")
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise RolledBack(f"not committed within the hold ({step.seconds:g}s)")
            await wait_event(run.decided, self.clock, left)
        run.progress("commit", f"committed by {run.commit_by}")

    async def _stop(self, runtime: AppRuntime, run: Run, step: Stop) -> None:
        instances = self._instances(runtime, step.ports)
        if not step.announce:
            await asyncio.gather(*(self.supervisor.stop(i) for i in instances))
            return
        for port in step.ports:
            task = runtime.gating.pop(port, None)
            if task is not None:
                task.cancel()
        codes = await asyncio.gather(*(self.supervisor.stop(i) for i in instances))
        for instance, code in zip(instances, codes, strict=True):
            run.progress(
                "stopped",
                f"stopped the {step.which} instance {instance.release} on port {instance.port} "
                f"(pid {instance.pid}, {'never started' if code is None else describe_exit(code)})",
                port=instance.port,
                pid=instance.pid,
                # an adopted instance's exit status is unknown: null, as a never started one
                returncode=None if code == UNKNOWN_EXIT else code,
            )

    def _commit(self, runtime: AppRuntime, run: Run, step: Commit) -> None:
        spec = run.spec
        run.stamp("old_stopped")
        runtime.set_live(step.slot, run.release, spec)
        for instance in self._instances(runtime, runtime.live_ports):
            self.supervisor.set_restart(instance, True)
        if run.store_failure is not None:  # the old release is stopped: no going back
            raise StoreError(run.store_failure)
        self.store.set_live(spec.name, step.slot, run.release)  # last: see ``execute``

    async def _rollback(self, runtime: AppRuntime, run: Run, step: Rollback) -> None:
        spec = run.spec
        away = [runtime.server(port, spec).address for port in step.away]
        run.phase = "rolling back"
        if step.to:
            runtime.servers.switch([runtime.server(port, spec) for port in step.to], away)
        else:
            runtime.servers.set_draining(away)
        if not step.announce:  # nothing was switched: the new servers just leave
            runtime.servers.remove(away)
            await self.push(runtime, quiet=True)
            return
        await self.push(runtime)
        if step.to:
            run.progress("rollback", f"traffic switched back to {runtime.live_release}")
        else:
            run.progress("rollback", "no previous release: taking the new one out")
