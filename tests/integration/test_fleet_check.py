"""``nonstop check`` validates a fleet.toml, or the [fleet] table of a nonstop.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FLEET = """\
[fleet]
hosts = ["deploy@app1:22", "deploy@app2:22", "deploy@app3:22"]
front = "deploy@lb1:22"
front_upstream = "app"
remote_config = "/srv/web/nonstop.toml"
releases_dir = "/srv/web/releases"
batches = [1, "50%"]
"""

SITE = """\
[upstreams.app]
servers = ["127.0.0.1:8080"]

[[servers]]
listen = ["127.0.0.1:8000"]
locations = [ { path = "/", pass = "app" } ]

"""


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nonstop", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_fleet_toml_checks_and_shows_its_batches(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "fleet: 3 hosts in batches of 1, 1, 1" in result.stderr
    assert f"configuration file {path} test is successful" in result.stderr


def test_a_fleet_error_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET.replace('"50%"', '"half"'))
    result = check(path)
    assert result.returncode == 2
    assert f"{path}: fleet.batches[1]:" in result.stderr
    assert "test failed" in result.stderr


def test_a_fleet_table_in_nonstop_toml_is_checked_with_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "nonstop.toml"
    path.write_text(SITE + FLEET)
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "fleet: 3 hosts" in result.stderr
    assert "syntax is ok" in result.stderr

    path.write_text(SITE.replace('"app" }', '"nowhere" }') + FLEET)
    assert check(path).returncode == 2  # the site part is still checked
