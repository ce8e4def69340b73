"""The deployer's decisions with fake processes and scripted health probes (no sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nonstop.config.model import AppSpec, HealthSpec
from nonstop.deploy import DeployLocked, StateStore
from nonstop.deploy.deployer import Deployer, own_tail
from nonstop.deploy.errors import DeployRefused, RolledBack, UnknownApp
from nonstop.engines.fake import FakeEngine
from nonstop.health.active import Verdict
from nonstop.supervisor import FakeLauncher, Supervisor

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


class World:
    def __init__(self, tmp: Path) -> None:
        self.launcher = FakeLauncher()
        self.unhealthy: set[int] = set()
        self.engine = FakeEngine()
        self.store = StateStore.open(tmp / "state")
        self.events: list[dict[str, Any]] = []
        supervisor = Supervisor(tmp / "state", launcher=self.launcher)
        self.deployer = Deployer(
            self.store,
            supervisor,
            self.engine,
            probe_fn=self.probe,
        )
        supervisor.on_event = self.deployer.on_supervisor_event
        self.deployer.configure((APP,))

    async def probe(self, host: str, port: int, spec: HealthSpec) -> Verdict:
        if port in self.unhealthy:
            return Verdict(False, 503, "DOWN", reason="status 503 (expected 200)")
        return Verdict(True, 200, "UP")

    async def deploy(self, release: str) -> dict[str, Any]:
        return await self.deployer.deploy("web", release, "tester", 1, self.events.append)

    def servers(self) -> list[tuple[str, bool]]:
        return self.engine.primaries("web")


def run(world: World, body: Any) -> Any:
    async def main() -> Any:
        await world.deployer.restore()
        try:
            return await body()
        finally:
            await world.deployer.close(1.0)

    return asyncio.run(main())


def test_a_deploy_switches_to_the_new_slot_and_stops_the_old_instance(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def body() -> None:
        await w.deploy("v1")
        v1 = w.launcher.launched[0]
        await w.deploy("v2")
        assert v1.returncode is not None and v1.signals == [15]
        assert w.servers() == [("127.0.0.1:8000", False)]

    run(w, body)
    live = w.store.live("web")
    assert live is not None and (live.release, live.slot, live.previous_release) == ("v2", 1, "v1")
    kinds = [e["event"] for e in w.events]
    assert kinds.index("switched") < kinds.index("drained") < kinds.index("verify")
    assert kinds[-1] == "done"


def test_a_release_failing_its_gate_is_stopped_and_the_old_one_stays(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def body() -> None:
        await w.deploy("v1")
        w.unhealthy.add(8000)
        with pytest.raises(DeployRefused, match="status 503"):
            await w.deploy("bad")
        bad = w.launcher.launched[1]
        assert bad.returncode is not None
        assert w.servers() == [("127.0.0.1:8080", False)]

    run(w, body)
    assert w.store.live("web").release == "v1"  # type: ignore[union-attr]
    assert w.store.history("web", 1)[0].outcome == "refused"


def test_a_crash_during_verify_switches_back_to_the_warm_old_instance(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def body() -> None:
        await w.deploy("v1")
        task = asyncio.create_task(w.deploy("v2"))
        while not any(e["event"] == "verify" for e in w.events[-3:]):
            await asyncio.sleep(0.005)
        assert w.engine.backups("web") == ["127.0.0.1:8080"]
        w.launcher.launched[1].exit(1)
        with pytest.raises(RolledBack, match="exited during verify"):
            await task
        assert w.servers() == [("127.0.0.1:8080", False)]
        assert w.launcher.launched[0].returncode is None  # the old one never stopped

    run(w, body)
    assert w.store.live("web").release == "v1"  # type: ignore[union-attr]
    assert w.store.history("web", 1)[0].outcome == "rolled_back"


def test_a_second_deploy_while_one_runs_is_refused_with_the_lock_holder(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def body() -> None:
        await w.deploy("v1")
        first = asyncio.create_task(w.deploy("v2"))
        await asyncio.sleep(0.02)
        with pytest.raises(DeployLocked, match="lock held by tester"):
            await w.deploy("v3")
        await first

    run(w, body)


def test_an_unknown_app_is_a_usage_error(tmp_path: Path) -> None:
    w = World(tmp_path)
    with pytest.raises(UnknownApp):
        run(w, lambda: w.deployer.deploy("nope", "v1", "tester", 1))


def test_the_failure_log_tail_shows_only_the_latest_run() -> None:
    text = "=== nonstop t start app=web a ===\nold\n=== nonstop t start app=web b ===\nnew"
    assert own_tail(text) == "=== nonstop t start app=web b ===\nnew"
