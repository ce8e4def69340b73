"""Running wrk and reading its report.

wrk prints a human report; the numbers the benchmarks need are parsed from it: requests and
duration, Requests/sec, the 50% and 99% lines of ``--latency``, "Socket errors" and
"Non-2xx or 3xx responses" (both lines appear only when non-zero).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["WrkResult", "parse_wrk", "run_wrk", "start_wrk", "wrk_argv"]

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_NUMBER_UNIT = r"([0-9.]+)(us|ms|s|m|h)"


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, as numbers."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Every failed request wrk saw: non-2xx/3xx responses plus socket errors."""
        return self.non_2xx + sum(self.socket_errors.values())


def _to_ms(number: str, unit: str) -> float:
    return float(number) * _TIME_UNITS_MS[unit]


def _percentile(text: str, percent: int) -> float | None:
    match = re.search(rf"^\s*{percent}%\s+{_NUMBER_UNIT}\s*$", text, re.MULTILINE)
    return _to_ms(match.group(1), match.group(2)) if match else None


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk's report; raises ValueError when the report has no request count."""
    summary = re.search(r"(\d+) requests in " + _NUMBER_UNIT, text)
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if summary is None or rps is None:
        raise ValueError(f"not a wrk report: {text.strip()[-300:]!r}")
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    if sockets:
        socket_errors = dict(zip(socket_errors, map(int, sockets.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        requests=int(summary.group(1)),
        duration_s=_to_ms(summary.group(2), summary.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=_percentile(text, 50),
        p99_ms=_percentile(text, 99),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


def wrk_argv(
    url: str,
    *,
    threads: int,
    connections: int,
    duration_s: float,
    cpu: int | None,
    script: Path | None = None,
) -> list[str]:
    """The wrk command line, pinned to ``cpu`` with taskset when one is given; ``script``
    is a wrk Lua script (``-s``), e.g. one that makes every request a POST."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency", url]
    if script is not None:
        argv[1:1] = ["-s", str(script)]
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv


def run_wrk(
    url: str,
    *,
    threads: int,
    connections: int,
    duration_s: float,
    cpu: int | None,
    script: Path | None = None,
) -> tuple[WrkResult, str]:
    """Run wrk to completion; returns the parsed result and the raw report."""
    argv = wrk_argv(
        url,
        threads=threads,
        connections=connections,
        duration_s=duration_s,
        cpu=cpu,
        script=script,
    )
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    return parse_wrk(done.stdout + done.stderr), done.stdout


def start_wrk(
    url: str, *, threads: int, connections: int, duration_s: float, cpu: int | None
) -> subprocess.Popen[str]:
    """Start wrk in the background (stdout and stderr piped, as text)."""
    argv = wrk_argv(url, threads=threads, connections=connections, duration_s=duration_s, cpu=cpu)
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
