"""Blue-green as a plan: the steps planned, and the steps run for each way a deploy ends.

The executor runs on fakes (``world.py``): a 30-second verify takes microseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tests.support.deploy_world import World
from tests.support.deploy_world import run as run_in

from nonstop.config.model import AppSpec, HealthSpec
from nonstop.deploy import blue_green
from nonstop.deploy.deployer import OWED_RETRY
from nonstop.deploy.errors import DeployRefused, RolledBack
from nonstop.deploy.steps import (
    Commit,
    Drain,
    Gate,
    Hold,
    Rollback,
    Start,
    Stop,
    Switch,
    Verify,
)
from nonstop.deploy.store import StoreError
from nonstop.errors import DeployFailed

APP = AppSpec(
    name="web",
    command="app {port} {release}",
    ports=(8080, 8000),
    health=HealthSpec(interval=1.0, start_timeout=10.0),
    stop_timeout=1.0,
    drain_timeout=5.0,
    verify=30.0,
)


def test_a_first_deploy_starts_gates_switches_and_commits() -> None:
    planned = blue_green.plan(APP, None)
    assert planned.steps == (Start(0, (8080,)), Gate((8080,)), Switch((8080,), ()), Commit(0))


def test_a_deploy_keeps_the_old_release_warm_through_verify_then_stops_it() -> None:
    planned = blue_green.plan(APP, 0)
    assert planned.steps == (
        Start(1, (8000,)),
        Gate((8000,)),
        Switch((8000,), (8080,)),
        Drain((8080,), warm=True),
        Verify((8000,), 30.0),
        Drain((8080,)),
        Stop((8080,), "old"),
        Commit(1),
    )


def test_a_held_deploy_waits_between_verify_and_stopping_the_old_release() -> None:
    kinds = blue_green.plan(APP, 1, blue_green.Options(hold=60.0)).kinds()
    assert kinds == [
        "start", "gate", "switch", "drain", "verify", "hold", "drain", "stop", "commit"
    ]  # fmt: skip


def test_after_a_reload_moved_the_ports_the_old_release_is_drained_where_it_runs() -> None:
    moved = dataclasses.replace(APP, ports=(9080, 9000))
    planned = blue_green.plan(moved, 0, running=(8080,))
    assert planned.slot == 1 and planned.ports == (9000,) and planned.old_ports == (8080,)
    assert planned.steps[2] == Switch((9000,), (8080,))
    assert planned.steps[-3:] == (Drain((8080,)), Stop((8080,), "old"), Commit(1))


def test_after_a_reload_swapped_the_ports_the_new_release_takes_the_clear_slot() -> None:
    swapped = dataclasses.replace(APP, ports=(8000, 8080))
    planned = blue_green.plan(swapped, 0, running=(8080,))
    assert planned.slot == 0 and planned.ports == (8000,) and planned.old_ports == (8080,)


def test_a_deploy_is_refused_when_both_slots_take_a_port_the_live_release_runs_on() -> None:
    four = dataclasses.replace(APP, ports=(8080, 8081, 8000, 8001))
    shrunk = dataclasses.replace(APP, ports=(8080, 8000))
    assert blue_green.plan(four, 0).old_ports == (8080, 8000)
    with pytest.raises(DeployFailed, match="take a port the live release runs on"):
        blue_green.plan(shrunk, 0, running=(8080, 8000))


def test_undo_before_the_switch_stops_the_new_release_and_after_it_switches_back() -> None:
    planned = blue_green.plan(APP, 0)
    quiet_stop = Stop((8000,), "new", announce=False)
    assert blue_green.undo(planned, Gate((8000,))) == (quiet_stop,)
    assert blue_green.undo(planned, Switch((8000,), (8080,))) == (
        Rollback((8080,), (8000,), announce=False),
        quiet_stop,
    )
    back = (Rollback((8080,), (8000,)), Drain((8000,)), Stop((8000,), "new"))
    assert blue_green.undo(planned, Verify((8000,), 30.0)) == back
    assert blue_green.undo(planned, Hold(60.0)) == back


def run(tmp: Path, body: Callable[[World], Awaitable[None]]) -> World:
    world = World(tmp, APP)
    run_in(world, body)
    return world


def test_a_first_deploy_runs_its_plan_and_records_the_release_live(tmp_path: Path) -> None:
    w = run(tmp_path, lambda w: w.deploy("v1"))
    assert w.kinds() == ["start", "gate", "switch", "commit"]
    assert w.engine.primaries("web") == [("127.0.0.1:8080", False)]
    assert w.store.live("web").release == "v1"  # type: ignore[union-attr]


def test_a_release_refused_at_the_gate_is_stopped_and_nothing_switches(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.deployed_v1()
        w.unhealthy.add(8000)
        with pytest.raises(DeployRefused, match="status 503"):
            await w.deploy("bad")

    w = run(tmp_path, body)
    assert w.kinds() == ["start", "gate", "stop"]
    assert w.launcher.launched[1].returncode is not None
    assert w.engine.primaries("web") == [("127.0.0.1:8080", False)]
    assert w.store.history("web", 1)[0].outcome == "refused"


def test_a_crash_during_verify_switches_back_drains_and_stops_the_new_release(
    tmp_path: Path,
) -> None:
    async def body(w: World) -> None:
        await w.deployed_v1()
        deploy = asyncio.ensure_future(w.deploy("v2"))
        await w.until("verify")
        w.launcher.launched[1].exit(1)
        with pytest.raises(RolledBack, match="exited during verify"):
            await deploy
        assert w.launcher.launched[0].returncode is None  # the old release never stopped

    w = run(tmp_path, body)
    assert w.kinds() == [
        "start", "gate", "switch", "drain", "verify", "rollback", "drain", "stop"
    ]  # fmt: skip
    assert w.engine.primaries("web") == [("127.0.0.1:8080", False)]
    assert w.store.live("web").release == "v1"  # type: ignore[union-attr]


def test_5xx_during_verify_rolls_back_to_the_warm_old_release(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.deployed_v1()
        deploy = asyncio.ensure_future(w.deploy("v2"))
        await w.until("verify")
        w.engine.answers["127.0.0.1:8000"] = (40, 20)
        with pytest.raises(RolledBack, match=r"5xx ratio 50\.0%"):
            await deploy

    w = run(tmp_path, body)
    assert w.kinds() == [
        "start", "gate", "switch", "drain", "verify", "rollback", "drain", "stop"
    ]  # fmt: skip
    assert w.store.history("web", 1)[0].outcome == "rolled_back"


def test_a_held_deploy_returns_once_it_holds_and_commit_stops_the_old_release(
    tmp_path: Path,
) -> None:
    async def body(w: World) -> None:
        await w.deployed_v1()
        held = await w.deploy("v2", hold=600.0)
        assert held["outcome"] == "held"
        assert w.kinds()[-1] == "hold" and w.launcher.launched[0].returncode is None
        assert w.engine.primaries("web") == [("127.0.0.1:8000", False)]
        assert w.engine.backups("web") == ["127.0.0.1:8080"]  # warm for an abort
        done = await w.deployer.commit("web", "fleet")
        assert done["outcome"] == "ok"
        assert w.launcher.launched[0].returncode is not None

    w = run(tmp_path, body)
    assert w.kinds() == [
        "start", "gate", "switch", "drain", "verify", "hold", "drain", "stop", "commit"
    ]  # fmt: skip
    assert w.store.live("web").release == "v2"  # type: ignore[union-attr]
    assert any(e["event"] == "commit" and "fleet" in e["message"] for e in w.events)


def test_aborting_a_held_deploy_switches_back_and_stops_the_new_release(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.deployed_v1()
        await w.deploy("v2", hold=600.0)
        done = await w.deployer.abort("web", "fleet")
        assert (done["outcome"], done["reason"]) == ("rolled_back", "rolled back: aborted by fleet")
        assert w.launcher.launched[1].returncode is not None
        assert w.launcher.launched[0].returncode is None

    w = run(tmp_path, body)
    assert w.kinds() == [
        "start", "gate", "switch", "drain", "verify", "hold", "rollback", "drain", "stop"
    ]  # fmt: skip
    assert w.engine.primaries("web") == [("127.0.0.1:8080", False)]
    assert w.store.live("web").release == "v1"  # type: ignore[union-attr]


def test_a_deploy_held_past_its_deadline_rolls_back(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.deployed_v1()
        await w.deploy("v2", hold=120.0)
        held_at = w.clock.monotonic()
        while w.deployer.runtime("web").run is not None:
            await asyncio.sleep(0)
        assert w.clock.monotonic() - held_at >= 120.0

    w = run(tmp_path, body)
    assert w.kinds()[-4:] == ["hold", "rollback", "drain", "stop"]
    history = w.store.history("web", 1)[0]
    assert (history.outcome, history.reason) == (
        "rolled_back",
        "rolled back: not committed within the hold (120s)",
    )
    assert w.store.live("web").release == "v1"  # type: ignore[union-attr]


def test_commit_without_a_held_deploy_is_refused(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        await w.deployed_v1()
        with pytest.raises(Exception, match="no deploy of web is holding"):
            await w.deployer.commit("web", "fleet")

    run(tmp_path, body)


def _refuse(store: object, name: str, refused: list[str]) -> None:
    """Make ``store.NAME`` raise the StoreError of a full disk, and note each refusal."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        refused.append(name)
        raise StoreError("state.db: database or disk is full")

    setattr(store, name, refuse)


