"""Static files from nginx and from nonstop, the same config, one worker each.

A 4 KiB and a 1 MiB file under one root (``sendfile on``), ``wrk -t1 -c16 -d5s`` on each
file against nginx, then nonstop; prints requests per second and the ratio. Loopback
only; each run is bounded by wrk's duration. Run from the repository root:

    .venv/bin/python bench/static_files.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.backends import free_port
from tests.support.proc import nginx_conf, start_engine

FILES = {"4k.bin": 4096, "1m.bin": 1 << 20}


def requests_per_second(port: int, name: str) -> float:
    argv = ["wrk", "-t1", "-c16", "-d5s", f"http://127.0.0.1:{port}/{name}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    line = next(line for line in out.splitlines() if "Requests/sec" in line)
    return float(line.split()[1])


def main() -> None:
    site = Path(tempfile.mkdtemp(prefix="nonstop-static-"))
    work = Path(tempfile.mkdtemp(prefix="nonstop-static-run-"))
    site.chmod(0o755)  # nginx's workers run as another user
    try:
        for name, size in FILES.items():
            (site / name).write_bytes(os.urandom(size))
            (site / name).chmod(0o644)
        results: dict[tuple[str, str], float] = {}
        for engine in ("nginx", "nonstop"):
            prefix = work / engine
            prefix.mkdir()
            port = free_port()
            conf = prefix / "nginx.conf"
            server = f"server {{ listen 127.0.0.1:{port}; root {site}; location / {{ }} }}"
            conf.write_text(nginx_conf(prefix, f"  sendfile on;\n  {server}"))
            proc = start_engine(engine, prefix, conf, port)
            try:
                for name in FILES:
                    results[(engine, name)] = requests_per_second(port, name)
            finally:
                proc.stop()
        for name in FILES:
            ours, theirs = results[("nonstop", name)], results[("nginx", name)]
            print(
                f"{name}: nginx {theirs:.0f} req/s, nonstop {ours:.0f} req/s, {ours / theirs:.2f}x"
            )
    finally:
        shutil.rmtree(site, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
