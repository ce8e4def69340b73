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


_fleet_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    default="fleet.toml",
    show_default=True,
    help="The file with the [fleet] table.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")


def _progress(as_json: bool) -> Callable[[dict[str, Any]], None]:
    """Progress per host and step as it happens: a line at a terminal, JSON with --json."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    styles = {"rollback": "yellow", "abort": "yellow", "done": "bold green", "skip": "yellow"}

    def show(event: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
            return
        host = f"{event['host']}: " if "host" in event else ""
        line = f"[{float(event.get('t', 0.0)):7.2f}s] {host}{event.get('message', '')}"
        console.print(line, style=styles.get(str(event.get("event")), ""), markup=False)

    return show


def _fleet_spec(config_path: str) -> Any:
    from nonstop.errors import ConfigError
    from nonstop.fleet.config import load_fleet

    try:
        return load_fleet(config_path)
    except ConfigError as exc:
        click.echo(f"nonstop: [emerg] {exc}", err=True)
        sys.exit(2)


def _run_fleet(as_json: bool, work: Callable[[], Any]) -> None:
    """Run a fleet command's coroutine; its failure is one line (or JSON), exit 1."""
    import asyncio

    try:
        asyncio.run(work())
    except NonstopError as exc:
        if as_json:
            sys.stdout.write(json.dumps({"event": "failed", "error": str(exc)}) + "\n")
        click.echo(f"nonstop: {exc}", err=True)
        sys.exit(exc.exit_code)


@fleet.command("deploy")
@click.argument("app")
@click.option("--release", "-r", required=True, metavar="FILE_OR_DIR", help="The artifact.")
@_fleet_config_option
@click.option("--lock-wait", default="0s", show_default=True, help="Wait this long for the lock.")
@click.option("--verify", default="5s", show_default=True, help="The fleet-wide verify window.")
@click.option("--skip-unreachable", is_flag=True, help="Leave unreachable hosts out (named).")
@_json_option
def fleet_deploy(
    app: str,
    release: str,
    config_path: str,
    lock_wait: str,
    verify: str,
    skip_unreachable: bool,
    as_json: bool,
) -> None:
    """Deploy RELEASE of APP on every host through the front; any failure before the
    commit rolls every switched host back (exit 1 naming the host and the reason)."""
    import tempfile
    from pathlib import Path

    from nonstop.fleet.deploy import run_fleet

    spec = _fleet_spec(config_path)
    wait, window = _ttl(lock_wait), _ttl(verify)
    source = Path(release)
    if not source.exists():
        raise click.BadParameter(f"{release} does not exist", param_hint="--release")

    async def work() -> None:
        with tempfile.TemporaryDirectory(prefix="nonstop-fleet-") as scratch:
            await run_fleet(
                spec,
                app,
                _progress(as_json),
                lambda run: run.deploy(source, Path(scratch), skip_unreachable, window),
                wait,
            )

    _run_fleet(as_json, work)


@fleet.command("rollback")
@click.argument("app")
@_fleet_config_option
@click.option("--lock-wait", default="0s", show_default=True, help="Wait this long for the lock.")
@_json_option
def fleet_rollback(app: str, config_path: str, lock_wait: str, as_json: bool) -> None:
    """Every host back to APP's previous release, batch by batch through the front."""
    from nonstop.fleet.deploy import run_fleet

    spec = _fleet_spec(config_path)

    async def work() -> None:
        await run_fleet(
            spec, app, _progress(as_json), lambda run: run.rollback(spec.hosts), _ttl(lock_wait)
        )

    _run_fleet(as_json, work)


@fleet.command("status")
@click.argument("app", required=False)
@_fleet_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def fleet_status(app: str | None, config_path: str, as_json: bool) -> None:
    """Per host: reachable, live and previous release, slot, health, in the front or
    drained, in flight, last deploy; and the fleet lock."""
    from nonstop.fleet.status import fleet_status as gather
    from nonstop.fleet.status import print_fleet_status

    spec = _fleet_spec(config_path)
    result: dict[str, Any] = {}

    async def work() -> None:
        result.update(await gather(spec, app))

    _run_fleet(as_json, work)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_fleet_status(result)
