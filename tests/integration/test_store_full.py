"""The state directory's disk fills up in the middle of a deploy under load.

A real daemon whose state directory is a small tmpfs of the test's own: the disk is
filled while the new release waits in its health gate.  The deploy then ends rolled back
(or, if the store failed only after the old release stopped, done but not recorded); the
CLI says "state store: …" with exit code 4; no request fails; every instance left runs
supervised; and once space is back the next deploy succeeds and the failed one's end is
written down, its lock released.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.apps import pyapp_command
from tests.support.apps.harness import AppDaemon, Load, deployed
from tests.support.mounts import fill, small_tmpfs


@pytest.fixture
def on_tmpfs(tmp_path: Path) -> Iterator[tuple[AppDaemon, Path]]:
    with small_tmpfs("1m") as state:
        d = AppDaemon(tmp_path / "d", pyapp_command("--start-delay 1.5"), verify="300ms")
        (d.dir / "state").symlink_to(state)
        d.start()
        try:
            yield d, state
        finally:
            d.stop()


def test_a_disk_full_mid_deploy_rolls_back_fails_no_request_and_the_next_deploy_works(
    on_tmpfs: tuple[AppDaemon, Path],
) -> None:
    d, state = on_tmpfs
    deployed(d, "v1")
    with Load(d.port, clients=10, limit=60) as load:
        load.wait_requests(50)
        deploy = d.deploy_async("v2", "--json")
        assert deploy.stdout is not None
        for line in deploy.stdout:  # v2 runs and waits in its health gate: fill the disk
            if json.loads(line).get("event") == "started":
                filler = fill(state)
                break
        out, err = deploy.communicate(timeout=60)
        load.wait_requests(50)
        answer = json.loads(out.splitlines()[-1])
        assert deploy.returncode == 4, out + err
        assert answer["ok"] is False and answer["error"].startswith("state store: ")
        assert "No space left" in answer["error"] or "full" in answer["error"]
        status = d.status()["apps"]["web"]
        serving = {i["release"] for i in status["instances"]}
        assert serving in ({"v1"}, {"v2"}), status["instances"]  # rolled back, or completed
        assert [i["state"] for i in status["instances"]] == ["running"]
        assert d.get()[1] in serving
        filler.unlink()
        done = d.cli("deploy", "web", "--release", "v3")
        assert done.returncode == 0, done.stdout + done.stderr
        load.wait_requests(50)
    assert load.failed == []
    app = d.status()["apps"]["web"]
    assert [i["release"] for i in app["instances"]] == ["v3"]
    assert app["live"]["release"] == "v3"
    outcomes = {h["release"]: h["outcome"] for h in app["history"]}
    assert outcomes["v3"] == "ok" and outcomes["v2"] in ("rolled_back", "ok")
    assert "state store: " in d.process.stderr()
