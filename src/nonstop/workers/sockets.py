"""The workers' listening sockets, owned by the control process: one per worker per address.

Every socket of an address is bound with ``SO_REUSEPORT``, so they form one group and the
kernel spreads new connections over the workers evenly (by a hash of the connection's
addresses), each into its own worker's accept queue: no two workers wake for the same
connection and nothing on the accept path is shared.  The control process keeps every
socket open for as long as its worker index exists, and hands worker *i*'s sockets to
whichever process is worker *i* now: a replacement for a worker that died inherits its
sockets and the connections queued on them, which wait in the kernel until it accepts
them — none is lost with the worker.  Only when a reload lowers ``worker_processes`` are
the retired index's sockets closed, and with them what is still queued on them.

Sockets from systemd (``LISTEN_FDS``) are worker 0's; the other workers' sockets join their
group, which needs them made with ``SO_REUSEPORT`` (``ReusePort=yes`` in the socket unit).
An upgrade hands every socket to the new nonstop with its worker index (``all``), and the
new control process gives each to its worker of the same index: the group is the same
sockets, none is closed or bound anew, so what is queued on each is accepted.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from nonstop import listeners
from nonstop.config.model import Config
from nonstop.proxy.server import bind_keys, listen_socket

__all__ = ["Key", "WorkerSockets"]

Key = tuple[str, int]


class WorkerSockets:
    """``(worker index, address) -> listening socket`` for every worker."""

    def __init__(self) -> None:
        self._open: dict[tuple[int, Key], socket.socket] = {}

    def open(self, config: Config, indexes: Iterable[int]) -> list[tuple[int, Key]]:
        """Bind what ``config`` listens on for each worker index that lacks it; all or
        none (raises ``OSError`` naming the address, and keeps nothing it opened)."""
        opened: list[tuple[int, Key]] = []
        try:
            for key in bind_keys(config):
                for index in indexes:
                    if (index, key) not in self._open:
                        self._open[(index, key)] = self._socket(key, index, config.workers > 1)
                        opened.append((index, key))
        except OSError:
            self.close(opened)
            raise
        return opened

    def _socket(self, key: Key, index: int, shared: bool) -> socket.socket:
        """Worker ``index``'s socket for ``key``: the one handed over for that index, if
        any (by the nonstop this one upgrades, or for worker 0 by systemd's
        ``LISTEN_FDS``), which the others' sockets then join.  ``shared``: more than one
        worker listens on it, which a handed-over socket without ``SO_REUSEPORT`` does
        not allow (one worker takes it as it is)."""
        handed = listeners.inherited.take(*key, worker=index)
        if handed is not None:
            if shared and not _reuses(handed):
                handed.close()
                raise _unshared(key)
            return handed
        first = self._open.get((0, key))
        if first is not None and not _reuses(first):
            raise _unshared(key)
        return listen_socket(self._bound(key), reuseport=True)

    def _bound(self, key: Key) -> Key:
        """``key`` with the port a sibling already got (``listen ...:0`` picks one port
        for the whole group, not one per worker)."""
        host, port = key
        if port == 0:
            for (_, other), sock in self._open.items():
                if other == key:
                    return host, sock.getsockname()[1]
        return key

    def of(self, config: Config, index: int) -> tuple[list[Key], list[int]]:
        """Worker ``index``'s addresses for ``config`` and the descriptors to pass it."""
        keys = [key for key in bind_keys(config) if (index, key) in self._open]
        return keys, [self._open[(index, key)].fileno() for key in keys]

    def keep(self, config: Config, indexes: Iterable[int]) -> None:
        """Close every socket ``config`` does not listen on, or of a worker index gone."""
        wanted = set(bind_keys(config))
        alive = set(indexes)
        self.close([ik for ik in self._open if ik[1] not in wanted or ik[0] not in alive])

    def close(self, which: Iterable[tuple[int, Key]] | None = None) -> None:
        for index_key in list(self._open if which is None else which):
            sock = self._open.pop(index_key, None)
            if sock is not None:
                sock.close()

    def all(self) -> list[tuple[int, int]]:
        """Every socket as ``(worker index, fd)`` (what an upgrade hands over)."""
        return [(index, sock.fileno()) for (index, _), sock in sorted(self._open.items())]

    def addresses(self) -> list[str]:
        names = {sock.getsockname()[:2] for sock in self._open.values()}
        return [f"{host}:{port}" for host, port in sorted(names)]


def _reuses(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def _unshared(key: Key) -> OSError:
    host, port = key
    return OSError(
        f"the listening socket for {host}:{port} handed over (by systemd, or by a nonstop "
        "that served from one process) cannot be shared by more than one worker: set "
        "ReusePort=yes in the .socket unit, or worker_processes 1; a nonstop that served "
        "from one process is stopped and started, not upgraded, to more workers"
    )
