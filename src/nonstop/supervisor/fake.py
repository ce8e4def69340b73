"""A launcher and processes that exist only in memory, for unit tests.

``FakeProcess`` records every signal it receives and exits on any signal it does not
ignore, as a process with default handlers would; ``exit(code)`` simulates a crash.  It
keeps the real rule that a reaped process is never signalled again: ``signals`` shows
only what was delivered, ``refused`` what was attempted after the reap.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nonstop.supervisor.command import LaunchSpec
from nonstop.supervisor.errors import PortBusy, StartFailed

__all__ = ["FakeLauncher", "FakeProcess"]


@dataclass
class FakeProcess:
    pid: int
    spec: LaunchSpec
    ignore: frozenset[int] = frozenset()
    start_ticks: int | None = 1
    returncode: int | None = None
    reaped: bool = False
    signals: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    released: bool = False  # no longer watched: nonstop stopped and left it running
    _exited: asyncio.Event = field(default_factory=asyncio.Event)

    def signal_group(self, signum: int) -> bool:
        if self.reaped:
            self.refused.append(signum)
            return False
        if self.returncode is not None:
            return True  # a zombie: delivered, no effect
        self.signals.append(signum)
        if signum not in self.ignore:
            self.exit(-signum)
        return True

    def exit(self, code: int) -> None:
        """The process ends with ``code`` (-N for a signal)."""
        if self.returncode is None:
            self.returncode = code
            self._exited.set()

    async def wait_exit(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def reap(self) -> int:
        if self.returncode is None:
            raise RuntimeError("reap before exit")
        self.reaped = True
        return self.returncode

    def close(self) -> None:
        self.released = True


@dataclass
class FakeLauncher:
    """Hands out ``FakeProcess``es; ``busy`` ports fail the port check."""

    busy: set[int] = field(default_factory=set)
    fail: StartFailed | None = None
    ignore: frozenset[int] = frozenset()
    launched: list[FakeProcess] = field(default_factory=list)
    next_pid: int = 4000

    async def ensure_free(self, host: str, port: int, app: str) -> None:
        if port in self.busy:
            raise PortBusy(host, port, app)

    def launch(self, spec: LaunchSpec) -> FakeProcess:
        if self.fail is not None:
            raise self.fail
        self.next_pid += 1
        proc = FakeProcess(pid=self.next_pid, spec=spec, ignore=self.ignore)
        self.launched.append(proc)
        return proc
