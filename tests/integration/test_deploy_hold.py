"""A held deploy end to end: ``deploy --hold``, then ``commit`` or ``abort``, under load.

The step a fleet deploy is made of: the new release serves all traffic while the old one
waits warm; commit stops the old one, abort switches back to it — with keep-alive GETs,
POSTs and slow GETs running through the proxy and none of them failing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.apps.harness import AppDaemon, Load, deployed, pyapp_daemons

Make = Callable[..., AppDaemon]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Make]:
    yield from pyapp_daemons(tmp_path, AppDaemon)


def held(d: AppDaemon, release: str) -> dict[str, object]:
    done = d.cli("deploy", "web", "--release", release, "--hold", "--hold-timeout", "2m", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["ok"] is True and last["result"]["outcome"] == "held"
    events = [json.loads(line)["event"] for line in done.stdout.splitlines()[:-1]]
    assert events[-1] == "hold"
    return dict(last["result"])


def decided_under_load(d: AppDaemon, decision: str) -> tuple[Load, str]:
    """v1 live, v2 held, then ``decision`` (commit or abort), all under keep-alive load."""
    deployed(d, "v1")
    with Load(d.port, clients=20, limit=60) as load:
        load.wait_requests(100)
        held(d, "v2")
        load.wait_requests(100)
        app = d.status()["apps"]["web"]
        assert app["deploy"]["phase"] == "hold"
        assert app["deploy"]["hold_until"] > time.time() + 60  # --hold-timeout 2m
        assert sorted(i["release"] for i in app["instances"]) == ["v1", "v2"]  # v1 warm
        assert d.get() == (200, "v2")
        done = d.cli(decision, "web")
        assert done.returncode == 0, done.stdout + done.stderr
        load.wait_requests(100)
    return load, done.stdout


def test_a_held_deploy_serves_the_new_release_and_commit_stops_the_old_one(
    daemon: Make,
) -> None:
    d = daemon(verify="200ms")
    load, _ = decided_under_load(d, "commit")
    assert load.failed == []
    app = d.status()["apps"]["web"]
    assert [i["release"] for i in app["instances"]] == ["v2"]
    assert app["live"]["release"] == "v2" and app["history"][0]["outcome"] == "ok"


def test_aborting_a_held_deploy_moves_traffic_back_to_the_warm_old_release(
    daemon: Make,
) -> None:
    d = daemon(verify="200ms")
    load, said = decided_under_load(d, "abort")
    assert "rolled back: aborted by" in said
    assert load.failed == []
    assert d.get() == (200, "v1")
    app = d.status()["apps"]["web"]
    assert [i["release"] for i in app["instances"]] == ["v1"]
    assert app["live"]["release"] == "v1" and app["history"][0]["outcome"] == "rolled_back"


def test_commit_without_a_held_deploy_exits_1_and_changes_nothing(daemon: Make) -> None:
    d = daemon()
    deployed(d, "v1")
    done = d.cli("commit", "web")
    assert done.returncode == 1 and "no deploy of web is holding" in done.stderr
    assert d.get() == (200, "v1")
