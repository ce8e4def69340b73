"""Fleet deploys under load through the front, on test hosts on this machine.

Builds the fleet of tests/integration/test_fleet_deploy.py (tests/support/fleet.py): every
host a network namespace with a real OpenSSH sshd and its own ``/srv/web``, running
``nonstop run`` with the test app blue-green (its own ``verify = "300ms"``); the front runs
``nonstop run`` in the root namespace; 10 keep-alive clients send GETs, POSTs and 150 ms
slow GETs through the front the whole time (they never resend a request).  Then, each part
optional:

- ``--deploys N`` fleet deploys of ``--hosts`` hosts (batches ``[1]``, ``--verify``):
  failed requests (target 0), seconds per deploy, and per batch its time (from the batch
  starting to the next one starting) beside the host's own deploy in it (app start, health
  gate and the host's verify, from the ``deploy`` to the ``serving`` event): what the fleet
  adds per batch;
- ``--crashes N`` deploys whose last host's new instance is killed (SIGKILL) during the
  fleet-wide verify: seconds from the rollback decision to every host serving its previous
  release again (the command's end), failed requests;
- ``--link-downs N`` deploys where the second host's link goes down as it deploys: seconds
  from the cut to the command's end (bound: ``connect_timeout`` 3 s + 10 s), and whether
  every reachable host serves one release afterwards;
- ``--scale-hosts N``: ``--scale-rounds`` fleet deploys over N hosts with ``batches = [1,
  "50%"]`` beside as many over ``--hosts`` hosts with the same batches: seconds (medians and
  their ratio), batches, and the deploying command's peak RSS;
- ``--compare-src DIR``: in every part above, the deploying command of another build (its
  checkout's ``src/``, e.g. ``git archive`` of an earlier commit) takes turns with this
  one's, round by round with the order rotated, under the same load in the same minutes.

Needs root (namespaces).  Prints a summary and writes JSON to bench/results/.

    sudo .venv/bin/python bench/fleet_under_load.py      # 20 deploys of 3 hosts, 3 crashes, 3 links
    sudo .venv/bin/python bench/fleet_under_load.py --deploys 0 --crashes 0 --link-downs 0 \
        --scale-hosts 10
    mkdir -p /tmp/before && git archive 929637c src | tar -x -C /tmp/before  # the build before
    sudo .venv/bin/python bench/fleet_under_load.py --deploys 10 --crashes 3 --link-downs 0 \
        --compare-src /tmp/before/src
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _harness import raise_on_sigterm, save_results  # noqa: E402
from tests.support.apps.harness import Load  # noqa: E402
from tests.support.fleet import Fleet, launcher  # noqa: E402
from tests.support.netns import Host, TestHosts, can_create_namespaces  # noqa: E402

CONNECT_TIMEOUT = 3.0  # tests/support/fleet.py's fleet.toml


class Deploy:
    """One ``nonstop fleet deploy --json`` run: its events, exit, time and peak RSS."""

    def __init__(self, fleet: Fleet, release: Path, verify: str, src: str | None = None) -> None:
        self.fleet = fleet
        env = dict(os.environ)
        if src is not None:  # the deploying command of another build (its src/ directory)
            env["PYTHONPATH"] = src
        self.out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in finish)
        self.err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in finish)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "nonstop", "fleet", "deploy", "web"),
                *("--release", str(release), "--verify", verify, "--json"),
                *("-c", str(fleet.fleet_toml)),
            ],
            stdout=self.out,
            stderr=self.err,
            env=env,
        )
        self.events: list[dict[str, Any]] = []
        self.returncode: int | None = None
        self.seconds = 0.0
        self.max_rss_mb = 0.0
        self.stderr = ""

    def events_so_far(self) -> list[dict[str, Any]]:
        self.out.seek(0)
        return [json.loads(line) for line in self.out.read().splitlines() if line.strip()]

    def wait_for(self, event: str, host: str | None = None, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any((e["event"], e.get("host")) == (event, host) for e in self.events_so_far()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no {event} on {host}: {self.events_so_far()}")
            time.sleep(0.02)

    def finish(self, timeout: float = 300) -> Deploy:
        """Wait for the command (wait4: its own peak RSS), then read what it printed."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.process.kill()
            time.sleep(0.02)
        self.seconds = time.monotonic() - self.started
        self.returncode = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.returncode
        self.max_rss_mb = usage.ru_maxrss / 1024
        self.err.seek(0)
        self.stderr = self.err.read()
        self.events = self.events_so_far()
        self.out.close()
        self.err.close()
        return self

    def at(self, event: str, host: str | None = None) -> float:
        return float(
            next(e["t"] for e in self.events if (e["event"], e.get("host")) == (event, host))
        )


