"""TLS termination side by side: nonstop, nginx and HAProxy serving the same certificate.

Each proxy terminates TLS on its loopback port with one self-signed ECDSA P-256 certificate
made for the run, and forwards plain HTTP to the same backend nginx as proxy_bench (nginx and
nonstop on the same nginx.conf with ``listen ... ssl``, upstream ``keepalive 256``; HAProxy
with ``bind ... ssl crt``, ``nbthread 1``). wrk measures over https with keep-alive in
interleaved rounds, exactly as proxy_bench does: medians of requests/s, p50 and p99 latency
and the proxy's CPU seconds per 100k requests, with ratios to nginx.

Connections are kept alive, so this measures the cost of encrypting and decrypting requests
and responses; the handshake (50 per wrk run) is not measured.

    python bench/tls_bench.py                        # all three, 3 rounds x 10 s, ~2 minutes
    python bench/tls_bench.py --only nginx256,haproxy --rounds 3 --duration 5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _configs import TlsFiles
from _harness import (
    Lab,
    Proxy,
    StartFailed,
    free_ports,
    https_probe,
    make_certificate,
    parse_bench_args,
    pinned_self,
    raise_on_sigterm,
    require_tools,
    save_results,
)
from proxy_bench import Run, markdown_table, run_rounds, summarize, targets_for, warm_up

TLS_PROXIES = ("nonstop", "nginx256", "haproxy")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(TLS_PROXIES), help="comma-separated proxies")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3-5)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up each")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parse_bench_args(parser, argv, TLS_PROXIES)
    return args


def start_tls_proxies(
    lab: Lab, names: list[str], backend_ports: list[int], tls: TlsFiles
) -> tuple[dict[str, Proxy], dict[str, str], dict[str, dict[str, str | None]]]:
    """Start every named proxy on TLS; a proxy that fails is reported, not fatal.

    Also returns, per proxy, the TLS version and cipher a Python client negotiated with it
    (wrk links the same OpenSSL, with the same default preferences).
    """
    proxies: dict[str, Proxy] = {}
    failures: dict[str, str] = {}
    sessions: dict[str, dict[str, str | None]] = {}
    for name, port in zip(names, free_ports(len(names)), strict=True):
        try:
            proxy = lab.start_proxy(name, port, backend_ports, tls)
        except StartFailed as exc:
            failures[name] = str(exc)
            print(f"SKIPPING {name}: {exc}", file=sys.stderr, flush=True)
            continue
        proxies[name] = proxy
        probe = https_probe(port, timeout_s=5.0)
        sessions[name] = {
            "version": probe.version if probe else None,
            "cipher": probe.cipher if probe else None,
        }
        print(
            f"started {name} on {proxy.url} (pid {proxy.pid}): "
            f"{sessions[name]['version']} {sessions[name]['cipher']}",
            flush=True,
        )
    return proxies, failures, sessions


def write_results(
    args: argparse.Namespace,
    tls: TlsFiles,
    sessions: dict[str, dict[str, str | None]],
    runs: list[Run],
    summary: dict[str, dict[str, Any]],
    failures: dict[str, str],
) -> Path:
    payload = {
        "certificate": tls.kind + ", self-signed, one for all proxies",
        "sessions": sessions,
        "summary": summary,
        "failures": failures,
        "runs": [asdict(run) for run in runs],
    }
    return save_results(args.results, "tls_bench", args, payload)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    tools = ["nginx", "wrk", "taskset", "openssl"]
    require_tools(tools + (["haproxy"] if "haproxy" in args.names else []))
    with (
        Lab.create("tls_bench", args.proxy_cpu, args.client_cpu, nonstop=args.nonstop) as lab,
        pinned_self(args.client_cpu),
    ):
        print(f"run folder: {lab.root}", flush=True)
        tls = make_certificate(lab.root / "tls")
        print(f"certificate: {tls.kind}, self-signed ({tls.certificate})", flush=True)
        backend_ports = free_ports(2)
        backend = lab.start_backend(backend_ports)
        proxies, failures, sessions = start_tls_proxies(lab, args.names, backend_ports, tls)
        targets = targets_for(proxies, backend_ports[0], backend.pid, direct=False)
        warm_up(targets, args)
        runs = run_rounds(targets, args, backend.pid)
    summary = summarize(runs, args.names)
    print()
    print(markdown_table(summary, failures, args))
    print(
        "\nnegotiated: "
        + "; ".join(f"{n} {s['version']} {s['cipher']}" for n, s in sessions.items())
    )
    print(f"\nresults: {write_results(args, tls, sessions, runs, summary, failures)}")
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
