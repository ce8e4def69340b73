"""Deploys of an app served by gunicorn (pre-fork workers, graceful on SIGTERM)."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest
from tests.support.apps.harness import AppDaemon, Load

GUNICORN = shutil.which("gunicorn") or str(Path(sys.executable).with_name("gunicorn"))
APPS = Path(__file__).resolve().parent.parent / "support" / "apps"

pytestmark = pytest.mark.skipif(not Path(GUNICORN).exists(), reason="gunicorn is not installed")


def gunicorn_command() -> str:
    return (
        f"{shlex.quote(GUNICORN)} --bind 127.0.0.1:{{port}} --workers 2 --threads 4"
        f" --chdir {shlex.quote(str(APPS))} --env RELEASE={{release}} --graceful-timeout 5"
        " --keep-alive 30 wsgiapp:app"
    )


def test_deploys_of_a_gunicorn_app_under_load_fail_no_request(tmp_path: Path) -> None:
    d = AppDaemon(tmp_path / "d", gunicorn_command(), verify="300ms").start()
    try:
        done = d.cli("deploy", "web", "--release", "v1")
        assert done.returncode == 0, done.stdout + done.stderr
        with Load(d.port, clients=10, limit=60) as load:
            load.wait_requests(50)
            for release in ("v2", "v3", "v4"):
                started = time.monotonic()
                done = d.cli("deploy", "web", "--release", release)
                assert done.returncode == 0, done.stdout + done.stderr
                load.wait_requests(30)
                assert load.first_seen[release] >= started
        assert load.failed == []
        assert d.get() == (200, "v4")
    finally:
        d.stop()
