"""The smallest HTTP/1.1 client health checks need: one GET, ``Connection: close``.

Raw asyncio streams plus ``httptools.HttpResponseParser`` (already nonstop's parser), so a
probe costs one connection and no thread.  Every failure comes back as ``Probe.error``
text, never as an exception: the caller's job is to judge, not to catch.
"""

from __future__ import annotations

import asyncio

import httptools

from nonstop.health.active import Probe

__all__ = ["MAX_BODY", "fetch"]

MAX_BODY = 64 * 1024  # a health body is a word or a small JSON document


class _Response:
    """httptools callbacks: collect the body, note completion."""

    def __init__(self) -> None:
        self.headers_done = False
        self.complete = False
        self.body = bytearray()
        self.truncated = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        room = MAX_BODY - len(self.body)
        if len(data) > room:
            self.truncated = True
        self.body += data[: max(0, room)]

    def on_message_complete(self) -> None:
        self.complete = True


def _host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _read(reader: asyncio.StreamReader) -> Probe:
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    while not response.complete and not response.truncated:
        data = await reader.read(65536)
        if not data:
            if response.headers_done:  # a body delimited by the close
                break
            return Probe(error="connection closed before a complete response")
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            return Probe(error=f"invalid HTTP response: {exc}")
    return Probe(
        status=int(parser.get_status_code()),
        body=bytes(response.body),
        truncated=response.truncated,
    )


async def fetch(host: str, port: int, path: str, timeout: float) -> Probe:
    """GET ``path`` from host:port within ``timeout`` seconds in all."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {_host_header(host, port)}\r\n"
        "User-Agent: nonstop-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            return await _read(reader)
    except TimeoutError:
        return Probe(error=f"timed out after {timeout:g}s")
    except ConnectionRefusedError:
        return Probe(error=f"connection refused by {_host_header(host, port)}")
    except OSError as exc:
        return Probe(error=f"{_host_header(host, port)}: {exc.strerror or exc}")
    finally:
        if writer is not None:
            writer.close()