def batches(deploy: Deploy) -> list[dict[str, float]]:
    """Per batch: its seconds (to the next batch or verify) and its slowest host's own deploy."""
    marks = [e for e in deploy.events if e["event"] in ("batch", "verify")]
    out = []
    for start, end in itertools.pairwise(marks):
        hosts = [
            e["host"]
            for e in deploy.events
            if e["event"] == "deploy" and start["t"] <= e["t"] <= end["t"]
        ]
        own = max(deploy.at("serving", h) - deploy.at("deploy", h) for h in hosts)
        seconds = end["t"] - start["t"]
        out.append({"seconds": seconds, "host_deploy": own, "added": seconds - own})
    return out


PHASES = (
    ("start", "lock"),  # the deploying command starting (Python, imports) and the lock
    ("lock", "stage"),  # every host checked, and the front
    ("stage", "batch"),  # staging
    ("batch", "verify"),  # every batch
    ("verify", "commit"),  # the fleet-wide verify window
    ("commit", "done"),  # the commit on every host
    ("done", "unlock"),  # the lease released
)


def phases(deploy: Deploy) -> dict[str, float]:
    """Seconds from each step's event to the next one's, and from the last to the exit."""
    first = {}
    for event in deploy.events:
        first.setdefault(event["event"], float(event["t"]))
    first["start"] = 0.0
    out = {f"{a}..{b}": round(first[b] - first[a], 3) for a, b in PHASES}
    out["exit"] = round(deploy.seconds - first["unlock"], 3)
    return out


def start_fleet(
    hosts: TestHosts, work: Path, batches_line: str = "", hold_timeout: str = "10m"
) -> Fleet:
    fleet = Fleet(hosts, work / "fleet", hold_timeout=hold_timeout).__enter__()
    try:
        if batches_line:
            with open(fleet.fleet_toml, "a") as handle:
                handle.write(batches_line + "\n")
        fleet.deploy_everywhere(launcher(work, "v1"))
    except BaseException:
        fleet.close()
        raise
    return fleet


def under_load(
    fleet: Fleet, limit: float, body: Callable[[Load], dict[str, Any]]
) -> dict[str, Any]:
    with Load(fleet.front_port, clients=10, limit=limit) as load:
        load.wait_requests(100, timeout=30)
        result = body(load)
        load.wait_requests(100, timeout=30)
    result.update(answered=load.ok, failed=len(load.failed), failures=load.failed[:10])
    return result


BUILDS: dict[str, str | None] = {"this": None}
"""The builds whose deploying command is measured, by name: this checkout, and with
``--compare-src`` another one's ``src/``, taking turns in every part (the hosts' daemons
and ``nonstop`` on them are this checkout's for both)."""


def in_turns(count: int) -> list[tuple[int, str]]:
    """``(round, build)`` for ``count`` rounds, the builds' order rotated every round."""
    names = list(BUILDS)
    out = []
    for n in range(count):
        turn = names[n % len(names) :] + names[: n % len(names)]
        out.extend((n, name) for name in turn)
    return out


