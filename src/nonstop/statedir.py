"""What the daemon claims of the machine before it reads or writes any state.

Three things, in this order, before anything else of the daemon runs:

1. **The state directory is its own.** An exclusive ``flock`` on ``STATE/daemon.lock``
   (which also holds the pid) is taken first; a second ``nonstop run`` on the same state
   directory exits 1 naming the pid that holds it, having changed nothing — before it could
   mark the running daemon's deploy interrupted or take its admin socket.  The lock is
   released by the kernel when the process ends, however it ends, so a crash leaves no
   stale lock behind; the file itself is never removed (removing a lock file races with the
   next taker).  ``nonstop upgrade`` hands the locked descriptor itself to the new daemon
   (``take_over``): a flock belongs to the open file description, so the directory stays
   locked from the old daemon to the new one without a gap.
2. **What it writes is private.** The daemon's umask becomes 077: the state directory is
   0700, the database, the logs and the admin socket 0600, whatever the operator's umask
   was.  Apps are started with the operator's umask, so what they write is as before.
   With ``group`` in the config (a log shipper's, say) the umask is 027 and that group
   may read: the state directory is 0750 (with the set-group-id bit, so what is created
   in it gets the group as well), ``state.db`` and the logs 0640 with that group, also
   where a log lives outside the state directory, and a directory it makes for a log
   2750 with that group (``make_dirs``).  Each of those files is set so when
   nonstop opens it (``claim``) — at start and again when a log is reopened (SIGUSR1) —
   so a file left by an earlier setting, or created by ``logrotate``, is brought to it.
   The admin socket stays 0600.  With the nginx engine and nginx.conf's ``user``, nginx's
   workers pass through the state directory to their temp paths and slot flags: it is
   0711 (2751) then, listed by no one else (``set_state_dir_mode``).
3. **Enough file descriptors.** The soft ``RLIMIT_NOFILE`` is raised to the hard limit (a
   proxy needs two descriptors per proxied connection, and the usual soft limit of 1024
   caps it at a few hundred) — or set to ``worker_rlimit_nofile`` (TOML: ``max_open_files``)
   when the config names one — and a warning in nginx's words says when
   ``worker_connections`` still exceeds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import stat

from nonstop.config.accounts import group_id
from nonstop.errors import NonstopError

__all__ = [
    "LOCK_NAME",
    "StateDirLock",
    "StateDirLocked",
    "claim",
    "claim_dir",
    "make_dirs",
    "operator_umask",
    "raise_open_files_limit",
    "restrict_umask",
    "set_state_dir_mode",
]

LOCK_NAME = "daemon.lock"

_operator_umask: int | None = None
_group: int | None = None  # the id of the config's ``group``: who else may read


class StateDirLocked(NonstopError):
    """Another daemon owns the state directory; this one changed nothing."""

    exit_code = 1


class StateDirLock:
    """The daemon's exclusive claim on its state directory, held for its whole life."""

    def __init__(self, state_dir: str, passable: bool = False, nginx: bool = False) -> None:
        self.state_dir = state_dir
        self.passable = passable  # see set_state_dir_mode
        self.nginx = nginx  # the nginx engine: its workers may pass through it still
        self.path = os.path.join(state_dir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateDirLocked(
                f"cannot lock the state directory {self.state_dir}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateDirLocked(
                f"another nonstop{f' (pid {holder})' if holder else ''} uses the state "
                f"directory {self.state_dir}: stop it first, or give this one its own "
                "state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        self._claim()

    def _claim(self) -> None:
        set_state_dir_mode(self.state_dir, self.passable, keep_passable=self.nginx)

    def take_over(self, fd: int) -> None:
        """The lock handed over by the nonstop this one upgrades: the same open file
        description, so the flock it holds is ours as well and the directory is never
        unlocked in between.  Refused if ``fd`` is not this directory's lock, locked."""
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StateDirLocked(
                f"the lock handed over is not usable: {exc.strerror or exc}"
            ) from None
        if not same:
            os.close(fd)
            raise StateDirLocked(f"the lock handed over is not {self.path}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        self._claim()  # the new nonstop may read a config with another group

    def fileno(self) -> int:
        assert self._fd is not None
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def set_state_dir_mode(state_dir: str, passable: bool, keep_passable: bool = True) -> None:
    """The state directory 0700, or 2750 with the config's group; with ``passable``, any
    user may pass through it as well (0711, 2751) without listing it: nginx's workers
    running as nginx.conf's ``user`` reach their temp paths and slot flags by name.
    With the nginx engine (``keep_passable``) a passable directory stays so (nginx
    workers of an earlier config may still run as that user; ``chmod`` closes it by
    hand); with the embedded engine no one else passes (a directory made 0755 by hand
    becomes 0700).  Nothing else becomes reachable: nonstop creates its files 0600
    (0640) and its directories 0700 (2750)."""
    mode = 0o700 if _group is None else 0o2750
    with contextlib.suppress(OSError):  # a directory of someone else's stays as it is
        if _group is not None:
            os.chown(state_dir, -1, _group)
        kept = keep_passable and stat.S_IMODE(os.stat(state_dir).st_mode) & 0o001
        if passable or kept:
            mode |= 0o011
        os.chmod(state_dir, mode)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def restrict_umask(group: str | None = None) -> None:
    """From now on this process creates files for its own user only (077), or readable by
    ``group`` too (027; the config's ``group``, a name or an id it has checked)."""
    global _operator_umask, _group
    _group = None if group is None else group_id(group)
    previous = os.umask(0o077 if _group is None else 0o027)
    if _operator_umask is None:
        _operator_umask = previous


def claim(target: int | str) -> None:
    """A file nonstop writes (``state.db``, a log; a descriptor or a path): 0600, or 0640
    with the config's group.  Only a regular file (a log on /dev/stdout is a terminal or a
    pipe, not ours to change); one it cannot change (someone else's) stays as it is."""
    mode = 0o600 if _group is None else 0o640
    with contextlib.suppress(OSError):
        fd = target if isinstance(target, int) else os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            if _group is not None:
                os.fchown(fd, -1, _group)
            os.fchmod(fd, mode)
        finally:
            if not isinstance(target, int):
                os.close(fd)


def claim_dir(target: int | str) -> None:
    """A directory nonstop has just created for a log (a descriptor or a path): with the
    config's group, that group's and set-group-id (2750), so the group reaches the logs
    in it, as in the state directory; without, as the umask made it (0700)."""
    if _group is None:
        return
    with contextlib.suppress(OSError):
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = target if isinstance(target, int) else os.open(target, flags)
        try:
            os.fchown(fd, -1, _group)
            os.fchmod(fd, 0o2750)
        finally:
            if not isinstance(target, int):
                os.close(fd)


def make_dirs(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, each directory it creates claimed (``claim_dir``);
    those that were there stay as they are."""
    missing: list[str] = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            continue  # made meanwhile (another worker), or a file: open() will say
        claim_dir(directory)


def operator_umask() -> int:
    """The umask nonstop was started with: what its apps get."""
    if _operator_umask is not None:
        return _operator_umask
    current = os.umask(0o022)
    os.umask(current)
    return current


def raise_open_files_limit(worker_connections: int, wanted: int | None = None) -> list[str]:
    """Set the open-files limit; what went wrong or stays too low, in nginx's words.

    ``wanted`` (``worker_rlimit_nofile``) becomes the soft limit, as nginx sets it; without
    it the soft limit is raised to the hard one.  Processes started afterwards (the
    workers) inherit it.
    """
    warnings = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted is not None:
        try:
            ceiling = hard if hard == resource.RLIM_INFINITY else max(hard, wanted)
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, ceiling))
            soft = wanted
        except (OSError, ValueError) as exc:
            reason = f"{exc.errno}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
            warnings.append(f"setrlimit(RLIMIT_NOFILE, {wanted}) failed ({reason})")
            wanted = None
    if wanted is None and (hard == resource.RLIM_INFINITY or hard > soft):
        raised = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (OSError, ValueError):
            pass
    if worker_connections > soft:
        warnings.append(
            f"{worker_connections} worker_connections exceed open file resource limit: {soft}"
        )
    return warnings
