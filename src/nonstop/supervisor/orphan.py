"""Instances left running by a nonstop that died: recognise them for sure, then stop them.

Instances run in their own sessions, so they outlive a crashed daemon and keep their
ports.  The restarted daemon knows their pid and start time from the state store.  A pid
alone proves nothing (it may have been reused), so we act only when the process now
behind that pid started at the recorded time *and* still leads its own process group —
and we hold a pidfd on it while we check, so it cannot be swapped underneath us.  Once the
leader is gone we stop: its group id could be reused by then, so its leftovers are not
ours to signal any more.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from nonstop.supervisor.process import process_start_ticks

__all__ = ["is_our_process", "reclaim"]

_POLL = 0.05


def _is_zombie(pid: int) -> bool:
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
    if process_start_ticks(pid) != start_ticks or _is_zombie(pid):
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