def measured(
    fleet: Fleet, work: Path, label: str, build: str, verify: str, load: Load
) -> dict[str, Any]:
    """One fleet deploy of a new release by ``build`` that must succeed: its seconds,
    batches, failed requests, peak RSS, and the load average at its end."""
    failed_before = len(load.failed)
    deploy = Deploy(fleet, launcher(work, label), verify, BUILDS[build]).finish()
    if deploy.returncode != 0:
        raise RuntimeError(f"{label} ({build}) failed: {deploy.stderr}")
    found = {
        "seconds": deploy.seconds,
        "batches": batches(deploy),
        "phases": phases(deploy),
        "failed": len(load.failed) - failed_before,
        "max_rss_mb": deploy.max_rss_mb,
        "load_average": os.getloadavg()[0],
    }
    parts = ", ".join(f"{b['seconds']:.2f}s (+{b['added']:.2f}s)" for b in found["batches"])
    print(
        f"{label} ({build}): {deploy.seconds:.2f}s, batches {parts}, {found['failed']} failed",
        flush=True,
    )
    return found


def good_deploys(fleet: Fleet, work: Path, count: int, verify: str) -> dict[str, Any]:
    def body(load: Load) -> dict[str, Any]:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in BUILDS}
        for n, build in in_turns(count):
            runs[build].append(measured(fleet, work, f"good-{build}-{n}", build, verify, load))
        return {name: summary(found) for name, found in runs.items()}

    return under_load(fleet, 60.0 * count * len(BUILDS) + 60, body)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    added = [b["added"] for r in runs for b in r["batches"]]
    return {
        "deploys": runs,
        "seconds_median": statistics.median(r["seconds"] for r in runs),
        "seconds_range": [min(r["seconds"] for r in runs), max(r["seconds"] for r in runs)],
        "added_per_batch_median": statistics.median(added),
        "added_per_batch_range": [min(added), max(added)],
        "phases_median": {
            name: statistics.median(r["phases"][name] for r in runs) for name in runs[0]["phases"]
        },
        "failed": sum(r["failed"] for r in runs),
    }


def new_instance_pid(fleet: Fleet, host: Host, old: str) -> int:
    instances = fleet.status(host)["apps"]["web"]["instances"]
    return int(next(i["pid"] for i in instances if i["release"] != old))


def crashes(fleet: Fleet, work: Path, count: int) -> dict[str, Any]:
    def body(load: Load) -> dict[str, Any]:
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in BUILDS}
        for n, build in in_turns(count):
            old = fleet.live(fleet.hosts[0])
            release = launcher(work, f"crash-{build}-{n}")
            deploy = Deploy(fleet, release, "6s", BUILDS[build])
            deploy.wait_for("verify")
            os.kill(new_instance_pid(fleet, fleet.hosts[-1], old), signal.SIGKILL)
            deploy.finish()
            back = all(fleet.live(h) == old for h in fleet.hosts)
            decided = deploy.at("rollback")
            rounds[build].append(
                {
                    "exit": deploy.returncode,
                    "decision_to_every_host_back": deploy.at("aborted") - decided,
                    "decision_to_end": deploy.at("unlock") - decided,
                    "every_host_on_previous": back,
                    "error": deploy.stderr.strip()[-300:],
                }
            )
            print(f"crash {n + 1} ({build}): {rounds[build][-1]}", flush=True)
        return {
            name: {
                "rounds": found,
                "decision_to_every_host_back_median": statistics.median(
                    r["decision_to_every_host_back"] for r in found
                ),
            }
            for name, found in rounds.items()
        }

    return under_load(fleet, 90.0 * count * len(BUILDS) + 60, body)


