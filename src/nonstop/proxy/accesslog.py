"""Access logs in nginx's ``combined`` format, buffered and flushed by the server tick.

combined = '$remote_addr - $remote_user [$time_local] "$request" $status
$body_bytes_sent "$http_referer" "$http_user_agent"' (ngx_http_log_module.c).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

__all__ = ["AccessLogs", "combined_line"]

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
    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def text(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._text = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        return self._text


_clock = _LocalTime()


def combined_line(req: Any, status: int, sent: int) -> str:
    referer = req.header(b"referer")
    agent = req.header(b"user-agent")
    return (
        f"{req.remote_addr} - - [{_clock.text()}] "
        f'"{_escape(req.request_line)}" {status} {sent} '
        f'"{_escape(referer.decode("latin-1")) if referer else "-"}" '
        f'"{_escape(agent.decode("latin-1")) if agent else "-"}"\n'
    )


class AccessLogs:
    """Open log files by path; lines are buffered and written on ``flush``.

    Each flush writes a file's pending lines with one ``write()`` on a descriptor opened
    with ``O_APPEND``: several processes (the workers) append to the same file, and the
    kernel appends each write whole, so their lines interleave but are never torn.
    """

    def __init__(self) -> None:
        self._files: dict[str, int] = {}
        self._pending: dict[str, list[str]] = {}

    def write(self, path: str, req: Any, status: int, sent: int) -> None:
        lines = self._pending.get(path)
        if lines is None:
            lines = self._pending[path] = []
        lines.append(combined_line(req, status, sent))

    def flush(self) -> None:
        for path, lines in self._pending.items():
            if not lines:
                continue
            fd = self._files.get(path)
            if fd is None:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                fd = self._files[path] = os.open(path, flags, 0o644)
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
