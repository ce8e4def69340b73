"""Who an app runs as: ``user``/``group`` names resolved to ids (``pwd``/``grp``).

Read when the config is loaded, so an unknown name is a config error naming its key, and
again when an instance starts, so a user created or changed since is taken as it is then.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass

__all__ = ["Account", "UnknownAccount", "group_id", "resolve_account", "unreachable"]


class UnknownAccount(ValueError):
    """A user or group this machine does not know: ``kind`` ("user" or "group") and the
    ``name`` as given; the message says so."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f'no {kind} "{name}" on this machine')
        self.kind = kind
        self.name = name


@dataclass(frozen=True, slots=True)
class Account:
    """A user and group to run a process as, with the user's home and its groups."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups: the user's, as login gives them
    home: str


def resolve_account(user: str | None, group: str | None) -> Account | None:
    """``user`` (name or id; None: the daemon's own) with ``group`` (None: the user's
    primary group); None when neither is given.  ``UnknownAccount`` names what is unknown."""
    if user is None and group is None:
        return None
    try:
        entry = pwd.getpwuid(os.getuid()) if user is None else _user(user)
    except (KeyError, ValueError, OverflowError):  # unknown, a NUL in it, an id too large
        raise UnknownAccount("user", str(user)) from None
    gid = entry.pw_gid if group is None else group_id(group)
    groups = tuple(g for g in os.getgrouplist(entry.pw_name, gid) if g != gid)
    return Account(entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir)


def group_id(group: str) -> int:
    """The id of ``group`` (a name or an id); ``UnknownAccount`` if this machine has none."""
    try:
        return grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except (KeyError, ValueError, OverflowError):  # unknown, a NUL in it, an id too large
        raise UnknownAccount("group", group) from None


def _user(name: str) -> pwd.struct_passwd:
    return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)


def unreachable(path: str, account: Account) -> tuple[str, str] | None:
    """The first directory on the way to ``path`` (itself included, links resolved) that
    ``account`` may not pass through, as the kernel decides it: the owner's search bit
    for its owner, the group's for a member, the others' for the rest (ACLs aside) —
    with the class whose bit it lacks (``u``, ``g``, ``o``); None if it may reach
    ``path``.  A directory that cannot be looked at blocks the way."""
    if account.uid == 0:
        return None
    parts = [part for part in os.path.realpath(path).split("/") if part]
    for depth in range(len(parts) + 1):
        directory = "/" + "/".join(parts[:depth])
        try:
            info = os.stat(directory)
        except OSError:
            return directory, "o"
        if info.st_uid == account.uid:
            bit, who = stat.S_IXUSR, "u"
        elif info.st_gid == account.gid or info.st_gid in account.groups:
            bit, who = stat.S_IXGRP, "g"
        else:
            bit, who = stat.S_IXOTH, "o"
        if not info.st_mode & bit:
            return directory, who
    return None
