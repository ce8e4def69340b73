"""The deployer's decisions on fakes (``tests/support/deploy_world.py``), in virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.support.deploy_world import World
from tests.support.deploy_world import run as run_in

from nonstop.config.model import AppSpec, HealthSpec
from nonstop.deploy import DeployLocked
from nonstop.deploy.deployer import own_tail
from nonstop.deploy.errors import DeployRefused, RolledBack, UnknownApp

T = TypeVar("T")
APP = AppSpec(
    name="web",
    command="app {port} {release}",
    ports=(8080, 8000),
    health=HealthSpec(interval=0.01, start_timeout=0.2),
    stop_timeout=1.0,
    drain_timeout=1.0,
    verify=0.3,
)


def run(world: World, body: Callable[[], Awaitable[Any]]) -> Any:
    return run_in(world, lambda _: body())


def servers(w: World) -> list[tuple[str, bool]]:
    return w.engine.primaries("web")


def test_a_deploy_switches_to_the_new_slot_and_stops_the_old_instance(tmp_path: Path) -> None:
    w = World(tmp_path, APP)

    async def body() -> None:
        await w.deploy("v1")
        v1 = w.launcher.launched[0]
        await w.deploy("v2")
        assert v1.returncode is not None and v1.signals == [15]
        assert servers(w) == [("127.0.0.1:8000", False)]

    run(w, body)
    live = w.store.live("web")
    assert live is not None and (live.release, live.slot, live.previous_release) == ("v2", 1, "v1")
    kinds = [e["event"] for e in w.events]
    assert kinds.index("switched") < kinds.index("drained") < kinds.index("verify")
    assert kinds[-1] == "done"


def test_a_release_failing_its_gate_is_stopped_and_the_old_one_stays(tmp_path: Path) -> None:
    w = World(tmp_path, APP)

    async def body() -> None:
        await w.deploy("v1")
        w.unhealthy.add(8000)
        with pytest.raises(DeployRefused, match="status 503"):
            await w.deploy("bad")
        bad = w.launcher.launched[1]
        assert bad.returncode is not None
        assert servers(w) == [("127.0.0.1:8080", False)]

    run(w, body)
    assert w.store.live("web").release == "v1"  # type: ignore[union-attr]
    assert w.store.history("web", 1)[0].outcome == "refused"


def test_a_crash_during_verify_switches_back_to_the_warm_old_instance(tmp_path: Path) -> None:
    w = World(tmp_path, APP)

    async def body() -> None:
        await w.deploy("v1")
        task = asyncio.create_task(w.deploy("v2"))
        await w.until("verify")
        assert w.engine.backups("web") == ["127.0.0.1:8080"]
        w.launcher.launched[1].exit(1)
        with pytest.raises(RolledBack, match="exited during verify"):
            await task
        assert servers(w) == [("127.0.0.1:8080", False)]
        assert w.launcher.launched[0].returncode is None  # the old one never stopped

    run(w, body)
    assert w.store.live("web").release == "v1"  # type: ignore[union-attr]
    assert w.store.history("web", 1)[0].outcome == "rolled_back"


def test_a_second_deploy_while_one_runs_is_refused_with_the_lock_holder(tmp_path: Path) -> None:
    w = World(tmp_path, APP)

    async def body() -> None:
        await w.deploy("v1")
        w.events.clear()
        first = asyncio.create_task(w.deploy("v2"))
        await w.until("begin")
        with pytest.raises(DeployLocked, match="lock held by tester"):
            await w.deploy("v3")
        await first

    run(w, body)


def test_an_unknown_app_is_a_usage_error(tmp_path: Path) -> None:
    w = World(tmp_path, APP)
    with pytest.raises(UnknownApp):
        run(w, lambda: w.deployer.deploy("nope", "v1", "tester", 1))


def test_the_failure_log_tail_shows_only_the_latest_run() -> None:
    text = "=== nonstop t start app=web a ===\nold\n=== nonstop t start app=web b ===\nnew"
    assert own_tail(text) == "=== nonstop t start app=web b ===\nnew"
