"""The supervisor restarts crashed instances it was told to keep, with backoff."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nonstop.clock import FakeClock
from nonstop.config.model import AppSpec
from nonstop.supervisor import (
    FakeLauncher,
    LaunchSpec,
    RestartPolicy,
    Supervisor,
    SupervisorEvent,
    build_launch,
)

APP = AppSpec(name="web", command="app {port}", ports=(8080, 8000), stop_timeout=0.05)
FAST = RestartPolicy(base=0.01, factor=2.0, cap=0.04, reset_after=1.0)


async def until(predicate: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def make(tmp_path: Path, launcher: FakeLauncher, events: list[SupervisorEvent]) -> Supervisor:
    return Supervisor(tmp_path, launcher, FakeClock(), FAST, on_event=events.append)


def test_a_kept_instance_is_restarted_after_a_crash(tmp_path: Path) -> None:
    async def go() -> None:
        launcher, events = FakeLauncher(), []
        sup = make(tmp_path, launcher, events)
        first = await sup.start(APP, 0, 8080, "v1", restart=True)
        launcher.launched[0].exit(1)
        await until(lambda: len(launcher.launched) == 2)
        second = sup.get("web", 8080)
        assert second is not None and second is not first and second.is_alive()
        assert second.release == "v1" and second.slot == 0
        assert [e.kind for e in events] == ["started", "crashed", "restarting", "started"]
        assert events[2].delay == pytest.approx(0.01)
        await sup.close()

    asyncio.run(go())


def test_repeated_crashes_back_off_exponentially_up_to_the_cap(tmp_path: Path) -> None:
    async def go() -> None:
        launcher, events = FakeLauncher(), []
        sup = make(tmp_path, launcher, events)
        await sup.start(APP, 0, 8080, "v1", restart=True)
        for n in range(1, 5):
            launcher.launched[-1].exit(1)
            await until(lambda n=n: len(launcher.launched) == n + 1)
        delays = [e.delay for e in events if e.kind == "restarting"]
        assert delays == pytest.approx([0.01, 0.02, 0.04, 0.04])
        await sup.close()

    asyncio.run(go())


def test_an_instance_without_restart_stays_down(tmp_path: Path) -> None:
    async def go() -> None:
        launcher, events = FakeLauncher(), []
        sup = make(tmp_path, launcher, events)
        inst = await sup.start(APP, 1, 8000, "v2")
        launcher.launched[0].exit(1)
        await inst.wait()
        await asyncio.sleep(0.05)  # longer than any restart delay of FAST
        assert len(launcher.launched) == 1
        assert [e.kind for e in events] == ["started", "crashed"]

    asyncio.run(go())


def test_a_restart_that_finds_the_port_busy_backs_off_and_retries(tmp_path: Path) -> None:
    async def go() -> None:
        launcher, events = FakeLauncher(), []
        sup = make(tmp_path, launcher, events)
        await sup.start(APP, 0, 8080, "v1", restart=True)
        launcher.busy.add(8080)
        launcher.launched[0].exit(1)
        await until(lambda: any(e.kind == "restart_failed" for e in events))
        assert "port 8080" in next(e.detail for e in events if e.kind == "restart_failed")
        launcher.busy.clear()
        await until(lambda: len(launcher.launched) == 2)
        await sup.close()

    asyncio.run(go())


def test_stop_cancels_a_pending_restart(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = FakeLauncher()
        sup = Supervisor(
            tmp_path, launcher, FakeClock(), RestartPolicy(base=5.0, cap=5.0, reset_after=10.0)
        )
        inst = await sup.start(APP, 0, 8080, "v1", restart=True)
        launcher.launched[0].exit(1)
        await inst.wait()
        await sup.stop(inst)
        await sup.close()
        assert len(launcher.launched) == 1
        assert sup.instances() == []

    asyncio.run(go())


def test_close_stops_every_running_instance(tmp_path: Path) -> None:
    async def go() -> None:
        launcher, events = FakeLauncher(), []
        sup = make(tmp_path, launcher, events)
        await sup.start(APP, 0, 8080, "v1", restart=True)
        await sup.start(APP, 1, 8000, "v2")
        await sup.close()
        assert all(p.reaped for p in launcher.launched)
        assert sup.instances() == []
        assert [e.kind for e in events].count("crashed") == 0

    asyncio.run(go())


def test_leaving_instances_running_signals_none_and_stops_restarting(tmp_path: Path) -> None:
    async def go() -> None:
        launcher, events = FakeLauncher(), []
        sup = make(tmp_path, launcher, events)
        await sup.start(APP, 0, 8080, "v1", restart=True)
        sup.leave_running()
        process = launcher.launched[0]
        assert process.released and process.signals == []
        assert sup.instances() == []
        process.exit(1)  # a crash after the hand-over is the next daemon's to restart
        await asyncio.sleep(0.05)
        assert len(launcher.launched) == 1
        assert [e.kind for e in events] == ["started"]

    asyncio.run(go())


def test_an_adopted_instance_is_restarted_after_a_crash_like_one_started_here(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        launcher, events = FakeLauncher(), []
        sup = make(tmp_path, launcher, events)
        left = FakeLauncher(next_pid=7000).launch(_spec())  # started by an earlier nonstop
        adopted = sup.adopt(APP, 0, 8080, "v1", left, started_at=0.0)
        assert adopted.is_alive() and sup.get("web", 8080) is adopted
        left.exit(-9)
        await until(lambda: len(launcher.launched) == 1)
        assert [e.kind for e in events] == ["adopted", "crashed", "restarting", "started"]
        assert "adopt app=web release=v1 port=8080 pid=7001" in adopted.tail()
        await sup.close()

    asyncio.run(go())


def _spec() -> LaunchSpec:
    return build_launch(APP, 8080, "v1", "/dev/null", {})
