"""How the CLI shows the daemon's answers: rich text for people, JSON lines for CI."""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nonstop.errors import NonstopError

__all__ = ["Printer", "print_status", "status_view", "watch_status"]


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
        self.open_line = False  # a "waiting" line is on screen, to be replaced

    def _replace(self, text: str) -> None:
        """At a terminal: ``text`` over the line shown last (cut to the width); no newline."""
        self.out.file.write("\r" + text[: max(1, self.out.width - 1)] + "\x1b[K")
        self.out.file.flush()
        self.open_line = True

    def _close_line(self) -> None:
        if self.open_line:
            self.out.file.write("\r\x1b[K")
            self.open_line = False

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
        if event.get("event") == "waiting" and self.out.is_terminal:
            self._replace(text)
            return
        self._close_line()
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
        self._close_line()
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
            self._close_line()
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


def status_view(answer: dict[str, Any]) -> Group:
    """What ``nonstop status`` shows: the daemon, each app, the upstreams."""
    daemon = [f"nonstop pid {answer['pid']}", f"up {answer['uptime']:.0f}s"]
    if "connections" in answer:  # the nginx engine cannot say
        daemon.append(f"{answer['connections']} connections")
    daemon.append(f"listening on {', '.join(answer['listen'])}")
    parts: list[RenderableType] = [Text(", ".join(daemon))]
    workers = answer.get("workers")
    if workers:
        each = ", ".join(f"{w['pid']} ({w.get('connections') or 0})" for w in workers)
        restarts = answer.get("worker_restarts") or 0
        parts.append(
            Text(
                f"{len(workers)} workers (pid and connections): {each}; "
                f"{restarts} replaced since start"
            )
        )
    for name, app in (answer.get("apps") or {}).items():
        parts += _app_view(name, app)
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
    parts.append(table)
    return Group(*parts)


def print_status(answer: dict[str, Any]) -> None:
    Console(highlight=False).print(status_view(answer))


def watch_status(fetch: Callable[[], dict[str, Any]], interval: float) -> None:
    """``status --watch``: the same view, fetched again every ``interval`` seconds, drawn
    over itself until Ctrl-C.  While ``fetch`` fails (no daemon answers, the app is gone)
    the view says why and keeps asking, so a restarted daemon shows up by itself."""
    console = Console(highlight=False)

    def view() -> RenderableType:
        stamp = datetime.datetime.now().astimezone().strftime("%H:%M:%S")
        footer = Text(f"{stamp}, every {interval:g}s; Ctrl-C to stop", style="dim", justify="right")
        try:
            return Group(status_view(fetch()), footer)
        except NonstopError as exc:
            return Group(Text(f"no answer: {exc}; asking again", style="red"), footer)

    try:
        with Live(view(), console=console, auto_refresh=False, screen=True) as live:
            while True:
                time.sleep(interval)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return


def _app_view(name: str, app: dict[str, Any]) -> list[RenderableType]:
    parts: list[RenderableType] = []
    live = app.get("live")
    if live is None:
        parts.append(Text(f"app {name}: nothing deployed yet"))
    else:
        when = (
            f"since {_when(live['since'])}"
            if live.get("since") is not None
            else "not recorded yet: the state store refused the write"
        )
        parts.append(
            Text(
                f"app {name}: {live['release']} live on slot {live['slot']} "
                f"(ports {', '.join(map(str, live['ports']))}) {when}; "
                f"previous {live.get('previous_release') or '-'}"
            )
        )
    running = app.get("deploy")
    if running:
        parts.append(
            Text(
                f"  deploy #{running['id']} of {running['release']} in progress: "
                f"{running['phase']} ({running['elapsed']:.1f}s, by {running['holder']})"
            )
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
    parts.append(table)
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
    parts.append(history)
    return parts
