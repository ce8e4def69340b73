"""Access logs, buffered and flushed by the server tick: nginx's ``combined`` format or
JSON lines.

combined = '$remote_addr - $remote_user [$time_local] "$request" $status
$body_bytes_sent "$http_referer" "$http_user_agent"' (ngx_http_log_module.c).

json: one object a line, the fields of ``JSON_FIELDS`` (docs/observability.md), in UTF-8.
A string the client sent is kept as it came when it is UTF-8 (as nginx's ``escape=json``
keeps bytes above 0x7F); one that is not is read as latin-1, a character a byte, so that
every line is valid JSON.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Final

from nonstop.statedir import claim

__all__ = ["JSON_FIELDS", "AccessLogs", "combined_line", "json_line"]

JSON_FIELDS: Final = (
    "time",
    "client",
    "method",
    "target",
    "protocol",
    "status",
    "bytes",
    "duration",
    "upstream",
    "upstream_duration",
    "request_id",
    "host",
    "referer",
    "user_agent",
)

log = logging.getLogger("nonstop")


def _escape(value: str) -> str:
    """nginx escapes '"', '\\' and bytes outside printable ASCII as \\xHH."""
    if value.isprintable() and '"' not in value and "\\" not in value and value.isascii():
        return value
    out = []
    for ch in value:
        code = ord(ch)
        if ch in '"\\' or code < 0x20 or code > 0x7E:
            out.append(f"\\x{code:02X}")
        else:
            out.append(ch)
    return "".join(out)


class _LocalTime:
    """The local time as text, formatted once a second."""

    __slots__ = ("_colon", "_format", "_second", "_text")

    def __init__(self, format: str, colon: bool = False) -> None:
        self._format = format
        self._colon = colon  # +0100 -> +01:00, as $time_iso8601
        self._second = -1
        self._text = ""

    def text(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            text = time.strftime(self._format, time.localtime(now))
            if self._colon:
                text = text[:-2] + ":" + text[-2:]
            self._text = text
        return self._text


_clock = _LocalTime("%d/%b/%Y:%H:%M:%S %z")
_iso = _LocalTime("%Y-%m-%dT%H:%M:%S%z", colon=True)


def combined_line(req: Any, status: int, sent: int) -> str:
    referer = req.header(b"referer")
    agent = req.header(b"user-agent")
    return (
        f"{req.remote_addr} - - [{_clock.text()}] "
        f'"{_escape(req.request_line)}" {status} {sent} '
        f'"{_escape(referer.decode("latin-1")) if referer else "-"}" '
        f'"{_escape(agent.decode("latin-1")) if agent else "-"}"\n'
    )


def _text(value: bytes | None) -> str | None:
    """A client's bytes as a JSON string's text: UTF-8 as is, else byte by byte."""
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def json_line(req: Any, status: int, sent: int, now: float) -> str:
    """One request as a JSON object on one line (the times are the loop's clock)."""
    peer = req.peer
    fields = {
        "time": _iso.text(),
        "client": req.remote_addr,
        "method": _text(req.method),
        "target": _text(req.url),
        "protocol": "HTTP/" + req.version,
        "status": status,
        "bytes": sent,
        "duration": round(max(0.0, now - req.start), 3),
        "upstream": peer.address if peer is not None else None,
        "upstream_duration": (
            round(max(0.0, now - req.upstream_start), 3) if peer is not None else None
        ),
        "request_id": req.request_id,
        "host": _text(req.http_host),
        "referer": _text(req.header(b"referer")),
        "user_agent": _text(req.header(b"user-agent")),
    }
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    if not text.isascii():
        # the file is written as latin-1 text (a character is a byte): the line's UTF-8
        text = text.encode().decode("latin-1")
    return text + "\n"


class AccessLogs:
    """Open log files by path; lines are buffered and written on ``flush``.

    Each flush writes a file's pending lines with one ``write()`` on a descriptor opened
    with ``O_APPEND``: several processes (the workers) append to the same file, and the
    kernel appends each write whole, so their lines interleave but are never torn.
    """

    def __init__(self) -> None:
        self._files: dict[str, int] = {}
        self._pending: dict[str, list[str]] = {}

    def write(self, path: str, as_json: bool, req: Any, status: int, sent: int, now: float) -> None:
        lines = self._pending.get(path)
        if lines is None:
            lines = self._pending[path] = []
        lines.append(
            json_line(req, status, sent, now) if as_json else combined_line(req, status, sent)
        )

    def flush(self) -> None:
        for path, lines in self._pending.items():
            if not lines:
                continue
            fd = self._files.get(path)
            if fd is None:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                fd = self._files[path] = os.open(path, flags, 0o644)
                claim(fd)  # 0600, or 0640 with the config's group (nonstop.statedir)
            data = "".join(lines).encode("latin-1", "replace")
            lines.clear()
            try:
                while data:  # a regular file takes it all at once; a pipe may not
                    data = data[os.write(fd, data) :]
            except OSError as exc:  # a full disk loses these lines, not the server's tick
                log.error('write() to "%s" failed (%d: %s)', path, exc.errno, exc.strerror)

    def reopen(self) -> None:
        """After log rotation: the next flush opens the files again."""
        self.flush()
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def close(self) -> None:
        self.reopen()
