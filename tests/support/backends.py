"""Recording HTTP backends for integration tests: real sockets on 127.0.0.1.

Each ``RecordingBackend`` runs an asyncio server in a background thread, records every
request it receives (method, target, headers, body, raw bytes) and answers by path:

- ``/status/N``      answer status N
- ``/sleep/S``       answer after S seconds
- ``/close``         close the connection without answering
- ``/cut``           start a 1000-byte answer, send 12 bytes of it, then reset
- ``/echo``          answer a JSON document of what was received
- ``/chunked``       answer with a chunked body
- ``/big/N``         answer N bytes
- ``/upgrade``       answer 101 and echo bytes back (a websocket-like tunnel)
- ``/headers/N?K=V``  answer status N with each query pair as a response header
- anything else      answer 200 with the backend's name
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Received", "RecordingBackend", "free_port", "request_heads", "wait_port"]


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            low, high = (int(x) for x in handle.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_random = random.Random()


def _share(low: int, high: int) -> tuple[int, int]:
    """This test process's share of ``low..high``: under pytest-xdist (make test runs
    several processes) each worker picks from its own slice, so two workers cannot pick
    the same port between one's check and its bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or not worker[2:].isdigit() or count < 2:
        return low, high
    span = (high - low + 1) // count
    index = int(worker[2:]) % count
    return low + index * span, low + (index + 1) * span - 1


def free_port() -> int:
    """A port nothing listens on, for a test to listen on next.

    Taken below the kernel's ephemeral range: a port from that range (what binding port
    0 gives) may become the local end of some client's outgoing connection before the
    test binds it, and the bind then fails with "address in use".
    """
    low = 20000 if _EPHEMERAL[0] > 21000 else 1024
    high = _EPHEMERAL[0] - 1 if _EPHEMERAL[0] > low + 1000 else 65535
    low, high = _share(low, high)
    for _ in range(1000):
        port = _random.randint(low, high)
        if _EPHEMERAL[0] <= port <= _EPHEMERAL[1] or port in _GIVEN:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.append(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


# The ports handed out last: a test that asks for two before it binds either must not
# get the same one twice (a worker's slice holds ~3,000; two draws met in a CI run).
_GIVEN: deque[int] = deque(maxlen=512)


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass
class Received:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes
    connection: int

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class RecordingBackend:
    name: str
    port: int = 0
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    keep_alive: bool = True
    fail_mode: str | None = None  # "close": close every connection without answering
    unix: str | None = None  # listen on this unix socket path instead of a loopback port
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RecordingBackend:
        ready = threading.Event()
        failed: list[OSError] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                if self.unix is not None:
                    self._server = self._loop.run_until_complete(
                        asyncio.start_unix_server(self._serve, self.unix)
                    )
                else:
                    self._server = self._loop.run_until_complete(
                        asyncio.start_server(self._serve, "127.0.0.1", self.port)
                    )
                    self.port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:
                failed.append(exc)
                ready.set()
                self._loop.close()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"backend {self.name} did not start within 10 s")
        if failed:
            self._loop = None
            raise RuntimeError(f"backend {self.name} cannot listen: {failed[0]}")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def paths(self) -> list[str]:
        with self._lock:
            return [r.target for r in self.received]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            conn_id = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = []
                for line in lines[1:]:
                    if line:
                        key, _, value = line.partition(":")
                        headers.append((key.strip(), value.strip()))
                hmap = {k.lower(): v for k, v in headers}
                body = b""
                raw = head
                if hmap.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size_line = await reader.readuntil(b"\r\n")
                        raw += size_line
                        size = int(size_line.split(b";")[0], 16)
                        chunk = await reader.readexactly(size + 2)
                        raw += chunk
                        body += chunk[:-2]
                        if size == 0:
                            break
                elif "content-length" in hmap:
                    body = await reader.readexactly(int(hmap["content-length"]))
                    raw += body
                rec = Received(method, target, version, headers, body, raw, conn_id)
                with self._lock:
                    self.received.append(rec)
                keep = await self._answer(rec, reader, writer, hmap)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(
        self,
        rec: Received,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hmap: dict[str, str],
    ) -> bool:
        path = rec.target.split("?")[0]
        if self.fail_mode == "close":
            return False
        if self.fail_mode is not None and self.fail_mode.startswith("status/"):
            path = "/" + self.fail_mode
        keep = self.keep_alive and hmap.get("connection", "").lower() != "close"
        conn_header = b"keep-alive" if keep else b"close"
        status = 200
        body = self.name.encode()
        extra = b""
        if path.startswith("/status/"):
            status = int(path.split("/")[2])
        elif path.startswith("/sleep/"):
            await asyncio.sleep(float(path.split("/")[2]))
        elif path == "/close":
            return False
        elif path == "/cut":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial-body")
            await writer.drain()
            writer.transport.abort()
            return False
        elif path == "/echo":
            body = json.dumps(
                {
                    "backend": self.name,
                    "method": rec.method,
                    "target": rec.target,
                    "headers": rec.headers,
                    "body": rec.body.decode("latin-1"),
                }
            ).encode()
        elif path == "/chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: "
                + conn_header
                + b"\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            await writer.drain()
            return keep
        elif path.startswith("/big/"):
            body = b"x" * int(path.split("/")[2])
        elif path.startswith("/headers/"):
            status = int(path.split("/")[2])
            for key, value in parse_qsl(urlsplit(rec.target).query):
                extra += f"{key}: {value}\r\n".encode("latin-1")
        elif path == "/upgrade":
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n"
            )
            await writer.drain()
            while True:
                data = await reader.read(65536)
                if not data:
                    return False
                writer.write(data)
                await writer.drain()
        reason = b"OK" if status == 200 else b"Status"
        no_body = status in (204, 304) or rec.method == "HEAD"
        writer.write(
            b"HTTP/1.1 %d %b\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"X-Backend: %b\r\nConnection: %b\r\n%b\r\n"
            % (status, reason, len(body), self.name.encode(), conn_header, extra)
            + (b"" if no_body else body)
        )
        await writer.drain()
        return keep


def request_heads(conn: socket.socket) -> Iterator[bytes]:
    """The request heads a keep-alive client sends on ``conn`` (bodies are not expected),
    one at a time, until it closes: for test apps that answer each with ``sendall``."""
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        yield head
