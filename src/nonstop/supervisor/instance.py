"""One run of one app instance on one port: start, watch, stop, read its log.

An ``Instance`` is one process lifetime; a restart makes a new ``Instance`` on the same
port, appending to the same log file.  The exit is watched by one task, which alone reaps
the process (see ``nonstop.supervisor.process``), writes the exit line to the log and
reports through ``on_exit``.  ``stop`` sends ``stop_signal`` to the whole process group,
SIGKILL after ``stop_timeout``, and returns when the process is reaped.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

from nonstop.clock import SYSTEM_CLOCK, Clock
from nonstop.config.accounts import resolve_account
from nonstop.config.model import AppSpec
from nonstop.supervisor import logfile
from nonstop.supervisor.command import LaunchSpec, base_environment, build_launch
from nonstop.supervisor.errors import StartFailed
from nonstop.supervisor.launcher import Launcher, ProcessHandle
from nonstop.supervisor.process import process_cmdline

log = logging.getLogger("nonstop")

__all__ = ["ExitCallback", "Instance", "InstanceState"]

_KILL_WAIT = 10.0  # after SIGKILL; only a process stuck in the kernel takes longer


class InstanceState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"  # exited after nonstop asked it to
    CRASHED = "crashed"  # exited on its own


ExitCallback = Callable[["Instance", int, bool], None]  # (instance, returncode, crashed)


class Instance:
    """``app`` running ``release`` on ``port``; ``slot`` is 0 (blue) or 1 (green)."""

    def __init__(
        self,
        app: AppSpec,
        slot: int,
        port: int,
        release: str,
        log_path: str | os.PathLike[str],
        launcher: Launcher,
        clock: Clock = SYSTEM_CLOCK,
        on_exit: ExitCallback | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.slot = slot
        self.port = port
        self.release = release
        self.log_path = Path(log_path)
        self.on_exit = on_exit
        self.state = InstanceState.NEW
        self.started_at: float | None = None  # wall clock
        self.started_mono: float | None = None
        self.returncode: int | None = None
        self._launcher = launcher
        self._clock = clock
        self._base_env = base_env
        self._handle: ProcessHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Instance {self.app.name} {self.release!r} on {self.address} {self.state.value}>"

    @property
    def address(self) -> str:
        host = f"[{self.app.host}]" if ":" in self.app.host else self.app.host
        return f"{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._handle.pid if self._handle is not None else None

    @property
    def start_ticks(self) -> int | None:
        return self._handle.start_ticks if self._handle is not None else None

    def cmdline(self) -> str | None:
        """The process's command line now (recorded once it serves, after any exec)."""
        return None if self.pid is None else process_cmdline(self.pid)

    def is_alive(self) -> bool:
        """Started and not yet exited (a stopping instance is still alive)."""
        return self._handle is not None and self._handle.returncode is None

    def uptime(self) -> float:
        if self.started_mono is None or not self.is_alive():
            return 0.0
        return self._clock.monotonic() - self.started_mono

    def tail(self, lines: int = 20) -> str:
        """The last lines of this instance's log, for error messages."""
        return logfile.tail(self.log_path, lines)

    def launch_spec(self) -> LaunchSpec:
        """What to start; ``StartFailed`` when the app's ``user``/``group`` is unknown."""
        try:
            account = resolve_account(self.app.user, self.app.group)
        except ValueError as exc:
            raise StartFailed(f"cannot start {self.app.name}: {exc}") from None
        source = os.environ if self._base_env is None else self._base_env
        env = base_environment(source, account)
        return build_launch(self.app, self.port, self.release, str(self.log_path), env, account)

    async def start(self) -> None:
        """Refuse a busy port, append the header line, start the process, watch it."""
        if self.state is not InstanceState.NEW:
            raise RuntimeError(f"{self!r} was already started")
        spec = self.launch_spec()
        await self._launcher.ensure_free(self.app.host, self.port, self.app.name)
        logfile.append_line(
            self.log_path,
            f"start app={self.app.name} release={self.release} port={self.port} "
            f"argv={list(spec.argv)!r}",
            self._clock.wall(),
        )
        try:
            self._handle = self._launcher.launch(spec)
        except StartFailed as exc:
            logfile.append_line(self.log_path, f"start failed: {exc}", self._clock.wall())
            raise
        self.started_at = self._clock.wall()
        self.started_mono = self._clock.monotonic()
        self.state = InstanceState.RUNNING
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(self._handle), name=f"watch {self.app.name}:{self.port}"
        )

    def adopt(self, handle: ProcessHandle, started_at: float) -> None:
        """Take over a process an earlier nonstop started (``AdoptedProcess``): from now on
        it is watched, restarted and stopped as if started here."""
        if self.state is not InstanceState.NEW:
            raise RuntimeError(f"{self!r} was already started")
        now = self._clock.wall()
        logfile.append_line(
            self.log_path,
            f"adopt app={self.app.name} release={self.release} port={self.port} pid={handle.pid}",
            now,
        )
        self._handle = handle
        self.started_at = started_at
        self.started_mono = self._clock.monotonic() - max(0.0, now - started_at)
        self.state = InstanceState.RUNNING
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(handle), name=f"watch {self.app.name}:{self.port}"
        )

    def leave_running(self) -> None:
        """Stop watching, leave the process running: the next nonstop adopts it."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self._handle is not None:
            self._handle.close()

    async def wait(self) -> int:
        """Wait until the process has exited and been reaped; its return code."""
        if self._handle is None:
            raise RuntimeError(f"{self!r} was never started")
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    async def stop(self, timeout: float | None = None) -> int | None:
        """``stop_signal`` to the group; SIGKILL after ``timeout`` (``stop_timeout``).

        Returns the return code, or None if the instance was never started.  Safe to call
        twice and after a crash: a reaped process is never signalled.
        """
        handle = self._handle
        if handle is None:
            return None
        if self._done.is_set():
            return self.returncode
        if self.state is InstanceState.RUNNING:
            self.state = InstanceState.STOPPING
        limit = self.app.stop_timeout if timeout is None else timeout
        handle.signal_group(signal.Signals[self.app.stop_signal])
        try:
            await asyncio.wait_for(self._done.wait(), limit)
        except TimeoutError:
            handle.signal_group(signal.SIGKILL)
            await asyncio.wait_for(self._done.wait(), _KILL_WAIT)
        return self.returncode

    async def _watch(self, handle: ProcessHandle) -> None:
        code = await handle.wait_exit()
        handle.reap()
        crashed = self.state is InstanceState.RUNNING
        self.returncode = code
        self.state = InstanceState.CRASHED if crashed else InstanceState.STOPPED
        started = self.started_mono
        ran = self._clock.monotonic() - started if started is not None else 0.0
        try:
            logfile.append_line(
                self.log_path,
                f"{'crash' if crashed else 'stop'} app={self.app.name} release={self.release} "
                f"port={self.port} pid={handle.pid} {logfile.describe_exit(code)} "
                f"after {ran:.1f}s",
                self._clock.wall(),
            )
        except OSError as exc:  # a full disk loses the footer, never the exit itself
            log.error("cannot write %s: %s", self.log_path, exc.strerror or exc)
        self._done.set()
        if self.on_exit is not None:
            self.on_exit(self, code, crashed)
