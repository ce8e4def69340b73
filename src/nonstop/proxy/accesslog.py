"""Access log files: lines buffered in the process, written whole with ``O_APPEND``.

What a line holds is the log's format (proxy/logformat.py compiles ``log_format``);
nginx's ``combined`` -- the format of most logs -- has a line function of its own here,
the same text for less work:

combined = '$remote_addr - $remote_user [$time_local] "$request" $status
$body_bytes_sent "$http_referer" "$http_user_agent"' (ngx_http_log_module.c).

When the lines reach the file (``access_log``'s parameters, per file as in nginx):
without ``buffer=``, every tick of the server (a quarter second); with it, when the next
line does not fit, ``flush=`` after the oldest pending line, and on reload, reopen and
stop.  ``gzip`` compresses each write into one gzip member, so the file is always whole
for ``zcat``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nonstop.proxy.handed import log_descriptor
from nonstop.statedir import claim, make_dirs

if TYPE_CHECKING:
    from nonstop.proxy.request import Request

__all__ = [
    "AccessLogs",
    "LocalTime",
    "LogSink",
    "basic_user",
    "combined_line",
    "escape_default",
]

log = logging.getLogger("nonstop")


def escape_default(value: str) -> str:
    """nginx escapes '"', '\\', bytes below 0x20 and from 0x7F up as \\xHH."""
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


class LocalTime:
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


_clock = LocalTime("%d/%b/%Y:%H:%M:%S %z")


def basic_user(value: bytes) -> str | None:
    """$remote_user: the user of a Basic Authorization header (ngx_http_auth_basic_user)."""
    if value[:6].lower() != b"basic ":
        return None
    try:
        user, colon, _ = base64.b64decode(value[6:].strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return user.decode("latin-1") if colon else None


def combined_line(req: Request, status: int, sent: int) -> str:
    referer = agent = None
    user = "-"
    for name, _, value in req.headers:  # one pass for the three headers it shows
        if name == b"referer":
            if referer is None:
                referer = value
        elif name == b"user-agent":
            if agent is None:
                agent = value
        elif name == b"authorization" and user == "-":
            found = basic_user(value)
            user = "-" if found is None else escape_default(found)
    return (
        f"{req.remote_addr} - {user} [{_clock.text()}] "
        f'"{escape_default(req.request_line)}" {status} {sent} '
        f'"{escape_default(referer.decode("latin-1")) if referer is not None else "-"}" '
        f'"{escape_default(agent.decode("latin-1")) if agent is not None else "-"}"\n'
    )


class LogSink:
    """One ``access_log`` of a location, ready to write: its file, its line function
    (None: ``combined``, written by ``combined_line``), its ``if=`` test and buffering."""

    __slots__ = ("buffer", "condition", "flush", "gzip", "line", "path")

    def __init__(
        self,
        path: str,
        line: Callable[[Any, int, int, float], str] | None,
        condition: Callable[[Any, int, int, float], bool] | None = None,
        buffer: int = 0,
        flush: float = 0.0,
        gzip: int = 0,
    ) -> None:
        self.path = path
        self.line = line
        self.condition = condition
        self.buffer = buffer
        self.flush = flush
        self.gzip = gzip


class _File:
    """A log file's descriptor and pending lines; its buffering is the first sink's
    (the config refuses one file with two)."""

    __slots__ = ("buffer", "fd", "flush", "gzip", "lines", "since", "size")

    def __init__(self, sink: LogSink) -> None:
        self.fd = -1
        self.lines: list[str] = []
        self.size = 0
        self.since = 0.0
        self.buffer = sink.buffer
        self.flush = sink.flush
        self.gzip = sink.gzip


class AccessLogs:
    """Open log files by path; lines are buffered and written on ``flush``.

    Each write is one ``write()`` of whole lines on a descriptor opened with
    ``O_APPEND``: several processes (the workers) append to the same file, and the
    kernel appends each write whole, so their lines interleave but are never torn.
    """

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}

    def write(
        self, sinks: tuple[LogSink, ...], req: Request, status: int, sent: int, now: float
    ) -> None:
        for sink in sinks:
            make = sink.line
            if make is None:
                line = combined_line(req, status, sent)
            else:
                test = sink.condition
                if test is not None and not test(req, status, sent, now):
                    continue
                line = make(req, status, sent, now)
            file = self._files.get(sink.path)
            if file is None:
                file = self._files[sink.path] = _File(sink)
            if file.buffer:
                size = len(line)
                if file.lines and file.size + size > file.buffer:
                    self._write(sink.path, file)  # the next line does not fit
                if not file.lines:
                    file.since = now
                file.size += size
            file.lines.append(line)

    def flush(self, now: float = 0.0) -> None:
        """Write what is due (the tick): unbuffered files, and buffered ones whose
        oldest line is ``flush`` seconds old.  ``now`` 0 writes everything."""
        for path, file in self._files.items():
            if not file.lines:
                continue
            if now and file.buffer and not (file.flush and now - file.since >= file.flush):
                continue
            self._write(path, file)

    def _write(self, path: str, file: _File) -> None:
        data = "".join(file.lines).encode("latin-1", "replace")
        file.lines.clear()
        file.size = 0
        if file.gzip:
            data = gzip.compress(data, compresslevel=file.gzip, mtime=0)
        if file.fd < 0:
            file.fd = log_descriptor(path)  # opened by the control process for this worker
        if file.fd < 0:
            try:
                make_dirs(os.path.dirname(path))
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                file.fd = os.open(path, flags, 0o644)
                claim(file.fd)  # 0600, or 0640 with the config's group (nonstop.statedir)
            except OSError as exc:
                log.error('open() "%s" failed (%d: %s)', path, exc.errno, exc.strerror)
                return
        try:
            while data:  # a regular file takes it all at once; a pipe may not
                data = data[os.write(file.fd, data) :]
        except OSError as exc:  # a full disk loses these lines, not the server's tick
            log.error('write() to "%s" failed (%d: %s)', path, exc.errno, exc.strerror)

    def reopen(self) -> None:
        """After log rotation or a reload: write everything pending, and the next line
        opens its file again (with the buffering its config now says)."""
        self.flush()
        for file in self._files.values():
            if file.fd >= 0:
                os.close(file.fd)
        self._files.clear()

    def close(self) -> None:
        self.reopen()
