"""Ordinary requests while 1,000 slowloris connections hold the proxy.

Each proxy is started fresh in front of the same backend. wrk measures ordinary keep-alive
traffic (``-c10``) once with the proxy idle, then again while an asyncio client keeps
``--slow`` connections open, each sending one more byte of an unfinished request head every
``--drip`` seconds (a slowloris attack). The number that matters is the p99 ratio: loaded
over idle. The slow client is bounded in time (it stops with wrk) and in count.

    python bench/slowloris.py                       # nonstop and nginx256, ~1 min
    python bench/slowloris.py --only nonstop --slow 1000
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from _harness import (
    Lab,
    free_ports,
    http_status,
    measure_each,
    parse_bench_args,
    raise_on_sigterm,
    require_tools,
    save_results,
)
from _wrk import run_wrk

HEAD = b"GET / HTTP/1.1\r\nHost: bench\r\nX-Slow: "


async def slowloris(port: int, count: int, drip_s: float, stop: threading.Event) -> int:
    """Open ``count`` connections and drip header bytes until ``stop``; return how many held."""
    conns: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(100)

    async def open_one() -> None:
        async with gate:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            except (OSError, TimeoutError):
                return
            writer.write(HEAD)
            conns.append(writer)

    await asyncio.gather(*(open_one() for _ in range(count)))
    held = len(conns)
    while not stop.is_set():
        await asyncio.sleep(drip_s)
        for writer in conns:
            if not writer.is_closing():
                writer.write(b"a")
    for writer in conns:
        writer.close()
    return held


def measure(
    lab: Lab, name: str, backend_ports: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    proxy = lab.start_proxy(name, free_ports(1)[0], backend_ports)
    try:
        for _ in range(20):
            http_status(proxy.port)
        idle, _ = run_wrk(
            proxy.url, threads=1, connections=10, duration_s=args.duration, cpu=args.client_cpu
        )
        stop = threading.Event()
        held: list[int] = []
        attacker = threading.Thread(
            target=lambda: held.append(
                asyncio.run(slowloris(proxy.port, args.slow, args.drip, stop))
            )
        )
        attacker.start()
        time.sleep(args.settle)
        loaded, _ = run_wrk(
            proxy.url, threads=1, connections=10, duration_s=args.duration, cpu=args.client_cpu
        )
        stop.set()
        attacker.join(30)
    finally:
        lab.stop(proxy.proc)
    return {
        "slow_connections_held": held[0] if held else 0,
        "idle": {"rps": idle.rps, "p50_ms": idle.p50_ms, "p99_ms": idle.p99_ms},
        "loaded": {
            "rps": loaded.rps,
            "p50_ms": loaded.p50_ms,
            "p99_ms": loaded.p99_ms,
            "errors": loaded.errors,
        },
        "p99_ratio": (
            round(loaded.p99_ms / idle.p99_ms, 2) if idle.p99_ms and loaded.p99_ms else None
        ),
    }


def markdown_table(results: dict[str, dict[str, Any]], slow: int) -> str:
    lines = [
        f"| proxy | slow connections held | idle p50 / p99 | with {slow} slow: p50 / p99 "
        "| p99 loaded / idle | req/s idle → loaded | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        i, lo = r["idle"], r["loaded"]
        lines.append(
            f"| {name} | {r['slow_connections_held']} | {i['p50_ms']:.2f} / {i['p99_ms']:.2f} ms "
            f"| {lo['p50_ms']:.2f} / {lo['p99_ms']:.2f} ms | {r['p99_ratio']} "
            f"| {i['rps']:.0f} → {lo['rps']:.0f} | {lo['errors']} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="nonstop,nginx256", help="comma-separated proxies")
    parser.add_argument("--slow", type=int, default=1000, help="slowloris connections")
    parser.add_argument("--drip", type=float, default=3.0, help="seconds between bytes")
    parser.add_argument("--duration", type=float, default=10.0, help="each wrk run, seconds")
    parser.add_argument("--settle", type=float, default=2.0, help="after opening the slow ones")
    args = parse_bench_args(parser, argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    require_tools(["nginx", "taskset", "wrk"])
    results, failures = measure_each("slowloris", args, measure)
    print()
    print(markdown_table(results, args.slow))
    payload = {"results": results, "failures": failures}
    path = save_results(args.results, "slowloris", args, payload)
    print(f"\nresults: {path}")
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
