"""A stand-in for the seed's Spring Boot jar: ``python3 app.py PORT``.

``/infra/health`` answers ``UP``, ``/infra/port`` the port it listens on (what the seed's
deploy.sh asks), ``/`` the release (this file's directory name) and the forwarded client
address; a POST is echoed. Like the jar under ``kill -15`` it exits at once on SIGTERM.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RELEASE = Path(__file__).resolve().parent.name


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "web"

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/infra/health":
            self.answer(b"UP")
        elif self.path == "/infra/port":
            self.answer(str(port).encode())
        else:
            client = self.headers.get("X-Forwarded-For", "-")
            self.answer(f"{RELEASE} on port {port}, for {client}\n".encode())

    def do_POST(self) -> None:
        self.answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
