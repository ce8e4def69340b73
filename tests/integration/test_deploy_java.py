"""The seed's case: ``java -jar app.jar`` on two alternating ports, an app that exits the
moment SIGTERM lands, deployed under keep-alive load with GETs, POSTs and slow requests.

The seed's fixed deploy.sh loses 20-40 requests per deploy here; nonstop must lose none.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.apps import build_java_app, javac_missing
from tests.support.apps.harness import AppDaemon, Load

pytestmark = pytest.mark.skipif(javac_missing() is not None, reason=str(javac_missing()))


@pytest.fixture(scope="module")
def jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_java_app(tmp_path_factory.mktemp("java"))


@pytest.fixture
def java_daemon(tmp_path: Path, jar: Path) -> Iterator[AppDaemon]:
    java = "java -Xshare:auto -XX:TieredStopAtLevel=1"
    command = f"{java} -jar {shlex.quote(str(jar))} {{port}} {{release}}"
    d = AppDaemon(tmp_path / "d", command, verify="200ms", start_timeout="30s").start()
    yield d
    d.stop()


def _deploy(d: AppDaemon, release: str) -> None:
    done = d.cli("deploy", "web", "--release", release, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_java_deploy_under_load_fails_no_request_and_moves_traffic(
    java_daemon: AppDaemon,
) -> None:
    d = java_daemon
    _deploy(d, "v1")
    with Load(d.port, clients=20, limit=40, slow_ms=200) as load:
        load.wait_requests(200)
        started = time.monotonic()
        _deploy(d, "v2")
        load.wait_requests(200)
    assert load.failed == []
    assert load.first_seen["v2"] > started
    assert d.get() == (200, "v2")
    app = d.status()["apps"]["web"]
    assert [(i["release"], i["port"]) for i in app["instances"]] == [("v2", d.app_ports[1])]


@pytest.mark.slow
def test_twenty_java_deploys_in_a_row_under_load_fail_no_request(java_daemon: AppDaemon) -> None:
    d = java_daemon
    _deploy(d, "r0")
    # bounded by time too, but long enough for twenty deploys on a busy machine
    with Load(d.port, clients=20, limit=300, slow_ms=200) as load:
        load.wait_requests(100)
        for n in range(1, 21):
            _deploy(d, f"r{n}")
            assert d.get() == (200, f"r{n}")
        load.wait_requests(100)
    assert load.failed == []
    assert {f"r{n}" for n in range(1, 21)} <= set(load.releases)
    history = d.status()["apps"]["web"]["history"]
    assert [h["outcome"] for h in history] == ["ok"] * len(history)
