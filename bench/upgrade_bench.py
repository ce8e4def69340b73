"""Upgrades and restarts of nonstop itself under load: how many requests fail, how many
apps restart?

A real ``nonstop run`` with one ``[apps.web]`` (the Python test app) serves
``--clients`` keep-alive clients sending GETs, POSTs and slow GETs, plus ``--ws`` clients
holding WebSocket-like sessions (20 echoed messages each), all through nonstop.  Then:

1. ``--upgrades`` times ``nonstop upgrade``; per upgrade: failed requests and sessions, the
   CLI's wall time (the new daemon ready), and until the old one has exited;
2. ``--kills`` times SIGKILL of the daemon and a fresh ``nonstop run`` — started plainly,
   then with its listening socket held by a systemd-socket-activate launcher
   (``LISTEN_FDS``); per restart: failed requests, refused connections, app restarts
   (a live instance whose pid changed).

A failed request is any non-200 answer, a wrong echo, or a socket error; the clients never
resend.  ``--client checked`` (the default) looks whether a kept-alive connection was
closed before reusing it, as urllib3, Go and browsers do; ``plain`` does not.

    python bench/upgrade_bench.py                   # 20 upgrades, 5 + 5 SIGKILL restarts
    python bench/upgrade_bench.py --upgrades 5 --kills 2
    python bench/upgrade_bench.py --workers 2       # the same with 2 data-plane workers
    python bench/upgrade_bench.py --one-process     # master_process = false: no worker
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.apps import pyapp_command  # noqa: E402
from tests.support.apps.harness import AppDaemon, Load, deployed  # noqa: E402
from tests.support.restarts import (  # noqa: E402
    SocketActivated,
    WebSocketLoad,
    app_pids,
    kill_daemon,
    stop_leftover_apps,
    wait_gone,
)

RESULTS = Path(__file__).resolve().parent / "results"


class Counts:
    """Failures of both loads since the last ``take``."""

    def __init__(self, load: Load, ws: WebSocketLoad) -> None:
        self.load, self.ws = load, ws
        self._at = (0, 0, 0)

    def take(self) -> dict[str, Any]:
        now = (len(self.load.failed), len(self.ws.failed), self.load.ok)
        failed, ws_failed, ok = (b - a for a, b in zip(self._at, now, strict=True))
        seen = self.load.failed[self._at[0] :] + self.ws.failed[self._at[1] :]
        self._at = now
        return {
            "failed": failed,
            "ws_failed": ws_failed,
            "refused": sum("Refused" in f for f in seen),
            "ok": ok,
            "failures": sorted(set(seen))[:5],
        }


def one_upgrade(d: AppDaemon, counts: Counts, load: Load) -> dict[str, Any]:
    old = int(d.status()["pid"])
    start = time.monotonic()
    done = d.cli("upgrade", timeout=120)
    ready = time.monotonic() - start
    gone = wait_gone(old, 60)
    exited = time.monotonic() - start
    load.wait_requests(50)
    return {
        "exit": done.returncode,
        "ready_s": round(ready, 3),
        "old_exited_s": round(exited, 3) if gone else None,
        "error": done.stderr.strip()[-300:] if done.returncode else "",
        **counts.take(),
    }


def one_kill(
    d: AppDaemon, counts: Counts, load: Load, activated: SocketActivated | None
) -> dict[str, Any]:
    before = app_pids(d)
    start = time.monotonic()
    if activated is None:
        kill_daemon(d, signal.SIGKILL)
        d.start()
    else:
        activated.kill(signal.SIGKILL)
        activated.start()
    back = time.monotonic() - start
    load.wait_requests(50)
    after = app_pids(d)
    return {
        "back_s": round(back, 3),
        "app_restarts": sum(1 for port, pid in before.items() if after.get(port) != pid),
        **counts.take(),
    }


def loads(d: AppDaemon, args: argparse.Namespace) -> tuple[Load, WebSocketLoad]:
    limit = 600.0
    load = Load(
        d.port, clients=args.clients, limit=limit, slow_ms=100, check_reuse=args.client == "checked"
    )
    return load, WebSocketLoad(d.port, clients=args.ws, limit=limit)


def daemon_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "verify": "200ms",
        "workers": args.workers,
        "master_process": not args.one_process,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="nonstop-upgrade-bench-") as work:
        d = AppDaemon(Path(work) / "plain", pyapp_command(), **daemon_options(args))
        try:
            d.start()
            deployed(d, "v1")
            apps = app_pids(d)
            load, ws = loads(d, args)
            with load, ws:
                load.wait_requests(100)
                counts = Counts(load, ws)
                counts.take()
                upgrades = [one_upgrade(d, counts, load) for _ in range(args.upgrades)]
                kills = [one_kill(d, counts, load, None) for _ in range(args.kills)]
            results["upgrades"] = upgrades
            results["upgrade_app_restarts"] = sum(
                1 for port, pid in apps.items() if app_pids(d).get(port) != pid
            )
            results["ws_sessions"] = ws.sessions
            results["kills"] = kills
        finally:
            if d.cli("status").returncode == 0:
                d.cli("stop", "--apps", timeout=60)
            d.process.stop()
            stop_leftover_apps(d.dir / "state")

        results["kills_activated"] = []
        d = AppDaemon(Path(work) / "activated", pyapp_command(), **daemon_options(args))
        activated = SocketActivated(d, reuse_port=args.workers > 1)  # ReusePort=yes
        try:
            activated.start()
            deployed(d, "v1")
            load, ws = loads(d, args)
            with load, ws:
                load.wait_requests(100)
                counts = Counts(load, ws)
                counts.take()
                results["kills_activated"] = [
                    one_kill(d, counts, load, activated) for _ in range(args.kills)
                ]
        finally:
            activated.stop()
            stop_leftover_apps(d.dir / "state")
    return results


def totals(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows]
    return f"{sum(values)} (max {max(values)} in one)" if values else "-"


def median(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def markdown(results: dict[str, Any]) -> str:
    up, kills, act = results["upgrades"], results["kills"], results["kills_activated"]
    return "\n".join(
        [
            "| what | times | failed requests | failed WebSocket sessions | refused connections "
            "| app restarts | time |",
            "| --- | ---: | --- | --- | --- | --- | --- |",
            f"| `nonstop upgrade` | {len(up)} | {totals(up, 'failed')} | {totals(up, 'ws_failed')} "
            f"| {totals(up, 'refused')} | {results['upgrade_app_restarts']} "
            f"| ready {median(up, 'ready_s')}, old exited {median(up, 'old_exited_s')} |",
            f"| SIGKILL + `nonstop run` | {len(kills)} | {totals(kills, 'failed')} "
            f"| {totals(kills, 'ws_failed')} | {totals(kills, 'refused')} "
            f"| {totals(kills, 'app_restarts')} | serving again {median(kills, 'back_s')} |",
            f"| SIGKILL + start, socket-activated | {len(act)} | {totals(act, 'failed')} "
            f"| {totals(act, 'ws_failed')} | {totals(act, 'refused')} "
            f"| {totals(act, 'app_restarts')} | serving again {median(act, 'back_s')} |",
            f"\nWebSocket sessions completed: {results['ws_sessions']}; upgrade exits: "
            f"{sorted({u['exit'] for u in up})}",
        ]
    )


def _exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upgrades", type=int, default=20)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--ws", type=int, default=4)
    parser.add_argument("--client", choices=("checked", "plain"), default="checked")
    parser.add_argument("--workers", type=int, default=1, help="nonstop's worker_processes")
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="master_process = false: the proxy in nonstop's own process",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit)  # so the finally blocks stop every daemon and app
    results = run(args)
    print(markdown(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"upgrade_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"settings": vars(args), **results}, indent=2) + "\n")
    print(f"\nresults: {path}")
    failed = sum(u["failed"] + u["ws_failed"] for u in results["upgrades"])
    return 0 if failed == 0 and all(u["exit"] == 0 for u in results["upgrades"]) else 1


if __name__ == "__main__":
    sys.exit(main())
