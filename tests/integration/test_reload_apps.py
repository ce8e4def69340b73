"""A reload that changes an app, then a deploy: the reload is a plan for the next deploy.

The running release keeps serving as it was started; the next deploy starts the new one
as the reloaded config says and drains and stops the old one where it runs, with no
failed request — for each field of ``[apps.NAME]`` a reload may change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.apps import pyapp_command
from tests.support.apps.harness import AppDaemon, Load, deployed, pyapp_daemons
from tests.support.backends import free_port
from tests.support.walkthrough import alive

Make = Callable[..., AppDaemon]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Make]:
    yield from pyapp_daemons(tmp_path, AppDaemon)


def _proc(pid: int, name: str) -> list[str]:
    with open(f"/proc/{pid}/{name}", "rb") as handle:
        return handle.read().decode(errors="replace").split("\0")


EVERYTHING: dict[str, Any] = {
    "health_path": "/infra/ready",
    "interval": "80ms",
    "env": {"GREETING": "hello"},
    "stop_timeout": "3s",
    "drain_timeout": "5s",
    "verify": "600ms",
    "keepalive": 8,
}


@pytest.mark.parametrize(
    ("change", "extra", "options", "new_ports"),
    [
        ("ports", "", {}, True),
        ("command", "--start-delay 0.2", {}, False),
        ("health check", "", {"health_path": "/infra/ready", "interval": "80ms"}, False),
        ("env", "", {"env": {"GREETING": "hello"}}, False),
        ("stop and drain timeouts", "", {"stop_timeout": "3s", "drain_timeout": "5s"}, False),
        ("verify", "", {"verify": "600ms"}, False),
        ("keepalive", "", {"keepalive": 8}, False),
        ("all of them", "--start-delay 0.2", EVERYTHING, True),
    ],
)
def test_a_reload_that_changes_an_app_is_applied_by_the_next_deploy_without_a_failure(
    daemon: Make, change: str, extra: str, options: dict[str, Any], new_ports: bool
) -> None:
    d = daemon()
    deployed(d, "v1")
    [old] = d.status()["apps"]["web"]["instances"]
    with Load(d.port, clients=10, limit=45) as load:
        load.wait_requests(50)
        if new_ports:
            d.app_ports = (free_port(), free_port())
        d.write(pyapp_command(extra), **options)
        assert d.cli("reload").returncode == 0
        load.wait_requests(50)
        assert set(load.releases) == {"v1"}, "the running release keeps serving"
        [same] = d.status()["apps"]["web"]["instances"]
        assert (same["pid"], same["port"], same["live"]) == (old["pid"], old["port"], True)
        done = d.cli("deploy", "web", "--release", "v2")
        assert done.returncode == 0, done.stdout + done.stderr
        v1_answers = load.releases["v1"]
        load.wait_requests(100)
        assert load.releases["v1"] == v1_answers, "the old release still takes requests"
    assert load.failed == []
    app = d.status()["apps"]["web"]
    [new] = app["instances"]
    assert new["release"] == "v2" and new["health"] == "up"
    assert new["port"] in d.app_ports and app["live"]["ports"] == [new["port"]]
    assert [u["address"] for u in d.status()["upstreams"]["web"]] == [f"127.0.0.1:{new['port']}"]
    assert not alive(old["pid"]), f"{change}: the old release was not stopped"
    assert d.get() == (200, "v2")
    if extra:
        assert extra.split()[0] in _proc(new["pid"], "cmdline")
    if "env" in options:
        assert "GREETING=hello" in _proc(new["pid"], "environ")


def test_a_reload_that_swaps_the_slots_ports_deploys_to_the_slot_clear_of_the_live_one(
    daemon: Make,
) -> None:
    d = daemon()
    deployed(d, "v1")
    [old] = d.status()["apps"]["web"]["instances"]
    assert old["port"] == d.app_ports[0]
    d.app_ports = (d.app_ports[1], d.app_ports[0])  # the live port is now slot 1's
    d.write(pyapp_command())
    assert d.cli("reload").returncode == 0
    with Load(d.port, clients=10, limit=30) as load:
        load.wait_requests(30)
        done = d.cli("deploy", "web", "--release", "v2")
        assert done.returncode == 0, done.stdout + done.stderr
        load.wait_requests(30)
    assert load.failed == []
    [new] = d.status()["apps"]["web"]["instances"]
    assert new["release"] == "v2" and new["port"] == d.app_ports[0] != old["port"]
    assert not alive(old["pid"])
