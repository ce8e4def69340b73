"""The health client against scripted raw responses on a loopback socket."""

from __future__ import annotations

import asyncio

import pytest

from nonstop.health.client import MAX_BODY, fetch


async def serve_once(raw: bytes, close: bool = True) -> tuple[asyncio.Server, int, list[bytes]]:
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(raw)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(5)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], got


def run(raw: bytes, timeout: float = 2.0, close: bool = True):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        server, port, got = await serve_once(raw, close)
        async with server:
            return await fetch("127.0.0.1", port, "/infra/health", timeout), got

    return asyncio.run(go())


def test_sends_a_get_with_host_and_connection_close() -> None:
    probe, got = run(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nUP")
    request = got[0].decode()
    assert request.startswith("GET /infra/health HTTP/1.1\r\n")
    assert "\r\nHost: 127.0.0.1:" in request and "\r\nConnection: close\r\n" in request
    assert (probe.status, probe.body, probe.error) == (200, b"UP", None)


def test_reads_a_chunked_body() -> None:
    probe, _ = run(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nU\r\n1\r\nP\r\n0\r\n\r\n"
    )
    assert probe.body == b"UP"


def test_reads_a_body_delimited_by_close() -> None:
    probe, _ = run(b"HTTP/1.0 503 Service Unavailable\r\n\r\nDOWN")
    assert (probe.status, probe.body) == (503, b"DOWN")


def test_a_complete_response_needs_no_close() -> None:
    probe, _ = run(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nUP", close=False, timeout=1.0)
    assert probe.error is None and probe.body == b"UP"


def test_garbage_is_an_invalid_response() -> None:
    probe, _ = run(b"SSH-2.0-OpenSSH_9.0\r\n")
    assert probe.status is None and probe.error is not None
    assert probe.error.startswith("invalid HTTP response")


def test_closing_without_an_answer_is_an_error() -> None:
    probe, _ = run(b"")
    assert probe.error == "connection closed before a complete response"


def test_a_server_that_never_finishes_times_out() -> None:
    probe, _ = run(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nUP", close=False, timeout=0.2)
    assert probe.error == "timed out after 0.2s"


def test_huge_bodies_are_cut_and_flagged() -> None:
    body = b"x" * (MAX_BODY + 10)
    probe, _ = run(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert probe.truncated and len(probe.body) == MAX_BODY


@pytest.mark.parametrize("host", ["127.0.0.1"])
def test_connection_refused_is_named(host: str) -> None:
    async def go():  # type: ignore[no-untyped-def]
        server = await asyncio.start_server(lambda r, w: None, host, 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return await fetch(host, port, "/", 1.0), port

    probe, port = asyncio.run(go())
    assert probe.error == f"connection refused by 127.0.0.1:{port}"
