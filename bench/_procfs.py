"""Readings from /proc: process trees, CPU seconds, resident memory, per-core busy time.

A proxy is a tree of processes (nginx: master + worker, HAProxy in master-worker mode:
master + worker, nonstop: whatever it runs), so every reading takes a root PID, walks its
descendants and sums over all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CoreTimes",
    "ProcInfo",
    "busy_percent",
    "core_times",
    "cpu_seconds",
    "proc_info",
    "pss_kib",
    "rss_kib",
    "tree_pids",
]

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcInfo:
    """The fields of /proc/PID/stat the benchmarks use."""

    pid: int
    comm: str
    ppid: int
    utime: int
    stime: int
    starttime: int


def proc_info(pid: int) -> ProcInfo | None:
    """Parse /proc/PID/stat; None when the process is gone.

    The command name sits in parentheses and may itself hold spaces or parentheses, so the
    fixed fields are split off after the *last* ')' (see proc(5)).
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    head, _, rest = raw.rpartition(")")
    comm = head.partition("(")[2]
    fields = rest.split()
    # fields[0] is field 3 (state): ppid = 4, utime = 14, stime = 15, starttime = 22
    return ProcInfo(
        pid=pid,
        comm=comm,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        starttime=int(fields[19]),
    )


def tree_pids(root: int) -> list[int]:
    """The root PID and all of its live descendants (root first)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_info(int(entry))
            if info is not None:
                children.setdefault(info.ppid, []).append(info.pid)
    if proc_info(root) is None:
        return []
    found, todo = [root], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by these processes (all their threads)."""
    return sum(cpu_split(pids))


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds consumed so far by these processes, apart."""
    user = system = 0
    for pid in pids:
        info = proc_info(pid)
        if info is not None:
            user += info.utime
            system += info.stime
    return user / _TICKS, system / _TICKS


def _status_kib(path: str, key: str) -> int:
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS (KiB). Pages shared between processes (nginx master/worker) count twice."""
    return sum(_status_kib(f"/proc/{pid}/status", "VmRSS") for pid in pids)


def pss_kib(pids: list[int]) -> int:
    """Sum of Pss (KiB): shared pages divided among their sharers, so a sum is not inflated."""
    return sum(_status_kib(f"/proc/{pid}/smaps_rollup", "Pss") for pid in pids)


@dataclass(frozen=True)
class CoreTimes:
    """Busy and total jiffies of one CPU core since boot, from /proc/stat."""

    busy: int
    total: int


def core_times() -> dict[int, CoreTimes]:
    """Per-core jiffies; busy is everything except idle and iowait (softirq counts as busy)."""
    cores: dict[int, CoreTimes] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            numbers = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total = sum(numbers)
            cores[int(name[3:])] = CoreTimes(busy=total - numbers[3] - numbers[4], total=total)
    return cores


def busy_percent(before: dict[int, CoreTimes], after: dict[int, CoreTimes]) -> dict[int, float]:
    """How busy each core was between two readings, in percent (every process, not only ours)."""
    result: dict[int, float] = {}
    for core, end in after.items():
        start = before.get(core)
        if start is not None and end.total > start.total:
            result[core] = 100.0 * (end.busy - start.busy) / (end.total - start.total)
    return result
