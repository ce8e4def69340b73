"""Answers per upstream server, counted from a log nginx writes for nonstop.

nginx OSS reports nothing per server, but every request can log ``$upstream_addr
$upstream_status``.  The render adds that log (``logs/upstream.log``, buffered, flushed
within 100 ms) wherever the config has an app; this module reads what was appended since
the last read and keeps, per address, how many answers came back and how many were 5xx --
what ``verify`` needs to roll back a release that answers with errors, as the embedded
proxy's per-server counters give it.

A request nginx passed to several servers logs them all: ``$upstream_addr`` and
``$upstream_status`` list one entry per try, separated by ``, `` (and by `` : `` across an
internal redirect), in the same order (ngx_http_upstream.c,
``ngx_http_upstream_addr_variable`` / ``ngx_http_upstream_status_variable``).  A try that
got no header from the server (refused, reset, timed out) logs ``502`` or ``504``: it
counts as a 5xx of that server, which is what it was.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

__all__ = ["UpstreamStats", "parse_line"]

MAX_BYTES = 16 * 1024 * 1024
_SPLIT = re.compile(r", | : ")


def parse_line(line: str) -> Iterator[tuple[str, int]]:
    """``(address, status)`` for each try one log line records; nothing for a request
    nginx answered itself (``-``) or a try that has no numeric status."""
    # Both lists use the same separators, so once they are set aside the one space left
    # is the seam between the addresses and the statuses.
    addrs, _, statuses = _SPLIT.sub("\0", line.strip()).partition(" ")
    for address, status in zip(addrs.split("\0"), statuses.split("\0"), strict=False):
        if address != "-" and status.isdigit():
            yield address, int(status)


class UpstreamStats:
    """Reads ``path`` incrementally; ``counts(address)`` = (answers, 5xx) since ``reset``."""

    def __init__(self, path: str, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._offset = 0
        self._partial = ""
        self._counts: dict[str, list[int]] = {}

    def reset(self, address: str) -> None:
        """Count ``address`` from now on (a new release on a port an old one used)."""
        self.poll()
        self._counts[address] = [0, 0]

    def counts(self, address: str) -> tuple[int, int]:
        self.poll()
        found = self._counts.get(address)
        return (found[0], found[1]) if found is not None else (0, 0)

    def poll(self) -> None:
        """Count the lines appended since the last read; keep the file small.

        nginx opens its logs with O_APPEND, so truncating the file is safe: its next
        write lands at the new end.
        """
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < self._offset:  # truncated (by us, or by hand)
                    self._offset, self._partial = 0, ""
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        text = self._partial + data.decode(errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            for address, status in parse_line(line):
                found = self._counts.setdefault(address, [0, 0])
                found[0] += 1
                if status >= 500:
                    found[1] += 1
        if self._offset > self.max_bytes and not self._partial:
            os.truncate(self.path, 0)
            self._offset = 0
