"""The admin socket under hostile or careless clients, on a real unix socket."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from nonstop.admin.server import MAX_REQUEST, AdminServer


async def _status(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "app": request.get("app")}


async def _slow(request: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    emit({"event": "begin"})
    await asyncio.sleep(3600)  # held open until the test ends
    return {"ok": True}


def with_server(tmp_path: Path, body: Callable[[str], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        path = str(tmp_path / "admin.sock")
        server = AdminServer(path, {"status": _status}, {"deploy": _slow}, **options)
        await server.start()
        try:
            await body(path)
        finally:
            await server.close()

    asyncio.run(main())


async def exchange(path: str, data: bytes, half_close: bool = False) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    if half_close:
        writer.write_eof()
    answer = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return dict(json.loads(answer))


def test_the_socket_is_private_to_its_owner(tmp_path: Path) -> None:
    async def body(path: str) -> None:
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert await exchange(path, b'{"cmd": "status", "app": "web"}\n') == {
            "ok": True,
            "app": "web",
        }

    with_server(tmp_path, body)


def test_each_malformed_request_is_answered_bad_request_with_its_reason(tmp_path: Path) -> None:
    cases = {
        b"not json\n": "Expecting value",
        b"\xff\xfe\n": "bad request",
        b"\xff\xfe{\x00}\x00\n": "'utf-8' codec can't decode",  # not taken as UTF-16
        b'["status"]\n': "a request is a JSON object",
        b'{"cmd": 5}\n': "names its command as a string",
        b"[" * 100_000 + b"\n": "nested too deep",
        b"x" * (MAX_REQUEST + 10) + b"\n": f"at most {MAX_REQUEST} bytes",
    }

    async def body(path: str) -> None:
        for data, reason in cases.items():
            answer = await exchange(path, data)
            assert answer["ok"] is False and answer["exit_code"] == 2, data[:20]
            assert answer["error"].startswith("bad request: ") and reason in answer["error"]
        # the daemon still answers afterwards
        assert (await exchange(path, b'{"cmd": "status"}\n'))["ok"] is True

    with_server(tmp_path, body)


def test_a_request_without_its_newline_is_served_when_the_client_half_closes(
    tmp_path: Path,
) -> None:
    async def body(path: str) -> None:
        assert (await exchange(path, b'{"cmd": "status"}', half_close=True))["ok"] is True

    with_server(tmp_path, body)


def test_a_client_that_sends_nothing_is_closed_after_the_request_timeout(tmp_path: Path) -> None:
    async def body(path: str) -> None:
        reader, writer = await asyncio.open_unix_connection(path)
        answer = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert answer["error"] == "bad request: no request line within 0.2s"
        assert await asyncio.wait_for(reader.read(), 10) == b""  # and closed
        writer.close()

    with_server(tmp_path, body, request_timeout=0.2)


def test_past_the_connection_limit_a_client_is_told_so(
    tmp_path: Path,
) -> None:
    async def body(path: str) -> None:
        held = []
        for _ in range(3):  # three deploys streaming, each holding its connection
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b'{"cmd": "deploy"}\n')
            assert json.loads(await asyncio.wait_for(reader.readline(), 10)) == {"event": "begin"}
            held.append(writer)
        answer = await exchange(path, b'{"cmd": "status"}\n')
        assert answer["error"] == "bad request: more than 3 admin connections at once"
        for writer in held:
            writer.close()

    with_server(tmp_path, body, max_connections=3)


def test_a_short_command_gives_its_connection_back_when_answered(tmp_path: Path) -> None:
    async def body(path: str) -> None:
        for _ in range(5):
            assert (await exchange(path, b'{"cmd": "status"}\n'))["ok"] is True

    with_server(tmp_path, body, max_connections=1)


def test_a_client_gone_mid_command_leaves_no_error_behind(tmp_path: Path) -> None:
    # `nonstop deploy web --json | head -1`: the CLI exits after the first event, the
    # deploy goes on emitting, then answers; on the daemon's loop (uvloop) a write to
    # the closed transport raised out of the connection's task
    gone = asyncio.Event()
    errors: list[dict[str, Any]] = []

    async def chatty(request: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> Any:
        emit({"event": "begin"})
        await gone.wait()
        for step in range(50):
            emit({"event": "step", "n": step})
            await asyncio.sleep(0)
        return {"ok": True}

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        server = AdminServer(str(tmp_path / "admin.sock"), {"status": _status}, {"deploy": chatty})
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(server.path)
            writer.write(b'{"cmd": "deploy"}\n')
            assert json.loads(await asyncio.wait_for(reader.readline(), 10)) == {"event": "begin"}
            writer.close()
            await writer.wait_closed()
            gone.set()
            for _ in range(1000):  # until the server let the connection go (10 s at most)
                if server.connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.connections == 0
            assert (await exchange(server.path, b'{"cmd": "status"}\n'))["ok"] is True
        finally:
            gone.set()
            await server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert errors == []
