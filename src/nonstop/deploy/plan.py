"""The pure decisions of a blue-green deploy: which slot, which ports, when to roll back.

No sockets, no processes, no clock: the executor (``nonstop.deploy.deployer``) asks these
functions and performs what they answer.  Slots, ports and server specs are shared with
the engines (``nonstop.servers``) and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from nonstop.config.model import AppSpec
from nonstop.servers import address, server_spec, slot_ports

__all__ = [
    "MIN_VERIFY_RESPONSES",
    "VerifyCounts",
    "address",
    "idle_slot",
    "server_spec",
    "slot_ports",
    "verify_failure",
]

# Below this many responses a ratio says nothing: one 500 out of two is not "50 % errors".
MIN_VERIFY_RESPONSES = 20


def idle_slot(live_slot: int | None) -> int:
    """Where the next release starts: slot 0 for a first deploy, else the other slot."""
    return 0 if live_slot is None else 1 - live_slot


@dataclass(frozen=True, slots=True)
class VerifyCounts:
    """What happened on the new release since the switch."""

    alive: bool  # every new instance still runs
    health_failures: int  # consecutive failed active checks (of any new instance)
    responses: int | None = None  # answered requests, None if the proxy does not count them
    errors: int = 0  # of which 5xx


def verify_failure(
    app: AppSpec, counts: VerifyCounts, min_responses: int = MIN_VERIFY_RESPONSES
) -> str | None:
    """Why the new release must be rolled back now, or None while it looks fine."""
    if not counts.alive:
        return "the new release exited during verify"
    fall = max(1, app.health.fall)
    if counts.health_failures >= fall:
        return f"the new release failed {counts.health_failures} health check(s) during verify"
    if counts.responses is not None and counts.responses >= min_responses:
        ratio = counts.errors / counts.responses
        if ratio > app.verify_max_5xx_ratio:
            return (
                f"5xx ratio {ratio:.1%} ({counts.errors} of {counts.responses}) is over "
                f"{app.verify_max_5xx_ratio:.1%}"
            )
    return None
