"""Memory of each proxy holding 1,000 idle keep-alive client connections.

Each proxy is started fresh, in front of the same backend, pinned to its core. A small asyncio
client opens the connections (at most ``--concurrency`` connecting at once, so the listen
backlog never overflows), sends one GET on each, reads the response and leaves the connection
open. Resident memory is read then, from /proc/PID/status (VmRSS) and /proc/PID/smaps_rollup
(Pss), summed over all processes of the proxy: nginx master + worker, HAProxy master + worker,
nonstop and anything it runs. RSS sums count pages shared by master and worker twice; PSS
divides them among their sharers. To show the connections were really held, a second request
is then sent on each of them.

    python bench/idle_conns.py                        # all proxies, ~30 s
    python bench/idle_conns.py --only nginx256,haproxy --connections 1000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from _harness import (
    ALL_PROXIES,
    ONE_PROCESS,
    Lab,
    Proxy,
    free_ports,
    http_status,
    measure_each,
    parse_bench_args,
    raise_on_sigterm,
    require_tools,
    save_results,
)
from _procfs import proc_info, pss_kib, rss_kib

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
IO_TIMEOUT_S = 10.0

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response with a Content-Length body; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def request(conn: Conn) -> int:
    """One GET on an open connection; its status, or 0 when the connection failed."""
    reader, writer = conn
    try:
        writer.write(REQUEST)
        await writer.drain()
        return await asyncio.wait_for(read_status(reader), IO_TIMEOUT_S)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        return 0


async def open_one(port: int, gate: asyncio.Semaphore) -> tuple[Conn | None, int]:
    async with gate:
        try:
            conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT_S)
        except (OSError, TimeoutError):
            return None, 0
        return conn, await request(conn)


async def hold_connections(proxy: Proxy, count: int, concurrency: int) -> dict[str, Any]:
    """Open ``count`` connections with one request each, read memory, re-use them, close."""
    gate = asyncio.Semaphore(concurrency)
    opened = await asyncio.gather(*(open_one(proxy.port, gate) for _ in range(count)))
    conns = [conn for conn, status in opened if conn is not None and status == 200]
    pids = proxy.pids()
    reading = {"rss_kib": rss_kib(pids), "pss_kib": pss_kib(pids)}
    second = await asyncio.gather(*(request(conn) for conn in conns))
    for _, writer in (conn for conn, _ in opened if conn is not None):
        writer.close()
    return {
        **reading,
        "first_request_ok": len(conns),
        "second_request_ok": sum(1 for status in second if status == 200),
    }


def measure(
    lab: Lab, name: str, backend_ports: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Start ``name`` fresh, read its memory idle and with the connections open, stop it."""
    proxy = lab.start_proxy(name, free_ports(1)[0], backend_ports)
    try:
        for _ in range(20):  # touch the request path before the baseline reading
            http_status(proxy.port)
        pids = proxy.pids()
        base = {"rss_kib": rss_kib(pids), "pss_kib": pss_kib(pids)}
        loaded = asyncio.run(hold_connections(proxy, args.connections, args.concurrency))
        processes = describe(pids)
    finally:
        lab.stop(proxy.proc)
    return {
        "processes": processes,
        "base_rss_kib": base["rss_kib"],
        "base_pss_kib": base["pss_kib"],
        **loaded,
    }


def describe(pids: list[int]) -> str:
    """Which processes a sum covers, e.g. ``nginx master + 1 worker``."""
    names = [info.comm for info in map(proc_info, pids) if info is not None]
    if len(names) <= 1:
        return names[0] if names else "-"
    return f"{names[0]} master + {len(names) - 1} worker{'s' if len(names) > 2 else ''}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def markdown_table(results: dict[str, dict[str, Any]], failures: dict[str, str], n: int) -> str:
    lines = [
        f"| proxy | processes summed | RSS idle | RSS with {n} conns | RSS per conn "
        f"| PSS idle | PSS with {n} conns | PSS per conn | held (2nd request ok) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        per_rss = (r["rss_kib"] - r["base_rss_kib"]) / max(r["first_request_ok"], 1)
        per_pss = (r["pss_kib"] - r["base_pss_kib"]) / max(r["first_request_ok"], 1)
        lines.append(
            f"| {name} | {r['processes']} | {_mib(r['base_rss_kib'])} "
            f"| {_mib(r['rss_kib'])} | {per_rss:.1f} KiB | {_mib(r['base_pss_kib'])} "
            f"| {_mib(r['pss_kib'])} | {per_pss:.1f} KiB "
            f"| {r['second_request_ok']}/{r['first_request_ok']} |"
        )
    lines.extend(f"\n{name} failed: {why}" for name, why in failures.items())
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(ALL_PROXIES), help="comma-separated proxies")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100, help="connects in flight")
    args = parse_bench_args(parser, argv, allowed=(*ALL_PROXIES, ONE_PROCESS))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    require_tools(["nginx", "taskset"] + (["haproxy"] if "haproxy" in args.names else []))
    results, failures = measure_each("idle_conns", args, measure)
    print()
    print(markdown_table(results, failures, args.connections))
    payload = {"results": results, "failures": failures}
    path = save_results(args.results, "idle_conns", args, payload)
    print(f"\nresults: {path}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
