"""How a deploy ends when it does not succeed; each maps to an outcome in the store.

All are ``DeployFailed`` (exit 1: the old release still serves) except ``UnknownApp``,
which is the caller's mistake (exit 2).
"""

from __future__ import annotations

from nonstop.errors import DeployFailed, UsageError

__all__ = ["DeployRefused", "RolledBack", "UnknownApp"]


class DeployRefused(DeployFailed):
    """The new release never took traffic: port busy, start failed or health gate failed."""

    outcome = "refused"


class RolledBack(DeployFailed):
    """The new release took traffic, then failed during ``verify``; the old one is back."""

    outcome = "rolled_back"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"rolled back: {reason}")


class UnknownApp(UsageError):
    """No ``[apps.NAME]`` with that name in the running config."""

    def __init__(self, name: str, known: list[str]) -> None:
        names = ", ".join(known) if known else "none configured"
        super().__init__(f'no app named "{name}" (apps: {names})')
