"""Instances left running by an earlier nonstop: recognise them for sure, adopt or stop them.

Instances run in their own sessions, so they outlive the daemon (a crash, a SIGKILL,
``nonstop stop``, an upgrade) and keep their ports.  The next daemon knows their pid,
start time and command line from the state store.  A pid alone proves nothing (it may
have been reused), so we act only when the process now behind that pid started at the
recorded time *and* still leads its own process group (and, to adopt it, has the recorded
command line) — and we hold a pidfd on it while we check.  Once the leader is gone we
stop: its group id could be reused by then, so its leftovers are not ours to signal.

``AdoptedProcess`` is such a process taken over: a ``WatchedProcess`` as an instance
started here is, watched through its pidfd (Linux 5.3 or later), and signalled only while
that pidfd says it has not exited.  It is not our child,
so its exit status cannot be known; its exit is reported as ``UNKNOWN_EXIT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import time

from nonstop.supervisor.process import (
    UNKNOWN_EXIT,
    WatchedProcess,
    process_cmdline,
    process_start_ticks,
)

__all__ = ["AdoptedProcess", "is_gone", "is_our_process", "reclaim"]

_POLL = 0.05


def is_gone(pid: int) -> bool:
    """No process ``pid`` runs (a zombie has ended: it only waits to be collected)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2 :].startswith(b"Z")


def is_our_process(pid: int, start_ticks: int | None) -> bool:
    """True if ``pid`` is alive, started at ``start_ticks`` and leads its own group."""
    if pid <= 1 or start_ticks is None:
        return False
    if process_start_ticks(pid) != start_ticks or is_gone(pid):
        return False
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _signal(pid: int, start_ticks: int, signum: int) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False
    try:
        if not is_our_process(pid, start_ticks):
            return False
        os.killpg(pid, signum)  # the pidfd was opened first: pid still names our leader
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


async def reclaim(pid: int, start_ticks: int | None, stop_signal: str, timeout: float) -> bool:
    """Stop an orphaned instance: ``stop_signal`` to its group, SIGKILL after ``timeout``.

    Returns True if the process was ours and is gone now, False if it was not ours (or
    was already gone) and nothing was signalled.
    """
    if start_ticks is None or not _signal(pid, start_ticks, signal.Signals[stop_signal]):
        return False
    for signum in (None, signal.SIGKILL):
        if signum is not None and not _signal(pid, start_ticks, signum):
            return True
        deadline = time.monotonic() + (timeout if signum is None else 10.0)
        while time.monotonic() < deadline:
            if not is_our_process(pid, start_ticks):
                return True
            await asyncio.sleep(_POLL)
    return not is_our_process(pid, start_ticks)


class AdoptedProcess(WatchedProcess):
    """An instance an earlier nonstop started, taken over and watched through a pidfd:
    ours while the pidfd has not signalled its exit (its pid may be reused after that)."""

    def __init__(self, pid: int, start_ticks: int, pidfd: int) -> None:
        super().__init__(pid, start_ticks)
        self._pidfd = pidfd

    @classmethod
    def take(
        cls, pid: int | None, start_ticks: int | None, cmdline: str | None
    ) -> AdoptedProcess | None:
        """The process recorded as (pid, start time, command line), if it is still that one."""
        if pid is None or start_ticks is None or cmdline is None:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            return None
        if not is_our_process(pid, start_ticks) or process_cmdline(pid) != cmdline:
            os.close(pidfd)
            return None
        return cls(pid, start_ticks, pidfd)

    def _still_ours(self) -> bool:
        if self.returncode is not None or self._pidfd is None:
            return False
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return not poller.poll(0)

    def _watch(self) -> None:
        assert self._pidfd is not None
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        self._unwatch()
        self._settle(UNKNOWN_EXIT)

    def reap(self) -> int:
        """After ``wait_exit``; collects the zombie only if this process is its parent
        (a daemon that took its instances back after a failed upgrade)."""
        if self.returncode is None:
            raise RuntimeError(f"pid {self.pid} has not exited; wait_exit() first")
        if not self.reaped:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            self.reaped = True
        return self.returncode
