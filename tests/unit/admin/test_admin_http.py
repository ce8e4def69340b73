"""The HTTP admin listener on real sockets: tokens, operations, streams and bad requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.backends import free_port

from nonstop.admin.http import AdminHttp, HttpRequest, HttpResponse
from nonstop.errors import DeployFailed

TOKEN = "0123456789abcdef-token"


async def _status(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "app": request.get("app")}


async def _deploy(
    request: dict[str, Any], emit: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    emit({"event": "begin", "release": request.get("release")})
    await asyncio.sleep(0)
    emit({"event": "switched"})
    if request.get("release") == "bad":
        raise DeployFailed("the new release never became healthy")
    return {"ok": True, "result": {"outcome": "ok"}}


async def _metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, b"nonstop_up 1\n", "text/plain; version=0.0.4")


Body = Callable[[str, int], Awaitable[None]]


def with_listener(body: Body, token: str | None = TOKEN, listen: str | None = None) -> None:
    async def main() -> None:
        port = free_port()
        server = AdminHttp(
            listen or f"127.0.0.1:{port}",
            token,
            {"status": _status},
            {"deploy": _deploy},
            {("GET", "/metrics"): _metrics},
            request_timeout=0.5,
        )
        await server.start()
        try:
            await body("127.0.0.1", port)
        finally:
            await server.close()

    asyncio.run(main())


async def request(
    host: str, port: int, raw: bytes, unix: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    if unix:
        reader, writer = await asyncio.open_unix_connection(unix)
    else:
        reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    if headers.get("Transfer-Encoding") == "chunked":
        out, rest = b"", body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            if int(size, 16) == 0:
                break
            out, rest = out + rest[: int(size, 16)], rest[int(size, 16) + 2 :]
        body = out
    return int(lines[0].split()[1]), headers, body


def get(path: str, token: str | None = TOKEN) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode()


def post(path: str, body: dict[str, Any], token: str | None = TOKEN) -> bytes:
    data = json.dumps(body).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + data


def test_without_the_token_nothing_is_served_and_the_answer_says_what_is_needed() -> None:
    async def body(host: str, port: int) -> None:
        for raw in (get("/api/status", None), get("/metrics", "wrong-token-of-length")):
            status, headers, data = await request(host, port, raw)
            assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="nonstop"'
            assert "Authorization: Bearer TOKEN" in json.loads(data)["error"]

    with_listener(body)


def test_with_the_token_status_and_registered_routes_answer() -> None:
    async def body(host: str, port: int) -> None:
        status, _, data = await request(host, port, get("/api/status?app=web"))
        assert status == 200 and json.loads(data) == {"ok": True, "app": "web"}
        status, headers, data = await request(host, port, get("/metrics"))
        assert status == 200 and data == b"nonstop_up 1\n"
        assert headers["Content-Type"].startswith("text/plain")

    with_listener(body)


def test_a_deploy_streams_its_events_as_json_lines_and_ends_with_its_answer() -> None:
    async def body(host: str, port: int) -> None:
        status, headers, data = await request(host, port, post("/api/deploy", {"release": "v2"}))
        assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in data.splitlines()]
        assert [line.get("event") for line in lines] == ["begin", "switched", None]
        assert lines[-1] == {"ok": True, "result": {"outcome": "ok"}}
        _, _, data = await request(host, port, post("/api/deploy", {"release": "bad"}))
        final = json.loads(data.splitlines()[-1])
        assert final["ok"] is False and final["exit_code"] == 1

    with_listener(body)


def test_without_a_token_a_loopback_listener_serves_reads_and_refuses_operations() -> None:
    async def body(host: str, port: int) -> None:
        status, _, _ = await request(host, port, get("/api/status", None))
        assert status == 200
        status, _, data = await request(host, port, post("/api/deploy", {"release": "v2"}, None))
        assert status == 403 and "need a token" in json.loads(data)["error"]

    with_listener(body, token=None)


def test_on_a_unix_socket_operations_need_no_token(tmp_path: Path) -> None:
    path = str(tmp_path / "admin-http.sock")

    async def body(host: str, port: int) -> None:
        status, _, data = await request(host, port, post("/api/deploy", {}, None), unix=path)
        assert status == 200 and json.loads(data.splitlines()[-1])["ok"] is True

    with_listener(body, token=None, listen=f"unix:{path}")


def test_bad_requests_get_their_status_and_the_connection_is_closed() -> None:
    cases = {
        b"GARBAGE\r\n\r\n": 400,
        b"GET /api/status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n": 411,
        b"POST /api/deploy HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n": 413,
        b"GET /api/status HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n": 431,
        get("/nowhere"): 404,
        get("/api/deploy"): 405,
        post("/api/nothing", {}): 404,
        b"POST /api/status HTTP/1.1\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: 3\r\n\r\n[1]": 400,
    }

    async def body(host: str, port: int) -> None:
        for raw, expected in cases.items():
            status, _, _ = await request(host, port, raw)
            assert status == expected, raw[:40]

    with_listener(body)


def test_two_requests_on_one_connection_and_an_idle_one_is_closed() -> None:
    async def body(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        for _ in range(2):
            writer.write(get("/api/status").replace(b"Connection: close", b"X-Keep: 1"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed once idle
        writer.close()

    with_listener(body)
