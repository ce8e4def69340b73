"""``worker_processes N``: nonstop beside nginx with the same number of workers, one run.

For each N in ``--workers`` (default 1 and 2) it starts nonstop and nginx on the same
nginx.conf (the proxy_bench config with ``worker_processes N``) in front of the same backend
nginx, and measures them in interleaved rounds with wrk (keep-alive GETs).  Reported, as
medians over the rounds: requests/s, the proxy's CPU seconds per 100k requests (every
process of it: nonstop's control process and workers, nginx's master and workers) and
its user and system parts in microseconds per request (the process's own work and the
kernel's), each worker's share of the client connections (from ``ss`` halfway through each
run) and of the proxy's CPU, and the load average when the run began and ended.

Pinning: with 1 worker the proxies run on ``--proxy-cpu`` and wrk and the backend on
``--client-cpu``, as in proxy_bench.py.  With more workers than that leaves room for, nothing
is pinned: the workers, wrk and the backend share every core, for nonstop and nginx alike.

    python bench/workers_bench.py                     # 1 and 2 workers, ~3 minutes
    python bench/workers_bench.py --workers 2 --rounds 5 --duration 10
    python bench/workers_bench.py --workers 1 --only nonstop,nonstop1p,nginx  # + one process

``nonstop1p`` is nonstop with ``master_process off``: the proxy in the control process, no
worker (compare it with ``--workers 1`` only: it ignores ``worker_processes``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from _configs import render_proxy_conf
from _harness import (
    Lab,
    Proxy,
    free_ports,
    parse_bench_args,
    raise_on_sigterm,
    require_tools,
    save_results,
)
from _procfs import cpu_seconds, cpu_split
from _wrk import parse_wrk, start_wrk

NAMES = ("nonstop", "nginx", "nonstop1p")  # nonstop1p: master_process off, one process


@dataclass(frozen=True)
class Run:
    round: int
    name: str
    workers: int
    rps: float
    requests: int
    errors: int
    cpu_s: float
    user_s: float  # of cpu_s, in user mode (the rest is the kernel's)
    connection_share: list[float]  # per worker, largest first
    cpu_share: list[float]  # per worker, largest first


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="nonstop,nginx")
    parser.add_argument(
        "--affinity",
        action="store_true",
        help="worker_cpu_affinity auto in both configs (with more than 1 worker)",
    )
    parser.add_argument(
        "--user",
        default=None,
        metavar='"USER [GROUP]"',
        help="a user line in both configs (as root: the workers run as that user)",
    )
    args = parse_bench_args(parser, argv, allowed=NAMES)
    args.counts = [int(n) for n in args.workers.split(",")]
    return args


def start(
    lab: Lab,
    name: str,
    workers: int,
    backend_ports: list[int],
    cpu: int | None,
    affinity: bool = False,
    user: str | None = None,
) -> Proxy:
    """nonstop or nginx on the proxy_bench config with ``worker_processes workers`` (and
    ``worker_cpu_affinity auto``: each worker bound to a core of its own; ``user``: the
    workers' user)."""
    port = free_ports(1)[0]
    prefix = lab.root / f"{name}-{workers}"
    (prefix / "temp").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    text = render_proxy_conf(port, backend_ports, 256)
    main = f"worker_processes {workers};"
    if affinity and workers > 1:
        main += "\nworker_cpu_affinity auto;"
    if user is not None:
        main += f"\nuser {user};"
    if name == "nonstop1p":
        main += "\nmaster_process off;"
    conf.write_text(text.replace("worker_processes 1;", main))
    log = prefix / "stderr.log"
    if name == "nginx":
        argv = ["nginx", "-p", f"{prefix}/", "-c", str(conf), "-g", "daemon off;"]
    else:
        argv = [str(lab.nonstop), "run", "-c", str(conf), "-p", str(prefix)]
    proc = lab.spawn(argv, cpu, log, prefix)
    lab.wait_http(proc, port, log, f"{name} ({workers} workers)")
    return Proxy(
        f"{name}-{workers}",
        "nginx" if name == "nginx" else "nonstop",
        port,
        proc,
        prefix,
        conf,
        log,
    )


def workers_of(proxy: Proxy) -> list[int]:
    """The processes that serve connections: nginx's and nonstop's workers (or the one
    process when it serves alone)."""
    pids = proxy.pids()
    return pids[1:] or pids[:1]


_USERS = re.compile(r"pid=(\d+)")


def connections_by_pid(port: int) -> Counter[int]:
    """Established client connections on ``port``, by the process holding them."""
    done = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    )
    held: Counter[int] = Counter()
    for line in done.stdout.splitlines():
        for pid in set(_USERS.findall(line)):
            held[int(pid)] += 1
    return held


def shares(values: list[float]) -> list[float]:
    total = sum(values)
    return sorted((v / total if total else 0.0 for v in values), reverse=True)


