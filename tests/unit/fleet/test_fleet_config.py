"""The [fleet] table: what it becomes, and errors that name the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nonstop.errors import ConfigError
from nonstop.fleet.batches import Percent
from nonstop.fleet.config import load_fleet, read_fleet
from nonstop.fleet.ssh import Destination

PRODUCT_EXAMPLE = """\
[fleet]
hosts = ["deploy@app1:22", "deploy@app2:22"]   # SSH destinations, in deploy order
front = "deploy@lb1:22"                         # optional: the front nonstop to drain hosts on
front_upstream = "app"                          # its upstream whose servers are the hosts
remote_config = "/srv/web/nonstop.toml"         # the nonstop config on every host
releases_dir = "/srv/web/releases"              # where shipped artifacts land on every host
batches = [1, "50%"]                            # a canary host first, then half at a time
identity = "~/.ssh/id_ed25519"                  # optional; else the agent and ~/.ssh/config
known_hosts = "~/.ssh/known_hosts"              # host keys are always checked
"""

MINIMAL = """\
[fleet]
hosts = ["deploy@app1:22"]
remote_config = "/srv/web/nonstop.toml"
releases_dir = "/srv/web/releases"
"""


def write(tmp_path: Path, text: str, name: str = "fleet.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_example_of_the_product_contract_loads(tmp_path: Path) -> None:
    spec = load_fleet(write(tmp_path, PRODUCT_EXAMPLE))
    assert spec.hosts == (Destination("app1", 22, "deploy"), Destination("app2", 22, "deploy"))
    assert spec.front == Destination("lb1", 22, "deploy")
    assert spec.front_upstream == "app"
    assert spec.remote_config == "/srv/web/nonstop.toml"
    assert spec.releases_dir == "/srv/web/releases"
    assert spec.batches == (1, Percent(50))
    assert spec.identity == os.path.expanduser("~/.ssh/id_ed25519")
    assert spec.known_hosts == os.path.expanduser("~/.ssh/known_hosts")
    assert spec.batch_sizes() == [1, 1]


def test_defaults_one_host_at_a_time_and_keep_five_releases(tmp_path: Path) -> None:
    spec = load_fleet(write(tmp_path, MINIMAL))
    assert spec.batches == (1,)
    assert spec.keep_releases == 5
    assert spec.connect_timeout == 10.0
    assert spec.command_timeout == 300.0
    assert spec.hold_timeout == 600.0
    assert spec.identity is None
    assert spec.front is None


def test_timeouts_and_relative_paths(tmp_path: Path) -> None:
    text = MINIMAL + 'connect_timeout = "3s"\ncommand_timeout = "2m"\nkeep_releases = 3\n'
    text += 'known_hosts = "keys/known_hosts"\nidentity = "keys/id"\nhold_timeout = "15m"\n'
    spec = load_fleet(write(tmp_path, text))
    assert (spec.connect_timeout, spec.command_timeout, spec.keep_releases) == (3.0, 120.0, 3)
    assert spec.hold_timeout == 900.0
    assert spec.known_hosts == str(tmp_path / "keys" / "known_hosts")
    assert spec.ssh.identity == str(tmp_path / "keys" / "id")
    assert spec.ssh.connect_timeout == 3.0


def test_a_fleet_table_inside_nonstop_toml_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, '[upstreams.app]\nservers = ["127.0.0.1:8000"]\n\n' + MINIMAL, "n.toml")
    spec = read_fleet(path)
    assert spec is not None and spec.hosts == (Destination("app1", 22, "deploy"),)


def test_a_file_without_a_fleet_table_has_no_fleet(tmp_path: Path) -> None:
    path = write(tmp_path, '[upstreams.app]\nservers = ["127.0.0.1:8000"]\n', "n.toml")
    assert read_fleet(path) is None
    with pytest.raises(ConfigError, match="no \\[fleet\\] table"):
        load_fleet(path)


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ("hosts = []\n", "fleet.hosts", "at least one host"),
        ('hosts = ["app1:99999"]\n', "fleet.hosts[0]", "port"),
        ('hosts = ["a@b:22", "c@b:22"]\n', "fleet.hosts[1]", "listed twice"),
        ('hosts = ["a@b:22", 3]\n', "fleet.hosts[1]", "expected a string"),
        ('remote_config = "srv/nonstop.toml"\n', "fleet.remote_config", "absolute"),
        ('releases_dir = "~/releases"\n', "fleet.releases_dir", "absolute"),
        ("batches = []\n", "fleet.batches", "must not be empty"),
        ("batches = [0]\n", "fleet.batches[0]", "at least 1"),
        ('batches = [1, "0%"]\n', "fleet.batches[1]", "between 1% and 100%"),
        ('batches = [1, "150%"]\n', "fleet.batches[1]", "between 1% and 100%"),
        ('batches = [1, "half"]\n', "fleet.batches[1]", "percentage"),
        ("batches = [1.5]\n", "fleet.batches[0]", "host count"),
        ('front = "lb1:22"\n', "fleet.front_upstream", "required when front is set"),
        ('front_upstream = "app"\n', "fleet.front_upstream", "needs front"),
        ('connect_timeout = "0s"\n', "fleet.connect_timeout", "more than 0"),
        ('command_timeout = "soon"\n', "fleet.command_timeout", "invalid duration"),
        ("keep_releases = 0\n", "fleet.keep_releases", "at least 1"),
        ('hold_timeout = "0s"\n', "fleet.hold_timeout", "more than 0"),
        ('hots = ["a"]\n', "fleet.hots", "unknown key"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: str, where: str, message: str) -> None:
    key = change.split(" =", 1)[0]
    lines = [line for line in MINIMAL.splitlines(keepends=True) if not line.startswith(key + " ")]
    path = write(tmp_path, "".join(lines) + change)
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert caught.value.where == f"{path}: {where}"
    assert message in caught.value.message


def test_a_missing_required_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[fleet]\nhosts = ["a@b:22"]\nremote_config = "/x.toml"\n')
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert caught.value.where == f"{path}: fleet.releases_dir"
