"""Staging: the release artifact on every host before any host switches.

An artifact is a file (a jar) or a directory.  A directory travels as a deterministic tar
(entries sorted, mtimes, owners and modes normalised), so the same tree always has the same
sha256, and is unpacked on the host.  On every host, in parallel, two commands:

    releases_dir/<sha256>/<name>        the file, or the unpacked directory

1. ``_PRESENT``: if ``<sha256>/`` exists the host already has it: a file is hashed again
   to prove it, a directory is trusted because ``<sha256>/`` only ever appears by the
   rename in step 2; either way its mtime is refreshed, which marks it as recently staged
   for pruning;
2. ``_RECEIVE``, one command for the rest: the bytes stream into
   ``releases_dir/.incoming-<sha256>-<random>/``, through ``tee`` into the file and into
   the sha256 at once (one pass, no second read of what landed); a mismatch, or a write
   that failed (``tee`` then feeds the hash one more byte, so it cannot match), is a
   failure; a directory's tar is unpacked; only then ``mv -T`` renames the incoming
   directory to ``<sha256>/`` (atomic).

Staging never touches what serves: a failure anywhere leaves every host's live release as
it was, removes that host's incoming directory, and raises ``HostsFailed`` naming every
host that failed and why.  ``prune`` keeps the newest ``keep_last`` releases on a host plus
a set the caller names (the live and the previous release), and removes the rest.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import secrets
import stat
import tarfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from nonstop.fleet.errors import CommandFailed, HostError
from nonstop.fleet.ssh import Completed, Connection, Destination, Sessions

__all__ = [
    "Artifact",
    "StageResult",
    "pack",
    "prune",
    "prune_host",
    "releases_to_prune",
    "stage",
    "stage_host",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")
# The scripts are constants: every path and value is a positional argument, never part of
# a script.  ``sha`` is the sha256 of a file ("$1") or of stdin: openssl's uses the CPU's
# SHA instructions (about 5x coreutils' sha256sum, which is the fallback).
_SHA = (
    'sha() { if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r "$@"; '
    'else sha256sum -b "$@"; fi; }; '
)
_PRESENT = _SHA + (
    # $1 the release's directory, $2 its file ("" for an unpacked directory)
    'test -d "$1" || exit 3; if [ -n "$2" ]; then sha "$2" || exit 1; fi; exec touch -- "$1"'
)
_RECEIVE = _SHA + (
    # $1 the incoming directory, $2 the file the bytes land in, $3 their sha256,
    # $4 the release's directory, $5 where to unpack a tar ("" for a file)
    'fail() { rm -rf -- "$1"; exit "$2"; }; '
    'mkdir -p -- "$1" || exit 1; '
    'found=$( { tee -- "$2" || printf x; } | sha ) || fail "$1" 1; '
    'found=${found%% *}; echo "$found"; '
    '[ "$found" = "$3" ] || fail "$1" 65; '
    'if [ -n "$5" ]; then '
    'mkdir -- "$5" && tar -x --no-same-owner -f "$2" -C "$5" && rm -f -- "$2" || fail "$1" 1; '
    "fi; "
    'mv -T -- "$1" "$4" || fail "$1" 66'
)
_NOT_PRESENT, _CORRUPTED, _RENAMED_BY_ANOTHER = 3, 65, 66
INCOMING = ".incoming-"
STALE_INCOMING_MINUTES = 60
"""An incoming directory this old belongs to a staging run that was killed; prune drops it."""


@dataclass(frozen=True, slots=True)
class Artifact:
    """What travels: ``path`` (the file, or the tar of a directory) and its sha256."""

    path: Path
    name: str
    sha256: str
    is_dir: bool
    size: int

    def release_dir(self, releases_dir: str) -> str:
        return posixpath.join(releases_dir, self.sha256)

    def remote_path(self, releases_dir: str) -> str:
        """Where the staged file or directory is on every host."""
        return posixpath.join(releases_dir, self.sha256, self.name)


@dataclass(frozen=True, slots=True)
class StageResult:
    host: str
    path: str
    uploaded: bool  # False: it was already there


def pack(source: Path, workdir: Path) -> Artifact:
    """The artifact for ``source``; a directory is packed into ``workdir`` first."""
    source = source.resolve()
    name = source.name
    if source.is_dir():
        path = workdir / f"{name}.tar"
        _tar_directory(source, path)
        is_dir = True
    elif source.is_file():
        path, is_dir = source, False
    else:
        raise FileNotFoundError(f"no file or directory at {source}")
    return Artifact(path, name, _sha256(path), is_dir, path.stat().st_size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _tar_directory(source: Path, dest: Path) -> None:
    """A tar of ``source`` whose bytes depend only on names, contents and exec bits."""
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in _walk_sorted(source):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(source)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            executable = info.mode & stat.S_IXUSR or info.isdir()
            info.mode = 0o755 if executable else 0o644
            if info.isfile():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def _walk_sorted(root: Path) -> list[Path]:
    out: list[Path] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        out.append(path)
        if entry.is_dir(follow_symlinks=False):
            out.extend(_walk_sorted(path))
    return out


async def stage(
    sessions: Sessions, hosts: Sequence[Destination], artifact: Artifact, releases_dir: str
) -> dict[Destination, StageResult]:
    """``artifact`` on every host (in parallel); ``HostsFailed`` if any host lacks it."""
    work = partial(stage_host, artifact=artifact, releases_dir=releases_dir)
    return await sessions.each("staging", hosts, work)


async def stage_host(conn: Connection, artifact: Artifact, releases_dir: str) -> StageResult:
    final = artifact.release_dir(releases_dir)
    target = artifact.remote_path(releases_dir)
    if await _present(conn, artifact, final, target):
        return StageResult(conn.name, target, uploaded=False)
    incoming = posixpath.join(releases_dir, f"{INCOMING}{artifact.sha256}-{secrets.token_hex(4)}")
    shipped = posixpath.join(incoming, artifact.path.name if artifact.is_dir else artifact.name)
    unpack = posixpath.join(incoming, artifact.name) if artifact.is_dir else ""
    argv = ["sh", "-c", _RECEIVE, "sh", incoming, shipped, artifact.sha256, final, unpack]
    try:
        done = await conn.run_with_file(argv, artifact.path, check=False)
    except HostError:
        await _remove_quietly(conn, incoming)
        raise
    if done.exit_status == _CORRUPTED:
        if done.stderr.strip():  # tee could not write it: the reason is there
            raise CommandFailed(conn.name, ["tee"], 1, done.stderr)
        raise HostError(conn.name, _mismatch(shipped, "arrived corrupted", done, artifact.sha256))
    if done.exit_status == _RENAMED_BY_ANOTHER:
        # Another stager renamed the same release in first; it was verified as well.
        if not await _present(conn, artifact, final, target):
            raise CommandFailed(conn.name, ["mv"], done.exit_status, done.stderr)
    elif done.exit_status != 0:
        raise CommandFailed(conn.name, ["sh"], done.exit_status, done.stderr)
    return StageResult(conn.name, target, uploaded=True)


async def _present(conn: Connection, artifact: Artifact, final: str, target: str) -> bool:
    file = "" if artifact.is_dir else target
    done = await conn.run(["sh", "-c", _PRESENT, "sh", final, file], check=False)
    if done.exit_status == _NOT_PRESENT:
        return False
    if done.exit_status != 0:
        raise CommandFailed(conn.name, ["sh"], done.exit_status, done.stderr)
    if file and _first_word(done.stdout) != artifact.sha256:
        problem = "already staged but changed since"
        raise HostError(conn.name, _mismatch(target, problem, done, artifact.sha256))
    return True


def _first_word(stdout: bytes) -> str:
    return stdout.split(b" ", 1)[0].strip().decode("ascii", "replace")


def _mismatch(path: str, problem: str, done: Completed, sha256: str) -> str:
    found = _first_word(done.stdout)
    return f"{path} {problem}: sha256 {found[:12]}…, expected {sha256[:12]}…"


async def _remove_quietly(conn: Connection, path: str) -> None:
    try:
        await conn.run(["rm", "-rf", "--", path])
    except HostError:
        pass  # the host is failing already; the first error is the one to report


def releases_to_prune(
    releases: Sequence[tuple[str, float]], keep: Collection[str], keep_last: int
) -> list[str]:
    """Which of ``(name, mtime)`` to remove: all but the newest ``keep_last`` and ``keep``.

    Only names that are a sha256 are releases; anything else in the directory is left
    alone.  Ties in mtime are broken by name, so the answer does not depend on listing
    order.  Pure.
    """
    ours = sorted(
        ((mtime, name) for name, mtime in releases if _SHA256.fullmatch(name)), reverse=True
    )
    newest = {name for _, name in ours[:keep_last]}
    return [name for _, name in reversed(ours) if name not in newest and name not in keep]


def _entries(releases_dir: str, *tests: str) -> list[str]:
    """``find`` over the entries directly in ``releases_dir``."""
    return ["find", releases_dir, "-mindepth", "1", "-maxdepth", "1", *tests]


async def prune_host(
    conn: Connection, releases_dir: str, keep: Collection[str], keep_last: int
) -> list[str]:
    """Remove old releases (and stale incoming directories) on one host; returns names."""
    found = await conn.run(
        _entries(releases_dir, "-type", "d", "-printf", "%T@ %f\\n"), check=False
    )
    if found.exit_status != 0:
        if b"No such file" in found.stderr:
            return []  # nothing was ever staged here
        raise CommandFailed(conn.name, ["find"], found.exit_status, found.stderr)
    releases = []
    for line in found.stdout.decode("utf-8", "replace").splitlines():
        mtime, _, name = line.partition(" ")
        releases.append((name, float(mtime)))
    doomed = releases_to_prune(releases, keep, keep_last)
    if doomed:
        await conn.run(["rm", "-rf", "--", *(posixpath.join(releases_dir, n) for n in doomed)])
    stale = ("-name", f"{INCOMING}*", "-mmin", f"+{STALE_INCOMING_MINUTES}")
    await conn.run(_entries(releases_dir, *stale, "-exec", "rm", "-rf", "--", "{}", "+"))
    return doomed


async def prune(
    sessions: Sessions,
    hosts: Sequence[Destination],
    releases_dir: str,
    keep: Collection[str],
    keep_last: int,
) -> dict[Destination, list[str]]:
    """``prune_host`` on every host in parallel; ``HostsFailed`` names the hosts that failed."""
    work = partial(prune_host, releases_dir=releases_dir, keep=keep, keep_last=keep_last)
    return await sessions.each("pruning", hosts, work)
