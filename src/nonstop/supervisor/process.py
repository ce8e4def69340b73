"""One child process nonstop started: signal its group, see it exit, reap it — safely.

Why ``subprocess.Popen`` plus our own exit watcher rather than
``asyncio.create_subprocess_exec``: asyncio's child watchers (and uvloop's) reap the child
the moment it exits.  From then on its pid — which is also its process-group id, since each
instance runs in its own session — may be recycled, and ``killpg`` could hit a stranger.
We instead learn of the exit *without reaping* (a pidfd becomes readable; where pidfds are
missing, ``waitid(WNOWAIT)`` is polled), so while we look at the exited leader it stays a
zombie and pins its pid and group id.  ``reap`` then SIGKILLs whatever is left in the group
(children the app spawned that would otherwise keep the port) and only then collects the
zombie.  After that, ``signal_group`` refuses: nothing is ever signalled by a pid that
might have been reused.

Everything runs on the event loop thread, so "reaped" cannot change between the check
and the ``killpg`` in ``signal_group``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time

__all__ = [
    "UNKNOWN_EXIT",
    "ChildProcess",
    "WatchedProcess",
    "process_cmdline",
    "process_start_ticks",
    "process_started_at",
]

_POLL_INTERVAL = 0.05
# The exit of a process that is not our child (adopted after a restart of nonstop): it
# ended, but only its parent could learn how.
UNKNOWN_EXIT = -256


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat``: when the process started, in clock ticks since boot.

    With the pid it identifies one process for good: a recycled pid has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces or ")".
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_started_at(start_ticks: int) -> float:
    """The wall-clock time of a start time read by ``process_start_ticks``."""
    try:
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
    except (OSError, StopIteration, ValueError):
        return time.time()
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


def process_cmdline(pid: int) -> str | None:
    """``/proc/PID/cmdline`` as text (arguments NUL-separated); None if it cannot be read.

    With pid and start time, what a restarted nonstop compares before adopting a process.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data.rstrip(b"\0").decode(errors="replace") if data else None


def _status(result: os.waitid_result) -> int:
    """A subprocess-style return code: exit status, or -signal."""
    if result.si_code == os.CLD_EXITED:
        return int(result.si_status)
    return -int(result.si_status)


class WatchedProcess:
    """A process-group leader nonstop signals and waits for, without ever reaping it
    behind its own back: what an instance's process is, started here (``ChildProcess``)
    or adopted from an earlier nonstop (``orphan.AdoptedProcess``).  A subclass says how
    its exit is learnt (``_watch``, which ends in ``_settle``) and whether its pid still
    names it (``_still_ours``), and reaps it its own way."""

    def __init__(self, pid: int, start_ticks: int | None) -> None:
        self.pid = pid
        self.start_ticks = start_ticks
        self.returncode: int | None = None  # set when the leader has exited, before reaping
        self.reaped = False
        self._exit: asyncio.Future[int] | None = None
        self._pidfd: int | None = None

    def _still_ours(self) -> bool:
        """Whether ``pid`` still names this process (a hook; signalled only if so)."""
        return True

    def _watch(self) -> None:
        raise NotImplementedError

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the whole process group; False if nothing was sent."""
        if self.reaped or not self._still_ours():
            return False
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    async def wait_exit(self) -> int:
        """Wait until the group leader has exited; does not reap it."""
        if self.returncode is not None:
            return self.returncode
        if self._exit is None:
            self._exit = asyncio.get_running_loop().create_future()
            self._watch()
        return await asyncio.shield(self._exit)

    def _settle(self, code: int) -> None:
        self.returncode = code
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(code)

    def close(self) -> None:
        """Stop watching (the loop is going away); the process itself is not touched."""
        self._unwatch()

    def _unwatch(self) -> None:
        if self._pidfd is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None


class ChildProcess(WatchedProcess):
    """A ``Popen`` started with ``start_new_session=True`` (so pgid == pid).  Its zombie
    pins its pid until ``reap``: it is ours for as long as it is not reaped."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        super().__init__(popen.pid, process_start_ticks(popen.pid))
        self._popen = popen
        self._poller: asyncio.Task[None] | None = None

    def reap(self) -> int:
        """After ``wait_exit``: SIGKILL what is left of the group, then collect the zombie."""
        if self.reaped:
            assert self.returncode is not None
            return self.returncode
        if self.returncode is None:
            raise RuntimeError(f"pid {self.pid} has not exited; wait_exit() first")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # the zombie leader still pins the group id
        self._popen.wait()
        self.reaped = True
        return self.returncode

    # -- watching without reaping ----------------------------------------------------------

    def _peek(self) -> int | None:
        try:
            result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # Someone else reaped it: the pid may already be reused, so never signal again.
            self.reaped = True
            return self._popen.returncode if self._popen.returncode is not None else -1
        if result is None or result.si_pid == 0:
            return None
        return _status(result)

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._poller = loop.create_task(self._poll())
            return
        loop.add_reader(self._pidfd, self._on_pidfd)

    def _on_pidfd(self) -> None:
        self._unwatch()
        code = self._peek()
        self._settle(code if code is not None else -signal.SIGKILL)

    async def _poll(self) -> None:
        while (code := self._peek()) is None:
            await asyncio.sleep(_POLL_INTERVAL)
        self._settle(code)

    def close(self) -> None:
        super().close()
        if self._poller is not None:
            self._poller.cancel()
