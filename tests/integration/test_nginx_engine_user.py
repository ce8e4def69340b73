"""nginx.conf's ``user`` with ``engine = "nginx"``: nonstop started as root runs nginx's
workers as that user, and they still see every slot switch and spool every upload.

The daemon's directory is made under /tmp with 0711, as /var/lib is for a real install
(pytest's own directories are 0700 and root's: no worker of another user could reach a
state directory inside them — the last test checks nonstop says so).
"""

from __future__ import annotations

import http.client
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_nginx_engine import NginxAppDaemon
from tests.support.apps.harness import Load, deployed, pyapp_daemons

from nonstop.engines.nginx import children, find_nginx

pytestmark = [
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="nginx's workers' user needs root"),
]

NOBODY = pwd.getpwnam("nobody")

Make = Callable[..., NginxAppDaemon]


@pytest.fixture
def daemon() -> Iterator[Make]:
    made = Path(tempfile.mkdtemp(prefix="nonstop-nginx-user-"))
    made.chmod(0o711)
    try:
        yield from pyapp_daemons(made, NginxAppDaemon)
    finally:
        shutil.rmtree(made)


@pytest.fixture
def closed_daemon(tmp_path: Path) -> Iterator[Make]:
    yield from pyapp_daemons(tmp_path, NginxAppDaemon)


def uids(pid: int) -> list[int]:
    """The real, effective, saved and file-system user ids of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(n) for n in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/echo", body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_nginx_workers_run_as_user_and_serve_deploys_and_uploads(daemon: Make) -> None:
    d = daemon(verify="200ms", worker_user="nobody")
    deployed(d, "v1")
    status: dict[str, Any] = d.nginx()
    master = status["nginx"]["master"]
    workers = sorted(children(master))
    assert workers and uids(master) == [0, 0, 0, 0]
    assert all(uids(w) == [NOBODY.pw_uid] * 4 for w in workers), [uids(w) for w in workers]

    with Load(d.port, clients=8, limit=40) as load:  # every switch seen by nobody's workers
        load.wait_requests(50)
        for release in ("v2", "v3"):
            deployed(d, release)
            load.wait_requests(50)
    assert load.failed == [], load.failed[:5]
    assert list(load.first_seen)[-2:] == ["v2", "v3"] and d.get() == (200, "v3")

    body = os.urandom(256 * 1024)  # past client_body_buffer_size: a temp file of nobody's
    assert post(d.port, body) == (200, body)
    temp = Path(d.dir / "state" / "nginx" / "temp" / "client_body")
    assert (temp.stat().st_uid, stat.S_IMODE(temp.stat().st_mode)) == (NOBODY.pw_uid, 0o700)

    state = d.dir / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o711  # passed through, never listed
    assert stat.S_IMODE((state / "state.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "nginx" / "conf").stat().st_mode) == 0o700
    assert sorted(children(master)) == workers  # no worker died on the way
    # A slot flag the workers could not look up would have read as "slot 0" (a [crit]
    # "Permission denied" line each time), with the other slot taking over only as the
    # backup once the old release stopped: no request failed, but no switch was seen.
    errors = (state / "nginx" / "logs" / "error.log").read_text()
    assert "[crit]" not in errors and "Permission denied" not in errors, errors[-2000:]


def test_a_state_dir_nginx_workers_cannot_reach_is_refused_naming_the_directory(
    closed_daemon: Make,
) -> None:
    with pytest.raises(RuntimeError, match="did not start") as caught:
        closed_daemon(worker_user="nobody")
    assert 'nginx\'s workers run as "nobody" ("user") and cannot reach' in str(caught.value)
    assert "/tmp/pytest-of-root does not let them pass; let them search it (chmod o+x" in str(
        caught.value
    )
