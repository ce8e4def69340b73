"""Access logs in nginx's ``combined`` format, buffered and flushed by the server tick.

combined = '$remote_addr - $remote_user [$time_local] "$request" $status
$body_bytes_sent "$http_referer" "$http_user_agent"' (ngx_http_log_module.c).
"""

from __future__ import annotations

import os
import time
from typing import IO, Any

__all__ = ["AccessLogs", "combined_line"]


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
    """Open log files by path; lines are buffered and written on ``flush``."""

    def __init__(self) -> None:
        self._files: dict[str, IO[str]] = {}
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
            handle = self._files.get(path)
            if handle is None:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                handle = self._files[path] = open(path, "a", encoding="latin-1")  # noqa: SIM115
            handle.write("".join(lines))
            handle.flush()
            lines.clear()

    def reopen(self) -> None:
        """After log rotation: the next flush opens the files again."""
        self.flush()
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def close(self) -> None:
        self.reopen()
