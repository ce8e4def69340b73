"""Apps with least privilege: run as their ``user`` when nonstop is root, with a minimal
environment — a real daemon, a real app, its credentials and environment read in /proc."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.apps import PYAPP
from tests.support.apps.harness import AppDaemon, deployed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppDaemon]:
    if SYSTEM_PYTHON is None:
        pytest.skip("needs /usr/bin/python3 (the test interpreter may sit in root's home)")
    monkeypatch.setenv("NONSTOP_TEST_SECRET", "only-for-the-daemon")
    command = f"{SYSTEM_PYTHON} {PYAPP} {{port}} --release {{release}}"
    d = AppDaemon(tmp_path / "d", command, user="nobody", env={"MODE": "prod"})
    d.start()
    try:
        yield d
    finally:
        d.stop()


def _status_ids(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[1]), int(fields["Gid"].split()[1])  # effective ids


def test_an_app_with_a_user_runs_as_that_user_with_a_minimal_environment(
    daemon: AppDaemon,
) -> None:
    deployed(daemon, "v1")
    assert daemon.get() == (200, "v1")
    [instance] = daemon.status()["apps"]["web"]["instances"]
    assert _status_ids(instance["pid"]) == (65534, 65534)  # nobody, nogroup
    env = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{instance['pid']}/environ").read_text().split("\0")
        if "=" in item
    )
    assert "NONSTOP_TEST_SECRET" not in env
    assert env["USER"] == env["LOGNAME"] == "nobody" and env["HOME"] == "/nonexistent"
    assert env["MODE"] == "prod" and env["PATH"]
    assert set(env) <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "MODE"} | {
        k for k in env if k.startswith("LC_")
    }
    assert os.stat(daemon.dir / "state" / "state.db").st_mode & 0o777 == 0o600
