"""``nonstop fleet status``: every host's apps, its place in the front, and the fleet lock.

``summarise`` is the pure part (the answers of every host's and the front's
``nonstop status --json`` into one picture); ``fleet_status`` asks them over SSH, all at
once.  A host that cannot be reached is shown as such, never an error of the command.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nonstop.fleet.config import FleetSpec
from nonstop.fleet.daemons import Daemons, last_json
from nonstop.fleet.errors import HostError
from nonstop.fleet.ssh import Destination, Sessions

__all__ = ["fleet_status", "print_fleet_status", "summarise"]


def _app_row(app: dict[str, Any]) -> dict[str, Any]:
    live = app.get("live") or {}
    instances = [i for i in app.get("instances") or [] if i.get("live")]
    history = app.get("history") or []
    return {
        "live": live.get("release"),
        "previous": live.get("previous_release"),
        "slot": live.get("slot"),
        "health": sorted({str(i.get("health")) for i in instances}) or ["-"],
        "in_flight": sum(int(i.get("in_flight") or 0) for i in instances),
        "deploy": (app.get("deploy") or {}).get("phase"),
        "last_deploy": history[0] if history else None,
    }


def summarise(
    spec: FleetSpec,
    answers: dict[Destination, dict[str, Any] | str],
    front: dict[str, Any] | str | None,
    lock: dict[str, Any] | str | None,
) -> dict[str, Any]:
    """One picture of the fleet: ``answers`` maps each host to its status (or why it could
    not be had), ``front`` is the front's status, ``lock`` the lease's ``show``."""
    servers: dict[str, dict[str, Any]] = {}
    if isinstance(front, dict) and spec.front_upstream:
        for server in (front.get("upstreams") or {}).get(spec.front_upstream) or []:
            servers[str(server.get("address"))] = server
    addresses = list(servers)
    hosts = []
    for host in spec.hosts:
        answer = answers.get(host, "not asked")
        row: dict[str, Any] = {"host": str(host), "reachable": isinstance(answer, dict)}
        if isinstance(answer, dict):
            apps = answer.get("apps") or {}
            row["apps"] = {name: _app_row(app) for name, app in apps.items()}
        else:
            row["error"] = answer
        if spec.front is not None:
            try:
                server = servers[spec.upstream_address(host, addresses)]
                row["front"] = {"state": server.get("state"), "in_flight": server.get("conns")}
            except ValueError as exc:
                row["front"] = {"state": "not in the front", "error": str(exc)}
        hosts.append(row)
    return {
        "hosts": hosts,
        "front": None if spec.front is None else str(spec.front),
        "front_error": front if isinstance(front, str) else None,
        "lock": lock,
    }


async def fleet_status(spec: FleetSpec, app: str | None) -> dict[str, Any]:
    """Ask every host's daemon, the front's and the lock host, all at once."""
    async with Sessions(spec.ssh) as sessions:
        daemons = Daemons(sessions, spec.remote_nonstop)

        async def ask(host: Destination, config: str, **only: Any) -> dict[str, Any] | str:
            try:
                answer = await daemons.call(host, config, "status", **only)
            except HostError as exc:
                return exc.reason
            return answer if answer.get("ok") else str(answer.get("error"))

        async def lock() -> dict[str, Any] | str:
            argv = [spec.remote_nonstop, "fleet", "lease", "show", "--file", spec.lease_path]
            try:
                done = await (await sessions.get(spec.lock_host)).run(argv, check=False)
            except HostError as exc:
                return exc.reason
            answer = last_json(done.stdout)
            if answer is None:
                return f"exit {done.exit_status}: {done.stderr.decode(errors='replace')[-200:]}"
            return answer

        only = {} if app is None else {"app": app}
        asks = [ask(h, spec.remote_config, **only) for h in spec.hosts]
        if spec.front is not None:
            asks.append(ask(spec.front, spec.front_config or spec.remote_config))
        results, held = await asyncio.gather(asyncio.gather(*asks), lock())
    answers = dict(zip(spec.hosts, results, strict=False))
    front = results[len(spec.hosts)] if spec.front is not None else None
    return summarise(spec, answers, front, held)


def print_fleet_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(
        "host", "app", "live", "previous", "slot", "health", "front", "in flight", "last deploy"
    )
    for row in status["hosts"]:
        front = row.get("front")
        place = "-" if front is None else str(front.get("state"))
        if not row["reachable"]:
            table.add_row(row["host"], "-", f"unreachable: {row.get('error')}", *["-"] * 6)
            continue
        for name, app in row["apps"].items():
            last = app.get("last_deploy") or {}
            table.add_row(
                row["host"],
                name,
                str(app["live"]),
                str(app["previous"] or "-"),
                str(app["slot"]),
                ", ".join(app["health"]),
                place,
                str(app["in_flight"] if front is None else front.get("in_flight")),
                f"#{last.get('id')} {last.get('outcome')}" if last else "-",
            )
    console.print(table)
    lock = status.get("lock")
    if isinstance(lock, dict) and lock.get("held"):
        lease = lock["lease"]
        console.print(f"fleet lock: held by {lease['holder']}", markup=False)
    elif isinstance(lock, dict):
        console.print("fleet lock: free", markup=False)
    else:
        console.print(f"fleet lock: unknown ({lock})", markup=False)