def measure(proxy: Proxy, workers: int, rnd: int, args: argparse.Namespace, cpu: int | None) -> Run:
    serving = workers_of(proxy)
    all_pids = proxy.pids()
    before_user, before_sys = cpu_split(all_pids)
    before_each = [cpu_seconds([pid]) for pid in serving]
    wrk = start_wrk(
        f"http://127.0.0.1:{proxy.port}/",
        threads=args.threads,
        connections=args.connections,
        duration_s=args.duration,
        cpu=cpu,
    )
    time.sleep(args.duration / 2)  # halfway: every wrk connection is open and busy
    held = connections_by_pid(proxy.port)
    output, _ = wrk.communicate(timeout=args.duration + 30)
    result = parse_wrk(output)
    after_each = [cpu_seconds([pid]) for pid in serving]
    after_user, after_sys = cpu_split(all_pids)
    return Run(
        round=rnd,
        name=proxy.name,
        workers=workers,
        rps=result.rps,
        requests=result.requests,
        errors=result.errors,
        cpu_s=after_user + after_sys - before_user - before_sys,
        user_s=after_user - before_user,
        connection_share=shares([float(held.get(pid, 0)) for pid in serving]),
        cpu_share=shares([a - b for a, b in zip(after_each, before_each, strict=True)]),
    )


def summarize(runs: list[Run]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.name for r in runs):
        mine = [r for r in runs if r.name == name]
        out[name] = {
            "workers": mine[0].workers,
            "rps": statistics.median(r.rps for r in mine),
            "cpu_s_per_100k": statistics.median(
                100_000 * r.cpu_s / r.requests for r in mine if r.requests
            ),
            # per request, in microseconds: where the CPU went, the process's or the kernel's
            "user_us": statistics.median(1e6 * r.user_s / r.requests for r in mine if r.requests),
            "system_us": statistics.median(
                1e6 * (r.cpu_s - r.user_s) / r.requests for r in mine if r.requests
            ),
            "connection_share": [round(max(r.connection_share), 3) for r in mine],
            "cpu_share": [round(max(r.cpu_share), 3) for r in mine],
            "errors": sum(r.errors for r in mine),
            "rps_per_round": [round(r.rps) for r in mine],
        }
    for entry in out.values():
        base = out.get(f"nginx-{entry['workers']}")
        if base:
            entry["rps_vs_nginx"] = entry["rps"] / base["rps"]
            entry["cpu_vs_nginx"] = entry["cpu_s_per_100k"] / base["cpu_s_per_100k"]
    return out


def markdown(summary: dict[str, dict[str, Any]], load: tuple[str, str]) -> str:
    lines = [
        "| proxy | req/s | vs nginx | CPU s / 100k req | CPU vs nginx | user / system µs per req "
        "| busiest worker's share of connections (per round) | of CPU | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['rps']:.0f} | {s.get('rps_vs_nginx', 0):.2f} "
            f"| {s['cpu_s_per_100k']:.2f} | {s.get('cpu_vs_nginx', 0):.2f} "
            f"| {s['user_us']:.1f} / {s['system_us']:.1f} "
            f"| {', '.join(f'{v:.0%}' for v in s['connection_share'])} "
            f"| {', '.join(f'{v:.0%}' for v in s['cpu_share'])} | {s['errors']} |"
        )
    lines.append(f"\nload average at the start: {load[0]}; at the end: {load[1]}")
    return "\n".join(lines)


def _loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    require_tools(["nginx", "wrk", "taskset", "ss"])
    cores = len(os.sched_getaffinity(0))
    load_before = _loadavg()
    runs: list[Run] = []
    with Lab.create("workers_bench", None, None, nonstop=args.nonstop) as lab:
        print(f"run folder: {lab.root}; load average {load_before}", flush=True)
        backend_ports = free_ports(2)
        lab.start_backend(backend_ports)
        for count in args.counts:
            pinned = count == 1 and cores > 1
            proxy_cpu = args.proxy_cpu if pinned else None
            client_cpu = args.client_cpu if pinned else None
            proxies = [
                start(lab, name, count, backend_ports, proxy_cpu, args.affinity, args.user)
                for name in args.names
            ]
            for proxy in proxies:  # warm-up
                measure(
                    proxy,
                    count,
                    0,
                    argparse.Namespace(**{**vars(args), "duration": args.warmup}),
                    client_cpu,
                )
            for rnd in range(args.rounds):
                shift = rnd % len(proxies)
                for proxy in proxies[shift:] + proxies[:shift]:
                    run = measure(proxy, count, rnd + 1, args, client_cpu)
                    runs.append(run)
                    print(
                        f"round {rnd + 1} {run.name:10} {run.rps:8.0f} req/s "
                        f"cpu {run.cpu_s:.2f}s connections {run.connection_share} "
                        f"cpu share {[round(s, 2) for s in run.cpu_share]}",
                        flush=True,
                    )
            for proxy in proxies:
                lab.stop(proxy.proc)
    summary = summarize(runs)
    load = (load_before, _loadavg())
    print()
    print(markdown(summary, load))
    payload = {"summary": summary, "load_average": load, "runs": [asdict(r) for r in runs]}
    print(f"\nresults: {save_results(args.results, 'workers_bench', args, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
