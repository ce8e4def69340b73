"""``log_format`` compiled into a line function, and the variables only logs read.

A format becomes ``line(req, status, sent, now) -> str``: its literal text as written,
each variable's value escaped as the format says (ngx_http_log_module.c):

* ``default``: '"', '\\', bytes below 0x20 and from 0x7F up as ``\\xHH``; a variable
  with no value (a header not sent, no upstream tried) is "-";
* ``json``: a JSON string's escapes (``\\"``, ``\\\\``, ``\\n``, ``\\u001b``...), bytes
  from 0x80 up kept as they are; a variable with no value is "";
* ``none``: the value as it is; no value is "".

Text is carried as latin-1 ``str`` (a character a byte), as the log file is written.
The log-only variables (``$status``, ``$upstream_addr``, ``$sent_http_NAME``...) are
computed only when a line is written, and only those a format names: an unconfigured
log costs the request path nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Final

from nonstop.config.model import AccessLog, LogFormat, Template
from nonstop.proxy.accesslog import LocalTime, LogSink, basic_user, escape_default
from nonstop.proxy.request import Request
from nonstop.proxy.retry import failure_status
from nonstop.proxy.variables import VariableTable

__all__ = ["LineFn", "compile_condition", "compile_format", "compile_logs", "note_try"]

LineFn = Callable[[Request, int, int, float], str]
_Get = Callable[[Request, int, int, float], "str | None"]  # None: the variable has no value

_local: Final = LocalTime("%d/%b/%Y:%H:%M:%S %z")
_iso: Final = LocalTime("%Y-%m-%dT%H:%M:%S%z", colon=True)
_JSON_SHORT: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def escape_json(value: str) -> str:
    """ngx_escape_json: a JSON string's escapes; bytes from 0x80 up pass."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return value
    out = []
    for ch in value:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append(_JSON_SHORT.get(ch) or f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


# -- what a request leaves behind for its log line ------------------------------------


def note_try(req: Request, kind: str, now: float) -> None:
    """A try failed and another follows: keep its server, status and time for
    ``$upstream_*`` (the last try is read from the request when the line is written)."""
    peer = req.peer
    if peer is None:
        return
    status = int(kind[5:]) if kind.startswith("http_") else failure_status(kind)
    tries = req.tries
    if tries is None:
        tries = req.tries = []
    tries.append((peer.address, str(status), f"{max(0.0, now - req.upstream_start):.3f}"))


def _tries(req: Request, status: int, now: float) -> list[tuple[str, str, str]] | None:
    """Every try of the request: (server, status, seconds), the last one included."""
    peer = req.peer
    if peer is None:
        return None
    got = int(req.conn.exchange.resp_status) if req.conn is not None else 0
    if not got and status in (502, 504):
        got = status  # no answer: nginx counts the failure's status
    last = (peer.address, str(got) if got else "-", f"{max(0.0, now - req.upstream_start):.3f}")
    return [*(req.tries or ()), last]


def _upstream(field: int) -> _Get:
    def get(req: Request, status: int, sent: int, now: float) -> str | None:
        tries = _tries(req, status, now)
        return None if tries is None else ", ".join(t[field] for t in tries)

    return get


def _head(req: Request) -> bytes:
    """The response head as sent (the request keeps a reference to what was written)."""
    data = req.sent_head
    end = data.find(b"\r\n\r\n")
    return data[: end + 4] if end >= 0 else data


def _sent_http(name: str) -> _Get:
    wanted = name.replace("_", "-").lower().encode("latin-1")

    def get(req: Request, status: int, sent: int, now: float) -> str | None:
        for line in _head(req).split(b"\r\n")[1:]:
            key, colon, value = line.partition(b":")
            if colon and key.strip().lower() == wanted:
                return value.strip().decode("latin-1")
        return None

    return get


def _http(name: str) -> _Get:
    wanted = name.replace("_", "-").lower().encode("latin-1")

    def get(req: Request, status: int, sent: int, now: float) -> str | None:
        value = req.header(wanted)
        return None if value is None else value.decode("latin-1")

    return get


def _remote_user(req: Request, status: int, sent: int, now: float) -> str | None:
    value = req.header(b"authorization")
    return None if value is None else basic_user(value)


def _request_length(req: Request, status: int, sent: int, now: float) -> str:
    """The request line, the headers and the body as received (for a client writing
    "Name: value" with one space, as clients do)."""
    size = len(req.method) + len(req.url) + len(req.version) + 9 + 2  # "M U HTTP/V\r\n" "\r\n"
    for _, name, value in req.headers:
        size += len(name) + len(value) + 4
    return str(size + req.body_received)


def _args(req: Request, status: int, sent: int, now: float) -> str | None:
    return req.args or None  # nginx: "-" for none, also after a bare "?"


_hostname: Final = socket.gethostname()

_LOG: Final[dict[str, _Get]] = {
    "status": lambda r, s, b, n: f"{s:03d}",
    "body_bytes_sent": lambda r, s, b, n: str(b),
    "bytes_sent": lambda r, s, b, n: str(len(_head(r)) + b),
    "request_time": lambda r, s, b, n: f"{max(0.0, n - r.start):.3f}",
    "request_length": _request_length,
    "upstream_addr": _upstream(0),
    "upstream_status": _upstream(1),
    "upstream_response_time": _upstream(2),
    "upstream_cache_status": lambda r, s, b, n: None,
    "time_local": lambda r, s, b, n: _local.text(),
    "time_iso8601": lambda r, s, b, n: _iso.text(),
    "msec": lambda r, s, b, n: f"{time.time():.3f}",
    "connection": lambda r, s, b, n: str(r.conn.number),
    "connection_requests": lambda r, s, b, n: str(r.conn.conn_requests),
    "remote_user": _remote_user,
    "hostname": lambda r, s, b, n: _hostname,
    "pid": lambda r, s, b, n: str(os.getpid()),
    "pipe": lambda r, s, b, n: ".",
    "args": _args,
    "query_string": _args,
    "content_length": _http("content_length"),
    "content_type": _http("content_type"),
}


def _getter(name: str, table: VariableTable, where: str) -> _Get:
    if name in table.maps:
        found = table.getter(name, where)
        return lambda r, s, b, n: found(r)
    got = _LOG.get(name)
    if got is not None:
        return got
    if name.startswith("sent_http_"):
        return _sent_http(name[10:])
    if name.startswith("http_"):
        return _http(name[5:])
    plain = table.getter(name, where)
    return lambda r, s, b, n: plain(r)


# -- formats ----------------------------------------------------------------------------


def _part(get: _Get, escape: str) -> _Get:
    if escape == "default":

        def default(r: Request, s: int, b: int, n: float) -> str:
            value = get(r, s, b, n)
            return "-" if value is None else escape_default(value)

        return default
    if escape == "json":

        def json(r: Request, s: int, b: int, n: float) -> str:
            value = get(r, s, b, n)
            return "" if value is None else escape_json(value)

        return json

    def none(r: Request, s: int, b: int, n: float) -> str:
        return get(r, s, b, n) or ""

    return none


def compile_format(fmt: LogFormat, table: VariableTable, where: str = "") -> LineFn:
    """The line function of a format (with its newline)."""
    parts: list[_Get] = []
    for kind, value in fmt.template.parts:
        if kind == "var":
            parts.append(_part(_getter(value, table, where), fmt.escape))
        else:
            parts.append(_const(value.encode().decode("latin-1")))  # UTF-8 as written

    def line(req: Request, status: int, sent: int, now: float) -> str:
        req.log_status = status  # $status for a map the format reads
        return "".join([part(req, status, sent, now) or "" for part in parts]) + "\n"

    return line


def compile_condition(
    condition: Template | None, table: VariableTable, where: str = ""
) -> Callable[[Request, int, int, float], bool] | None:
    """``if=``: the line is written unless the value is "" or "0"."""
    if condition is None:
        return None
    parts = [_getter(v, table, where) if k == "var" else _const(v) for k, v in condition.parts]

    def test(req: Request, status: int, sent: int, now: float) -> bool:
        req.log_status = status
        value = "".join([part(req, status, sent, now) or "" for part in parts])
        return value != "" and value != "0"

    return test


def _const(text: str) -> _Get:
    return lambda r, s, b, n: text


def compile_logs(
    logs: tuple[AccessLog, ...] | None, table: VariableTable, where: str = ""
) -> tuple[LogSink, ...] | None:
    """A location's access logs, ready to write; None when it writes none."""
    if not logs:
        return None
    sinks = []
    for log in logs:
        plain = log.format.name == "combined" and log.format.escape == "default"
        line = None if plain and log.condition is None else compile_format(log.format, table, where)
        test = compile_condition(log.condition, table, where)
        sinks.append(LogSink(log.path, line, test, log.buffer, log.flush, log.gzip))
    return tuple(sinks)
