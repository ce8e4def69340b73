"""What the control process hands to workers that run as another user, on real files."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from nonstop.config import load
from nonstop.workers.privileges import for_workers, prepare

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a workers' user needs root")

NOBODY = pwd.getpwnam("nobody")


def config_with_logs(tmp_path: Path, *logs: Path) -> Path:
    lines = "".join(f"  access_log {log};\n" for log in logs)
    path = tmp_path / "nginx.conf"
    path.write_text(
        f"user nobody {NOBODY.pw_gid};\nevents {{}}\nhttp {{\n{lines}"
        "  server { listen 127.0.0.1:8080; return 204; }\n}\n"
    )
    return path


def test_a_log_in_a_directory_the_user_may_write_is_never_opened_through_a_link(
    tmp_path: Path,
) -> None:
    """nginx's CVE-2016-1247: the workers' user plants a link where root opens a log."""
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0::/root:/bin/sh\n")
    victim.chmod(0o644)
    theirs = tmp_path / "theirs"  # a log directory left to the workers' user
    theirs.mkdir()
    os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    (theirs / "linked.log").symlink_to(victim)
    os.link(victim, theirs / "hard.log")  # a second name: refused too
    ours = tmp_path / "ours"  # root's: a link there is root's own doing, and is followed
    ours.mkdir(mode=0o755)
    (ours / "out.log").symlink_to(tmp_path / "target.log")
    config = load(
        str(
            config_with_logs(
                tmp_path,
                theirs / "linked.log",
                theirs / "hard.log",
                theirs / "plain.log",
                ours / "out.log",
            )
        ),
        None,
    )
    handover = prepare(config)
    try:
        assert handover.handed.logs == (str(theirs / "plain.log"), str(ours / "out.log"))
        assert handover.handed.temps == ("client_body_temp", "proxy_temp")
        assert len(handover.fds) == 4
    finally:
        handover.close()
    assert victim.read_text() == "root:x:0:0::/root:/bin/sh\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644  # not claimed (0600) either
    assert (tmp_path / "target.log").exists()
    temp = Path(config.state_dir) / "client_body_temp"
    assert (temp.stat().st_uid, stat.S_IMODE(temp.stat().st_mode)) == (NOBODY.pw_uid, 0o700)


def test_a_directory_the_user_may_write_to_cannot_send_root_elsewhere_on_the_way(
    tmp_path: Path,
) -> None:
    """Higher up the path: the user owns L/, root owns L/site/; the user swaps site for a
    link to a directory of its choice.  Root's own links on the way are followed."""
    target = tmp_path / "target"
    target.mkdir()
    theirs = tmp_path / "L"
    theirs.mkdir()
    os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    (theirs / "site").symlink_to(target)  # where root had made L/site/
    ours = tmp_path / "ours"
    ours.mkdir(mode=0o755)
    (tmp_path / "real").mkdir()
    (ours / "site").symlink_to(tmp_path / "real")  # root's own link: followed
    config = load(
        str(config_with_logs(tmp_path, theirs / "site" / "a.log", ours / "site" / "b.log")), None
    )
    handover = prepare(config)
    handover.close()
    assert handover.handed.logs == (str(ours / "site" / "b.log"),)
    assert not (target / "a.log").exists()
    assert (tmp_path / "real" / "b.log").exists()
    # a directory missing on the way is made, as os.makedirs would
    config = load(str(config_with_logs(tmp_path, tmp_path / "new" / "deeper" / "c.log")), None)
    handover = prepare(config)
    handover.close()
    assert handover.handed.logs == (str(tmp_path / "new" / "deeper" / "c.log"),)
    assert (tmp_path / "new" / "deeper" / "c.log").is_file()


def test_links_are_followed_one_at_a_time_by_the_same_rule(tmp_path: Path) -> None:
    """A link of root's own whose target passes through a directory the user owns is
    refused there too; /dev/stdout (a link to /proc/self/fd/1) is this process's stdout."""
    etc = tmp_path / "etc"
    etc.mkdir()
    theirs = tmp_path / "L"
    theirs.mkdir()
    os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    (theirs / "site").symlink_to(etc)  # planted by the user
    ours = tmp_path / "ours"
    ours.mkdir(mode=0o755)
    (ours / "site").symlink_to(theirs / "site")  # root's link, into the user's directory
    (ours / "up").symlink_to("../real/sub")  # relative, through .. after the link
    (tmp_path / "real" / "sub").mkdir(parents=True)
    logs = (ours / "site" / "passwd", ours / "up" / "x.log", Path("/dev/stdout"))
    handover = prepare(load(str(config_with_logs(tmp_path, *logs)), None))
    try:
        assert handover.handed.logs == (str(logs[1]), "/dev/stdout")
        assert not (etc / "passwd").exists()
        assert (tmp_path / "real" / "sub" / "x.log").is_file()
        stdout, given = os.fstat(1), os.fstat(handover.fds[1])
        assert (given.st_dev, given.st_ino) == (stdout.st_dev, stdout.st_ino)
    finally:
        handover.close()


def test_workers_get_the_config_without_the_admin_token_and_the_apps_environments(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nonstop.toml"
    path.write_text(
        '[admin]\nlisten = "127.0.0.1:9999"\ntoken = "s3cret-token-value"\n'
        '[apps.web]\ncommand = "app {port}"\nports = [8000, 8001]\n'
        'env = { DATABASE_PASSWORD = "hunter2" }\n'
        '[[servers]]\nlisten = ["127.0.0.1:8080"]\nlocations = [{ path = "/", pass = "web" }]\n'
    )
    config = load(str(path), None)
    assert config.admin.token and config.apps[0].env
    given = for_workers(config)
    assert given.admin.token is None and given.apps[0].env == ()
    assert given.admin.listen == config.admin.listen and given.servers == config.servers
