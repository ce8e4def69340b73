"""The CPU cost of gzip: nginx and nonstop proxying the same HTML page, gzip off and on.

A backend nginx serves a 16 KiB HTML page (words drawn from a fixed vocabulary, so it
compresses about as much as real markup); in front of it nginx, then nonstop, each with one
worker and the same config, once with ``gzip off`` and once with ``gzip on`` at
``gzip_comp_level`` (1, nginx's default, unless ``--level``).  ``wrk -t1 -c8 -d5s`` sends
``Accept-Encoding: gzip``; the proxy's CPU seconds (user + system, from /proc) over the
run, divided by the requests, give the CPU per response.  Loopback only; each run is
bounded by wrk's duration.  Run from the repository root:

    .venv/bin/python bench/gzip_bench.py [--level N] [--seconds S]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._procfs import cpu_seconds, tree_pids
from tests.support.backends import free_port
from tests.support.proc import NginxProcess, nginx_conf, start_engine

WORDS = [
    *("div", "class", "span", "href", "nav", "item", "link", "button", "form", "input"),
    *("label", "section", "article", "header", "footer", "main", "container", "row"),
    *("col", "content", "title", "text", "image", "alt", "src", "data", "value", "list"),
]


def page(size: int = 16384) -> bytes:
    rng = random.Random(14)
    parts = ["<html><body>"]
    while sum(map(len, parts)) < size:
        tag, cls = rng.choice(WORDS), rng.choice(WORDS)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        parts.append(f'<{tag} class="{cls}-{rng.randint(1, 99)}">{words}</{tag}>\n')
    return "".join(parts).encode()[:size]


def run_wrk(port: int, seconds: int) -> tuple[float, int]:
    argv = ["wrk", "-t1", "-c8", f"-d{seconds}s", "-H", "Accept-Encoding: gzip"]
    argv.append(f"http://127.0.0.1:{port}/page.html")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    lines = out.stdout.splitlines()
    rate = float(next(line for line in lines if "Requests/sec" in line).split()[1])
    total = int(next(line for line in lines if "requests in" in line).split()[0])
    return rate, total


def measure(engine: str, work: Path, backend: str, gzip: str, seconds: int) -> tuple[float, float]:
    prefix = work / f"{engine}-{gzip.split()[1].rstrip(';')}"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    location = 'proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";'
    server = f"server {{ listen 127.0.0.1:{port}; location / {{ {location} }} }}"
    upstream = f"upstream up {{ server {backend}; keepalive 16; }}"
    conf.write_text(nginx_conf(prefix, f"  {upstream}\n  {gzip}\n  {server}"))
    proc = start_engine(engine, prefix, conf, port)
    try:
        assert proc.proc is not None
        pids = tree_pids(proc.proc.pid)
        before = cpu_seconds(pids)
        rate, total = run_wrk(port, seconds)
        used = cpu_seconds(pids) - before
    finally:
        proc.stop()
    return rate, used / max(total, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    site = Path(tempfile.mkdtemp(prefix="nonstop-gzip-site-"))
    work = Path(tempfile.mkdtemp(prefix="nonstop-gzip-run-"))
    site.chmod(0o755)  # nginx's workers run as another user
    (site / "page.html").write_bytes(page())
    (site / "page.html").chmod(0o644)
    backend_port = free_port()
    backend_prefix = work / "backend"
    backend_prefix.mkdir()
    backend_conf = backend_prefix / "nginx.conf"
    backend_server = f"server {{ listen 127.0.0.1:{backend_port}; root {site}; }}"
    backend_conf.write_text(nginx_conf(backend_prefix, f"  {backend_server}"))
    backend = NginxProcess(backend_prefix, backend_conf, [backend_port]).start()
    address = f"127.0.0.1:{backend_port}"
    settings = {
        "off": "gzip off;",
        "on": f"gzip on; gzip_comp_level {args.level}; gzip_types text/html;",
    }
    try:
        rows = []
        for name, gzip in settings.items():
            for engine in ("nginx", "nonstop"):
                rate, cpu_us = measure(engine, work, address, gzip, args.seconds)
                rows.append((engine, name, rate, cpu_us))
                print(f"{engine:8} gzip {name:3}: {rate:8.0f} req/s  {cpu_us:6.1f} us CPU/response")
        cpu = {(engine, name): us for engine, name, _, us in rows}
        for name in settings:
            ratio = cpu[("nonstop", name)] / cpu[("nginx", name)]
            print(f"gzip {name}: nonstop/nginx CPU per response {ratio:.2f}x")
        for engine in ("nginx", "nonstop"):
            extra = cpu[(engine, "on")] - cpu[(engine, "off")]
            print(f"{engine}: gzip level {args.level} adds {extra:.1f} us CPU per response")
    finally:
        backend.stop()
        shutil.rmtree(site, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
