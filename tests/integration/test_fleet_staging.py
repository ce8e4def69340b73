"""Staging release artifacts on real hosts (network namespaces with sshd), and pruning."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.netns import Host, TestHosts, needs_namespaces

from nonstop.fleet.errors import HostsFailed
from nonstop.fleet.ssh import Destination, Sessions, SshSettings
from nonstop.fleet.staging import (
    INCOMING,
    Artifact,
    StageResult,
    pack,
    prune,
    stage,
)

pytestmark = needs_namespaces


@pytest.fixture
def releases(fleet_hosts: TestHosts) -> Iterator[str]:
    """A releases_dir of this test's own on every host (the hosts are shared)."""
    name = f"releases-{secrets.token_hex(4)}"
    yield f"/srv/web/{name}"


def settings(hosts: TestHosts) -> SshSettings:
    return SshSettings(str(hosts.known_hosts), str(hosts.client_key), 3.0, 30.0)


def destinations(hosts: TestHosts) -> list[Destination]:
    return [Destination.parse(h.destination) for h in hosts]


def on_host(host: Host, remote: str) -> Path:
    """Where the host's ``/srv/web/...`` path is on this machine."""
    return host.root / Path(remote).relative_to("/srv/web")


def staged(hosts: TestHosts, artifact: Artifact, releases: str) -> list[StageResult]:
    async def main() -> list[StageResult]:
        async with Sessions(settings(hosts)) as sessions:
            done = await stage(sessions, destinations(hosts), artifact, releases)
            return list(done.values())

    return asyncio.run(main())


def staged_jar(hosts: TestHosts, releases: str, tmp_path: Path) -> Artifact:
    jar = tmp_path / "app.jar"
    jar.write_bytes(os.urandom(50_000))
    artifact = pack(jar, tmp_path)
    staged(hosts, artifact, releases)
    return artifact


def test_a_file_lands_on_every_host_under_its_sha256(
    fleet_hosts: TestHosts, releases: str, tmp_path: Path
) -> None:
    jar = tmp_path / "app-1.2.jar"
    jar.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    artifact = pack(jar, tmp_path)
    assert artifact.sha256 == hashlib.sha256(jar.read_bytes()).hexdigest()

    results = staged(fleet_hosts, artifact, releases)

    assert [r.uploaded for r in results] == [True, True, True]
    remote = f"{releases}/{artifact.sha256}/app-1.2.jar"
    assert {r.path for r in results} == {remote}
    for host in fleet_hosts:
        assert on_host(host, remote).read_bytes() == jar.read_bytes()
        assert os.listdir(on_host(host, releases)) == [artifact.sha256]  # no incoming left


def make_tree(root: Path) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "lib" / "app.jar").write_bytes(b"jar bytes" * 1000)
    (root / "bin" / "start").write_text("#!/bin/sh\nexec java -jar lib/app.jar\n")
    (root / "bin" / "start").chmod(0o755)
    (root / "config with space.properties").write_text("port=8080\n")
    return root


def test_a_directory_lands_unpacked_with_its_exec_bits(
    fleet_hosts: TestHosts, releases: str, tmp_path: Path
) -> None:
    tree = make_tree(tmp_path / "site")
    artifact = pack(tree, tmp_path)

    staged(fleet_hosts, artifact, releases)

    for host in fleet_hosts:
        unpacked = on_host(host, f"{releases}/{artifact.sha256}/site")
        assert (unpacked / "lib" / "app.jar").read_bytes() == b"jar bytes" * 1000
        assert (unpacked / "config with space.properties").read_text() == "port=8080\n"
        assert os.access(unpacked / "bin" / "start", os.X_OK)
        assert not os.access(unpacked / "config with space.properties", os.X_OK)


def test_a_directory_packs_to_the_same_sha256_whatever_its_mtimes(tmp_path: Path) -> None:
    first = pack(make_tree(tmp_path / "a" / "site"), tmp_path / "a")
    second_tree = make_tree(tmp_path / "b" / "site")
    os.utime(second_tree / "lib" / "app.jar", (1_000_000, 1_000_000))
    second = pack(second_tree, tmp_path / "b")
    assert first.sha256 == second.sha256
    (second_tree / "lib" / "app.jar").write_bytes(b"other")
    assert pack(second_tree, tmp_path / "b").sha256 != first.sha256


