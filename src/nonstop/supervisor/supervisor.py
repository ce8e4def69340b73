"""The supervisor: owns every app instance, restarts crashed ones with backoff.

It decides nothing about deploys.  The deployer starts instances here (restart off while
a new release is on trial: a crash during the health gate or ``verify`` must fail the
deploy, not be papered over by a restart) and turns ``restart`` on for the live instance
once the deploy is done.  Everything that happens is reported through ``on_event``, so
the daemon can record it in the state store and update the upstream; the supervisor
itself touches neither.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nonstop.clock import SYSTEM_CLOCK, Clock
from nonstop.config.model import AppSpec
from nonstop.supervisor import logfile
from nonstop.supervisor.backoff import RestartPolicy
from nonstop.supervisor.errors import StartFailed
from nonstop.supervisor.instance import Instance
from nonstop.supervisor.launcher import Launcher, ProcessHandle, SubprocessLauncher
from nonstop.supervisor.process import UNKNOWN_EXIT

__all__ = ["Supervisor", "SupervisorEvent"]

_Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    """``kind``: started | adopted | stopped | crashed | restarting | restart_failed."""

    kind: str
    app: str
    port: int
    release: str
    pid: int | None = None
    start_ticks: int | None = None  # with pid, identifies the process (StateStore.pid_start)
    returncode: int | None = None
    delay: float = 0.0
    detail: str = ""


class Supervisor:
    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        launcher: Launcher | None = None,
        clock: Clock = SYSTEM_CLOCK,
        policy: RestartPolicy | None = None,
        on_event: Callable[[SupervisorEvent], None] | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = os.fspath(state_dir)
        self.launcher: Launcher = launcher or SubprocessLauncher()
        self.clock = clock
        self.policy = policy or RestartPolicy()
        self.on_event = on_event
        self._base_env = base_env
        self._instances: dict[_Key, Instance] = {}
        self._keep: set[_Key] = set()
        self._crashes: dict[_Key, list[float]] = {}
        self._pending: dict[_Key, asyncio.Task[None]] = {}

    # -- queries --------------------------------------------------------------------------

    def get(self, app: str, port: int) -> Instance | None:
        return self._instances.get((app, port))

    def instances(self, app: str | None = None) -> list[Instance]:
        return [i for (name, _), i in sorted(self._instances.items()) if app in (None, name)]

    def log_path(self, app: str, port: int) -> str:
        return str(logfile.log_path(self.state_dir, app, port))

    # -- actions --------------------------------------------------------------------------

    async def start(
        self, app: AppSpec, slot: int, port: int, release: str, *, restart: bool = False
    ) -> Instance:
        """Start ``release`` of ``app`` on ``port``; ``PortBusy``/``StartFailed`` if it cannot."""
        key = (app.name, port)
        current = self._instances.get(key)
        if current is not None and current.is_alive():
            raise StartFailed(f"{app.name} already runs {current.release!r} on port {port}")
        self._cancel_pending(key)
        instance = self._make(app, slot, port, release)
        await instance.start()
        self._instances[key] = instance
        self.set_restart(instance, restart)
        self._emit("started", instance)
        return instance

    def adopt(
        self,
        app: AppSpec,
        slot: int,
        port: int,
        release: str,
        handle: ProcessHandle,
        started_at: float,
        *,
        restart: bool = True,
    ) -> Instance:
        """Take over ``handle``, an instance an earlier nonstop started (and left running)."""
        key = (app.name, port)
        current = self._instances.get(key)
        if current is not None and current.is_alive():
            raise StartFailed(f"{app.name} already runs {current.release!r} on port {port}")
        instance = self._make(app, slot, port, release)
        instance.adopt(handle, started_at)
        self._instances[key] = instance
        self.set_restart(instance, restart)
        self._emit("adopted", instance)
        return instance

    def set_restart(self, instance: Instance, on: bool) -> None:
        """Restart this instance (its port) with backoff if it crashes."""
        key = (instance.app.name, instance.port)
        if on:
            self._keep.add(key)
        else:
            self._keep.discard(key)
            self._cancel_pending(key)

    async def stop(self, instance: Instance, timeout: float | None = None) -> int | None:
        """Stop gracefully (``stop_signal``, SIGKILL after the timeout); no restart after."""
        self.set_restart(instance, False)
        code = await instance.stop(timeout)
        key = (instance.app.name, instance.port)
        if self._instances.get(key) is instance:
            del self._instances[key]
        return code

    async def close(self, timeout: float | None = None) -> None:
        """Stop every instance in parallel (daemon shutdown)."""
        for key in list(self._pending):
            self._cancel_pending(key)
        running = [i for i in self._instances.values() if i.is_alive()]
        await asyncio.gather(*(self.stop(i, timeout) for i in running))

    def leave_running(self) -> None:
        """Stop supervising, leave every instance running (``nonstop stop``, an upgrade):
        the next daemon adopts them."""
        for key in list(self._pending):
            self._cancel_pending(key)
        self._keep.clear()
        for instance in self._instances.values():
            instance.leave_running()
        self._instances.clear()

    # -- crashes --------------------------------------------------------------------------

    def _make(self, app: AppSpec, slot: int, port: int, release: str) -> Instance:
        return Instance(
            app,
            slot,
            port,
            release,
            self.log_path(app.name, port),
            self.launcher,
            self.clock,
            on_exit=self._exited,
            base_env=self._base_env,
        )

    def _exited(self, instance: Instance, code: int, crashed: bool) -> None:
        self._emit("crashed" if crashed else "stopped", instance)
        key = (instance.app.name, instance.port)
        if not crashed or key not in self._keep or self._instances.get(key) is not instance:
            return
        now = self.clock.monotonic()
        crashes = [*self.policy.prune(self._crashes.get(key, []), now), now]
        self._crashes[key] = crashes
        self._schedule(key, instance, self.policy.restart_at(crashes, now) - now)

    def _schedule(self, key: _Key, old: Instance, delay: float) -> None:
        self._emit("restarting", old, delay=delay)
        task = asyncio.get_running_loop().create_task(self._restart(key, old, delay))
        self._pending[key] = task

    async def _restart(self, key: _Key, old: Instance, delay: float) -> None:
        await self.clock.sleep(delay)
        self._pending.pop(key, None)
        # As it was started: a reload changes the next deploy's instances, not this one.
        instance = self._make(old.app, old.slot, old.port, old.release)
        try:
            await instance.start()
        except StartFailed as exc:
            self._emit("restart_failed", old, detail=str(exc))
            now = self.clock.monotonic()
            crashes = [*self._crashes.get(key, []), now]
            self._crashes[key] = crashes
            self._schedule(key, old, self.policy.restart_at(crashes, now) - now)
            return
        self._instances[key] = instance
        self._emit("started", instance)

    def _cancel_pending(self, key: _Key) -> None:
        task = self._pending.pop(key, None)
        if task is not None:
            task.cancel()

    def _emit(self, kind: str, instance: Instance, delay: float = 0.0, detail: str = "") -> None:
        if self.on_event is None:
            return
        self.on_event(
            SupervisorEvent(
                kind=kind,
                app=instance.app.name,
                port=instance.port,
                release=instance.release,
                pid=instance.pid,
                start_ticks=instance.start_ticks,
                # an adopted instance's exit is known only to the nonstop that started it
                returncode=None if instance.returncode == UNKNOWN_EXIT else instance.returncode,
                delay=delay,
                detail=detail,
            )
        )
