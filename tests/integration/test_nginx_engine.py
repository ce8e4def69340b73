"""``engine = "nginx"`` end to end: ``nonstop run`` drives a real nginx in front of pyapp.

The load is the deploy tests' keep-alive clients, which never resend: a deploy switches
the app's slot without reloading nginx, so no client connection is closed under them.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.support.apps.harness import (
    AppDaemon,
    Load,
    assert_a_5xx_release_is_rolled_back,
    assert_a_rollback_moves_traffic_back,
    deployed,
    pyapp_daemons,
)

from nonstop.engines.nginx import find_nginx

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")


class NginxAppDaemon(AppDaemon):
    """The deploy tests' daemon with ``engine = "nginx"``."""

    def write(self, command: str, **options: Any) -> None:
        super().write(command, **{**options, "engine": "nginx"})

    def nginx(self) -> dict[str, Any]:
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer


Make = Callable[..., NginxAppDaemon]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Make]:
    yield from pyapp_daemons(tmp_path, NginxAppDaemon)


def test_deploys_under_keepalive_load_through_nginx_fail_no_request(daemon: Make) -> None:
    d = daemon(verify="200ms")
    deployed(d, "v1")
    master = d.nginx()["nginx"]["master"]
    took = []
    with Load(d.port, clients=16, limit=40) as load:
        load.wait_requests(100)
        for release in ("v2", "v3", "v4"):
            started = time.monotonic()
            deployed(d, release)
            took.append(time.monotonic() - started)
            load.wait_requests(100)
    assert load.failed == [], load.failed[:5]
    assert list(load.first_seen)[-3:] == ["v2", "v3", "v4"]
    assert d.get() == (200, "v4")
    status = d.nginx()
    assert status["engine"] == "nginx" and status["nginx"]["master"] == master
    assert status["nginx"]["draining_workers"] == []
    app = status["apps"]["web"]
    assert [i["release"] for i in app["instances"]] == ["v4"]
    assert [h["outcome"] for h in app["history"][:3]] == ["ok", "ok", "ok"]
    assert status["nginx"]["reloads"] == 0  # the slots switched, nginx never reloaded
    print(f"deploy times {[round(t, 2) for t in took]}")


def test_the_old_release_is_stopped_only_after_nginx_closed_its_connections(
    daemon: Make,
) -> None:
    d = daemon(verify="0s", drain_timeout="10s")
    deployed(d, "v1")
    with Load(d.port, clients=6, limit=40, slow_ms=3000) as load:
        load.wait_requests(10)
        # The load's slow requests run in step (they start together once the first ones
        # answer), so whether one is on v1 at the switch would depend on how long the
        # deploy takes to get there.  This one is sent before the deploy starts and runs
        # 6 s: well past "switched" (1.2 s after the flag's rename, when every worker has
        # seen it) even when the command and the health gate are slow.  Were v1 stopped
        # under it, nginx would retry it on v2 (proxy_next_upstream) and the client would
        # see no error: the answer names the release that finished it.
        slow = http.client.HTTPConnection("127.0.0.1", d.port, timeout=15)
        slow.request("GET", "/slow?ms=6000")
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(lambda: slow.getresponse().read().decode())
            done = d.cli("deploy", "web", "--release", "v2", "--json")
            assert answer.result() == "slept 6000ms on v1"
        slow.close()
        load.wait_requests(10)
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()[:-1]]
    drained = next(e for e in events if e["event"] == "drained")
    switched = next(e for e in events if e["event"] == "switched")
    assert drained["in_flight"] == 0
    waited = drained["t"] - switched["t"]
    print(f"drain after the switch: {waited:.2f}s")
    assert waited > 0.5  # it waited for the slow requests
    assert load.failed == [], load.failed[:5]


def test_a_release_answering_5xx_through_nginx_is_rolled_back(daemon: Make) -> None:
    app = assert_a_5xx_release_is_rolled_back(daemon(verify="5s"))
    [v1] = app["instances"]
    assert v1["responses"] > 0 and v1["responses_5xx"] == 0


def test_a_reload_nginx_rejects_keeps_the_running_config(daemon: Make) -> None:
    d = daemon()
    deployed(d, "v1")
    text = d.config.read_text()
    d.config.write_text(
        text
        + '\n[[servers]]\nlisten = ["127.0.0.1:1"]\n'
        + 'tls = { certificate = "missing.pem", certificate_key = "missing.key" }\n'
        + 'locations = [ { path = "/", pass = "web" } ]\n'
    )
    done = d.cli("reload")
    assert done.returncode == 2
    assert "nginx: [emerg]" in done.stderr and "missing.pem" in done.stderr
    live = Path(d.dir / "state" / "nginx" / "conf" / "nginx.conf").read_text()
    assert "missing.pem" not in live
    assert d.get() == (200, "v1")
    d.config.write_text(text)
    assert d.cli("reload").returncode == 0


def test_logs_and_pid_live_under_the_state_directory(daemon: Make) -> None:
    d = daemon()
    deployed(d, "v1")
    assert d.get() == (200, "v1")
    home = d.dir / "state" / "nginx"
    status = d.nginx()["nginx"]
    assert int((home / "nginx.pid").read_text()) == status["master"]
    assert status["error_log"] == str(home / "logs" / "error.log")
    deadline = time.monotonic() + 5
    while "GET / HTTP/1.1" not in (home / "logs" / "access.log").read_text():
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.05)
    master = status["master"]
    assert d.stop() == 0
    assert not os.path.exists(f"/proc/{master}"), "nginx outlived nonstop"


def test_check_runs_nginx_t_on_the_render(tmp_path: Path) -> None:
    import subprocess
    import sys

    conf = tmp_path / "nginx.conf"
    shutil.copy(Path(__file__).parents[1] / "unit/config/fixtures/blue_green/nginx.conf", conf)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "service-url.inc").write_text(
        "set $service_port http://127.0.0.1:8081;\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "nonstop", "check", "--engine", "nginx", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "[nginx] nginx: configuration file" in done.stderr and "test is successful" in done.stderr
    )


def test_a_rollback_through_nginx_moves_traffic_back_without_a_reload(daemon: Make) -> None:
    d = daemon(verify="0s")
    assert_a_rollback_moves_traffic_back(d)
    status = d.nginx()
    assert status["nginx"]["reloads"] == 0
    assert status["nginx"]["live_upstreams"] == {"web": "web__slot0"}


def test_a_restarted_daemon_serves_the_live_release_through_nginx_again(daemon: Make) -> None:
    d = daemon(verify="0s")
    deployed(d, "v1")
    deployed(d, "v2")  # green slot: its flag file outlives the daemon
    assert d.stop() == 0
    d.start()
    d.wait_serving("v2")
    assert d.nginx()["nginx"]["live_upstreams"] == {"web": "web__slot1"}


def test_a_reload_moving_a_running_apps_ports_is_refused_and_nginx_keeps_serving_it(
    daemon: Make,
) -> None:
    from tests.support.apps import pyapp_command
    from tests.support.backends import free_port

    d = daemon()
    deployed(d, "v1")
    kept = d.app_ports
    d.app_ports = (free_port(), free_port())
    d.write(pyapp_command())
    done = d.cli("reload")
    assert done.returncode == 2
    assert "with engine nginx, a reload cannot move web's servers" in done.stderr
    assert d.get() == (200, "v1")
    d.app_ports = (kept[0], kept[1])
    d.write(pyapp_command("--start-delay 0.1"))  # the same ports, another command
    assert d.cli("reload").returncode == 0
    deployed(d, "v2")
    assert d.get() == (200, "v2")
