"""POST throughput and memory, nonstop beside nginx, with 1 KiB, 64 KiB and 10 MiB bodies.

Both proxies run the same nginx.conf (request buffering on, nginx's default: a body over
16 KiB goes to a temporary file before the upstream is chosen) in front of the backend
nginx, which reads and drops the body. For each body size, wrk posts in interleaved rounds
(round r starts r places along the list). Reported per size: medians of requests/s and of
the proxy's CPU seconds per 1,000 requests, ratios to nginx, and the proxy's peak resident
memory (VmHWM, summed over its processes) after that size's rounds.

    python bench/post_bench.py                         # ~3 minutes
    python bench/post_bench.py --rounds 3 --duration 5 --sizes 1k,64k,10m
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from _harness import (
    Lab,
    Proxy,
    free_ports,
    parse_bench_args,
    pinned_self,
    raise_on_sigterm,
    require_tools,
    save_results,
)
from _procfs import _status_kib, cpu_seconds
from _wrk import run_wrk

PROXIES = ("nonstop", "nginx256")
UNITS = {"k": 1024, "m": 1024 * 1024}


def parse_size(text: str) -> int:
    unit = UNITS.get(text[-1:].lower(), 1)
    return int(text.rstrip("kKmM")) * unit


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PROXIES), help="comma-separated proxies")
    parser.add_argument("--sizes", default="1k,64k,10m", help="comma-separated body sizes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8)
    args = parse_bench_args(parser, argv, PROXIES)
    args.size_list = [parse_size(s) for s in args.sizes.split(",")]
    return args


def peak_kib(proxy: Proxy) -> int:
    return sum(_status_kib(f"/proc/{pid}/status", "VmHWM") for pid in proxy.pids())


def measure_size(lab: Lab, proxies: list[Proxy], size: int, args: argparse.Namespace) -> dict:
    script = lab.root / f"post-{size}.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n')
    runs: dict[str, list[tuple[float, float]]] = {p.name: [] for p in proxies}
    errors = dict.fromkeys(runs, 0)
    for rnd in range(args.rounds):
        shift = rnd % len(proxies)
        for proxy in proxies[shift:] + proxies[:shift]:
            before = cpu_seconds(proxy.pids())
            result, _ = run_wrk(
                proxy.url,
                threads=1,
                connections=args.connections,
                duration_s=args.duration,
                cpu=args.client_cpu,
                script=script,
            )
            cpu = cpu_seconds(proxy.pids()) - before
            runs[proxy.name].append((result.rps, 1000 * cpu / max(result.requests, 1)))
            errors[proxy.name] += result.errors
            print(f"{size:>9} B round {rnd + 1} {proxy.name:9} {result.rps:9.0f} req/s", flush=True)
    out: dict[str, Any] = {}
    for proxy in proxies:
        mine = runs[proxy.name]
        out[proxy.name] = {
            "rps": statistics.median(r for r, _ in mine),
            "cpu_s_per_1k": statistics.median(c for _, c in mine),
            "peak_rss_mib": peak_kib(proxy) / 1024,
            "errors": errors[proxy.name],
            "rps_per_round": [round(r) for r, _ in mine],
        }
    base = out.get("nginx256")
    for entry in out.values():
        entry["rps_vs_nginx"] = entry["rps"] / base["rps"] if base else None
        entry["cpu_vs_nginx"] = entry["cpu_s_per_1k"] / base["cpu_s_per_1k"] if base else None
    return out


def markdown(results: dict[int, dict[str, Any]]) -> str:
    lines = [
        "| body | proxy | req/s | vs nginx | CPU s / 1k req | CPU vs nginx | peak RSS | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, by_proxy in results.items():
        for name, r in by_proxy.items():
            ratio = f"{r['rps_vs_nginx']:.2f}" if r["rps_vs_nginx"] else "-"
            cpu_ratio = f"{r['cpu_vs_nginx']:.2f}" if r["cpu_vs_nginx"] else "-"
            lines.append(
                f"| {size:,} B | {name} | {r['rps']:.0f} | {ratio} | {r['cpu_s_per_1k']:.3f} "
                f"| {cpu_ratio} | {r['peak_rss_mib']:.1f} MiB | {r['errors']} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    require_tools(["nginx", "wrk", "taskset"])
    results: dict[int, dict[str, Any]] = {}
    with (
        Lab.create("post_bench", args.proxy_cpu, args.client_cpu, nonstop=args.nonstop) as lab,
        pinned_self(args.client_cpu),
    ):
        backend_ports = free_ports(2)
        lab.start_backend(backend_ports)
        ports = free_ports(len(args.names))
        proxies = [
            lab.start_proxy(n, p, backend_ports) for n, p in zip(args.names, ports, strict=True)
        ]
        for size in sorted(args.size_list):
            results[size] = measure_size(lab, proxies, size, args)
    print(markdown(results))
    path = save_results(args.results, "post_bench", args, {"results": results})
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
