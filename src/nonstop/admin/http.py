"""The HTTP admin listener: the admin API, metrics and the status page over HTTP.

``[admin] listen = "127.0.0.1:9180"`` (or ``"unix:/run/nonstop/admin-http.sock"``) serves
the same operations as the admin socket — the same handlers, the same JSON — to tools that
speak HTTP (Prometheus, a browser, ``curl`` from CI), plus the routes other parts register
(``/metrics``, the page, its event stream).

Who may do what:

- with ``[admin] token`` (or ``token_file``) every request needs
  ``Authorization: Bearer TOKEN`` (compared in constant time), else 401;
- without a token, the listener must be on loopback or a unix socket (the loader refuses a
  public address without one); there ``GET`` routes (status, metrics, the page) are open
  and operations (``POST``) are refused with 403 and what to configure — except on a unix
  socket, whose file mode (0600) already says who may connect.

The protocol is plain HTTP/1.1 with keep-alive, parsed by hand: the admin listener is not
on the proxy's hot path, and every limit is explicit (head 16 KiB, body 1 MiB, the request
within ``REQUEST_TIMEOUT``, ``MAX_CONNECTIONS`` at once).  A long operation (``deploy``)
answers ``application/x-ndjson`` in chunks: one progress event a line as it happens, the
final answer last — the admin socket's framing, over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from nonstop.admin.server import MAX_CONNECTIONS, REQUEST_TIMEOUT, Emit, Handler, StreamHandler
from nonstop.config.listen import parse_listen_address
from nonstop.errors import NonstopError

__all__ = ["AdminHttp", "HttpRequest", "HttpResponse", "Route"]

log = logging.getLogger("nonstop")

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
SEND_TIMEOUT = 60.0  # a client that takes no byte of a stream for this long is let go
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lowercased names
    body: bytes


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes | AsyncIterator[bytes] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[HttpRequest], Awaitable[HttpResponse]]


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _json(status: int, data: Mapping[str, Any]) -> HttpResponse:
    return HttpResponse(status, json.dumps(data, default=str).encode() + b"\n")


def _refusal(status: int, reason: str) -> HttpResponse:
    return _json(status, {"ok": False, "error": reason, "exit_code": 2})


class AdminHttp:
    def __init__(
        self,
        listen: str,
        token: str | None,
        handlers: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler] | None = None,
        routes: Mapping[tuple[str, str], Route] | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.listen = listen
        self.token = token.encode() if token else None
        self.handlers = dict(handlers)
        self.streams = dict(streams or {})
        self.routes: dict[tuple[str, str], Route] = dict(routes or {})
        self.public: set[tuple[str, str]] = set()  # routes served without the token
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._unix = isinstance(parse_listen_address(listen), str)

    def route(self, method: str, path: str, handler: Route, public: bool = False) -> None:
        """Serve ``handler`` at ``method path``; ``public`` ones need no token (files that
        hold no data, such as the page's own HTML: a browser sends no header for them)."""
        self.routes[(method, path)] = handler
        if public:
            self.public.add((method, path))

    async def start(self) -> None:
        where = parse_listen_address(self.listen)
        if isinstance(where, str):
            if os.path.exists(where):
                os.unlink(where)
            self._server = await asyncio.start_unix_server(self._serve, where, limit=MAX_HEAD)
            os.chmod(where, 0o600)
        else:
            try:
                self._server = await asyncio.start_server(
                    self._serve, where[0], where[1], limit=MAX_HEAD
                )
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot listen on {self.listen} ([admin] listen): {exc.strerror}"
                ) from None

    def addresses(self) -> list[str]:
        if self._server is None:
            return []
        out = []
        for sock in self._server.sockets:
            name = sock.getsockname()
            out.append(f"unix:{name}" if isinstance(name, str) else f"{name[0]}:{name[1]}")
        return out

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        where = parse_listen_address(self.listen)
        if isinstance(where, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(where)

    # -- connections ----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections > self.max_connections:
                await self._send(
                    writer,
                    _refusal(503, f"more than {self.max_connections} admin connections at once"),
                    keep=False,
                )
                return
            keep = True
            while keep:
                try:
                    request = await asyncio.wait_for(_read_request(reader), self.request_timeout)
                except TimeoutError:
                    return  # idle between requests, or too slow within one: just close
                except _BadRequest as exc:
                    await self._send(writer, _refusal(exc.status, str(exc)), keep=False)
                    return
                if request is None:
                    return
                keep = request.headers.get("connection", "").lower() != "close"
                response = await self._answer(request)
                await self._send(writer, response, keep)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, response: HttpResponse, keep: bool) -> None:
        head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}"]
        head.append(f"Content-Type: {response.content_type}")
        head.append("Cache-Control: no-store")
        head.extend(f"{name}: {value}" for name, value in response.headers.items())
        body = response.body
        if isinstance(body, bytes):
            head.append(f"Content-Length: {len(body)}")
            head.append("Connection: keep-alive" if keep else "Connection: close")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            return
        head.append("Transfer-Encoding: chunked")
        head.append("Connection: close")
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            await self._drain(writer)
            async for chunk in body:
                if chunk:
                    writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    await self._drain(writer)
            writer.write(b"0\r\n\r\n")
            await self._drain(writer)
        finally:
            close = getattr(body, "aclose", None)
            if close is not None:
                await close()  # a stream whose client went away ends now, not at gc

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        """A streaming client that stops reading gives its connection back (send_timeout)."""
        try:
            await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)
        except TimeoutError:
            raise ConnectionError(f"the client read nothing for {SEND_TIMEOUT:g}s") from None

    # -- routing --------------------------------------------------------------------------

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        key = (request.method, request.path)
        if key in self.public:
            return await self.routes[key](request)
        if self.token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credential.strip().encode(), self.token
            ):
                response = _refusal(401, "this admin listener needs Authorization: Bearer TOKEN")
                response.headers["WWW-Authenticate"] = 'Bearer realm="nonstop"'
                return response
        elif request.method != "GET" and not self._unix:
            return _refusal(
                403,
                "operations over HTTP need a token: set [admin] token_file (or use the admin "
                "socket)",
            )
        route = self.routes.get((request.method, request.path))
        if route is not None:
            return await route(request)
        if request.path.startswith("/api/"):
            return await self._api(request, request.path[5:])
        if any(path == request.path for _, path in self.routes):
            return _refusal(405, f"{request.method} is not allowed on {request.path}")
        return _refusal(404, f"nothing at {request.path}")

    async def _api(self, request: HttpRequest, cmd: str) -> HttpResponse:
        if request.method == "GET":
            if cmd != "status":
                return _refusal(405, f"{cmd} changes state: POST it")
            args: dict[str, Any] = dict(request.query)
        elif request.method == "POST":
            try:
                parsed = json.loads(request.body or b"{}")
            except (ValueError, RecursionError):
                return _refusal(400, "the body is not a JSON object")
            if not isinstance(parsed, dict):
                return _refusal(400, "the body is not a JSON object")
            args = parsed
        else:
            return _refusal(405, f"{request.method} is not allowed on /api/")
        args["cmd"] = cmd
        stream = self.streams.get(cmd)
        if stream is not None and request.method == "POST":
            return HttpResponse(200, _stream(stream, args), "application/x-ndjson")
        handler = self.handlers.get(cmd)
        if handler is None:
            return _refusal(404, f"unknown command {cmd!r}")
        try:
            answer = await handler(args)
        except ValueError as exc:
            return _refusal(400, f"bad request: {exc}")
        except NonstopError as exc:
            return _json(200, {"ok": False, "error": str(exc), "exit_code": exc.exit_code})
        return _json(200, answer)


