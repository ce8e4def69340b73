"""The SSH layer against real OpenSSH sshd, each host in its own network namespace."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.netns import Host, TestHosts, needs_namespaces

from nonstop.fleet.errors import (
    AdminUnreachable,
    CommandFailed,
    CommandTimedOut,
    HostKeyRejected,
    HostUnreachable,
    LoginRefused,
)
from nonstop.fleet.ssh import Destination, Sessions, SshSettings, connect

pytestmark = needs_namespaces

HOSTILE = [
    "two words",
    "'single'",
    '"double"',
    "$(touch /srv/web/pwned)",
    "`touch /srv/web/pwned`",
    "; touch /srv/web/pwned",
    "&& touch /srv/web/pwned",
    "| tee /srv/web/pwned",
    "> /srv/web/pwned",
    "$HOME ${PATH} $$",
    "*",
    "back\\slash",
    "new\nline",
    "-n",
    "",
]


def settings(hosts: TestHosts, **changes: object) -> SshSettings:
    values: dict[str, object] = {
        "known_hosts": str(hosts.known_hosts),
        "identity": str(hosts.client_key),
        "connect_timeout": 3.0,
        "command_timeout": 10.0,
    }
    values.update(changes)
    return SshSettings(**values)  # type: ignore[arg-type]


def dest(host: Host) -> Destination:
    return Destination.parse(host.destination)


def test_a_command_runs_on_the_host_it_was_sent_to(fleet_hosts: TestHosts) -> None:
    async def main() -> list[bytes]:
        async with Sessions(settings(fleet_hosts)) as sessions:
            out = []
            for host in fleet_hosts:
                conn = await sessions.get(dest(host))
                out.append((await conn.run(["cat", "/srv/web/who"])).stdout)
            return out

    for host in fleet_hosts:
        (host.root / "who").write_text(host.name)
    assert asyncio.run(main()) == [h.name.encode() for h in fleet_hosts]


def test_hostile_arguments_arrive_verbatim_and_run_nothing(fleet_hosts: TestHosts) -> None:
    async def main() -> bytes:
        async with Sessions(settings(fleet_hosts)) as sessions:
            conn = await sessions.get(dest(fleet_hosts[0]))
            return (await conn.run(["printf", "%s\\0", *HOSTILE])).stdout

    out = asyncio.run(main())
    assert out.split(b"\0")[:-1] == [arg.encode() for arg in HOSTILE]
    assert not (fleet_hosts[0].root / "pwned").exists()


def test_a_command_given_as_one_string_is_refused_before_it_is_sent(
    fleet_hosts: TestHosts,
) -> None:
    async def main() -> None:
        async with Sessions(settings(fleet_hosts)) as sessions:
            conn = await sessions.get(dest(fleet_hosts[0]))
            await conn.run("touch /srv/web/from-a-string")  # type: ignore[arg-type]

    with pytest.raises(TypeError):
        asyncio.run(main())
    assert not (fleet_hosts[0].root / "from-a-string").exists()


def test_a_failed_command_names_host_exit_status_and_stderr(fleet_hosts: TestHosts) -> None:
    async def main() -> None:
        async with Sessions(settings(fleet_hosts)) as sessions:
            conn = await sessions.get(dest(fleet_hosts[1]))
            await conn.run(["sh", "-c", "echo first >&2; echo disk on fire >&2; exit 7"])

    with pytest.raises(CommandFailed) as caught:
        asyncio.run(main())
    assert caught.value.exit_status == 7
    assert caught.value.host == fleet_hosts[1].destination
    assert caught.value.stderr_tail.endswith("disk on fire")
    assert fleet_hosts[1].destination in str(caught.value)


def test_a_command_past_its_timeout_is_reported_and_killed_on_the_host(
    fleet_hosts: TestHosts,
) -> None:
    pid_file = fleet_hosts[0].root / "sleeper.pid"

    async def main() -> float:
        async with Sessions(settings(fleet_hosts)) as sessions:
            conn = await sessions.get(dest(fleet_hosts[0]))
            started = time.monotonic()
            with pytest.raises(CommandTimedOut) as caught:
                await conn.run(
                    ["sh", "-c", "echo $$ > /srv/web/sleeper.pid; exec sleep 60"], timeout=1
                )
            assert caught.value.host == fleet_hosts[0].destination
            return time.monotonic() - started

    elapsed = asyncio.run(main())
    assert 1.0 <= elapsed < 5.0
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
        assert time.monotonic() < deadline, "the timed-out command still runs on the host"
        time.sleep(0.02)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return "Z"


def test_one_connection_per_host_serves_every_step(fleet_hosts: TestHosts) -> None:
    async def main() -> set[bytes]:
        async with Sessions(settings(fleet_hosts)) as sessions:
            seen = set()
            for _ in range(3):
                conn = await sessions.get(dest(fleet_hosts[2]))
                seen.add((await conn.run(["printenv", "SSH_CONNECTION"])).stdout)
            return seen

    assert len(asyncio.run(main())) == 1  # same client address and port every time


def test_a_host_key_other_than_known_hosts_says_is_refused(
    fleet_hosts: TestHosts, tmp_path: Path
) -> None:
    first, second = fleet_hosts[0], fleet_hosts[1]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{first.address} {second.public_key}\n")  # another host's key

    async def main() -> None:
        await connect(dest(first), settings(fleet_hosts, known_hosts=str(wrong)))

    with pytest.raises(HostKeyRejected) as caught:
        asyncio.run(main())
    assert first.destination in str(caught.value)
    assert "known_hosts" in str(caught.value)


def test_a_host_missing_from_known_hosts_is_refused(fleet_hosts: TestHosts, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyRejected):
        asyncio.run(connect(dest(fleet_hosts[0]), settings(fleet_hosts, known_hosts=str(empty))))


def test_a_key_the_host_does_not_authorize_is_refused(
    fleet_hosts: TestHosts, tmp_path: Path
) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(LoginRefused) as caught:
        asyncio.run(connect(dest(fleet_hosts[0]), settings(fleet_hosts, identity=str(stranger))))
    assert fleet_hosts[0].destination in str(caught.value)


@pytest.fixture
def cut_host(fleet_hosts: TestHosts) -> Iterator[Host]:
    """The third host; its link is put back up after the test, whatever happened."""
    host = fleet_hosts[2]
    try:
        yield host
    finally:
        host.link_up()


def test_a_host_whose_link_is_down_is_unreachable_within_the_connect_timeout(
    fleet_hosts: TestHosts, cut_host: Host
) -> None:
    cut_host.link_down()
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        asyncio.run(connect(dest(cut_host), settings(fleet_hosts, connect_timeout=2.0)))
    assert time.monotonic() - started < 2.0 + 1.0
    assert cut_host.destination in str(caught.value)


def test_a_host_lost_mid_command_is_reported_unreachable(
    fleet_hosts: TestHosts, cut_host: Host
) -> None:
    async def main() -> float:
        async with Sessions(settings(fleet_hosts, connect_timeout=2.0)) as sessions:
            conn = await sessions.get(dest(cut_host))
            started_file = cut_host.root / "started"
            started_file.unlink(missing_ok=True)
            script = "touch /srv/web/started; exec sleep 30"
            running = asyncio.ensure_future(conn.run(["sh", "-c", script]))
            deadline = time.monotonic() + 5
            while not started_file.exists():  # the command runs; now the link goes down
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            cut_host.link_down()
            started = time.monotonic()
            with pytest.raises(HostUnreachable) as caught:
                await running
            assert cut_host.destination in str(caught.value)
            return time.monotonic() - started

    assert asyncio.run(main()) < 2.0 + 2.0  # keepalives: 3 missed at a third of 2 s


def test_a_daemon_is_asked_at_its_admin_socket_over_the_hosts_connection(
    fleet_hosts: TestHosts,
) -> None:
    """The socket is the host's ``/srv/web/...``: its sshd connects to it, not this process."""
    host = fleet_hosts[0]
    answering, silent = host.root / "answers.sock", host.root / "closes.sock"
    requests: list[object] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(json.loads(await reader.readline()))
        writer.write(b'{"event": "draining"}\n{"ok": true, "in_flight": 0}\n')
        await writer.drain()
        writer.close()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    async def main() -> tuple[dict[str, object], list[object], list[str]]:
        servers = [
            await asyncio.start_unix_server(serve, str(answering)),
            await asyncio.start_unix_server(hang_up, str(silent)),
        ]
        try:
            async with Sessions(settings(fleet_hosts)) as sessions:
                conn = await sessions.get(dest(host))
                events: list[object] = []
                request = {"cmd": "drain", "address": HOSTILE[3]}
                answer = await conn.admin("/srv/web/answers.sock", request, on_event=events.append)
                errors = []
                for path in ("/srv/web/closes.sock", "/srv/web/nobody-listens.sock"):
                    with pytest.raises(AdminUnreachable) as caught:
                        await conn.admin(path, {"cmd": "status"})
                    errors.append(str(caught.value))
                return answer, events, errors
        finally:
            for server in servers:
                server.close()
            answering.unlink(missing_ok=True)
            silent.unlink(missing_ok=True)

    answer, events, errors = asyncio.run(main())
    assert requests == [{"cmd": "drain", "address": HOSTILE[3]}]
    assert (answer, events) == ({"ok": True, "in_flight": 0}, [{"event": "draining"}])
    assert errors[0] == (
        f"{host.destination}: the daemon at /srv/web/closes.sock closed without answering `status`"
    )
    assert errors[1].startswith(
        f"{host.destination}: cannot reach the nonstop daemon at /srv/web/nobody-listens.sock"
    )
