"""Addresses nonstop's own listeners take: ``HOST:PORT``, ``[V6]:PORT`` or ``unix:/PATH``."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback", "parse_listen_address"]


def parse_listen_address(text: str) -> tuple[str, int] | str:
    """``host:port`` / ``[v6]:port`` -> (host, port); ``unix:/path`` -> the path."""
    if text.startswith("unix:"):
        if not text[5:].startswith("/"):
            raise ValueError(f'"{text}" needs an absolute path after "unix:"')
        return text[5:]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'"{text}" is not HOST:PORT or unix:/PATH')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f'"{text}" names no host (write 127.0.0.1:{port} or [::1]:{port})')
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host`` (a name other than localhost may be anything)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
