"""``[admin] listen`` and its token: who may reach the HTTP admin listener."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.config.conftest import Load, Write

from nonstop.errors import ConfigError

SERVER = """
[upstreams.api]
servers = [ { address = "127.0.0.1:9" } ]
[[servers]]
listen = ["127.0.0.1:8080"]
locations = [ { path = "/", pass = "api" } ]
"""


def admin(load_text: Load, table: str) -> object:
    return load_text(f"[admin]\n{table}\n{SERVER}", name="nonstop.toml").admin


def test_a_loopback_listener_needs_no_token(load_text: Load) -> None:
    spec = admin(load_text, 'listen = "127.0.0.1:9180"')
    assert spec.listen == "127.0.0.1:9180" and spec.token is None  # type: ignore[attr-defined]


def test_a_public_address_without_a_token_is_refused_naming_the_key(load_text: Load) -> None:
    with pytest.raises(ConfigError) as refused:
        admin(load_text, 'listen = "0.0.0.0:9180"')
    assert "admin.listen" in str(refused.value)
    assert "not a loopback address" in str(refused.value) and "token_file" in str(refused.value)


def test_the_token_comes_from_its_file_and_never_shows_in_the_model_repr(
    load_text: Load, write: Write
) -> None:
    write("secret", "s3cr3t-t0ken-of-enough-length\n")
    spec = admin(load_text, 'listen = "0.0.0.0:9180"\ntoken_file = "secret"')
    assert spec.token == "s3cr3t-t0ken-of-enough-length"  # type: ignore[attr-defined]
    assert "s3cr3t" not in repr(spec)


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ('listen = "127.0.0.1"', "admin.listen", "is not HOST:PORT"),
        ('token = "short"', "admin.token", "at least 16 characters"),
        ('token = "0123456789abcdef"\ntoken_file = "x"', "admin.token_file", "not both"),
        ('token_file = "missing"', "admin.token_file", "cannot read"),
    ],
)
def test_a_bad_admin_table_names_the_key(
    load_text: Load, table: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        admin(load_text, table)
    assert key in str(refused.value) and message in str(refused.value)


def test_a_unix_listener_path_resolves_against_the_prefix(load_text: Load, tmp_path: Path) -> None:
    spec = admin(load_text, 'listen = "unix:run/admin-http.sock"')
    assert spec.listen == f"unix:{tmp_path}/run/admin-http.sock"  # type: ignore[attr-defined]
