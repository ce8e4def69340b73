"""Listening sockets opened before this daemon: by systemd, or by the nonstop it upgrades.

A listener handed over is used as it is, never bound again: its kernel queue is the one
clients were already connecting to, so connections that arrive while no nonstop accepts
(a restart under systemd socket activation, the moment of an upgrade) wait there instead
of being refused.

``Listeners`` is a plain registry owned by the control side: it is filled before the
event loop starts (``from_systemd``; ``add`` for the sockets an upgrade hands over), and
the proxy ``take``s the one for each address it listens on.  With ``worker_processes``
above 1 there is one socket per worker per address (``nonstop.workers.sockets``): each
is held under its worker's index, so an upgrade gives worker *i* of the new nonstop the
very socket worker *i* of the old one accepted from (systemd's are worker 0's).
``inherited`` is the process's registry.

systemd's protocol (sd_listen_fds(3)): ``LISTEN_PID`` is our pid, ``LISTEN_FDS`` the
number of descriptors, passed from fd 3 on.  Each is matched to a listen address by its
``getsockname()``; both variables are then removed from the environment, so the apps
nonstop starts do not take the sockets for theirs.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import MutableMapping

__all__ = ["SCM_BATCH", "SD_LISTEN_FDS_START", "Listeners", "address_key", "inherited"]

log = logging.getLogger("nonstop")

SD_LISTEN_FDS_START = 3
# descriptors passed with one sendmsg: the kernel takes at most 253 (SCM_MAX_FD), so more
# go in batches of this many (the upgrade's hand-over, the workers' channel)
SCM_BATCH = 250

Key = tuple[str, int]


def address_key(host: str, port: int) -> Key:
    """``(host, port)`` with the host in one spelling (``::0`` and ``::`` are one)."""
    try:
        host = str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    return host, port


class Listeners:
    """Listening TCP sockets by the address they are bound to."""

    def __init__(self) -> None:
        self._sockets: dict[tuple[int, Key], socket.socket] = {}

    def add(self, sock: socket.socket, worker: int = 0) -> Key:
        """Hold ``sock``, a listening TCP socket, as worker ``worker``'s; the address it
        listens on."""
        if sock.type != socket.SOCK_STREAM or sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            raise ValueError(f"fd {sock.fileno()} is not a TCP socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"fd {sock.fileno()} is not listening")
        name = sock.getsockname()
        key = address_key(str(name[0]), int(name[1]))
        sock.setblocking(False)
        sock.set_inheritable(False)
        old = self._sockets.pop((worker, key), None)
        if old is not None:
            old.close()
        self._sockets[(worker, key)] = sock
        return key

    def take(self, host: str, port: int, worker: int = 0) -> socket.socket | None:
        """Worker ``worker``'s socket listening on host:port, handed over for good (None:
        bind one)."""
        return self._sockets.pop((worker, address_key(host, port)), None)

    def __len__(self) -> int:
        return len(self._sockets)

    def workers(self) -> set[int]:
        """The worker indexes whose sockets are held."""
        return {worker for worker, _key in self._sockets}

    def close(self) -> None:
        """Close what no listen address took (logged: its clients would wait forever)."""
        for (_worker, (host, port)), sock in self._sockets.items():
            log.warning(
                "a listening socket on %s:%d was handed over but no listen directive names "
                "it: closed",
                host,
                port,
            )
            sock.close()
        self._sockets.clear()

    def from_systemd(self, environ: MutableMapping[str, str] | None = None) -> int:
        """Add the sockets systemd passed (``LISTEN_FDS``); how many.

        Raises ``ValueError`` for a passed descriptor that is not a listening TCP socket.
        """
        env = os.environ if environ is None else environ
        pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(name, None)
        if not count.isdigit() or pid != str(os.getpid()):
            return 0
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
            try:
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                raise ValueError(f"LISTEN_FDS: fd {fd}: {exc.strerror or exc}") from None
            try:
                self.add(sock)
            except (ValueError, OSError) as exc:
                sock.detach()
                raise ValueError(f"LISTEN_FDS: {exc}") from None
        return int(count)


inherited = Listeners()
