"""Directories nonstop makes for its logs: the config's group reaches what is in them."""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonstop import statedir


@pytest.fixture
def umask() -> Iterator[None]:
    """restrict_umask changes the process's umask and the module's group: put both back."""
    previous = os.umask(0o022)
    os.umask(previous)
    try:
        yield
    finally:
        statedir.restrict_umask(None)
        os.umask(previous)
        statedir._operator_umask = None  # as before restrict_umask first ran here


def _mode_and_gid(path: Path) -> tuple[str, int]:
    info = path.stat()
    return oct(stat.S_IMODE(info.st_mode)), info.st_gid


def test_made_directories_get_the_group_and_existing_ones_stay(tmp_path: Path, umask: None) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory a group of someone else's needs root")
    group = next((g for g in grp.getgrall() if g.gr_gid != os.getegid()), None)
    if group is None:
        pytest.skip("no group but this process's own on this machine")
    existing = tmp_path / "var"
    existing.mkdir(mode=0o755)
    statedir.restrict_umask(group.gr_name)
    statedir.make_dirs(str(existing / "log" / "nonstop"))
    for made in (existing / "log", existing / "log" / "nonstop"):
        assert _mode_and_gid(made) == (oct(0o2750), group.gr_gid), made
    assert _mode_and_gid(existing) == (oct(0o755), os.getegid())  # not nonstop's to change


def test_without_a_group_made_directories_are_private(tmp_path: Path, umask: None) -> None:
    statedir.restrict_umask(None)
    statedir.make_dirs(str(tmp_path / "a" / "b"))
    statedir.make_dirs(str(tmp_path / "a" / "b"))  # there already: nothing to do
    # the gid mkdir gives: the parent's under a set-group-id parent, else this process's
    parent = tmp_path.stat()
    gid = parent.st_gid if parent.st_mode & stat.S_ISGID else os.getegid()
    made = (tmp_path / "a" / "b").stat()
    assert (stat.S_IMODE(made.st_mode) & 0o777, made.st_gid) == (0o700, gid)
    statedir.make_dirs("")  # a log in the working directory


def test_a_state_directory_made_0755_by_hand_becomes_0700(tmp_path: Path, umask: None) -> None:
    """No one else passes through it, unless the nginx engine's workers may still."""
    statedir.restrict_umask(None)
    for nginx, expected in ((False, 0o700), (True, 0o711)):
        state = tmp_path / f"state-{nginx}"
        state.mkdir(mode=0o755)
        state.chmod(0o755)
        lock = statedir.StateDirLock(str(state), passable=False, nginx=nginx)
        lock.acquire()
        try:
            assert oct(stat.S_IMODE(state.stat().st_mode) & 0o777) == oct(expected), nginx
        finally:
            lock.release()
