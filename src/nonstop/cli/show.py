"""How the CLI shows the daemon's answers: rich text for people, JSON lines for CI."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["Printer", "print_status"]


def _when(wall: float | None) -> str:
    if wall is None:
        return "-"
    return datetime.datetime.fromtimestamp(wall).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


class Printer:
    """Progress of a deploy or rollback as it happens, then its outcome."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.shown_tail = False
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def _json(self, data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    def event(self, event: dict[str, Any]) -> None:
        if self.as_json:
            self._json(event)
            return
        style = {"refused": "red", "rollback": "yellow", "done": "bold"}.get(
            str(event.get("event")), ""
        )
        text = f"[{float(event.get('t', 0.0)):7.2f}s] {event.get('message', '')}"
        self.out.print(text, style=style, markup=False)
        tail = event.get("log_tail")
        if tail:
            self.shown_tail = True
            self.out.print("--- last lines of the instance's log ---", markup=False)
            self.out.print(str(tail), markup=False, style="dim")

    def final(self, answer: dict[str, Any]) -> None:
        if self.as_json:
            self._json(answer)
            return
        if answer.get("ok"):
            result = answer.get("result") or {}
            self.out.print(_outcome(result), style="green", markup=False)
        else:
            error = str(answer.get("error"))
            if self.shown_tail:
                error = error.split("\n--- last lines", 1)[0]
            self.err.print(f"nonstop: {error}", style="red", markup=False)

    def unreachable(self, message: str) -> None:
        if self.as_json:
            self._json({"ok": False, "error": message})
        else:
            self.err.print(f"nonstop: {message}", markup=False)


def _outcome(result: dict[str, Any]) -> str:
    what = f"{result.get('kind')} #{result.get('id')}"
    if result.get("outcome") == "held":
        return (
            f"{result.get('app')} {result.get('release')} serves all traffic; {what} holds "
            f"until `nonstop commit` or `nonstop abort` (at most until "
            f"{_when(result.get('hold_until'))})"
        )
    if result.get("outcome") == "rolled_back":
        return f"{result.get('app')}: {what} rolled back: {result.get('reason')}"
    return (
        f"{result.get('app')} {result.get('release')} is live "
        f"({what}, {_seconds(result.get('duration'))})"
    )


def print_status(answer: dict[str, Any]) -> None:
    console = Console(highlight=False)
    console.print(
        f"nonstop pid {answer['pid']}, up {answer['uptime']:.0f}s, "
        f"{answer['connections']} connections, listening on {', '.join(answer['listen'])}",
        markup=False,
    )
    workers = answer.get("workers")
    if workers:
        each = ", ".join(f"{w['pid']} ({w.get('connections') or 0})" for w in workers)
        restarts = answer.get("worker_restarts") or 0
        console.print(
            f"{len(workers)} workers (pid and connections): {each}; "
            f"{restarts} replaced since start",
            markup=False,
        )
    for name, app in (answer.get("apps") or {}).items():
        _print_app(console, name, app)
    table = Table("upstream", "server", "weight", "state", "in flight", "fails", title="upstreams")
    for name, peers in answer["upstreams"].items():
        for peer in peers:
            table.add_row(
                name,
                str(peer.get("address")),
                str(peer.get("weight")),
                str(peer.get("state")),
                str(peer.get("conns")),
                str(peer.get("fails")),
            )
    console.print(table)


def _print_app(console: Console, name: str, app: dict[str, Any]) -> None:
    live = app.get("live")
    if live is None:
        console.print(f"app {name}: nothing deployed yet", markup=False)
    else:
        console.print(
            f"app {name}: {live['release']} live on slot {live['slot']} "
            f"(ports {', '.join(map(str, live['ports']))}) since {_when(live['since'])}; "
            f"previous {live.get('previous_release') or '-'}",
            markup=False,
        )
    running = app.get("deploy")
    if running:
        console.print(
            f"  deploy #{running['id']} of {running['release']} in progress: "
            f"{running['phase']} ({running['elapsed']:.1f}s, by {running['holder']})",
            markup=False,
        )
    table = Table("port", "slot", "release", "pid", "state", "live", "health", "in flight", "up")
    for i in app.get("instances", []):
        table.add_row(
            str(i["port"]),
            str(i["slot"]),
            str(i["release"]),
            str(i["pid"]),
            str(i["state"]),
            "yes" if i["live"] else "",
            str(i["health"]),
            str(i["in_flight"]),
            _seconds(i["uptime"]),
        )
    console.print(table)
    history = Table("#", "kind", "release", "from", "outcome", "started", "took", "reason")
    for d in app.get("history", []):
        history.add_row(
            str(d["id"]),
            str(d["kind"]),
            str(d["release"]),
            str(d.get("from_release") or "-"),
            str(d["outcome"]),
            _when(d["started_at"]),
            _seconds(d.get("duration")),
            str(d.get("reason") or "")[:80],
        )
    console.print(history)
