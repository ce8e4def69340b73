"""How to name and reach a host of the fleet: plain values, no I/O.

Kept apart from ``ssh.py`` so that reading the ``[fleet]`` table (``nonstop check``) does
not import asyncssh.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Destination", "SshSettings"]

_DESTINATION = re.compile(
    r"(?:(?P<user>[^@\s]+)@)?"
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:@\s\[\]]+))"
    r"(?::(?P<port>[0-9]+))?"
)


@dataclass(frozen=True, slots=True)
class Destination:
    """``user@host:port`` as written in ``[fleet] hosts`` (IPv6 as ``[addr]:port``)."""

    host: str
    port: int = 22
    user: str | None = None

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``"deploy@app1:22"`` -> Destination("app1", 22, "deploy"); ``ValueError`` if not."""
        match = _DESTINATION.fullmatch(text.strip())
        if match is None:
            raise ValueError(f'invalid SSH destination "{text}": expected user@host:port')
        port = int(match.group("port") or 22)
        if not 0 < port < 65536:
            raise ValueError(f'invalid SSH destination "{text}": port must be 1-65535')
        return cls(match.group("v6") or match.group("host"), port, match.group("user"))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SshSettings:
    """How to reach every host; built from the ``[fleet]`` table."""

    known_hosts: str
    identity: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 120.0
