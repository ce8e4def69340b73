"""Run the bundled example: nonstop supervising an app, and a deploy under traffic.

``python examples/hello/run.py``          deploy v1, then v2 while requests run; serve until Ctrl-C
``python examples/hello/run.py --once``   the same, then stop everything
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "nonstop.toml"
LOGS = HERE / "logs"
ADMIN = HERE / ".nonstop" / "admin.sock"
PROXY = 8000


def wait_ready(daemon: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Until the daemon's admin socket answers: it opens it once it serves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and daemon.poll() is None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(ADMIN))
                return
            except OSError:
                time.sleep(0.05)
    raise SystemExit(f"nonstop did not start (its log: {LOGS / 'error.log'})")


def nonstop(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "nonstop", *args, "-c", str(CONFIG)])


def get(path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{PROXY}{path}", timeout=10) as resp:
        return str(resp.read().decode().strip())


def request_loop(stop: threading.Event, seen: Counter[str], failed: list[str]) -> None:
    """What users do meanwhile: one request after another, for at most 60 s."""
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            seen[get("/").split(" (")[0]] += 1
        except OSError as exc:
            failed.append(repr(exc))


def demo() -> int:
    if nonstop("deploy", "hello", "--release", "v1") != 0:
        return 1
    print("\n  " + get("/first"))
    stop, seen, failed = threading.Event(), Counter[str](), list[str]()
    loop = threading.Thread(target=request_loop, args=(stop, seen, failed))
    loop.start()
    print("\nnow v1 -> v2 while a request loop keeps running:\n")
    code = nonstop("deploy", "hello", "--release", "v2")
    stop.set()
    loop.join()
    print(f"\n  {dict(seen)}, failed requests: {len(failed)}")
    print("  " + get("/after"))
    return code if not failed else 1


def data_plane() -> None:
    """Which data plane this run uses, as ``nonstop -V`` says it."""
    version = subprocess.run(
        [sys.executable, "-m", "nonstop", "-V"], capture_output=True, text=True, check=True
    ).stdout
    plane = next(line for line in version.splitlines() if line.startswith("data plane:"))
    print(plane)
    if "interpreted" in plane:
        print("  (`make build` compiles it with mypyc in about two minutes; then it is used)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--once", action="store_true", help="stop after the demo")
    args = parser.parse_args()
    data_plane()
    daemon = subprocess.Popen([sys.executable, "-m", "nonstop", "run", "-c", str(CONFIG)])
    try:
        wait_ready(daemon)
        print(f"nonstop listens on http://127.0.0.1:{PROXY}/\n")
        code = demo()
        print(f"\naccess log: {LOGS / 'access.log'}\ndaemon log: {LOGS / 'error.log'}")
        if args.once or code:
            return code
        print("Ctrl-C to stop.")
        daemon.wait()
        return daemon.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        if daemon.poll() is None:
            # SIGINT, as Ctrl-C: the daemon stops and stops its apps with it (SIGTERM
            # would leave them running for the next start to adopt).
            daemon.send_signal(signal.SIGINT)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()


if __name__ == "__main__":
    raise SystemExit(main())
