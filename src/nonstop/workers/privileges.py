"""nginx.conf's ``user`` (TOML ``worker_user``): workers that do not run as root.

nonstop started as root keeps root in the control process: it binds the listening sockets,
starts apps as their own ``user``, reads the config and the certificates on every reload.
The workers that move the bytes give root up as soon as they have their sockets (``drop``,
nginx's ``ngx_worker_process_init``: ``setgid``, ``initgroups``, ``setuid``).

nginx's master reads the certificates and opens the logs before it forks the workers, and
forks new ones on every reload.  nonstop's workers live across reloads and log reopening,
so the control process does those steps for them each time (``prepare``) and hands the
result over with the call (``nonstop.proxy.handed``): certificates and keys as bytes, the
log files and the temp directories as descriptors.  The ``Handover`` in use stays open
until the next one replaces it, so a worker started in between gets the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import stat
from collections import deque
from collections.abc import Iterator
from typing import Final

from nonstop.config.accounts import Account
from nonstop.config.model import AccessLog, Config
from nonstop.errors import ConfigError, NonstopError
from nonstop.proxy.handed import NOTHING, Handed, read_pem
from nonstop.statedir import claim, claim_dir

__all__ = ["TEMP_KINDS", "Handover", "drop", "for_workers", "prepare"]

log = logging.getLogger("nonstop")

TEMP_KINDS = ("client_body_temp", "proxy_temp")  # under the state directory


class Handover:
    """The files handed to the workers for one config, with their descriptors."""

    def __init__(self, handed: Handed = NOTHING, fds: list[int] | None = None) -> None:
        self.handed = handed
        self.fds = fds or []

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def prepare(config: Config, pem: dict[str, bytes] | None = None) -> Handover:
    """What the workers of ``config`` need handed over: nothing unless they run as another
    user.  ``pem``: certificate bytes already read for this config (a log reopening reads
    none again).  An unreadable certificate raises ConfigError; a log that cannot be
    opened is logged, and the worker tries (and logs) it again itself, as without ``user``."""
    account = config.worker_user
    if account is None:
        return Handover()
    if pem is None:
        pem = {path: _read(path) for path in _pem_paths(config)}
    fds: list[int] = []
    try:
        logs = []
        for path in _log_paths(config):
            fd = _open_log(path)
            if fd >= 0:
                logs.append(path)
                fds.append(fd)
        temps = []
        for kind in TEMP_KINDS:
            fds.append(_temp_dir(os.path.join(config.state_dir, kind), account))
            temps.append(kind)
    except BaseException:
        Handover(fds=fds).close()
        raise
    return Handover(Handed(pem, tuple(logs), tuple(temps)), fds)


def for_workers(config: Config) -> Config:
    """``config`` as the workers get it: without what they have no use for and should not
    hold, the admin API's bearer token and the apps' environments (their secrets)."""
    return dataclasses.replace(
        config,
        admin=dataclasses.replace(config.admin, token=None),
        apps=tuple(dataclasses.replace(app, env=()) for app in config.apps),
    )


def drop(account: Account) -> None:
    """This process becomes ``account``: its group, the user's groups, then its user (the
    order matters: once the user is not root, groups can no longer change)."""
    try:
        os.setgroups([account.gid, *account.groups])
        os.setgid(account.gid)
        os.setuid(account.uid)
    except OSError as exc:  # root without CAP_SETUID/CAP_SETGID (a capability bounding set)
        raise NonstopError(
            f'cannot run the workers as user "{account.user}": {exc.strerror or exc}'
            " (switching users needs root with CAP_SETUID and CAP_SETGID)"
        ) from None
    os.environ["HOME"] = account.home
    os.environ["USER"] = os.environ["LOGNAME"] = account.user


def _pem_paths(config: Config) -> Iterator[str]:
    for block in config.servers:
        if block.tls is not None:
            yield block.tls.certificate
            yield block.tls.certificate_key
            if block.tls.dhparam is not None:
                yield block.tls.dhparam
        for location in block.locations:
            ssl = location.proxy_ssl
            for path in (ssl.trusted_certificate, ssl.certificate, ssl.certificate_key):
                if path is not None:
                    yield path


def _log_paths(config: Config) -> dict[str, None]:
    """Every file the workers write their logs to, each once, in order."""
    paths: dict[str, None] = {}
    if config.error_log and config.error_log != "stderr":
        paths[config.error_log] = None  # first: a worker cannot start without it

    def add(logs: tuple[AccessLog, ...] | None) -> None:
        for entry in logs or ():
            paths[entry.path] = None

    for block in config.servers:
        add(block.access_log)
        for location in block.locations:
            add(location.access_log)
    return paths


def _read(path: str) -> bytes:
    try:
        return read_pem(path)
    except OSError as exc:
        raise ConfigError(f'cannot load "{path}": {exc.strerror or exc}') from None


def _open_log(path: str) -> int:
    """``path`` opened by root for a worker, each name on the way resolved here
    (``_resolve``); in a directory someone other than root may write to (the workers'
    user, say), only a regular file with one name is opened, so a link or a renamed
    directory planted there cannot get root to open, and hand over, another file such as
    /etc/passwd (nginx's CVE-2016-1247)."""
    try:
        fd, shared = _resolve(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC)
    except OSError as exc:
        log.error('open() "%s" failed (%d: %s)', path, exc.errno, exc.strerror)
        return -1
    info = os.fstat(fd)
    if shared and not (stat.S_ISREG(info.st_mode) and info.st_nlink == 1):
        os.close(fd)
        log.error(
            'open() "%s" refused: in a directory others may write to, a log must be a'
            " regular file with one name",
            path,
        )
        return -1
    claim(fd)  # 0600, or 0640 with the config's group: still root's, written through fd
    return fd


_DIRECTORY: Final = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_HOPS: Final = 40  # symbolic links followed on one path, as the kernel's MAXSYMLINKS


def _resolve(path: str, flags: int) -> tuple[int, bool]:
    """``path`` opened with ``flags`` (directories on the way made if missing), and
    whether its directory is shared (``_shared``).  Every name is looked up in the
    directory before it, and every symbolic link read and followed here, so the same rule
    holds all along a link's target: in a shared directory no link is followed.  The
    links of /proc (``/dev/stdout`` is ``/proc/self/fd/1``) are opened as they are."""
    names = deque(path.split("/"))
    directory = os.open("/" if path.startswith("/") else ".", _DIRECTORY)
    hops = 0
    try:
        while names:
            name = names.popleft()
            if name in ("", "."):
                continue
            last = all(rest in ("", ".") for rest in names)
            shared = _shared(directory)
            try:
                info: os.stat_result | None = os.stat(name, dir_fd=directory, follow_symlinks=False)
            except FileNotFoundError:
                info = None
            if info is not None and stat.S_ISLNK(info.st_mode):
                hops += 1
                if shared:
                    raise OSError(
                        errno.ELOOP, "not followed: a link in a directory others may write to"
                    )
                if hops > _HOPS:
                    raise OSError(errno.ELOOP, "not followed: too many links")
                if last and os.readlink(f"/proc/self/fd/{directory}").startswith("/proc/"):
                    return os.open(name, flags, 0o644, dir_fd=directory), False
                target = os.readlink(name, dir_fd=directory)
                names.extendleft(reversed(target.split("/")))
                if target.startswith("/"):
                    os.close(directory)
                    directory = os.open("/", _DIRECTORY)
                continue
            if last:
                extra = os.O_NOFOLLOW | (os.O_NONBLOCK if shared else 0)  # a FIFO: no wait
                return os.open(name, flags | extra, 0o644, dir_fd=directory), shared
            made = False
            if info is None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=directory)  # as os.makedirs: umask decides
                    made = True
            inner = os.open(name, _DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            if made:
                claim_dir(inner)  # the config's group reaches the logs in it
            os.close(directory)
            directory = inner
        raise IsADirectoryError(errno.EISDIR, "a directory, not a file")
    finally:
        os.close(directory)


def _shared(directory: int) -> bool:
    """Whether anyone but this process's user may create names in ``directory``."""
    info = os.fstat(directory)
    return info.st_uid != os.geteuid() or bool(info.st_mode & 0o022)


def _temp_dir(path: str, account: Account) -> int:
    """``path`` made the workers' own (0700), as nginx's master makes its temp paths; the
    state directory around it stays root's, reached through the descriptor."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, account.uid, account.gid)
        os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd
