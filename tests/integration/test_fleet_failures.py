"""A fleet deploy that fails on one host rolls every switched host back, on real hosts.

The same fleet as test_fleet_deploy.py (three hosts in network namespaces with sshd, each
running ``nonstop run`` with the test app blue-green; a front in the root namespace):
a crash and a 5xx during the fleet-wide verify window, a host's link going down mid-deploy,
a deployer killed with SIGKILL, and ``--skip-unreachable``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.apps.harness import Load
from tests.support.fleet import HOST_PORT, Fleet, launcher, read_until
from tests.support.netns import Host, TestHosts, needs_namespaces

from nonstop.fleet.lease import LeaseFile

pytestmark = needs_namespaces

HOLD = "25s"  # the hosts' hold deadline in these tests: the backstop for a lost deployer


@pytest.fixture
def fleet(fleet_hosts: TestHosts, tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(fleet_hosts, tmp_path / "fleet", hold_timeout=HOLD) as running:
        running.deploy_everywhere(launcher(tmp_path, "v1"))
        yield running


def deploying(fleet: Fleet, release: Path, *extra: str) -> subprocess.Popen[str]:
    return fleet.fleet_async("deploy", "web", "--release", str(release), "--json", *extra)


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def only_on(fleet: Fleet, host: Host, release: str) -> bool:
    """Whether ``host`` runs ``release`` alone: live, every instance, no deploy going on."""
    app = fleet.status(host)["apps"]["web"]
    instances = {i["release"] for i in app["instances"]}
    return app["live"]["release"] == release and instances == {release} and not app["deploy"]


def assert_fleet_back_on(fleet: Fleet, release: str, drained: tuple[str, ...] = ()) -> None:
    for host in fleet.hosts:
        assert only_on(fleet, host, release), (host.name, fleet.status(host)["apps"]["web"])
    front = json.loads(fleet.front_status())["upstreams"]["app"]
    states = {s["address"]: s["state"] for s in front}
    expected = {
        f"{h.address}:{HOST_PORT}": "draining" if h.destination in drained else "up"
        for h in fleet.hosts
    }
    assert states == expected


def new_instance_pid(fleet: Fleet, host: Host, old: str) -> int:
    instances: list[dict[str, Any]] = fleet.status(host)["apps"]["web"]["instances"]
    (pid,) = [i["pid"] for i in instances if i["release"] != old]
    return int(pid)


def fault_in_verify(
    fleet: Fleet, tmp_path: Path, fault: Callable[[Host, str], None], *, kills: bool = False
) -> str:
    """A fleet deploy of v2 under load, and ``fault(last host, v1)`` once its fleet-wide
    verify window began; it must fail and roll back without a failed request: its stderr.

    ``kills``: the fault kills the new instance, so a response it had begun to send when
    it died is cut (its head reached the client, its body never came), and a POST it had
    been sent but not answered is a 502 (a request that is not idempotent is never sent
    twice, as in nginx): the only failures allowed are those, the crashing process's own
    requests, at most one per client.  A GET it had not begun to answer is retried on the
    held old release."""
    v1 = fleet.live(fleet.hosts[0])
    with Load(fleet.front_port, clients=10, limit=90) as load:
        load.wait_requests(100)
        run = deploying(fleet, launcher(tmp_path, "v2"), "--verify", "6s")
        read_until(run, "verify")
        fault(fleet.hosts[2], v1)
        out, err = finish(run)
        load.wait_requests(100)
    assert run.returncode == 1, out + err
    own = ("IncompleteRead(", "status 502 to POST:")
    cut = [f for f in load.failed if f.startswith(own)] if kills else []
    assert [f for f in load.failed if f not in cut] == [], load.failed[:5]
    assert len(cut) <= load.clients, cut
    assert_fleet_back_on(fleet, v1)
    assert LeaseFile(str(fleet.lease)).read() is None
    return err


def test_a_crash_during_the_fleet_verify_on_the_last_host_rolls_every_host_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    def crash(host: Host, old: str) -> None:
        os.kill(new_instance_pid(fleet, host, old), signal.SIGKILL)

    err = fault_in_verify(fleet, tmp_path, crash, kills=True)
    last = fleet.hosts[2].destination
    assert f"nonstop: {last}: verify: web's instance on port " in err and "crashed" in err, err


def test_a_5xx_during_the_fleet_verify_rolls_every_host_back(fleet: Fleet, tmp_path: Path) -> None:
    def error(host: Host, old: str) -> None:
        conn = http.client.HTTPConnection(host.address, HOST_PORT, timeout=10)
        conn.request("GET", "/infra/status?code=500")  # straight to the host, not the front
        assert conn.getresponse().status == 500
        conn.close()

    err = fault_in_verify(fleet, tmp_path, error)
    last = fleet.hosts[2].destination
    assert f"nonstop: {last}: verify: web answered 1 5xx response(s)" in err, err


def test_a_host_whose_link_goes_down_mid_deploy_is_named_and_the_others_roll_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    v1, lost = fleet.live(fleet.hosts[0]), fleet.hosts[1]
    with Load(fleet.front_port, clients=10, limit=90) as load:
        load.wait_requests(100)
        run = deploying(fleet, launcher(tmp_path, "v2"))
        try:
            read_until(run, "deploy", lost.destination)
            lost.link_down()
            cut = time.monotonic()
            out, err = finish(run)
            ended = time.monotonic() - cut
            load.wait_requests(100)
        finally:
            lost.link_up()
    assert run.returncode == 1, out + err
    reason = err.split(f"nonstop: {lost.destination}: deploy: ", 1)[-1]
    # the link went down mid-command, or before its channel opened: both name the SSH link
    assert reason.startswith(("connection lost", "cannot open a session")), err
    assert f"{lost.destination}: left drained at the front" in err, err
    assert ended < 3 + 10  # the SSH (connect) timeout + 10 s
    assert load.failed == [], load.failed[:5]
    # the lost host's own daemon ends its hold by the deadline and goes back on its own:
    # every host settles on v1 within it (one look at the lost host alone, under load,
    # once passed while the next look found a deploy going on there)
    deadline = time.monotonic() + 60
    while not all(only_on(fleet, host, v1) for host in fleet.hosts):
        assert time.monotonic() < deadline, [fleet.status(host) for host in fleet.hosts]
        time.sleep(0.5)
    assert_fleet_back_on(fleet, v1, drained=(lost.destination,))


@pytest.mark.timeout(300)  # a deploy, a hold deadline, a lease expiry, then a whole deploy
def test_a_killed_deployers_lease_expires_and_its_held_hosts_roll_back_by_their_deadline(
    fleet: Fleet, tmp_path: Path
) -> None:
    v1, second = fleet.live(fleet.hosts[0]), fleet.hosts[1]
    run = deploying(fleet, launcher(tmp_path, "v2"))
    read_until(run, "serving", second.destination)
    run.kill()
    finish(run)
    lease = LeaseFile(str(fleet.lease)).read()
    assert lease is not None and f"(pid {run.pid})" in lease.holder
    done = fleet.fleet("deploy", "web", "--release", str(launcher(tmp_path, "v3")))
    assert done.returncode == 1 and f"locked by {lease.holder}" in done.stderr, done.stderr
    deadline = time.monotonic() + 60
    while not all(only_on(fleet, h, v1) for h in fleet.hosts[:2]):
        assert time.monotonic() < deadline, [fleet.status(h) for h in fleet.hosts[:2]]
        time.sleep(0.5)
    for host in fleet.hosts[:2]:
        outcome = fleet.status(host)["apps"]["web"]["history"][0]
        assert outcome["outcome"] == "rolled_back", outcome

    # the next deploy holds its first hosts for as long as it takes (this machine is slow)
    toml = fleet.fleet_toml.read_text()
    fleet.fleet_toml.write_text(toml.replace(f'hold_timeout = "{HOLD}"', 'hold_timeout = "10m"'))
    done = fleet.fleet(
        "deploy", "web", "--release", str(launcher(tmp_path, "v3")), "--lock-wait", "60s"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"replacing the expired lease of {lease.holder}" in done.stdout
    v3 = fleet.live(fleet.hosts[0])
    assert v3.endswith("/app.py") and v3 != v1
    assert_fleet_back_on(fleet, v3)


def test_skip_unreachable_names_the_hosts_it_left_out(fleet: Fleet, tmp_path: Path) -> None:
    v1, off = fleet.live(fleet.hosts[0]), fleet.hosts[2]
    off.link_down()
    try:
        refused = fleet.fleet("deploy", "web", "--release", str(launcher(tmp_path, "v2")))
        done = fleet.fleet(
            "deploy", "web", "--release", str(launcher(tmp_path, "v2")), "--skip-unreachable"
        )
    finally:
        off.link_up()
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{off.destination}: connect timed out" in refused.stderr, refused.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"leaving out unreachable hosts: {off.destination}" in done.stdout
    assert f"on 2 host(s); left out: {off.destination}" in done.stdout
    assert fleet.live(fleet.hosts[0]) == fleet.live(fleet.hosts[1]) != v1
    assert only_on(fleet, off, v1)
