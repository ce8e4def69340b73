"""Run the bundled example: two backends, nonstop in front, a few requests to watch.

``python examples/hello/run.py``          serve until Ctrl-C
``python examples/hello/run.py --once``   show the balancing, then stop everything
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROXY = 8000
BACKENDS = {"blue": 9001, "green": 9002}


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--once", action="store_true", help="stop after the demo requests")
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, port in BACKENDS.items():
            procs.append(subprocess.Popen([sys.executable, str(HERE / "app.py"), name, str(port)]))
        for port in BACKENDS.values():
            wait_port(port)
        nonstop = subprocess.Popen(
            [sys.executable, "-m", "nonstop", "run", "-c", str(HERE / "nonstop.toml")]
        )
        procs.append(nonstop)
        wait_port(PROXY)
        print(f"nonstop listens on http://127.0.0.1:{PROXY}/ (weights: blue 2, green 1)\n")
        for i in range(6):
            with urllib.request.urlopen(f"http://127.0.0.1:{PROXY}/request/{i}") as resp:
                print("  " + resp.read().decode().strip())
        print(f"\naccess log: {HERE / 'logs' / 'access.log'}")
        if args.once:
            return 0
        print("Ctrl-C to stop.")
        nonstop.wait()
        return nonstop.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
