"""Files a worker was handed by the control process instead of opening them itself.

With nginx.conf's ``user`` (TOML ``worker_user``), a worker started by nonstop running as
root gives up root as soon as it has its listening sockets (``nonstop.workers.privileges``).
nginx's workers are forked after the master read the certificates and opened the logs, and
are forked again on every reload; nonstop's workers live across reloads and log reopening,
so what only root may read or create is read or opened by the control process each time and
handed over with the call that needs it:

- **certificates and keys** (``ssl_certificate``, ``ssl_certificate_key``, ``ssl_dhparam``,
  ``proxy_ssl_*``) as their bytes, which the TLS code loads from a memory file
  (``memfd_create``), never written to disk;
- **log files** (each ``access_log`` path and the ``error_log``) as descriptors opened for
  appending;
- **the temp directories** (``client_body_temp``, ``proxy_temp`` under the state directory)
  as descriptors of directories owned by the workers' user, in which unnamed files are made
  (``O_TMPFILE``), so the state directory itself stays root's (0700).

The ``auth_basic_user_file`` is read with the config, by the control process.  What a
worker opens while serving (``root``/``alias`` files, unix sockets of upstreams) it opens
as the user, as nginx's workers do.  Without ``user`` nothing is handed over and every
lookup falls through to the path.  ``install`` replaces the table a worker has; the
descriptors it held are closed (a log already open has its own duplicate).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Final

__all__ = [
    "Handed",
    "install",
    "log_descriptor",
    "pem_path",
    "read_pem",
    "temporary_file",
]


@dataclass(frozen=True, slots=True)
class Handed:
    """What travels with a call: the files' bytes, and the paths of the descriptors that
    follow the listening sockets in the same message, logs first, then temp directories."""

    pem: dict[str, bytes] = field(default_factory=dict)
    logs: tuple[str, ...] = ()
    temps: tuple[str, ...] = ()  # kinds: "client_body_temp", "proxy_temp"

    @property
    def count(self) -> int:
        return len(self.logs) + len(self.temps)


NOTHING: Final = Handed()

_pem: Final[dict[str, bytes]] = {}
_logs: Final[dict[str, int]] = {}
_temps: Final[dict[str, int]] = {}


def install(handed: Handed, fds: Sequence[int]) -> None:
    """This worker's table from now on: ``handed`` with its descriptors ``fds``."""
    if len(fds) != handed.count:
        raise ValueError(f"{len(fds)} descriptors handed over for {handed.count} files")
    for fd in (*_logs.values(), *_temps.values()):
        with contextlib.suppress(OSError):
            os.close(fd)
    _pem.clear()
    _pem.update(handed.pem)
    _logs.clear()
    _logs.update(zip(handed.logs, fds[: len(handed.logs)], strict=True))
    _temps.clear()
    _temps.update(zip(handed.temps, fds[len(handed.logs) :], strict=True))


def read_pem(path: str) -> bytes:
    """The bytes of a certificate, key or DH parameter file: handed over, or read."""
    given = _pem.get(path)
    if given is not None:
        return given
    with open(path, "rb") as handle:
        return handle.read()


@contextlib.contextmanager
def pem_path(path: str) -> Iterator[str]:
    """A path OpenSSL can load ``path`` from: the file itself, or for one handed over, a
    memory file holding its bytes (``/proc/self/fd/N``; the process may open its own
    descriptors whatever its user), closed on exit."""
    given = _pem.get(path)
    if given is None:
        yield path
        return
    fd = os.memfd_create("nonstop-pem", os.MFD_CLOEXEC)
    try:
        view = memoryview(given)
        while view:
            view = view[os.write(fd, view) :]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def log_descriptor(path: str) -> int:
    """A new descriptor appending to the log ``path`` if one was handed over, else -1."""
    fd = _logs.get(path, -1)
    return -1 if fd < 0 else os.dup(fd)


def temporary_file(state_dir: str, kind: str) -> IO[bytes]:
    """An unnamed file under ``STATE/kind`` (nginx's ``*_temp_path``): a request body
    (``client_body_temp``) or a response read ahead (``proxy_temp``)."""
    directory = _temps.get(kind)
    if directory is None:
        path = os.path.join(state_dir, kind)
        os.makedirs(path, mode=0o700, exist_ok=True)
        directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return _unnamed(directory)
        finally:
            os.close(directory)
    return _unnamed(directory)


def _unnamed(directory: int) -> IO[bytes]:
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        fd = os.open(".", flags | os.O_TMPFILE, 0o600, dir_fd=directory)
    except OSError:  # a file system without O_TMPFILE: a name, gone at once
        name = f".spool-{os.getpid()}-{os.urandom(6).hex()}"
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=directory)
        os.unlink(name, dir_fd=directory)
    return open(fd, "w+b")