async def _stream(stream: StreamHandler, args: dict[str, Any]) -> AsyncIterator[bytes]:
    """Run a long operation, yielding its progress events, then its final answer."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    emit: Emit = lambda event: queue.put_nowait(json.dumps(event, default=str).encode() + b"\n")  # noqa: E731

    async def run() -> dict[str, Any]:
        try:
            return await stream(args, emit)
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}", "exit_code": 2}
        except NonstopError as exc:
            return {"ok": False, "error": str(exc), "exit_code": exc.exit_code}

    # A task of its own, as on the admin socket: a client that hangs up (this generator is
    # then closed) does not cut the deploy short.
    task = asyncio.ensure_future(run())
    while not task.done() or not queue.empty():
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            yield getter.result()
    yield json.dumps(task.result(), default=str).encode() + b"\n"


async def _read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """One request, or None when the client closed cleanly between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _BadRequest(400, "the request head ended early") from None
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, f"a request head is at most {MAX_HEAD} bytes") from None
    try:
        text = head.decode("latin-1")
        line, *rest = text[:-4].split("\r\n")
        method, target, version = line.split(" ")
    except ValueError:
        raise _BadRequest(400, "malformed request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0") or not target.startswith("/"):
        raise _BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for raw in rest:
        name, sep, value = raw.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "malformed header line")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _BadRequest(411, "send the body with a Content-Length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise _BadRequest(400, "malformed Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        raise _BadRequest(413, f"a request body is at most {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    return HttpRequest(method, url.path, dict(parse_qsl(url.query)), headers, body)
