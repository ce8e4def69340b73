"""A tiny example backend: answers every request with its name and port.

Run as ``python app.py NAME PORT``.  Stands in for the app a team deploys.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hello-app"

    def do_GET(self) -> None:
        name, port = self.server.app_name, self.server.server_address[1]  # type: ignore[attr-defined]
        if self.path == "/infra/health":
            body = b"UP"
        else:
            body = f"hello from {name} (port {port}), you asked for {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.app_name = name  # type: ignore[attr-defined]
    server.serve_forever()


if __name__ == "__main__":
    main()
