"""The steps a deploy is made of, as data: what a planner returns and the executor runs.

A plan is a tuple of steps; when a step fails, the planner's ``undo`` says which steps
put things back.  Steps name instances by port (an app's instances are its ports) so a
test can assert a whole plan as a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "Commit",
    "Drain",
    "Gate",
    "Hold",
    "Plan",
    "Rollback",
    "Start",
    "Step",
    "Stop",
    "Switch",
    "Verify",
]


@dataclass(frozen=True, slots=True)
class Start:
    """Start the release on ``ports`` (slot ``slot``), refusing a port already in use."""

    kind: ClassVar[str] = "start"
    slot: int
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Gate:
    """Wait until every instance on ``ports`` passes its health check (or refuse)."""

    kind: ClassVar[str] = "gate"
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Switch:
    """In one server set: ``to`` serving, ``away`` draining."""

    kind: ClassVar[str] = "switch"
    to: tuple[int, ...]
    away: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Drain:
    """Wait until nothing is in flight to ``ports`` (at most ``drain_timeout``).

    ``warm``: the drained instances stay running for a switch back — as backup servers
    where the method has them, else out of the set — and the drain is reported.
    Otherwise they leave the server set.
    """

    kind: ClassVar[str] = "drain"
    ports: tuple[int, ...]
    warm: bool = False


@dataclass(frozen=True, slots=True)
class Verify:
    """Watch ``ports`` for ``seconds``: a crash, failed checks or 5xx roll back."""

    kind: ClassVar[str] = "verify"
    ports: tuple[int, ...]
    seconds: float


@dataclass(frozen=True, slots=True)
class Hold:
    """Switched, the old release warm: wait for commit or abort, at most ``seconds``.

    Past the deadline the deploy rolls back: a fleet that never decided must not be
    left on a release nobody committed.
    """

    kind: ClassVar[str] = "hold"
    seconds: float


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the instances on ``ports`` (``which``: "old" or "new"); ``announce`` each."""

    kind: ClassVar[str] = "stop"
    ports: tuple[int, ...]
    which: str
    announce: bool = True


@dataclass(frozen=True, slots=True)
class Commit:
    """Record the release on ``slot`` as live; its instances restart if they crash."""

    kind: ClassVar[str] = "commit"
    slot: int


@dataclass(frozen=True, slots=True)
class Rollback:
    """Switch back: ``to`` serving again (none after a first deploy), ``away`` draining.

    ``announce`` False when nothing was switched yet (a switch the engine refused).
    """

    kind: ClassVar[str] = "rollback"
    to: tuple[int, ...]
    away: tuple[int, ...]
    announce: bool = True


Step = Start | Gate | Switch | Drain | Verify | Hold | Stop | Commit | Rollback


@dataclass(frozen=True, slots=True)
class Plan:
    """A deploy's steps, and the release slot it starts on."""

    steps: tuple[Step, ...]
    slot: int
    ports: tuple[int, ...]  # the new release's
    old_ports: tuple[int, ...]  # the live release's (empty for a first deploy)

    def kinds(self) -> list[str]:
        return [step.kind for step in self.steps]
