"""Staging a release to N hosts vs one ``scp`` of it to one host.

Makes its own test hosts (network namespaces on a bridge, a real OpenSSH sshd in each; see
tests/support/netns.py), writes a random artifact of ``--size-mb`` MB, and for each of
``--rounds`` interleaved rounds measures:

- ``scp``: OpenSSH's scp of the file to the first host, defaults (a new connection, as a CI
  job's ``scp`` is), and ``scp -c aes128-gcm@openssh.com`` (the cipher staging prefers);
- ``scp_parallel``: N scp processes at once, one per host: the most OpenSSH does for N hosts
  (on one machine every host's sshd shares its cores, so N hosts cost about N times the
  receiving side's CPU whatever the client);
- ``stage``: everything ``nonstop.fleet.staging`` does for N hosts from a cold start:
  hash the artifact locally while connecting to every host (as ``fleet deploy`` does),
  upload in parallel, verify the sha256 on every host, rename into place (into a fresh
  releases_dir each round);
- ``stage_only``: the same without the local hash and the connects;
- ``skip``: staging again when every host has it (verify and refresh only);
- ``stage_other`` (with ``--compare-src DIR``): ``stage`` of another build (its checkout's
  ``src/``, over this build's SSH layer), right after this build's, in every round.

Needs root (it creates namespaces).  Prints medians and writes JSON to bench/results/.

    sudo .venv/bin/python bench/fleet_staging.py                  # 100 MB, 3 hosts, 5 rounds
    sudo .venv/bin/python bench/fleet_staging.py --size-mb 20 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _harness import raise_on_sigterm, save_results  # noqa: E402
from tests.support.netns import TestHosts, can_create_namespaces  # noqa: E402

from nonstop.fleet.ssh import Destination, Sessions, SshSettings  # noqa: E402
from nonstop.fleet.staging import Artifact, StageResult, pack, stage  # noqa: E402

Stage = Callable[
    [Sessions, list[Destination], Artifact, str], Awaitable[dict[Destination, StageResult]]
]


def scp(hosts: TestHosts, source: Path, remote: str, cipher: str | None, count: int = 1) -> float:
    """Seconds until ``count`` scp processes (to the first ``count`` hosts) all finished."""
    argv = ["scp", "-q", "-i", str(hosts.client_key)]
    argv += ["-o", f"UserKnownHostsFile={hosts.known_hosts}", "-o", "BatchMode=yes"]
    argv += ["-c", cipher] if cipher else []
    started = time.perf_counter()
    running = [
        subprocess.Popen([*argv, str(source), f"root@{host.address}:{remote}"])
        for host in hosts.hosts[:count]
    ]
    if any(proc.wait() != 0 for proc in running):
        raise RuntimeError("scp failed")
    return time.perf_counter() - started


def settings(hosts: TestHosts) -> SshSettings:
    return SshSettings(str(hosts.known_hosts), str(hosts.client_key), 10.0, 300.0)


async def cold_stage(
    hosts: TestHosts, source: Path, work: Path, releases: str, staging: Stage = stage
) -> float:
    started = time.perf_counter()
    async with Sessions(settings(hosts)) as sessions:
        destinations = [Destination.parse(h.destination) for h in hosts]
        # as `fleet deploy` does: the artifact is hashed while the hosts are reached
        artifact, _ = await asyncio.gather(
            asyncio.to_thread(pack, source, work),
            asyncio.gather(*(sessions.get(d) for d in destinations)),
        )
        await staging(sessions, destinations, artifact, releases)
    return time.perf_counter() - started


def other_stage(src: str) -> Stage:
    """``stage`` of another build's ``src/`` (over this build's SSH layer)."""
    path = Path(src) / "nonstop" / "fleet" / "staging.py"
    spec = importlib.util.spec_from_file_location("other_build_staging", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    found: Stage = module.stage
    return found


async def warm_stage(hosts: TestHosts, artifact: Artifact, releases: str) -> tuple[float, float]:
    """(stage over open connections, stage again when every host has it)."""
    destinations = [Destination.parse(h.destination) for h in hosts]
    async with Sessions(settings(hosts)) as sessions:
        for host in destinations:
            await sessions.get(host)
        started = time.perf_counter()
        await stage(sessions, destinations, artifact, releases)
        first = time.perf_counter() - started
        started = time.perf_counter()
        await stage(sessions, destinations, artifact, releases)
        return first, time.perf_counter() - started


def clear(hosts: TestHosts) -> None:
    """Drop what the last round wrote, so no round pays for another's page cache."""
    for host in hosts:
        for entry in host.root.iterdir():
            subprocess.run(["rm", "-rf", "--", str(entry)], check=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    samples: dict[str, list[float]] = {
        k: [] for k in ("scp", "scp_aes_gcm", "scp_parallel", "stage", "stage_only", "skip")
    }
    before_load = os.getloadavg()[0]
    with TestHosts(args.hosts) as hosts, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "release.bin"
        with open(source, "wb") as handle:
            for _ in range(args.size_mb):
                handle.write(os.urandom(1024 * 1024))
        artifact = pack(source, work)
        for round_ in range(args.rounds):
            clear(hosts)
            samples["scp"].append(scp(hosts, source, f"/srv/web/scp-{round_}", None))
            clear(hosts)
            cipher = "aes128-gcm@openssh.com"
            samples["scp_aes_gcm"].append(scp(hosts, source, f"/srv/web/gcm-{round_}", cipher))
            clear(hosts)
            count = len(hosts)
            samples["scp_parallel"].append(scp(hosts, source, "/srv/web/p", None, count))
            clear(hosts)
            builds: list[tuple[str, Stage]] = [("stage", stage)]
            if args.compare_src:  # the two take turns at going first
                builds.insert(round_ % 2, ("stage_other", other_stage(args.compare_src)))
            for name, staging in builds:
                clear(hosts)
                releases = f"/srv/web/{name}-{round_}"
                seconds = asyncio.run(cold_stage(hosts, source, work, releases, staging))
                samples.setdefault(name, []).append(seconds)
            clear(hosts)
            first, again = asyncio.run(warm_stage(hosts, artifact, f"/srv/web/warm-{round_}"))
            samples["stage_only"].append(first)
            samples["skip"].append(again)
            line = "  ".join(f"{k} {v[-1]:.2f}s" for k, v in samples.items())
            print(f"round {round_ + 1}: {line}", flush=True)
    medians = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    ratio = round(medians["stage"] / medians["scp"], 2)
    if "stage_other" in medians:
        medians["stage_other_vs_scp"] = round(medians["stage_other"] / medians["scp"], 2)
    parallel = round(medians["stage"] / medians["scp_parallel"], 2)
    return {
        "samples": samples,
        "medians": medians,
        "stage_vs_scp": ratio,
        "stage_vs_scp_parallel": parallel,
        "load_average_before": before_load,
        "load_average_after": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--compare-src",
        metavar="DIR",
        help="another checkout's src/: its staging, from a cold start too, in every round",
    )
    args = parser.parse_args()
    able, why = can_create_namespaces()
    if not able:
        print(f"fleet_staging: {why}", file=sys.stderr)
        return 2
    raise_on_sigterm()
    result = run(args)
    m = result["medians"]
    print(
        f"median of {args.rounds}: scp {m['scp']:.2f}s (aes-gcm {m['scp_aes_gcm']:.2f}s) to 1 host;"
        f" stage {m['stage']:.2f}s to {args.hosts} hosts (over open connections"
        f" {m['stage_only']:.2f}s, already there {m['skip']:.2f}s);"
        f" stage / scp = {result['stage_vs_scp']};"
        f" {args.hosts} scp at once {m['scp_parallel']:.2f}s,"
        f" stage / that = {result['stage_vs_scp_parallel']}"
    )
    path = save_results(Path(__file__).parent / "results", "fleet_staging", args, result)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