def test_an_artifact_already_on_a_host_is_not_sent_again(
    fleet_hosts: TestHosts, releases: str, tmp_path: Path
) -> None:
    artifact = staged_jar(fleet_hosts, releases, tmp_path)
    marker = on_host(fleet_hosts[1], f"{releases}/{artifact.sha256}/not-from-upload")
    marker.write_text("an upload would have replaced the whole directory")

    again = staged(fleet_hosts, artifact, releases)

    assert [r.uploaded for r in again] == [False, False, False]
    assert marker.exists()


def test_a_staged_file_that_changed_since_is_reported_naming_its_host(
    fleet_hosts: TestHosts, releases: str, tmp_path: Path
) -> None:
    artifact = staged_jar(fleet_hosts, releases, tmp_path)
    on_host(fleet_hosts[2], artifact.remote_path(releases)).write_bytes(b"tampered")

    with pytest.raises(HostsFailed) as caught:
        staged(fleet_hosts, artifact, releases)

    assert list(caught.value.failures) == [fleet_hosts[2].destination]
    assert "changed" in str(caught.value)


@pytest.fixture
def small_disk(fleet_hosts: TestHosts, releases: str) -> Iterator[Host]:
    """The second host's releases_dir is a 1 MB tmpfs (in that host's mount namespace)."""
    host = fleet_hosts[1]
    host.run("mkdir", "-p", releases)
    host.run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", releases)
    try:
        yield host
    finally:
        host.run("umount", releases)


def test_a_full_disk_on_one_host_fails_staging_naming_that_host_and_switches_nothing(
    fleet_hosts: TestHosts, releases: str, small_disk: Host, tmp_path: Path
) -> None:
    jar = tmp_path / "app.jar"
    jar.write_bytes(os.urandom(3 * 1024 * 1024))
    artifact = pack(jar, tmp_path)

    with pytest.raises(HostsFailed) as caught:
        staged(fleet_hosts, artifact, releases)

    assert list(caught.value.failures) == [small_disk.destination]
    assert "No space left on device" in str(caught.value)
    assert small_disk.run("ls", "-A", releases).stdout == ""  # its incoming dir is gone
    for host in (fleet_hosts[0], fleet_hosts[2]):
        assert on_host(host, artifact.remote_path(releases)).read_bytes() == jar.read_bytes()


def test_an_unreachable_host_fails_staging_naming_it(
    fleet_hosts: TestHosts, releases: str, tmp_path: Path
) -> None:
    jar = tmp_path / "app.jar"
    jar.write_bytes(b"x" * 1000)
    artifact = pack(jar, tmp_path)
    fleet_hosts[0].link_down()
    try:
        with pytest.raises(HostsFailed) as caught:
            staged(fleet_hosts, artifact, releases)
    finally:
        fleet_hosts[0].link_up()
    assert list(caught.value.failures) == [fleet_hosts[0].destination]
    assert "unreachable" in str(caught.value) or "timed out" in str(caught.value)


def test_pruning_keeps_the_newest_and_the_named_releases(
    fleet_hosts: TestHosts, releases: str, tmp_path: Path
) -> None:
    shas = []
    for i in range(5):
        jar = tmp_path / "app.jar"
        jar.write_bytes(f"release {i}".encode())
        artifact = pack(jar, tmp_path)
        staged(fleet_hosts, artifact, releases)
        shas.append(artifact.sha256)
        for host in fleet_hosts:  # staged one after another: release i is i seconds newer
            os.utime(on_host(host, f"{releases}/{artifact.sha256}"), (1000 + i, 1000 + i))
    stale = on_host(fleet_hosts[0], f"{releases}/{INCOMING}{shas[0]}-dead")
    stale.mkdir()
    os.utime(stale, (1000, 1000))
    (on_host(fleet_hosts[0], releases) / "notes").mkdir()  # not a release: left alone

    async def main() -> dict[Destination, list[str]]:
        async with Sessions(settings(fleet_hosts)) as sessions:
            keep = {shas[0], shas[1]}  # say, the live and the previous release
            return await prune(sessions, destinations(fleet_hosts), releases, keep, 2)

    removed = asyncio.run(main())

    assert list(removed.values()) == [[shas[2]]] * 3
    for host in fleet_hosts:
        left = set(os.listdir(on_host(host, releases)))
        assert {shas[0], shas[1], shas[3], shas[4]} <= left
        assert shas[2] not in left
    assert not stale.exists()
    assert (on_host(fleet_hosts[0], releases) / "notes").exists()
