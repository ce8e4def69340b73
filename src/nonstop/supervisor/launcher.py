"""The launcher port: every OS side effect of starting an instance goes through it.

``Launcher`` is what ``Instance`` needs from the OS — is the port free, start this argv —
and ``ProcessHandle`` what it needs from a started process.  ``SubprocessLauncher`` is the
real one; ``nonstop.supervisor.fake.FakeLauncher`` ships beside it for unit tests.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from typing import Any, Protocol

from nonstop.statedir import operator_umask
from nonstop.supervisor.command import LaunchSpec
from nonstop.supervisor.errors import PortBusy, StartFailed
from nonstop.supervisor.process import ChildProcess

__all__ = ["Launcher", "ProcessHandle", "SubprocessLauncher", "ensure_port_free"]

_CONNECT_TIMEOUT = 1.0


class ProcessHandle(Protocol):
    """A started process as an ``Instance`` sees it (see ``ChildProcess``)."""

    pid: int
    start_ticks: int | None
    returncode: int | None
    reaped: bool

    def signal_group(self, signum: int) -> bool: ...

    async def wait_exit(self) -> int: ...

    def reap(self) -> int: ...

    def close(self) -> None:
        """Stop watching the process; it keeps running."""


class Launcher(Protocol):
    async def ensure_free(self, host: str, port: int, app: str) -> None:
        """Raise ``PortBusy`` if anything accepts connections on host:port."""

    def launch(self, spec: LaunchSpec) -> ProcessHandle:
        """Start the process; raise ``StartFailed`` if it cannot be started at all."""


async def ensure_port_free(host: str, port: int, app: str) -> None:
    """A connect test: refused means free; a completed connect means someone listens."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout=_CONNECT_TIMEOUT
        )
    except ConnectionRefusedError:
        return
    except TimeoutError:
        raise StartFailed(
            f"cannot tell whether port {port} on {host} is free for {app}: "
            f"connecting timed out after {_CONNECT_TIMEOUT:g}s"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            return
        raise StartFailed(
            f"cannot tell whether port {port} on {host} is free for {app}: {exc.strerror or exc}"
        ) from None
    writer.close()
    raise PortBusy(host, port, app)


class SubprocessLauncher:
    """Starts instances as real child processes, each in its own session."""

    async def ensure_free(self, host: str, port: int, app: str) -> None:
        await ensure_port_free(host, port, app)

    def launch(self, spec: LaunchSpec) -> ChildProcess:
        if spec.cwd is not None and not os.path.isdir(spec.cwd):
            raise StartFailed(f"cannot start {spec.app}: cwd {spec.cwd!r} is not a directory")
        who = _credentials(spec)
        with open(spec.log_path, "ab") as log:
            try:
                popen = subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=dict(spec.env),
                    start_new_session=True,
                    close_fds=True,
                    umask=operator_umask(),  # nonstop's own 077 is not the app's
                    **who,
                )
            except OSError as exc:
                raise StartFailed(
                    f"cannot start {spec.app} ({spec.argv[0]!r}): {exc.strerror or exc}"
                ) from None
        return ChildProcess(popen)


def _credentials(spec: LaunchSpec) -> dict[str, Any]:
    """``Popen``'s user, group and supplementary groups for ``spec.account``: a switch
    needs root; as the daemon's own user and group there is nothing to switch."""
    account = spec.account
    if account is None or (account.uid, account.gid) == (os.geteuid(), os.getegid()):
        return {}
    if os.geteuid() != 0:
        raise StartFailed(
            f"cannot start {spec.app} as user {account.user} (uid {account.uid}, gid "
            f"{account.gid}): nonstop runs as uid {os.geteuid()}, and only root can switch"
        )
    return {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