def test_a_store_that_fails_after_the_switch_rolls_the_deploy_back_and_owes_its_end(
    tmp_path: Path,
) -> None:
    refused: list[str] = []

    async def body(w: World) -> None:
        await w.deployed_v1()
        names = ("set_instance_state", "finish_deploy", "forget_instance")
        working = {name: getattr(w.store, name) for name in names}
        for name in names:
            _refuse(w.store, name, refused)
        with pytest.raises(StoreError, match="the deploy of v2 was rolled back: v1 serves"):
            await w.deploy("v2")
        with pytest.raises(StoreError):  # still full: the next deploy is refused at once
            await w.deploy("v3")
        assert w.launcher.launched[2:] == []
        for name, method in working.items():  # space is back
            setattr(w.store, name, method)
        await w.deploy("v3")

    w = run(tmp_path, body)
    assert refused[0] == "set_instance_state" and "finish_deploy" in refused
    assert w.kinds()[:6] == ["start", "gate", "switch", "rollback", "drain", "stop"]
    assert w.launcher.launched[0].returncode is not None  # v1, stopped by the v3 deploy
    assert w.launcher.launched[1].returncode is not None  # v2, stopped by the rollback
    outcomes = [(r.release, r.outcome) for r in w.store.history("web", 3)]
    assert outcomes == [("v3", "ok"), ("v2", "rolled_back"), ("v1", "ok")]


