"""``nonstop fleet ...``: commands about a fleet of hosts.

``fleet lease`` is what a deploying machine runs on the lock host over SSH; people
rarely type it, but it is an ordinary command with a JSON answer, so a stuck lease can be
looked at (``show``) and its holder's token is never needed to read it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click

from nonstop.config.units import parse_duration
from nonstop.errors import NonstopError
from nonstop.fleet.lease import Decision, Lease, LeaseFile, acquire, release, renew

__all__ = ["fleet"]


@click.group()
def fleet() -> None:
    """Deploy across several hosts through the front load balancer."""


@fleet.group()
def lease() -> None:
    """The fleet lock's lease file on this host (run over SSH by a fleet deploy)."""


_file_option = click.option(
    "--file", "path", required=True, metavar="PATH", help="The lease file on this host."
)
_token_option = click.option(
    "--token", required=True, help="The token the lease was acquired with."
)


def _show(lease: Lease | None) -> dict[str, Any] | None:
    if lease is None:
        return None
    shown = asdict(lease)
    del shown["token"]  # the holder's secret: only who and since when are shown
    shown["expires"] = lease.expires
    return shown


def _answer(change: Callable[[Lease | None], Decision], path: str) -> None:
    try:
        decision = LeaseFile(path).change(change)
    except NonstopError as exc:
        click.echo(json.dumps({"granted": False, "error": str(exc)}))
        sys.exit(exc.exit_code)
    click.echo(
        json.dumps(
            {
                "granted": decision.granted,
                "lease": _show(decision.lease),
                "replaced": _show(decision.replaced),
                "reason": decision.reason,
                "now": time.time(),
            }
        )
    )
    sys.exit(0 if decision.granted else 1)


def _ttl(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@lease.command("acquire")
@_file_option
@_token_option
@click.option("--holder", required=True, help="Who asks, for people: user@host (pid N).")
@click.option("--ttl", default="30s", show_default=True, help="How long a silent lease lasts.")
def lease_acquire(path: str, token: str, holder: str, ttl: str) -> None:
    """Take the lease if it is free or expired; exit 1 naming its holder if not."""
    seconds = _ttl(ttl)
    _answer(lambda current: acquire(current, holder, token, time.time(), seconds), path)


@lease.command("renew")
@_file_option
@_token_option
def lease_renew(path: str, token: str) -> None:
    """The heartbeat; exit 1 once another run holds the lease."""
    _answer(lambda current: renew(current, token, time.time()), path)


@lease.command("release")
@_file_option
@_token_option
def lease_release(path: str, token: str) -> None:
    """Give the lease up."""
    _answer(lambda current: release(current, token), path)


@lease.command("show")
@_file_option
def lease_show(path: str) -> None:
    """Who holds the lease, since when, and when it expires (exit 0 either way)."""
    try:
        current = LeaseFile(path).read()
    except NonstopError as exc:
        click.echo(json.dumps({"error": str(exc)}))
        sys.exit(exc.exit_code)
    now = time.time()
    held = current is not None and not current.expired(now)
    click.echo(json.dumps({"held": held, "lease": _show(current), "now": now}))
