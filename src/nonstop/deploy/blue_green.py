"""Blue-green on one host, as a plan: the first deploy strategy (pure, no I/O).

The order is the guarantee (docs/deploys.md), kamal-proxy's ``DeployService``
order: start the new release on the idle slot, gate it on its health check, switch,
drain the old one and keep it warm, verify the new one, optionally hold for a commit
(the step a fleet deploy is made of), then drain and stop the old release and record
the new one live.  ``undo`` answers what puts things back when a step fails: before
the switch, stop what was started; after it, switch back to the warm old release,
drain the new one and stop it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nonstop.config.model import AppSpec
from nonstop.deploy.plan import idle_slot
from nonstop.deploy.steps import (
    Commit,
    Drain,
    Gate,
    Hold,
    Plan,
    Rollback,
    Start,
    Step,
    Stop,
    Switch,
    Verify,
)
from nonstop.errors import DeployFailed
from nonstop.servers import slot_ports

__all__ = ["Options", "plan", "undo"]


@dataclass(frozen=True, slots=True)
class Options:
    """What the deploy command asked for: ``hold`` seconds, or None to not hold."""

    hold: float | None = None


def plan(
    app: AppSpec,
    live_slot: int | None,
    options: Options = Options(),
    running: tuple[int, ...] | None = None,
) -> Plan:
    """The steps of deploying a release of ``app`` whose live slot is ``live_slot``.

    ``running``: the ports the live release runs on when a reload changed ``app.ports``
    since it started (None: its slot's ports in ``app``).  The new release then goes to
    whichever slot of the new ports is clear of them, and the old one is drained and
    stopped where it runs.  ``DeployFailed`` when both slots overlap them.
    """
    old = () if live_slot is None else slot_ports(app, live_slot)
    if running is not None:
        old = running
    slot = idle_slot(live_slot)
    if set(slot_ports(app, slot)) & set(old):
        slot = 1 - slot
        if set(slot_ports(app, slot)) & set(old):
            raise DeployFailed(
                f"{app.name}: both slots of the configured ports {list(app.ports)} take a "
                f"port the live release runs on ({', '.join(map(str, old))}); list ports "
                "for the new release that the live one does not use"
            )
    new = slot_ports(app, slot)
    steps: list[Step] = [Start(slot, new), Gate(new), Switch(new, old)]
    if old:  # a first deploy has nothing to drain, verify against or go back to
        steps += [Drain(old, warm=True), Verify(new, app.verify)]
    if options.hold is not None:
        steps.append(Hold(options.hold))
    if old:
        steps += [Drain(old), Stop(old, "old")]
    steps.append(Commit(slot))
    return Plan(tuple(steps), slot, new, old)


def undo(planned: Plan, failed: Step) -> tuple[Step, ...]:
    """The steps that put things back after ``failed`` failed (or was aborted)."""
    new, old = planned.ports, planned.old_ports
    if isinstance(failed, Start | Gate):
        return (Stop(new, "new", announce=False),)
    if isinstance(failed, Switch):
        return (Rollback(old, new, announce=False), Stop(new, "new", announce=False))
    return (Rollback(old, new), Drain(new), Stop(new, "new"))
