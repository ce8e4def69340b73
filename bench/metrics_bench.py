"""What GET /metrics costs: throughput with metrics scraped every second beside the same
build unscraped, and how long a scrape of 100 upstream servers takes.

Part 1, side by side in one run: two nonstop processes of the same build, same config
(a static upstream of the backend's two ports, ``access_log off``), pinned to the same
core; ``on`` also has ``[admin] listen`` and is scraped every second by this script
while wrk measures it. Interleaved rounds; medians of requests/s and p99 latency.
The request counters themselves are always on (they are counted where the access log
line is written); ``bench/hotpath.py --instructions`` measures what they cost. With
``--before SRC`` a third process runs the nonstop of another checkout (its ``src``, with
its compiled modules built in place): the build before the counters, for reference.

Part 2: one nonstop with an upstream of 100 servers (100 backend ports), each of which
has answered requests; ``--scrapes`` sequential GET /metrics, idle and under wrk load.

    python bench/metrics_bench.py                      # ~3 minutes
    python bench/metrics_bench.py --rounds 3 --duration 5 --before /tmp/base/src
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
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
from _wrk import run_wrk, start_wrk

TARGET_RATIO = 0.97
TARGET_SCRAPE_MS = 50.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up each")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes timed in part 2")
    parser.add_argument("--servers", type=int, default=100, help="upstream servers in part 2")
    parser.add_argument("--before", type=Path, help="src/ of a checkout to run as 'before'")
    parser.add_argument("--only", default="nonstop", help=argparse.SUPPRESS)
    return parse_bench_args(parser, argv, allowed=("nonstop",))


def config(port: int, backend_ports: Sequence[int], admin: int | None) -> str:
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in backend_ports)
    text = f"""
