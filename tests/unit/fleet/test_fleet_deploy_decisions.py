"""The fleet deploy's decisions: batches, whether a host serves, what verify catches,
what a failure undoes, where a host is in the front, and what the hosts' answers say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from nonstop.fleet.config import load_fleet
from nonstop.fleet.daemons import last_json
from nonstop.fleet.deploy import (
    Ledger,
    batches_of,
    serving_problem,
    verify_problem,
)
from nonstop.fleet.hosts import Destination
from nonstop.fleet.status import summarise

A, B, C = (Destination(f"10.0.0.{n}", 22, "deploy") for n in (1, 2, 3))


def instance(port: int, release: str, **extra: Any) -> dict[str, Any]:
    base = {"port": port, "release": release, "live": False, "health": "up", "pid": port}
    return {**base, "responses_5xx": 0, **extra}


def status(
    *instances: dict[str, Any], live: str = "v1", phase: str | None = None
) -> dict[str, Any]:
    deploy = None if phase is None else {"release": "v2", "phase": phase}
    app = {"live": {"release": live, "slot": 0}, "instances": list(instances), "deploy": deploy}
    return {"apps": {"web": app}}


def held(**extra: Any) -> dict[str, Any]:
    """v2 held on 9002, v1 warm and still marked live on 9001."""
    return status(instance(9001, "v1", live=True), instance(9002, "v2", **extra), phase="hold")


def test_batches_cut_the_hosts_in_order() -> None:
    assert batches_of([A, B, C], [1, 2]) == [[A], [B, C]]
    assert batches_of([A, B, C], [1, 1, 1]) == [[A], [B], [C]]


def test_a_held_deploy_serves_its_new_release_though_the_live_record_names_the_old() -> None:
    assert serving_problem(held(), "web", "v2") is None
    assert serving_problem(held(), "web", "v1") == "web serves v2, not v1"


def test_a_host_without_the_app_or_a_healthy_live_instance_does_not_serve() -> None:
    assert serving_problem({"apps": {}}, "web", None) == "no app web in its nonstop config"
    assert serving_problem(status(), "web", None) == "web has no live instance"
    unhealthy = status(instance(9001, "v1", live=True, health="down"))
    assert serving_problem(unhealthy, "web", None) == "web's instance on port 9001 is down"
    nothing = {"apps": {"web": {"live": None, "instances": []}}}
    assert serving_problem(nothing, "web", None) == "web has no live release"


def test_verify_passes_while_the_held_release_keeps_serving() -> None:
    assert verify_problem(held(), held(), "web", "v2") is None


def test_verify_catches_a_restart_a_5xx_and_a_hold_the_host_ended() -> None:
    restarted = held(pid=1)
    assert "restarted (crashed)" in str(verify_problem(held(), restarted, "web", "v2"))
    # a held instance that crashed is not restarted by its host (it is not live yet)
    crashed = held(state="crashed")
    assert verify_problem(held(), crashed, "web", "v2") == "web's instance on port 9002 crashed"
    errors = held(responses_5xx=3)
    assert "3 5xx response(s)" in str(verify_problem(held(), errors, "web", "v2"))
    rolled_back = status(instance(9001, "v1", live=True))
    assert verify_problem(held(), rolled_back, "web", "v2") == "web serves v1, not v2"


def test_a_failure_aborts_every_switched_host_and_undrains_the_drained_ones() -> None:
    ledger = Ledger(drained=[C], switched=[A, B, C])
    assert ledger.to_abort() == [A, B, C] and ledger.to_undrain() == [C]
    ledger.committed = True
    assert ledger.to_abort() == []


FLEET = """\
[fleet]
hosts = ["deploy@10.0.0.1:22", "deploy@10.0.0.2:22"]
front = "deploy@lb:22"
front_upstream = "app"
remote_config = "/srv/web/nonstop.toml"
releases_dir = "/srv/web/releases"
"""


def fleet(tmp_path: Path, extra: str = "") -> Any:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET + extra)
    return load_fleet(str(path))


def test_a_host_is_found_in_the_front_by_its_address(tmp_path: Path) -> None:
    spec = fleet(tmp_path)
    servers = ["10.0.0.1:8080", "10.0.0.2:8080"]
    assert spec.upstream_address(Destination("10.0.0.2", 22), servers) == "10.0.0.2:8080"
    with pytest.raises(ValueError, match=re.escape("no server of the front's app on 10.0.0.9")):
        spec.upstream_address(Destination("10.0.0.9", 22), servers)
    with pytest.raises(ValueError, match=r"2 servers .* set upstream_port"):
        spec.upstream_address(A, ["10.0.0.1:80", "10.0.0.1:8080"])


def test_upstream_port_picks_among_several_servers_of_one_host(tmp_path: Path) -> None:
    spec = fleet(tmp_path, "upstream_port = 8080\n")
    assert spec.upstream_address(A, ["10.0.0.1:80", "10.0.0.1:8080"]) == "10.0.0.1:8080"
    with pytest.raises(ValueError, match=re.escape("10.0.0.1:8080 is not a server")):
        spec.upstream_address(A, ["10.0.0.1:80"])


def test_the_lease_lives_on_the_front_else_the_first_host(tmp_path: Path) -> None:
    spec = fleet(tmp_path)
    assert spec.lock_host == Destination("lb", 22, "deploy")
    assert spec.lease_path == "/srv/web/releases/.fleet-lease"
    assert fleet(tmp_path, 'lease_file = "/run/fleet.lease"\n').lease_path == "/run/fleet.lease"


def test_the_answer_is_the_indented_object_or_the_line_after_the_events() -> None:
    assert last_json(b'{\n  "ok": true\n}\n') == {"ok": True}
    assert last_json(b'{"event": "x"}\n{"event": "y"}\n{"ok": false}\n') == {"ok": False}
    assert last_json(b"Usage: nonstop ...\n") is None


def test_fleet_status_shows_unreachable_hosts_and_their_place_in_the_front(
    tmp_path: Path,
) -> None:
    spec = fleet(tmp_path)
    hosts = list(spec.hosts)
    first = status(instance(9001, "v2", live=True, in_flight=2))
    front = {"upstreams": {"app": [{"address": "10.0.0.1:8080", "state": "drained", "conns": 0}]}}
    shown = summarise(spec, {hosts[0]: first, hosts[1]: "connect timed out"}, front, None)
    one, two = shown["hosts"]
    assert one["reachable"] and one["front"] == {"state": "drained", "in_flight": 0}
    assert one["apps"]["web"]["live"] == "v1" and one["apps"]["web"]["in_flight"] == 2
    assert not two["reachable"] and two["error"] == "connect timed out"
    assert two["front"]["state"] == "not in the front"
