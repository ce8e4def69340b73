"""Sizes and durations written the way nginx writes them.

``parse_size`` follows ``ngx_parse_size`` (src/core/ngx_parse.c): a decimal number with an
optional ``k``, ``m`` or ``g`` suffix in either case.  ``parse_duration`` follows
``ngx_parse_time``: groups such as ``1h 30m`` or ``1m30s`` with units ``y M w d h m s ms``
from the largest to the smallest, each at most once; a bare number means seconds.
Errors are ``ValueError``; the loaders add the file and line or key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "master_process_off",
    "parse_cpu_affinity",
    "parse_duration",
    "parse_priority",
    "parse_size",
    "parse_workers",
    "worker_cpus",
]

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}
_SIZE = re.compile(r"([0-9]+)([kKmMgG]?)")

# Largest first: a unit may only follow a larger one, as ngx_parse_time's "step" demands.
_TIME_UNITS: tuple[tuple[str, float], ...] = (
    ("y", 365 * 86400.0),
    ("M", 30 * 86400.0),
    ("w", 7 * 86400.0),
    ("d", 86400.0),
    ("h", 3600.0),
    ("m", 60.0),
    ("s", 1.0),
    ("ms", 0.001),
)
_TIME_GROUP = re.compile(r"\s*([0-9]+)(ms|[yMwdhms]?)\s*")


def parse_size(text: str) -> int:
    """``"10m"`` -> 10485760; ``"512"`` -> 512 bytes."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f'invalid size "{text}": expected a number with optional k, m or g')
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_duration(text: str) -> float:
    """``"1m30s"`` -> 90.0; ``"500ms"`` -> 0.5; ``"10"`` -> 10.0 seconds."""
    rank = {unit: i for i, (unit, _) in enumerate(_TIME_UNITS)}
    factor = dict(_TIME_UNITS)
    total = 0.0
    pos, last = 0, -1
    source = text.strip()
    if not source:
        raise ValueError('invalid duration "": expected a number with optional unit')
    while pos < len(source):
        match = _TIME_GROUP.match(source, pos)
        if match is None or match.end() == pos:
            raise ValueError(f'invalid duration "{text}": use units ms s m h d w M y')
        unit = match.group(2) or "s"
        bare = not match.group(2)
        if rank[unit] <= last or (bare and match.end() != len(source)):
            raise ValueError(f'invalid duration "{text}": units must go from largest to smallest')
        last = rank[unit]
        total += int(match.group(1)) * factor[unit]
        pos = match.end()
    return total


def parse_workers(text: str) -> int:
    """``worker_processes``: a number of processes, or ``auto`` for one per usable core
    (the cores this process may run on, as nginx counts them)."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) or 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f'invalid value "{text}": expected a number of processes or "auto"')
    return int(text)


# CPU_SETSIZE: the CPUs a mask of sched_setaffinity(2) can name, and the longest mask nginx
# takes in worker_cpu_affinity
CPU_SETSIZE = 1024


def parse_cpu_affinity(words: Sequence[str]) -> tuple[str, ...]:
    """``worker_cpu_affinity``: ``auto`` with at most one mask, or one mask per worker
    (the last one for the workers past them), each a string of 0 and 1 whose last character
    is CPU 0, as nginx reads it (ngx_set_cpu_affinity).  The words, checked."""
    if not words:
        raise ValueError('invalid number of arguments in "worker_cpu_affinity" directive')
    auto = words[0] == "auto"
    # a quoted mask may hold spaces, which nginx skips
    masks = tuple(mask.replace(" ", "") for mask in (words[1:] if auto else words))
    if auto and len(masks) > 1:
        raise ValueError('invalid number of arguments in "worker_cpu_affinity" directive')
    for mask in masks:
        if len(mask) > CPU_SETSIZE:
            raise ValueError(f'"worker_cpu_affinity" supports up to {CPU_SETSIZE} CPUs only')
        bad = next((ch for ch in mask if ch not in "01"), None)
        if bad is not None:
            raise ValueError(f'invalid character "{bad}" in "worker_cpu_affinity"')
        if "1" not in mask:
            raise ValueError(f'"worker_cpu_affinity" mask "{mask}" names no CPU')
    return ("auto", *masks) if auto else masks


def _cpus(mask: str) -> set[int]:
    """The CPUs a checked mask names: its last character is CPU 0."""
    return {i for i, ch in enumerate(reversed(mask)) if ch == "1"}


def worker_cpus(spec: Sequence[str], index: int, allowed: Iterable[int]) -> frozenset[int] | None:
    """The CPUs worker ``index`` is bound to, or None (not bound).

    ``auto``: one CPU per worker, in turn, among those this process may run on (and in the
    mask, if one is given): nginx counts the machine's CPUs instead, and a CPU outside a
    cgroup's set would make its binding fail.  Masks: the worker's own, or the last.
    """
    if not spec:
        return None
    if spec[0] == "auto":
        usable = sorted(allowed)
        if len(spec) > 1:
            wanted = _cpus(spec[1])
            usable = [cpu for cpu in usable if cpu in wanted]
        if not usable:
            return None
        return frozenset({usable[index % len(usable)]})
    return frozenset(_cpus(spec[min(index, len(spec) - 1)]))


def parse_priority(text: str) -> int:
    """``worker_priority``: a nice value, -20 (first) to 19 (last); nginx also takes 20,
    which the kernel reads as 19."""
    body = text[1:] if text[:1] in "+-" else text
    if not body.isdigit() or not -20 <= int(text) <= 20:
        raise ValueError(f'invalid number "{text}" in "worker_priority": expected -20 to 20')
    return min(int(text), 19)


def master_process_off(
    *, nginx_engine: bool, user: bool, workers: int, affinity: bool, where: str
) -> str:
    """What ``master_process off`` (TOML ``master_process = false``) means for a config,
    said once when it is loaded; ``where``: the file and line, or the file."""
    if nginx_engine:
        return (
            '"master_process off" has no effect with the nginx engine: nonstop drives'
            f" nginx's master and its workers ({where})"
        )
    if user:
        return (
            '"master_process off" is overridden by "user": the proxy runs in worker'
            f" processes as that user, never in the root control process ({where})"
        )
    parts = ["one process serves and drives the proxy, as nginx's single-process mode"]
    if workers != 1:
        parts.append(f'"worker_processes {workers}" has no effect')
    if affinity:
        parts.append('"worker_cpu_affinity" binds no process')
    return (
        f'"master_process off": {"; ".join(parts)}; a crash or SIGKILL of nonstop cuts'
        f" every connection ({where})"
    )
