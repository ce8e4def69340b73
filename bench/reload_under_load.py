"""Reloads under load: does a config reload fail any request?

For each proxy, started fresh: wrk runs through it for ``--duration`` seconds while the proxy
is told to reload its (unchanged) config ``--reloads`` times, evenly spaced -- nginx with
``nginx -p PREFIX -c CONF -s reload``, HAProxy (master-worker mode) with SIGUSR2 to the
master, nonstop with SIGHUP to its PID (or ``nonstop reload -c CONF`` with
``--nonstop-reload cli``). Counted from wrk's report: responses other than 2xx/3xx and socket
errors (connect, read, write, timeout). For nginx and HAProxy a reload is counted as done
when a new worker PID appears.

    python bench/reload_under_load.py                 # nonstop, nginx256, haproxy, ~40 s
    python bench/reload_under_load.py --only nginx256 --reloads 5 --duration 10
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from _harness import (
    ALL_PROXIES,
    Lab,
    Proxy,
    free_ports,
    http_status,
    measure_each,
    parse_bench_args,
    poll_until,
    raise_on_sigterm,
    require_tools,
    save_results,
)
from _wrk import parse_wrk, run_wrk, start_wrk


def workers(proxy: Proxy) -> set[int]:
    """PIDs of the proxy's child processes (nginx/HAProxy workers)."""
    return set(proxy.pids()[1:])


def reload_once(lab: Lab, proxy: Proxy, via_cli: bool) -> bool | None:
    """Reload once; True/False: a new worker appeared or not, None: cannot be observed."""
    before = workers(proxy)
    lab.reload(proxy, nonstop_via_cli=via_cli)
    if proxy.kind == "nonstop":
        return None
    return poll_until(lambda: bool(workers(proxy) - before), timeout_s=10.0)


def under_load(lab: Lab, proxy: Proxy, args: argparse.Namespace) -> dict[str, Any]:
    """wrk through ``proxy`` with reloads at evenly spaced moments; wrk's counts after."""
    wrk = start_wrk(
        proxy.url,
        threads=args.threads,
        connections=args.connections,
        duration_s=args.duration,
        cpu=args.client_cpu,
    )
    started = time.monotonic()
    seen: list[bool | None] = []
    try:
        for i in range(1, args.reloads + 1):
            moment = started + args.duration * i / (args.reloads + 1)
            time.sleep(max(0.0, moment - time.monotonic()))  # a schedule, not a readiness wait
            seen.append(reload_once(lab, proxy, args.nonstop_reload == "cli"))
        output, _ = wrk.communicate(timeout=args.duration + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    result = parse_wrk(output)
    return {
        "reloads_sent": len(seen),
        "reloads_seen": None if None in seen else sum(1 for s in seen if s),
        "requests": result.requests,
        "rps": result.rps,
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "errors": result.errors,
        "serves_after": http_status(proxy.port) == 200,
        "wrk_report": output,
    }


def measure(
    lab: Lab, name: str, backend_ports: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    proxy = lab.start_proxy(name, free_ports(1)[0], backend_ports)
    try:
        run_wrk(proxy.url, threads=1, connections=args.connections, duration_s=1, cpu=None)
        return under_load(lab, proxy, args)
    finally:
        lab.stop(proxy.proc)


def markdown_table(results: dict[str, dict[str, Any]], failures: dict[str, str]) -> str:
    lines = [
        "| proxy | reloads sent / seen | requests | req/s | non-2xx/3xx "
        "| socket errors (connect/read/write/timeout) | serves after |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, r in results.items():
        seen = "n/a" if r["reloads_seen"] is None else r["reloads_seen"]
        sockets = "/".join(str(v) for v in r["socket_errors"].values())
        lines.append(
            f"| {name} | {r['reloads_sent']} / {seen} | {r['requests']} | {r['rps']:.0f} "
            f"| {r['non_2xx']} | {sockets} | {'yes' if r['serves_after'] else 'NO'} |"
        )
    lines.extend(f"\n{name} failed: {why}" for name, why in failures.items())
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="nonstop,nginx256,haproxy", help="comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk each")
    parser.add_argument("--reloads", type=int, default=4, help="reloads during the run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nonstop-reload", choices=("sighup", "cli"), default="sighup")
    args = parse_bench_args(parser, argv, ALL_PROXIES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    require_tools(["nginx", "wrk", "taskset"] + (["haproxy"] if "haproxy" in args.names else []))
    results, failures = measure_each("reload_under_load", args, measure)
    print()
    print(markdown_table(results, failures))
    payload = {"results": results, "failures": failures}
    path = save_results(args.results, "reload_under_load", args, payload)
    print(f"\nresults: {path}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