async def _v2_live_unrecorded(w: World, refused: list[str]) -> Callable[..., object]:
    """v1 live, then a deploy of v2 whose "live" write the store refuses (a full disk
    once the old release stopped): v2 serves, not recorded.  The store's own
    ``set_live``, to put back when space is back."""
    await w.deployed_v1()
    set_live = w.store.set_live
    _refuse(w.store, "set_live", refused)
    with pytest.raises(StoreError, match="v2 serves all traffic, not yet recorded as live"):
        await w.deploy("v2")
    return set_live


def test_a_live_release_the_store_refused_is_shown_and_recorded_once_it_has_room(
    tmp_path: Path,
) -> None:
    """Without another deploy: the owed write is retried until the disk has room, so a
    stop meanwhile does not lose it; status shows what serves, not the store's word."""
    refused: list[str] = []

    async def body(w: World) -> None:
        set_live = await _v2_live_unrecorded(w, refused)
        live = (await w.deployer.status("web"))["web"]["live"]
        assert (live["release"], live["recorded"], live["since"]) == ("v2", False, None)
        assert live["previous_release"] == "v1"
        await w.clock.sleep(3 * OWED_RETRY)  # still full: retried, still owed
        assert w.deployer.owed() == ["v2 live for web"]
        w.store.set_live = set_live  # type: ignore[method-assign]  # space is back
        await w.clock.sleep(2 * OWED_RETRY)
        assert w.deployer.owed() == []
        assert w.store.live("web").release == "v2"  # type: ignore[union-attr]
        assert "recorded" not in (await w.deployer.status("web"))["web"]["live"]

    run(tmp_path, body)
    assert refused.count("set_live") >= 3  # the deploy's write, then each retry


def test_a_stop_while_a_write_is_owed_says_what_the_next_start_will_not_know(
    tmp_path: Path,
) -> None:
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    async def body(w: World) -> None:
        await _v2_live_unrecorded(w, [])
        await w.deployer.close(stop_apps=False)

    handler = Keep()
    logging.getLogger("nonstop").addHandler(handler)
    try:
        run(tmp_path, body)
    finally:
        logging.getLogger("nonstop").removeHandler(handler)
    lost = [m for m in said if "not recorded before this stop" in m]
    assert lost and "v2 live for web" in lost[0] and "taken as interrupted" in lost[0]


def test_a_store_that_fails_only_once_the_old_release_stopped_finishes_the_deploy(
    tmp_path: Path,
) -> None:
    refused: list[str] = []

    async def body(w: World) -> None:
        set_live = await _v2_live_unrecorded(w, refused)
        assert w.deployer.apps["web"].live_release == "v2"
        w.store.set_live = set_live  # type: ignore[method-assign]
        await w.deploy("v3")

    w = run(tmp_path, body)
    assert refused == ["set_live"]
    assert w.launcher.launched[0].returncode is not None  # v1 was stopped before the commit
    assert w.store.live("web").previous_release == "v2"  # type: ignore[union-attr]
