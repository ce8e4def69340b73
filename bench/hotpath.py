"""The Python cost of one proxied request, without sockets or a kernel in the way.

A ``ClientConnection`` and pooled ``UpstreamConnection``s run on fake transports: each
iteration feeds one GET to the client side and one 200 response (headers like nginx's) to
the upstream side, through the whole protocol, balancer and pool.  With ``--per-turn N``
a second client connection is open, so writes are held to the end of the loop's turn
(proxy/outbox.py), and a turn ends every N requests (1: after every message).  Wall time
per request is noisy on a shared machine; instruction counts are not:

    python bench/hotpath.py                      # microseconds per request
    bench/hotpath.py --instructions              # instructions per request, with callgrind
    bench/hotpath.py --static [--instructions]   # the same for a 4 KiB file from a root
    bench/hotpath.py --instructions --per-turn 16  # writes held, 16 requests a turn

``--instructions`` runs itself twice under valgrind (2,000 and 12,000 requests) and divides
the difference, so start-up and import costs cancel out.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18081\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 23:40:09 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 12\r\n"
    b"Connection: keep-alive\r\n\r\nhello world\n"
)
CONFIG = """
events {}
http {
  access_log off;
  keepalive_requests 100000000;
  upstream app {
    server 127.0.0.1:19001;
    server 127.0.0.1:19002;
    keepalive 256;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:18081;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
"""
# The same request answered from a file: a 4 KiB file under a root (bench/static_files.py).
STATIC_REQUEST = b"GET /4k.bin HTTP/1.1\r\nHost: 127.0.0.1:18081\r\n\r\n"
STATIC_CONFIG = """
events {}
http {
  access_log off;
  keepalive_requests 100000000;
  sendfile on;
  server { listen 127.0.0.1:18081; root ROOT; location / { } }
}
"""


class FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.extra: dict[str, Any] = {
            "peername": ("127.0.0.1", 5555),
            "sockname": ("127.0.0.1", 18081),
            "socket": None,
        }

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if len(self.out) > 64:
            del self.out[:-1]

    def close(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    # a C call returning False, as uvloop's is_closing is (bool() is False): a Python
    # method here would count ~500 instructions a write that a real transport does not
    is_closing = bool

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


async def run_static(count: int) -> float:
    from nonstop.config import load
    from nonstop.proxy.protocol import ClientConnection
    from nonstop.proxy.server import ProxyState

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "4k.bin").write_bytes(b"x" * 4096)
        path = Path(tmp) / "nginx.conf"
        path.write_text(STATIC_CONFIG.replace("ROOT", tmp))
        state = ProxyState(asyncio.get_running_loop(), load(str(path)))
        # a file changed in the last 2 s is read each time, never kept (proxy/static.py):
        # the files a site serves are older than that
        state.date.update(time.time() + 3)
        client = ClientConnection(state)
        transport = FakeTransport()
        client.connection_made(transport)  # type: ignore[arg-type]
        end_turn = state.outbox.flush  # what the loop runs once a turn's events are handled
        started = time.perf_counter()
        for _ in range(count):
            client.data_received(STATIC_REQUEST)
            end_turn()
        elapsed = time.perf_counter() - started
    assert transport.out[-1].endswith(b"x" * 4096), transport.out[-1][:200]
    return elapsed / count


async def run(count: int, per_turn: int = 0) -> float:
    from nonstop.config import load
    from nonstop.proxy.connection_pool import UpstreamConnection
    from nonstop.proxy.protocol import ClientConnection
    from nonstop.proxy.server import ProxyState

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nginx.conf"
        path.write_text(CONFIG)
        state = ProxyState(asyncio.get_running_loop(), load(str(path)))
    client = ClientConnection(state)
    transport = FakeTransport()
    client.connection_made(transport)  # type: ignore[arg-type]
    backend = state.upstreams["app"]
    for peer in backend.balancer.peers:
        conn = UpstreamConnection(peer.address, state.outbox)
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        backend.idle.put(conn, 0.0)
    if per_turn:
        # a second client connection, idle: with more than one open, writes are held to
        # the end of the loop's turn (proxy/outbox.py)
        ClientConnection(state).connection_made(FakeTransport())  # type: ignore[arg-type]
    end_turn = state.outbox.flush  # what the loop runs once a turn's events are handled
    started = time.perf_counter()
    if per_turn == 0:  # nothing is held
        for _ in range(count):
            client.data_received(REQUEST)
            upstream = client.exchange.uconn
            assert upstream is not None, "the request did not go upstream"
            upstream.data_received(RESPONSE)
    elif per_turn == 1:
        for _ in range(count):
            client.data_received(REQUEST)
            upstream = client.exchange.uconn
            assert upstream is not None, "the request did not go upstream"
            end_turn()
            upstream.data_received(RESPONSE)
            end_turn()
    else:
        for i in range(count):
            client.data_received(REQUEST)
            upstream = client.exchange.uconn
            assert upstream is not None, "the request did not go upstream"
            upstream.data_received(RESPONSE)
            if i % per_turn == per_turn - 1:
                end_turn()
        end_turn()
    elapsed = time.perf_counter() - started
    assert transport.out[-1].endswith(b"hello world\n"), transport.out[-1][:200]
    return elapsed / count


def instructions(static: bool, per_turn: int) -> float:
    def collected(count: int) -> int:
        argv = [sys.executable, __file__, "--requests", str(count), "--per-turn", str(per_turn)]
        argv += ["--static"] if static else []
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
            capture_output=True,
            text=True,
            check=True,
        )
        found = re.search(r"Collected : (\d+)", done.stderr)
        assert found is not None, done.stderr[-500:]
        return int(found.group(1))

    return (collected(12_000) - collected(2_000)) / 10_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--static", action="store_true", help="a 4 KiB file, not a proxy")
    parser.add_argument(
        "--per-turn",
        type=int,
        default=0,
        help="with a second client connection open, so that writes are held: requests per"
        " turn of the loop (1: each message its own turn, the worst case); 0: one client",
    )
    args = parser.parse_args()
    what = "4 KiB file request" if args.static else "proxied request"
    if args.instructions:
        count = instructions(args.static, args.per_turn)
        turns = f", {args.per_turn} per turn of the loop" if args.per_turn else ""
        print(f"{count:,.0f} instructions per {what}{turns}")
        return 0
    import uvloop

    seconds = uvloop.run(
        run_static(args.requests) if args.static else run(args.requests, args.per_turn)
    )
    print(f"{seconds * 1e6:.2f} us per {what} (Python only, fake transports)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
