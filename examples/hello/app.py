"""A tiny example app: answers every request with its release and port.

Run as ``python app.py PORT RELEASE`` -- nonstop runs it so, from ``[apps.hello]`` in
nonstop.toml, substituting ``{port}`` and ``{release}``.  ``/infra/health`` answers ``UP``.
Like many apps, it exits at once on SIGTERM, with no graceful shutdown of its own.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hello-app"

    def do_GET(self) -> None:
        release, port = self.server.release, self.server.server_address[1]  # type: ignore[attr-defined]
        if self.path == "/infra/health":
            body = b"UP"
        else:
            body = f"hello from {release} (port {port}), you asked for {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    port, release = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.release = release  # type: ignore[attr-defined]
    print(f"hello {release} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
