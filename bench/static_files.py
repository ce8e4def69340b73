"""Static files from nginx and from nonstop, the same config, one worker each.

A 4 KiB and a 1 MiB file under one root (``sendfile on``), both servers up at once, and
``wrk -t1 -c16 -d5s`` on each file against each server, in interleaved rounds (the one that
goes first alternates); prints every round's requests per second and ratio, then the
medians. Loopback only; each run is bounded by wrk's duration. From the repository root:

    .venv/bin/python bench/static_files.py [--rounds 5] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.backends import free_port
from tests.support.proc import nginx_conf, start_engine

FILES = {"4k.bin": 4096, "1m.bin": 1 << 20}


def requests_per_second(port: int, name: str, duration: int) -> float:
    argv = ["wrk", "-t1", "-c16", f"-d{duration}s", f"http://127.0.0.1:{port}/{name}"]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 60, check=True
    ).stdout
    line = next(line for line in out.splitlines() if "Requests/sec" in line)
    return float(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    args = parser.parse_args()
    site = Path(tempfile.mkdtemp(prefix="nonstop-static-"))
    work = Path(tempfile.mkdtemp(prefix="nonstop-static-run-"))
    site.chmod(0o755)  # nginx's workers run as another user
    procs = []
    try:
        for name, size in FILES.items():
            (site / name).write_bytes(os.urandom(size))
            (site / name).chmod(0o644)
        ports = {}
        for engine in ("nginx", "nonstop"):
            prefix = work / engine
            prefix.mkdir()
            port = ports[engine] = free_port()
            conf = prefix / "nginx.conf"
            server = f"server {{ listen 127.0.0.1:{port}; root {site}; location / {{ }} }}"
            conf.write_text(nginx_conf(prefix, f"  sendfile on;\n  {server}"))
            procs.append(start_engine(engine, prefix, conf, port))
        ratios: dict[str, list[float]] = {name: [] for name in FILES}
        for round_ in range(args.rounds):
            order = ("nginx", "nonstop") if round_ % 2 == 0 else ("nonstop", "nginx")
            for name in FILES:
                got = {e: requests_per_second(ports[e], name, args.duration) for e in order}
                ratio = got["nonstop"] / got["nginx"]
                ratios[name].append(ratio)
                print(
                    f"round {round_ + 1} {name}: nginx {got['nginx']:.0f} req/s, "
                    f"nonstop {got['nonstop']:.0f} req/s, {ratio:.2f}x",
                    flush=True,
                )
        for name, values in ratios.items():
            print(f"{name}: median {statistics.median(values):.2f}x of {len(values)} rounds")
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(site, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
