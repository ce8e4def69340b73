"""nonstop's small error tree.

Every error says who is at fault and maps to one exit code (CLI) or HTTP status (proxy).
Third-party exceptions are translated into these at the boundary that meets them.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DaemonUnreachable",
    "DeployFailed",
    "NonstopError",
    "UsageError",
]


class NonstopError(Exception):
    """Base of every error nonstop raises on purpose."""

    exit_code = 1


class ConfigError(NonstopError):
    """The configuration is invalid; ``where`` names the file and line, or the key path."""

    exit_code = 2

    def __init__(self, message: str, where: str = "") -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class UsageError(NonstopError):
    """The command line is wrong."""

    exit_code = 2


class DaemonUnreachable(NonstopError):
    """No daemon answers on the admin socket."""

    exit_code = 3


class DeployFailed(NonstopError):
    """A deploy was refused or rolled back; the old release still serves."""

    exit_code = 1
