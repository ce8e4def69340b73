"""Side by side in one run: nonstop, nginx (upstream keepalive 256 and 32) and HAProxy.

All proxies run at once, each on its own loopback port, pinned to the same core, in front of
the same backend nginx. wrk measures them in interleaved rounds (round r starts r places
further along the list), so slow drift in a shared machine's load spreads over every proxy
instead of landing on one. Reported: medians over rounds of requests/s, p50 and p99 latency,
and the proxy's CPU seconds per 100k requests (utime + stime of all its processes, read from
/proc before and after each wrk run).

    python bench/proxy_bench.py                      # everything, ~3 minutes
    python bench/proxy_bench.py --only nginx256,haproxy --rounds 3 --duration 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _harness import (
    ALL_PROXIES,
    Lab,
    Proxy,
    StartFailed,
    free_ports,
    parse_bench_args,
    pinned_self,
    raise_on_sigterm,
    require_tools,
    save_results,
)
from _procfs import busy_percent, core_times, cpu_seconds, tree_pids
from _wrk import run_wrk

DIRECT = "direct"  # wrk straight at the backend: the ceiling of the client core


@dataclass(frozen=True)
class Target:
    """Something wrk can be pointed at, and the processes whose CPU it costs."""

    name: str
    url: str
    pids: Callable[[], list[int]]
    alive: Callable[[], bool]


@dataclass(frozen=True)
class Run:
    """One wrk run against one target."""

    round: int
    name: str
    rps: float
    requests: int
    duration_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    proxy_cpu_s: float
    backend_cpu_s: float
    busy_percent: dict[int, float]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(ALL_PROXIES), help="comma-separated proxies")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3-5)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up each")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-direct", action="store_true", help="skip wrk -> backend runs")
    args = parse_bench_args(parser, argv)
    return args


def start_proxies(
    lab: Lab, names: list[str], backend_ports: list[int]
) -> tuple[dict[str, Proxy], dict[str, str]]:
    """Start every named proxy; a proxy that fails is reported, not fatal."""
    proxies: dict[str, Proxy] = {}
    failures: dict[str, str] = {}
    for name, port in zip(names, free_ports(len(names)), strict=True):
        try:
            proxies[name] = lab.start_proxy(name, port, backend_ports)
            print(f"started {name} on 127.0.0.1:{port} (pid {proxies[name].pid})", flush=True)
        except StartFailed as exc:
            failures[name] = str(exc)
            print(f"SKIPPING {name}: {exc}", file=sys.stderr, flush=True)
    return proxies, failures


def measure(target: Target, rnd: int, args: argparse.Namespace, backend_pid: int) -> Run:
    """One wrk run with the proxy's and the backend's CPU time read around it."""
    pids, backend_pids = target.pids(), tree_pids(backend_pid)
    proxy_before, backend_before = cpu_seconds(pids), cpu_seconds(backend_pids)
    cores_before = core_times()
    result, _ = run_wrk(
        target.url,
        threads=args.threads,
        connections=args.connections,
        duration_s=args.duration,
        cpu=args.client_cpu,
    )
    busy = busy_percent(cores_before, core_times())
    return Run(
        round=rnd,
        name=target.name,
        rps=result.rps,
        requests=result.requests,
        duration_s=result.duration_s,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        proxy_cpu_s=cpu_seconds(pids) - proxy_before if target.name != DIRECT else 0.0,
        backend_cpu_s=cpu_seconds(backend_pids) - backend_before,
        busy_percent={core: round(pct, 1) for core, pct in busy.items()},
    )


def run_rounds(targets: list[Target], args: argparse.Namespace, backend_pid: int) -> list[Run]:
    """Interleaved rounds: round r measures the targets rotated by r places."""
    runs: list[Run] = []
    dead: set[str] = set()
    for rnd in range(args.rounds):
        shift = rnd % len(targets)
        for target in targets[shift:] + targets[:shift]:
            if target.name in dead:
                continue
            if not target.alive():
                dead.add(target.name)
                print(f"{target.name} is no longer running; dropped", file=sys.stderr)
                continue
            run = measure(target, rnd + 1, args, backend_pid)
            runs.append(run)
            print(
                f"round {rnd + 1} {target.name:9} {run.rps:10.0f} req/s  "
                f"p99 {_ms(run.p99_ms)}  cpu {run.proxy_cpu_s:.2f}s  errors {run.errors}",
                flush=True,
            )
    return runs


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[Run], names: list[str]) -> dict[str, dict[str, Any]]:
    """Medians per target, and ratios to nginx keepalive 256 where it was measured."""
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [run for run in runs if run.name == name]
        if not mine:
            continue
        per_100k = [100_000 * r.proxy_cpu_s / r.requests for r in mine if r.requests]
        cores = sorted({core for r in mine for core in r.busy_percent})
        summary[name] = {
            "rounds": len(mine),
            "rps": _median([r.rps for r in mine]),
            "rps_per_round": [round(r.rps) for r in mine],
            "p50_ms": _median([r.p50_ms for r in mine]),
            "p99_ms": _median([r.p99_ms for r in mine]),
            "cpu_s_per_100k": _median(per_100k) if name != DIRECT else None,
            "proxy_cpu_util": _median([r.proxy_cpu_s / r.duration_s for r in mine]),
            "busy_percent": {c: _median([r.busy_percent.get(c) for r in mine]) for c in cores},
            "errors": sum(r.errors for r in mine),
        }
    base = summary.get("nginx256")
    for entry in summary.values():
        entry["rps_vs_nginx256"] = entry["rps"] / base["rps"] if base else None
        cpu, base_cpu = entry["cpu_s_per_100k"], base and base["cpu_s_per_100k"]
        entry["cpu_vs_nginx256"] = cpu / base_cpu if cpu and base_cpu else None
    return summary


def _ms(value: float | None) -> str:
    return f"{value:.2f} ms" if value is not None else "-"


def _fmt(value: float | None, pattern: str) -> str:
    return pattern.format(value) if value is not None else "-"


def markdown_table(
    summary: dict[str, dict[str, Any]], failures: dict[str, str], args: argparse.Namespace
) -> str:
    """The results as a markdown table (medians of the rounds)."""
    cores = f"proxy core {args.proxy_cpu} / client core {args.client_cpu} busy"
    lines = [
        f"| target | req/s | vs nginx256 | p50 | p99 | proxy CPU s / 100k req "
        f"| CPU vs nginx256 | proxy CPU use | {cores} | errors | req/s per round |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, s in summary.items():
        busy = s["busy_percent"]
        lines.append(
            f"| {name} | {s['rps']:.0f} | {_fmt(s['rps_vs_nginx256'], '{:.2f}')} "
            f"| {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | {_fmt(s['cpu_s_per_100k'], '{:.2f}')} "
            f"| {_fmt(s['cpu_vs_nginx256'], '{:.2f}')} "
            f"| {_fmt(s['proxy_cpu_util'] * 100 if name != DIRECT else None, '{:.0f}%')} "
            f"| {_fmt(busy.get(args.proxy_cpu), '{:.0f}%')} / "
            f"{_fmt(busy.get(args.client_cpu), '{:.0f}%')} "
            f"| {s['errors']} | {', '.join(map(str, s['rps_per_round']))} |"
        )
    for name in failures:
        lines.append(f"| {name} | failed (below) |" + " |" * 9)
    lines.extend(f"\n{name} failed: {why}" for name, why in failures.items())
    return "\n".join(lines)


def write_results(
    args: argparse.Namespace,
    runs: list[Run],
    summary: dict[str, dict[str, Any]],
    failures: dict[str, str],
) -> Path:
    payload = {
        "summary": summary,
        "failures": failures,
        "runs": [asdict(run) for run in runs],
    }
    return save_results(args.results, "proxy_bench", args, payload)


def targets_for(
    proxies: dict[str, Proxy], backend_port: int, backend_pid: int, direct: bool
) -> list[Target]:
    targets = [Target(p.name, p.url, p.pids, p.alive) for p in proxies.values()]
    if direct:
        url = f"http://127.0.0.1:{backend_port}/"
        targets.append(Target(DIRECT, url, lambda: [], lambda: bool(tree_pids(backend_pid))))
    return targets


def warm_up(targets: list[Target], args: argparse.Namespace) -> None:
    """A short wrk run on each target, so the first measured round is not a cold start."""
    if args.warmup <= 0:
        return
    for target in targets:
        run_wrk(
            target.url,
            threads=args.threads,
            connections=args.connections,
            duration_s=args.warmup,
            cpu=args.client_cpu,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    require_tools(["nginx", "wrk", "taskset"] + (["haproxy"] if "haproxy" in args.names else []))
    with (
        Lab.create("proxy_bench", args.proxy_cpu, args.client_cpu, nonstop=args.nonstop) as lab,
        pinned_self(args.client_cpu),
    ):
        print(f"run folder: {lab.root}", flush=True)
        backend_ports = free_ports(2)
        backend = lab.start_backend(backend_ports)
        proxies, failures = start_proxies(lab, args.names, backend_ports)
        targets = targets_for(proxies, backend_ports[0], backend.pid, not args.no_direct)
        warm_up(targets, args)
        runs = run_rounds(targets, args, backend.pid)
    names = [*args.names, DIRECT]
    summary = summarize(runs, names)
    print()
    print(markdown_table(summary, failures, args))
    print(f"\nresults: {write_results(args, runs, summary, failures)}")
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
