"""Deploys end to end on real processes and sockets: ``nonstop run`` with pyapp behind it.

Each test drives the daemon with the CLI, as a user or CI would, while keep-alive clients
send GETs, POSTs and slow GETs through the proxy.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.apps import pyapp_command
from tests.support.apps.harness import (
    AppDaemon,
    Load,
    assert_a_5xx_release_is_rolled_back,
    assert_a_rollback_moves_traffic_back,
    deployed,
    pyapp_daemons,
)

Make = Callable[..., AppDaemon]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Make]:
    yield from pyapp_daemons(tmp_path, AppDaemon)


def test_first_deploy_starts_the_release_on_slot_0_and_makes_it_live(daemon: Make) -> None:
    d = daemon()
    done = d.cli("deploy", "web", "--release", "v1", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in lines[:-1]][:2] == ["begin", "started"]
    assert lines[-1]["ok"] is True and lines[-1]["result"]["outcome"] == "ok"
    assert d.get() == (200, "v1")
    app = d.status()["apps"]["web"]
    assert app["live"]["release"] == "v1" and app["live"]["slot"] == 0
    assert app["live"]["ports"] == [d.app_ports[0]]
    [instance] = app["instances"]
    assert instance["live"] and instance["health"] == "up" and instance["pid"] > 0


def test_deploy_under_keepalive_load_fails_no_request_and_moves_all_traffic(
    daemon: Make,
) -> None:
    d = daemon(verify="300ms")
    deployed(d, "v1")
    with Load(d.port, clients=20, limit=30) as load:
        load.wait_requests(100)
        started = time.monotonic()
        done = d.cli("deploy", "web", "--release", "v2")
        assert done.returncode == 0, done.stdout + done.stderr
        load.wait_requests(200)
    assert load.failed == []
    assert load.first_seen["v2"] >= started
    after = [r for r, t in load.first_seen.items() if t > started]
    assert after == ["v2"]
    assert d.get() == (200, "v2")
    app = d.status()["apps"]["web"]
    assert [i["release"] for i in app["instances"]] == ["v2"]
    assert app["history"][0]["outcome"] == "ok" and app["history"][0]["from_release"] == "v1"


def test_a_never_healthy_release_is_refused_and_the_old_one_keeps_serving(
    daemon: Make,
) -> None:
    d = daemon(start_timeout="1500ms")
    deployed(d, "v1")
    d.write(pyapp_command("--unhealthy"))
    assert d.cli("reload").returncode == 0
    with Load(d.port, clients=20, limit=30) as load:
        load.wait_requests(50)
        done = d.cli("deploy", "web", "--release", "bad")
        load.wait_requests(50)
    assert load.failed == []
    assert done.returncode == 1
    assert "status 503 (expected 200)" in done.stderr and "'DOWN'" in done.stderr
    assert "pyapp release=bad listening" in done.stdout  # the log tail of the new instance
    assert set(load.releases) == {"v1"}
    app = d.status()["apps"]["web"]
    assert app["live"]["release"] == "v1"
    assert [i["release"] for i in app["instances"]] == ["v1"]  # the bad one was stopped
    assert app["history"][0]["outcome"] == "refused"


def test_a_release_that_dies_after_its_gate_is_rolled_back_automatically(
    daemon: Make,
) -> None:
    d = daemon(verify="30s")
    deployed(d, "v1")
    d.write(pyapp_command("--die-after 3"))
    assert d.cli("reload").returncode == 0
    with Load(d.port, clients=20, limit=30, slow_ms=0) as load:
        load.wait_requests(50)
        started = time.monotonic()
        done = d.cli("deploy", "web", "--release", "v2")
        took = time.monotonic() - started
        load.wait_requests(50)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rolled back: the new release exited during verify" in done.stderr
    assert took < 20  # it did not wait for the 30 s verify to end
    assert d.get() == (200, "v1")
    # only what was on the dying process when it died may fail
    assert len(load.failed) <= load.clients, load.failed
    app = d.status()["apps"]["web"]
    assert app["live"]["release"] == "v1"
    assert app["history"][0]["outcome"] == "rolled_back"


def test_a_release_answering_5xx_during_verify_is_rolled_back(daemon: Make) -> None:
    assert_a_5xx_release_is_rolled_back(daemon(verify="5s"))


def test_a_second_concurrent_deploy_is_refused_naming_the_holder(daemon: Make) -> None:
    d = daemon(verify="10s")
    deployed(d, "v1")
    first = d.deploy_async("v2", "--json")
    try:
        assert first.stdout is not None
        for line in first.stdout:  # the first deploy's own progress: it holds the lock now
            if json.loads(line).get("event") == "verify":
                break
        second = d.cli("deploy", "web", "--release", "v3")
    finally:
        out, err = first.communicate(timeout=60)
    assert second.returncode == 1
    assert "a deploy of web is already in progress" in second.stderr
    assert "lock held by" in second.stderr and f"pid {first.pid}" in second.stderr
    assert first.returncode == 0, out + err
    assert d.get() == (200, "v2")


def test_rollback_goes_back_to_the_previous_release(daemon: Make) -> None:
    d = daemon(verify="0s")
    assert_a_rollback_moves_traffic_back(d)
    history = d.status()["apps"]["web"]["history"]
    assert (history[0]["kind"], history[0]["release"], history[0]["outcome"]) == (
        "rollback",
        "v1",
        "ok",
    )


def test_rollback_during_verify_is_instant_and_fails_the_deploy(daemon: Make) -> None:
    d = daemon(verify="20s")
    deployed(d, "v1")
    deploy = d.deploy_async("v2")
    try:
        d.wait_serving("v2")
        started = time.monotonic()
        done = d.cli("rollback", "web", "--json")
        took = time.monotonic() - started
    finally:
        _, err = deploy.communicate(timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert took < 10  # far inside the 20 s verify: the rollback did not wait for it
    assert d.get() == (200, "v1")
    assert deploy.returncode == 1 and "rollback requested by" in err


def test_restarting_the_daemon_restores_the_live_release(daemon: Make) -> None:
    d = daemon()
    deployed(d, "v1")
    deployed(d, "v2")
    assert d.stop() == 0
    d.start()
    d.wait_serving("v2")
    app = d.status()["apps"]["web"]
    assert app["live"]["release"] == "v2"
    assert [(i["release"], i["port"]) for i in app["instances"]] == [("v2", d.app_ports[1])]


def test_a_daemon_killed_mid_deploy_restarts_with_the_old_release_and_no_orphans(
    daemon: Make,
) -> None:
    d = daemon(verify="30s")
    deployed(d, "v1")
    [old] = [i["pid"] for i in d.status()["apps"]["web"]["instances"]]
    deploy = d.deploy_async("v2")
    d.wait_serving("v2")
    pids = [i["pid"] for i in d.status()["apps"]["web"]["instances"]]
    assert len(pids) == 2
    [new] = [p for p in pids if p != old]
    d.process.signal(signal.SIGKILL)
    d.process.proc.wait(10)  # type: ignore[union-attr]
    deploy.communicate(timeout=10)
    d.start()
    d.wait_serving("v1")
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{new}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{new}")  # the interrupted release is stopped
    db = sqlite3.connect(d.dir / "state" / "state.db")
    outcomes = [row[0] for row in db.execute("SELECT outcome FROM deploys ORDER BY id")]
    db.close()
    assert outcomes == ["ok", "interrupted"]
    status = d.status()["apps"]["web"]
    assert status["live"]["release"] == "v1"
    assert [i["pid"] for i in status["instances"]] == [old]  # adopted, not restarted


def test_a_reload_keeps_the_app_servers_and_drops_no_request(daemon: Make) -> None:
    d = daemon()
    deployed(d, "v1")
    with Load(d.port, clients=10, limit=30) as load:
        load.wait_requests(50)
        for _ in range(3):
            assert d.cli("reload").returncode == 0
            load.wait_requests(30)
    assert load.failed == []
    assert set(load.releases) == {"v1"}


def test_a_crashed_live_instance_is_restarted_and_serves_again(daemon: Make) -> None:
    d = daemon()
    deployed(d, "v1")
    [before] = d.status()["apps"]["web"]["instances"]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        instances = d.status()["apps"]["web"]["instances"]
        if instances and instances[0]["pid"] != before["pid"] and instances[0]["health"] == "up":
            break
        time.sleep(0.05)
    d.wait_serving("v1")
    [after] = d.status()["apps"]["web"]["instances"]
    assert after["pid"] != before["pid"] and after["health"] == "up"


def test_deploying_an_unknown_app_is_a_usage_error(daemon: Make) -> None:
    d = daemon()
    done = d.cli("deploy", "nope", "--release", "v1")
    assert done.returncode == 2
    assert 'no app named "nope"' in done.stderr


def test_a_busy_idle_port_is_refused(daemon: Make) -> None:
    import socket

    d = daemon()
    deployed(d, "v1")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", d.app_ports[1]))
        squatter.listen(1)
        done = d.cli("deploy", "web", "--release", "v2")
    assert done.returncode == 1
    assert f"port {d.app_ports[1]} is already in use" in done.stderr
    assert d.get() == (200, "v1")


def test_commands_exit_3_when_no_daemon_answers(tmp_path: Path) -> None:
    d = AppDaemon(tmp_path, pyapp_command())
    for args in (("deploy", "web", "--release", "v1"), ("rollback", "web"), ("status",)):
        assert d.cli(*args).returncode == 3