def link_downs(fleet: Fleet, work: Path, count: int) -> dict[str, Any]:
    def body(load: Load) -> dict[str, Any]:
        rounds = []
        lost = fleet.hosts[1]
        for n in range(count):
            deploy = Deploy(fleet, launcher(work, f"link{n}"), "1s")
            deploy.wait_for("deploy", lost.destination)
            lost.link_down()
            cut = time.monotonic()
            try:
                deploy.finish()
                ended = time.monotonic() - cut
                reachable = {fleet.live(h) for h in fleet.hosts if h is not lost}
            finally:
                lost.link_up()
            # the lost host rolls back when its hold ends; undrain it for the next round
            deadline = time.monotonic() + 120
            while fleet.status(lost)["apps"]["web"]["deploy"] and time.monotonic() < deadline:
                time.sleep(1)
            assert fleet.front is not None
            fleet.front.cli("undrain", "app", f"{lost.address}:8080")
            rounds.append(
                {
                    "exit": deploy.returncode,
                    "cut_to_end": ended,
                    "bound": CONNECT_TIMEOUT + 10,
                    "reachable_hosts_on_one_release": len(reachable) == 1,
                    "error": deploy.stderr.strip()[-300:],
                }
            )
            print(f"link-down {n + 1}: {rounds[-1]}", flush=True)
        return {"rounds": rounds}

    return under_load(fleet, 120.0 * count + 60, body)


def scaled(hosts: TestHosts, work: Path, verify: str, rounds: int) -> dict[str, Any]:
    """``rounds`` fleet deploys per build over ``hosts`` with ``batches = [1, "50%"]``."""
    fleet = start_fleet(hosts, work, 'batches = [1, "50%"]')
    try:

        def body(load: Load) -> dict[str, Any]:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in BUILDS}
            for n, build in in_turns(rounds):
                label = f"scaled-{build}-{n}"
                runs[build].append(measured(fleet, work, label, build, verify, load))
            return {
                name: {
                    "hosts": len(hosts),
                    **summary(found),
                    "max_rss_mb": max(r["max_rss_mb"] for r in found),
                }
                for name, found in runs.items()
            }

        return under_load(fleet, 600.0 * rounds * len(BUILDS), body)
    finally:
        fleet.close()


def brief(value: Any) -> Any:
    """``value`` without the lists of single deploys and rounds: the summary to print."""
    if isinstance(value, dict):
        return {k: brief(v) for k, v in value.items() if not _records(v)}
    return value


def _records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--deploys", type=int, default=20)
    parser.add_argument("--verify", default="1s", help="the fleet-wide verify window")
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--link-downs", type=int, default=3)
    parser.add_argument("--scale-hosts", type=int, default=0)
    parser.add_argument("--scale-rounds", type=int, default=3, help="deploys per fleet size")
    parser.add_argument(
        "--compare-src",
        metavar="DIR",
        help="another checkout's src/: its deploying command takes turns with this one's",
    )
    parser.add_argument("--hold-timeout", default="20s", help="the hosts' hold backstop")
    args = parser.parse_args()
    able, why = can_create_namespaces()
    if not able:
        print(f"fleet_under_load: {why}", file=sys.stderr)
        return 2
    raise_on_sigterm()
    if args.compare_src:
        BUILDS["other"] = str(Path(args.compare_src).resolve())
    result: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.deploys or args.crashes or args.link_downs:
            with TestHosts(args.hosts) as hosts:
                fleet = start_fleet(hosts, work, hold_timeout=args.hold_timeout)
                try:
                    if args.deploys:
                        result["deploys"] = good_deploys(fleet, work, args.deploys, args.verify)
                    if args.crashes:
                        result["crashes"] = crashes(fleet, work, args.crashes)
                    if args.link_downs:
                        result["link_downs"] = link_downs(fleet, work, args.link_downs)
                finally:
                    fleet.close()
        if args.scale_hosts:
            scale = {}
            for count in (args.hosts, args.scale_hosts):
                with TestHosts(count) as hosts:
                    where = work / f"scale{count}"
                    scale[str(count)] = scaled(hosts, where, args.verify, args.scale_rounds)
            small, big = scale[str(args.hosts)], scale[str(args.scale_hosts)]
            scale["ratio"] = {
                name: big[name]["seconds_median"] / small[name]["seconds_median"] for name in BUILDS
            }
            result["scale"] = scale
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(brief(result), indent=1, default=str)[:6000])
    path = save_results(Path(__file__).parent / "results", "fleet_under_load", args, result)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