state_dir = "state"
[upstreams.app]
servers = [{servers}]
keepalive = 256
keepalive_requests = 1000000
[[servers]]
listen = ["127.0.0.1:{port}"]
access_log = "off"
keepalive_requests = 1000000
locations = [ {{ path = "/", pass = "app" }} ]
"""
    if admin is not None:
        text += f'\n[admin]\nlisten = "127.0.0.1:{admin}"\n'
    return text


def start(lab: Lab, name: str, text: str, port: int, src: Path | None = None) -> Proxy:
    """A nonstop on ``text``; from the checkout ``src`` when given, else ``--nonstop``."""
    prefix = lab.root / name
    prefix.mkdir(parents=True)
    conf = prefix / "nonstop.toml"
    conf.write_text(text)
    log = prefix / "stderr.log"
    if src is None:
        argv = [str(lab.nonstop), "run", "-c", str(conf)]
    else:
        argv = ["env", f"PYTHONPATH={src}", sys.executable, "-m", "nonstop", "run", "-c", str(conf)]
    proc = lab.spawn(argv, lab.proxy_cpu, log, prefix)
    proxy = Proxy(name, "nonstop", port, proc, prefix, conf, log)
    lab.wait_http(proc, port, log, name)
    return proxy


def scrape_ms(admin: int) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as answer:
        body = answer.read()
    assert answer.status == 200 and b"nonstop_requests_total" in body
    return (time.perf_counter() - began) * 1000


class Scraper:
    """GET /metrics every ``interval`` seconds until stopped, as Prometheus would
    (``admin`` None: nothing to scrape, for the runs without)."""

    def __init__(self, admin: int | None, interval: float = 1.0) -> None:
        self.admin = admin
        self.interval = interval
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        if self.admin is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)

    def _run(self) -> None:
        assert self.admin is not None
        while not self._stop.is_set():
            self.times.append(scrape_ms(self.admin))
            self._stop.wait(self.interval)


def throughput(lab: Lab, args: argparse.Namespace, backend_ports: list[int]) -> dict[str, Any]:
    ports = free_ports(4)
    admin = ports[3]
    proxies = {
        "off": start(lab, "off", config(ports[0], backend_ports, None), ports[0]),
        "on": start(lab, "on", config(ports[1], backend_ports, admin), ports[1]),
    }
    if args.before is not None:
        text = config(ports[2], backend_ports, None)
        proxies["before"] = start(lab, "before", text, ports[2], args.before)
    names = list(proxies)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    scrapes: list[float] = []

    def wrk(url: str, seconds: float) -> Any:
        result, _ = run_wrk(
            url, threads=1, connections=args.connections, duration_s=seconds, cpu=lab.client_cpu
        )
        return result

    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            url = proxies[name].url
            wrk(url, args.warmup)
            with Scraper(admin if name == "on" else None) as scraper:
                result = wrk(url, args.duration)
            scrapes += scraper.times
            runs[name].append(
                {"round": r, "rps": result.rps, "p99_ms": result.p99_ms, "errors": result.errors}
            )
            print(f"round {r} {name}: {result.rps:,.0f} req/s p99 {result.p99_ms} ms", flush=True)
    for proxy in proxies.values():
        lab.stop(proxy.proc)
    medians = {name: statistics.median(run["rps"] for run in runs[name]) for name in names}
    summary: dict[str, Any] = {
        "runs": runs,
        "median_rps": medians,
        "median_p99_ms": {
            name: statistics.median(run["p99_ms"] or 0.0 for run in runs[name]) for name in names
        },
        "ratio_on_to_off": medians["on"] / medians["off"],
        "scrapes_during_load_ms": _spread(scrapes),
    }
    if "before" in medians:
        summary["ratio_on_to_before"] = medians["on"] / medians["before"]
    return summary


def wide_scrape(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    backend_ports = free_ports(args.servers)
    backend = lab.start_backend(backend_ports)
    port, admin = free_ports(2)
    proxy = start(lab, "wide", config(port, backend_ports, admin), port)
    # every server answers first, so each has its series
    run_wrk(proxy.url, threads=1, connections=args.connections, duration_s=3, cpu=lab.client_cpu)
    idle = [scrape_ms(admin) for _ in range(args.scrapes)]
    body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read()
    wrk = start_wrk(
        proxy.url,
        threads=1,
        connections=args.connections,
        duration_s=args.scrapes * 0.05 + 10,
        cpu=lab.client_cpu,
    )
    try:
        time.sleep(1.0)
        loaded = []
        for _ in range(args.scrapes):
            loaded.append(scrape_ms(admin))
            time.sleep(0.02)
    finally:
        wrk.kill()
        wrk.wait()
    lab.stop(proxy.proc)
    lab.stop(backend)
    return {
        "servers": args.servers,
        "bytes": len(body),
        "series": sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
        "idle_ms": _spread(idle),
        "under_load_ms": _spread(loaded),
    }


def _spread(times: list[float]) -> dict[str, float]:
    if not times:
        return {}
    ordered = sorted(times)
    return {
        "count": len(ordered),
        "median": round(statistics.median(ordered), 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max": round(ordered[-1], 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_tools(["nginx", "wrk", "taskset"])
    raise_on_sigterm()
    with (
        Lab.create("metrics", args.proxy_cpu, args.client_cpu, nonstop=args.nonstop) as lab,
        pinned_self(args.client_cpu),
    ):
        print(f"run folder: {lab.root}", flush=True)
        backend_ports = free_ports(2)
        backend = lab.start_backend(backend_ports)
        part1 = throughput(lab, args, backend_ports)
        lab.stop(backend)
        part2 = wide_scrape(lab, args)
    ratio = part1["ratio_on_to_off"]
    p99 = part2["idle_ms"]["p99"]
    print(f"\nmedian req/s: {part1['median_rps']}")
    print(f"scraped every second / unscraped: {ratio:.3f} (target >= {TARGET_RATIO})")
    if "ratio_on_to_before" in part1:
        print(f"scraped every second / the build before: {part1['ratio_on_to_before']:.3f}")
    print(f"scrapes during load: {part1['scrapes_during_load_ms']}")
    print(
        f"scrape of {args.servers} servers, idle: {part2['idle_ms']} (target p99 <= "
        f"{TARGET_SCRAPE_MS:g} ms); under load: {part2['under_load_ms']}"
    )
    path = save_results(args.results, "metrics", args, {"throughput": part1, "wide": part2})
    print(f"results: {path}")
    return 0 if ratio >= TARGET_RATIO and p99 <= TARGET_SCRAPE_MS else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
