"""A small HTTP app for supervisor, health and deploy tests (Python stdlib only).

    python pyapp.py PORT [--release R] [--unhealthy] [--health-body TEXT]
                         [--die-after S] [--crash-on-start] [--ignore-sigterm]
                         [--spawn-child FILE]

Endpoints: ``/infra/health`` (``UP``; 503 ``DOWN`` with --unhealthy), ``/infra/port``,
``/infra/status?code=N`` (answers status N), ``/slow?ms=N``, ``/`` (the release), POST
anything (echoes the body), ``/infra/pid``,
``/ws`` (101 Switching Protocols, then every byte echoed back: a WebSocket-like tunnel).
It exits at once on SIGTERM (Python's default action), like the seed's app.
``--die-after S`` exits S seconds after the first health check it passed;
``--spawn-child FILE`` starts a ``sleep`` child in the same process group and writes its
pid to FILE (for process-group tests).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--release", default="dev")
    parser.add_argument("--unhealthy", action="store_true")
    parser.add_argument("--health-body", default="UP")
    parser.add_argument("--die-after", type=float, default=None)
    parser.add_argument("--crash-on-start", action="store_true")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--spawn-child", default=None)
    parser.add_argument("--error-status", type=int, default=None)  # for non-infra paths
    parser.add_argument("--start-delay", type=float, default=0.0)  # before it listens
    args = parser.parse_args()

    print(f"pyapp release={args.release} starting on port {args.port}", flush=True)
    if args.crash_on_start:
        print("pyapp: crashing on start as asked", file=sys.stderr, flush=True)
        sys.exit(3)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.spawn_child:
        child = subprocess.Popen(["sleep", "300"])
        with open(args.spawn_child + ".tmp", "w") as handle:
            handle.write(str(child.pid))
        os.replace(args.spawn_child + ".tmp", args.spawn_child)

    passed = threading.Event()

    def die_later() -> None:
        passed.wait()
        time.sleep(args.die_after)
        print("pyapp: dying as asked", flush=True)
        os._exit(4)

    if args.die_after is not None:
        threading.Thread(target=die_later, daemon=True).start()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *a: object) -> None:
            pass

        def answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path in ("/infra/health", "/infra/ready"):
                if args.unhealthy:
                    self.answer(503, b"DOWN")
                else:
                    self.answer(200, args.health_body.encode())
                    passed.set()
            elif url.path == "/infra/port":
                self.answer(200, str(args.port).encode())
            elif url.path == "/infra/status":
                code = int(parse_qs(url.query).get("code", ["500"])[0])
                self.answer(code, f"status {code} as asked".encode())
            elif url.path == "/ws":
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True
                while data := self.connection.recv(65536):
                    self.connection.sendall(data)
            elif url.path == "/infra/pid":
                self.answer(200, str(os.getpid()).encode())
            elif url.path == "/slow":
                ms = int(parse_qs(url.query).get("ms", ["100"])[0])
                time.sleep(ms / 1000)
                self.answer(200, f"slept {ms}ms on {args.release}".encode())
            elif args.error_status is not None:
                self.answer(args.error_status, b"broken")
            else:
                self.answer(200, args.release.encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.answer(200, self.rfile.read(length))

    time.sleep(args.start_delay)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"pyapp release={args.release} listening on port {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
