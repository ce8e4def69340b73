"""The test hosts themselves: what later fleet tests rely on, and that nothing is left."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.netns import (
    CLAIMS,
    TestHosts,
    _remove_run,
    leftovers,
    needs_namespaces,
    python_under_root,
)

pytestmark = needs_namespaces


def ssh(hosts: TestHosts, index: int, command: str) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-i", str(hosts.client_key), "-o", f"UserKnownHostsFile={hosts.known_hosts}"]
    argv += ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    return subprocess.run(
        [*argv, f"root@{hosts[index].address}", command],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_every_host_sees_its_own_directory_at_the_same_path(fleet_hosts: TestHosts) -> None:
    for host in fleet_hosts:
        (host.root / "name").write_text(host.name)
    for i, host in enumerate(fleet_hosts):
        done = ssh(fleet_hosts, i, "cat /srv/web/name; echo; ls -A /root")
        assert done.returncode == 0, done.stderr
        # and /root is a home of its own: empty but for the tests' Python if it is there
        assert done.stdout.split() == [host.name, *python_under_root()]


def test_openssh_checks_host_keys_against_the_written_known_hosts(
    fleet_hosts: TestHosts,
) -> None:
    done = ssh(fleet_hosts, 0, "true")
    assert done.returncode == 0, done.stderr
    fleet_hosts.known_hosts.write_text(
        fleet_hosts.known_hosts.read_text().replace(fleet_hosts[0].address, "192.0.2.1", 1)
    )
    try:
        assert ssh(fleet_hosts, 0, "true").returncode == 255
    finally:
        entries = [f"{h.address} {h.public_key}\n" for h in fleet_hosts]
        fleet_hosts.known_hosts.write_text("".join(entries))


def test_a_host_reaches_the_root_namespace_and_the_others(fleet_hosts: TestHosts) -> None:
    with socket.create_server((fleet_hosts.gateway, 0)) as listener:
        port = listener.getsockname()[1]
        for address, to in ((fleet_hosts.gateway, port), (fleet_hosts[2].address, 22)):
            connect = 'exec 3<>"/dev/tcp/$1/$2"'  # bash opens a TCP connection
            done = fleet_hosts[0].run("bash", "-c", connect, "bash", address, str(to), check=False)
            assert done.returncode == 0, done.stderr


def test_nothing_is_left_when_the_test_body_fails() -> None:
    with pytest.raises(ZeroDivisionError), TestHosts(2) as hosts:
        token, subnet, workdir = hosts.token, hosts.subnet, hosts.workdir
        assert len(leftovers(token)) == 5  # 2 namespaces, 2 veths, the bridge
        1 / 0  # noqa: B018
    assert leftovers(token) == []
    assert not (CLAIMS / subnet).exists()
    assert not Path(workdir).exists()


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from tests.support.netns import TestHosts
hosts = TestHosts(1).__enter__()
print(hosts.token, hosts.subnet, hosts.workdir, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no cleanup: what a killed test run leaves
"""


def test_what_a_killed_run_left_is_removed_by_the_next_run() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(root)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -9, done.stderr
    token, subnet, workdir = done.stdout.split()
    try:
        assert leftovers(token)  # its namespace, veth and bridge are still there
        assert (CLAIMS / subnet).exists()
        with TestHosts(1):
            assert leftovers(token) == []
        assert not (CLAIMS / subnet).exists()
        assert not Path(workdir).exists()
    finally:
        _remove_run(token)
        (CLAIMS / subnet).unlink(missing_ok=True)
