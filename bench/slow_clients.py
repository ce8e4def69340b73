"""Slow clients and proxy_buffering, nonstop beside nginx: how long the app is held.

Both proxies run the same nginx.conf (the one every benchmark uses) in front of a backend
nginx that serves a file of ``--size`` bytes, once with ``proxy_buffering on`` (nginx's
default) and once with it off.  ``--clients`` clients ask for the file at once and read it
slowly (``--rate`` bytes per second each, through a small receive buffer), while a fast
client keeps asking for a small page.  Reported per proxy and setting:

- app time: the backend's ``$request_time`` for the large answers (median and max), i.e.
  how long the app's connection was held by each slow client;
- app connections: the most connections from the proxy to the backend seen at once;
- fast client: requests/s of the fast client during the slow downloads;
- peak RSS: VmHWM summed over the proxy's processes, after the run.

    python bench/slow_clients.py                    # ~1 minute
    python bench/slow_clients.py --clients 50 --size 2m --rate 262144
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import (
    Lab,
    Proxy,
    StartFailed,
    free_ports,
    parse_bench_args,
    raise_on_sigterm,
    require_tools,
    save_results,
)
from _procfs import _status_kib

PROXIES = ("nonstop", "nginx256")
PROXY_CONF = """\
worker_processes 1;
pid nginx.pid;
events {{ worker_connections 4096; }}
http {{
    keepalive_requests 1000000;
    client_body_temp_path temp/client_body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;
    upstream backends {{
        server 127.0.0.1:{backend};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port};
        access_log off;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering {buffering};
        }}
    }}
}}
"""
BACKEND_CONF = """\
worker_processes 1;
pid nginx.pid;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path temp/client_body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;
    log_format timed "$uri $request_time";
    access_log {log} timed;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        sendfile on;
    }}
}}
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PROXIES), help="comma-separated proxies")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--size", default="1m", help="the large answer: bytes, k or m")
    parser.add_argument("--rate", type=int, default=256 * 1024, help="bytes/s per slow client")
    args = parse_bench_args(parser, argv, PROXIES)
    units = {"k": 1024, "m": 1024 * 1024}
    args.size_bytes = int(args.size.rstrip("kKmM")) * units.get(args.size[-1:].lower(), 1)
    return args


def start_backend(lab: Lab, port: int, size: int) -> tuple[Path, Path]:
    prefix = lab.root / "backend"
    root = prefix / "html"
    root.mkdir(parents=True)
    (prefix / "temp").mkdir()
    (root / "index.html").write_text("ok\n")
    (root / "big").write_bytes(b"x" * size)
    log = prefix / "access.log"
    conf = prefix / "nginx.conf"
    conf.write_text(BACKEND_CONF.format(port=port, root=root, log=log))
    stderr = prefix / "stderr.log"
    argv = ["nginx", "-p", f"{prefix}/", "-c", str(conf), "-g", "daemon off;"]
    proc = lab.spawn(argv, lab.client_cpu, stderr, prefix)
    lab.wait_http(proc, port, stderr, "backend nginx")
    return log, prefix


def start_proxy(lab: Lab, name: str, port: int, backend: int, buffering: str) -> Proxy:
    prefix = lab.root / f"{name}-{buffering}"
    (prefix / "temp").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(PROXY_CONF.format(port=port, backend=backend, buffering=buffering))
    log = prefix / "stderr.log"
    argv, kind = lab._nginx_like_argv(name, prefix, conf)
    proc = lab.spawn(argv, lab.proxy_cpu, log, prefix)
    proxy = Proxy(name, kind, port, proc, prefix, conf, log, "http")
    try:
        lab.wait_http(proc, port, log, name)
    except StartFailed:
        lab.stop(proc)
        raise
    return proxy


def slow_download(port: int, size: int, rate: int, deadline: float, got: list[int]) -> None:
    """GET /big, then read it at ``rate`` bytes per second."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(30)
    total = 0
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        step = max(1024, rate // 20)
        while time.monotonic() < deadline:
            chunk = sock.recv(step)
            if not chunk:
                break
            total += len(chunk)
            time.sleep(len(chunk) / rate)
    except OSError:
        pass
    finally:
        sock.close()
        got.append(total)


def fast_client(port: int, stop: threading.Event, counts: list[int]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        while not stop.is_set():
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = b""
            while not data.endswith(b"ok\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
            counts[0] += 1


def backend_connections(port: int) -> int:
    """Established TCP connections to the backend port (both ends are local)."""
    wanted = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and fields[2].endswith(wanted):
                count += 1
    return count


def app_times(log: Path, start: int) -> list[float]:
    lines = log.read_text().splitlines()[start:]
    return [float(line.split()[1]) for line in lines if line.startswith("/big ")]


def run(lab: Lab, proxy: Proxy, backend: int, log: Path, args: argparse.Namespace) -> dict:
    start = len(log.read_text().splitlines())
    deadline = time.monotonic() + args.size_bytes / args.rate * 3 + 30
    got: list[int] = []
    slow = [
        threading.Thread(
            target=slow_download, args=(proxy.port, args.size_bytes, args.rate, deadline, got)
        )
        for _ in range(args.clients)
    ]
    stop = threading.Event()
    counts = [0]
    fast = threading.Thread(target=fast_client, args=(proxy.port, stop, counts))
    began = time.monotonic()
    for thread in slow:
        thread.start()
    fast.start()
    most = 0
    while any(t.is_alive() for t in slow):
        most = max(most, backend_connections(backend))
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    stop.set()
    fast.join()
    times = app_times(log, start)
    peak = sum(_status_kib(f"/proc/{pid}/status", "VmHWM") for pid in proxy.pids())
    return {
        "app_time_median_s": statistics.median(times) if times else None,
        "app_time_max_s": max(times) if times else None,
        "app_connections_max": most,
        "fast_rps": counts[0] / elapsed,
        "complete": sum(1 for g in got if g >= args.size_bytes),
        "peak_rss_mib": peak / 1024,
        "elapsed_s": elapsed,
    }


def markdown(results: dict[str, dict[str, Any]], clients: int) -> str:
    lines = [
        "| proxy | proxy_buffering | app time median | app time max | app connections (max) "
        "| fast client req/s | slow downloads whole | peak RSS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in results.items():
        name, buffering = key.rsplit("-", 1)
        lines.append(
            f"| {name} | {buffering} | {r['app_time_median_s']:.3f} s | {r['app_time_max_s']:.3f} s"
            f" | {r['app_connections_max']} | {r['fast_rps']:.0f} | {r['complete']}/{clients}"
            f" | {r['peak_rss_mib']:.1f} MiB |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    require_tools(["nginx", "taskset"])
    results: dict[str, dict[str, Any]] = {}
    with Lab.create("slow_clients", args.proxy_cpu, args.client_cpu, nonstop=args.nonstop) as lab:
        (backend,) = free_ports(1)
        log, _ = start_backend(lab, backend, args.size_bytes)
        for buffering in ("on", "off"):
            for name in args.names:
                (port,) = free_ports(1)
                proxy = start_proxy(lab, name, port, backend, buffering)
                results[f"{name}-{buffering}"] = run(lab, proxy, backend, log, args)
                print(f"{name} buffering {buffering}: {results[f'{name}-{buffering}']}", flush=True)
                lab.stop(proxy.proc)
    print(markdown(results, args.clients))
    path = save_results(args.results, "slow_clients", args, {"results": results})
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
