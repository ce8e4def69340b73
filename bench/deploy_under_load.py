"""Deploys under load: how many requests does a blue-green deploy fail, and how fast is it?

A real ``nonstop run`` with one ``[apps.web]`` (the Java test app, built here with javac and
jar, that exits the moment SIGTERM lands -- or the Python one with ``--app python``) is
deployed ``--deploys`` times in a row with ``nonstop deploy`` while ``--clients`` keep-alive
clients send GETs, POSTs and slow GETs through it.  Reported per deploy:

- failed requests (any non-200 answer, wrong echo, or socket error) during that deploy;
- time from the deploy's start to the first response from the new release (client side);
- total deploy time (the CLI's wall time: start, health gate, switch, drain, verify, stop).

    python bench/deploy_under_load.py                    # 100 deploys, Java app, 20 clients
    python bench/deploy_under_load.py --deploys 10 --app python
    python bench/deploy_under_load.py --engine nginx --client checked
"""

from __future__ import annotations

import argparse
import json
import shlex
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

from tests.support.apps import build_java_app, javac_missing, pyapp_command  # noqa: E402
from tests.support.apps.harness import AppDaemon, Load  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def command(app: str, work: Path) -> str:
    if app == "python":
        return pyapp_command()
    missing = javac_missing()
    if missing:
        raise SystemExit(f"cannot build the Java app: {missing}")
    jar = build_java_app(work / "java")
    return f"java -XX:TieredStopAtLevel=1 -jar {shlex.quote(str(jar))} {{port}} {{release}}"


def one_deploy(d: AppDaemon, load: Load, release: str) -> dict[str, Any]:
    failed_before = len(load.failed)
    start = time.monotonic()
    done = d.cli("deploy", "web", "--release", release, timeout=120)
    total = time.monotonic() - start
    deadline = time.monotonic() + 5
    while release not in load.first_seen and time.monotonic() < deadline:
        time.sleep(0.005)
    first = load.first_seen.get(release)
    return {
        "release": release,
        "exit": done.returncode,
        "failed": len(load.failed) - failed_before,
        "failures": sorted(set(load.failed[failed_before:]))[:5],
        "first_response_s": None if first is None else round(first - start, 4),
        "total_s": round(total, 4),
        "error": done.stderr.strip()[-500:] if done.returncode else "",
    }


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nonstop-deploy-bench-") as tmp:
        work = Path(tmp)
        d = AppDaemon(
            work / "daemon", command(args.app, work), verify=args.verify, engine=args.engine
        ).start()
        try:
            first = d.cli("deploy", "web", "--release", "r0", timeout=120)
            if first.returncode != 0:
                raise SystemExit(f"the first deploy failed:\n{first.stderr}")
            deploys = []
            limit = args.deploys * 30.0 + 30
            with Load(
                d.port,
                clients=args.clients,
                limit=limit,
                slow_ms=args.slow_ms,
                check_reuse=args.client == "checked",
            ) as load:
                load.wait_requests(100)
                for n in range(1, args.deploys + 1):
                    result = one_deploy(d, load, f"r{n}")
                    deploys.append(result)
                    print(
                        f"deploy {n:3d}: exit {result['exit']}, failed {result['failed']}, "
                        f"first response {result['first_response_s']}s, "
                        f"total {result['total_s']}s",
                        flush=True,
                    )
                load.wait_requests(100)
            answered, reconnects = load.ok, load.reconnects
        finally:
            d.stop()
    return {
        "app": args.app,
        "engine": args.engine,
        "client": args.client,
        "clients": args.clients,
        "reconnects": reconnects,
        "verify": args.verify,
        "deploys": len(deploys),
        "requests_answered": answered,
        "failed_requests": sum(r["failed"] for r in deploys),
        "failed_deploys": sum(1 for r in deploys if r["exit"] != 0),
        "first_response_s": summary(
            [r["first_response_s"] for r in deploys if r["first_response_s"] is not None]
        ),
        "total_s": summary([r["total_s"] for r in deploys]),
        "runs": deploys,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploys", type=int, default=100, help="deploys in a row (100)")
    parser.add_argument("--clients", type=int, default=20, help="keep-alive clients (20)")
    parser.add_argument("--app", choices=("java", "python"), default="java")
    parser.add_argument("--verify", default="200ms", help="the app's verify duration (200ms)")
    parser.add_argument("--slow-ms", type=int, default=200, help="the slow GET's delay (200)")
    parser.add_argument(
        "--engine", choices=("embedded", "nginx"), default="embedded", help="which engine serves"
    )
    parser.add_argument(
        "--client",
        choices=("plain", "checked"),
        default="plain",
        help="plain: reuse a kept-alive connection blindly (http.client); checked: first see "
        "whether the server closed it, as urllib3, Go and browsers do",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"deploy_under_load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{result['deploys']} deploys of the {args.app} app through the {args.engine} engine, "
        f"{args.clients} clients: "
        f"{result['failed_requests']} failed requests of {result['requests_answered']} answered; "
        f"{result['failed_deploys']} failed deploys\n"
        f"first response from the new release: {result['first_response_s']}\n"
        f"total deploy time: {result['total_s']}\nraw: {out}"
    )
    return 0 if result["failed_requests"] == 0 and result["failed_deploys"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
