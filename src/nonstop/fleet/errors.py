"""What can go wrong with a host of the fleet; every error names the host.

These are the only exceptions the fleet code lets out: asyncssh's and the socket layer's
are translated into them where SSH is used (``ssh.py``).  All are failures that leave the
fleet as it was (exit 1), so a caller can report them and roll back; none is a
configuration mistake (those are ``ConfigError``, exit 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nonstop.errors import NonstopError

__all__ = [
    "AdminUnreachable",
    "CommandFailed",
    "CommandTimedOut",
    "FleetError",
    "HostError",
    "HostKeyRejected",
    "HostUnreachable",
    "HostsFailed",
    "LoginRefused",
]

STDERR_TAIL = 400
"""How much of a failed command's stderr an error keeps (its end: where the reason is)."""


class FleetError(NonstopError):
    """Base of the fleet's errors."""

    exit_code = 1


class HostError(FleetError):
    """Something failed on or on the way to one host."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"{host}: {reason}")


class HostUnreachable(HostError):
    """No SSH session to the host: no route, refused, connect timeout, connection lost."""


class HostKeyRejected(HostError):
    """The host's key is not the one in known_hosts (or the host is not in it at all)."""


class LoginRefused(HostError):
    """The host answered but did not accept our user and key."""


class AdminUnreachable(HostError):
    """The host answers SSH, but its nonstop daemon's admin socket does not answer."""


class CommandFailed(HostError):
    """A remote command exited non-zero (or died of a signal)."""

    def __init__(self, host: str, argv: Sequence[str], exit_status: int, stderr: bytes) -> None:
        self.argv = tuple(argv)
        self.exit_status = exit_status
        tail = stderr[-STDERR_TAIL:].decode("utf-8", "replace").strip()
        self.stderr_tail = tail
        detail = f": {tail}" if tail else ""
        super().__init__(host, f"`{argv[0]}` exited {exit_status}{detail}")


class CommandTimedOut(HostError):
    """A remote command did not finish within its timeout (it was signalled and closed)."""

    def __init__(self, host: str, argv: Sequence[str], timeout: float) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout
        super().__init__(host, f"`{argv[0]}` did not finish within {timeout:g}s")


class HostsFailed(FleetError):
    """A step meant for every host failed on some; ``failures`` names each and why."""

    def __init__(self, step: str, failures: Mapping[str, HostError]) -> None:
        self.step = step
        self.failures = dict(failures)
        lines = "; ".join(str(error) for error in self.failures.values())
        count = len(self.failures)
        super().__init__(f"{step} failed on {count} host{'s' if count > 1 else ''}: {lines}")
