"""``nonstop fleet deploy``, ``rollback`` and ``status`` on real hosts through a real front.

Three hosts (network namespaces with sshd) each run ``nonstop run`` with the test app
blue-green; the front runs ``nonstop run`` in the root namespace over them, and a
keep-alive load of GETs, POSTs and slow GETs goes through the front the whole time.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.apps.harness import Load
from tests.support.fleet import Fleet, launcher, read_until
from tests.support.netns import TestHosts, needs_namespaces

from nonstop.fleet.lease import LeaseFile

pytestmark = needs_namespaces


@pytest.fixture
def fleet(fleet_hosts: TestHosts, tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(fleet_hosts, tmp_path / "fleet") as running:
        running.deploy_everywhere(launcher(tmp_path, "v1"))
        yield running


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_a_fleet_deploy_switches_every_host_through_the_front_without_a_failed_request(
    fleet: Fleet, tmp_path: Path
) -> None:
    v1 = fleet.live(fleet.hosts[0])
    v2 = launcher(tmp_path, "v2")
    with Load(fleet.front_port, clients=10, limit=90) as load:
        load.wait_requests(100)
        done = fleet.fleet("deploy", "web", "--release", str(v2), "--verify", "1s", "--json")
        load.wait_requests(100)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load.failed == [], load.failed[:5]
    sha256 = hashlib.sha256(v2.read_bytes()).hexdigest()
    assert [fleet.live(h) for h in fleet.hosts] == [f"/srv/web/releases/{sha256}/app.py"] * 3
    for host in fleet.hosts:
        app = fleet.status(host)["apps"]["web"]
        assert app["live"]["previous_release"] == v1
        assert [i["release"] for i in app["instances"]] == [app["live"]["release"]]  # committed
    steps = [(e["event"], e.get("host")) for e in events(done.stdout)]
    first, last = fleet.hosts[0].destination, fleet.hosts[2].destination
    # one host at a time (batches = [1]): drained, deployed, serving, back in the front
    assert steps.index(("undrain", first)) < steps.index(("drain", last))
    assert steps[-2:] == [("done", None), ("unlock", None)]
    assert LeaseFile(str(fleet.lease)).read() is None  # released


def test_a_release_refused_on_the_last_host_rolls_every_switched_host_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    v1 = fleet.live(fleet.hosts[0])
    (fleet.hosts[2].root / "refuse").write_text("")
    with Load(fleet.front_port, clients=10, limit=90) as load:
        load.wait_requests(100)
        done = fleet.fleet("deploy", "web", "--release", str(launcher(tmp_path, "v2")))
        load.wait_requests(100)
    assert done.returncode == 1, done.stdout + done.stderr
    assert fleet.hosts[2].destination in done.stderr and "refused" in done.stderr
    assert load.failed == [], load.failed[:5]
    for host in fleet.hosts:
        app = fleet.status(host)["apps"]["web"]
        assert app["live"]["release"] == v1
        assert [i["release"] for i in app["instances"]] == [v1]
    for host in fleet.hosts[:2]:
        assert fleet.status(host)["apps"]["web"]["history"][0]["outcome"] == "rolled_back"
    front = json.loads(fleet.front_status())["upstreams"]["app"]
    assert {s["state"] for s in front} == {"up"}  # every host is back in the front
    assert LeaseFile(str(fleet.lease)).read() is None


def test_two_fleet_deploys_racing_for_the_lock_one_is_refused_naming_the_holder(
    fleet: Fleet, tmp_path: Path
) -> None:
    # the first holds the lock through a 10 s verify window: the second tries within it
    v2 = str(launcher(tmp_path, "v2"))
    first = fleet.fleet_async("deploy", "web", "--release", v2, "--verify", "10s", "--json")
    try:
        read_until(first, "verify")
        assert LeaseFile(str(fleet.lease)).read() is not None
        second = fleet.fleet("deploy", "web", "--release", str(launcher(tmp_path, "v3")))
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"(pid {first.pid})" in second.stderr and "locked by" in second.stderr
    assert first.returncode == 0, out + err
    assert {fleet.live(h).rsplit("/", 1)[-1] for h in fleet.hosts} == {"app.py"}


def test_fleet_status_and_rollback_show_and_restore_every_host(
    fleet: Fleet, tmp_path: Path
) -> None:
    v1 = fleet.live(fleet.hosts[0])
    done = fleet.fleet("deploy", "web", "--release", str(launcher(tmp_path, "v2")))
    assert done.returncode == 0, done.stdout + done.stderr
    shown = fleet.fleet("status", "web", "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert [h["host"] for h in status["hosts"]] == [h.destination for h in fleet.hosts]
    for row in status["hosts"]:
        assert row["reachable"] and row["front"]["state"] == "up"
        assert row["apps"]["web"]["previous"] == v1 and row["apps"]["web"]["health"] == ["up"]
    assert status["lock"]["held"] is False

    with Load(fleet.front_port, clients=10, limit=90) as load:
        load.wait_requests(100)
        back = fleet.fleet("rollback", "web")
        load.wait_requests(100)
    assert back.returncode == 0, back.stdout + back.stderr
    assert load.failed == [], load.failed[:5]
    assert [fleet.live(h) for h in fleet.hosts] == [v1, v1, v1]


def test_sigterm_of_the_deploying_command_rolls_every_switched_host_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    v1 = fleet.live(fleet.hosts[0])
    second = fleet.hosts[1].destination
    deploying = fleet.fleet_async(
        "deploy", "web", "--release", str(launcher(tmp_path, "v2")), "--json"
    )
    try:
        read_until(deploying, "serving", second)
        deploying.send_signal(signal.SIGTERM)
        _, err = deploying.communicate(timeout=120)
    finally:
        if deploying.poll() is None:
            deploying.kill()
            deploying.wait()
    assert deploying.returncode == 1, err
    assert "interrupted by SIGTERM" in err
    for host in fleet.hosts:
        assert [i["release"] for i in fleet.status(host)["apps"]["web"]["instances"]] == [v1]
    front = json.loads(fleet.front_status())["upstreams"]["app"]
    assert {s["state"] for s in front} == {"up"}  # the second host, drained then, is back
    assert LeaseFile(str(fleet.lease)).read() is None


def test_a_host_whose_daemon_listens_elsewhere_than_the_others_is_found_and_deployed(
    fleet_hosts: TestHosts, tmp_path: Path
) -> None:
    # the others' socket is learned on the first host and tried on each; the second
    # host's daemon is not there, so that host is asked where its own is
    elsewhere = {1: "/srv/web/elsewhere.sock"}
    with Fleet(fleet_hosts, tmp_path / "fleet", admin_sockets=elsewhere) as fleet:
        fleet.deploy_everywhere(launcher(tmp_path, "v1"))
        assert (fleet.hosts[1].root / "elsewhere.sock").exists()
        v2 = launcher(tmp_path, "v2")
        done = fleet.fleet("deploy", "web", "--release", str(v2), "--verify", "300ms")
        assert done.returncode == 0, done.stdout + done.stderr
        sha256 = hashlib.sha256(v2.read_bytes()).hexdigest()
        assert {fleet.live(h) for h in fleet.hosts} == {f"/srv/web/releases/{sha256}/app.py"}
