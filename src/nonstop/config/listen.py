"""Addresses nonstop's own listeners take: ``HOST:PORT``, ``[V6]:PORT`` or ``unix:/PATH``,
and the HTTP admin listener's settings as both config formats give them."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

__all__ = ["AdminSettingError", "admin_listener", "is_loopback", "parse_listen_address"]


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


class AdminSettingError(ValueError):
    """One admin setting is wrong: ``key`` is which (``listen``, ``token``, ``token_file``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def admin_listener(
    listen: str | None,
    token: str | None,
    token_file: str | None,
    conf_path: Callable[[str], str],
    prefix_path: Callable[[str], str],
) -> tuple[str | None, str | None]:
    """The HTTP admin listener's address and bearer token, checked.

    ``token_file`` is read (relative paths by ``conf_path``); a ``unix:`` address is made
    absolute by ``prefix_path``; a token has 16 characters at least; an address other
    than loopback or a unix socket needs a token.  Raises ``AdminSettingError``.
    """
    if token is not None and token_file is not None:
        raise AdminSettingError("token_file", 'give "token" or "token_file", not both')
    if token_file is not None:
        path = conf_path(token_file)
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise AdminSettingError("token_file", f"cannot read {path}: {exc.strerror}") from None
    if token is not None and len(token) < 16:
        key = "token_file" if token_file else "token"
        raise AdminSettingError(key, "a token has at least 16 characters")
    if listen is None:
        return None, token
    if listen.startswith("unix:"):
        listen = "unix:" + prefix_path(listen[5:])
    try:
        where = parse_listen_address(listen)
    except ValueError as exc:
        raise AdminSettingError("listen", str(exc)) from None
    if token is None and not isinstance(where, str) and not is_loopback(where[0]):
        raise AdminSettingError(
            "listen",
            f"{listen} is not a loopback address: anyone who reaches it could deploy; "
            'set "token_file" (or listen on 127.0.0.1 or a unix: socket)',
        )
    return listen, token
