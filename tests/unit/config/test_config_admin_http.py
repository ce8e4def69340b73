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


# -- nginx.conf: the same settings as ``env NONSTOP_ADMIN_*=VALUE;`` lines -----------------

NGINX = """
{env}
events {{ }}
http {{
    server {{ listen 127.0.0.1:8080; location / {{ proxy_pass http://127.0.0.1:9; }} }}
}}
"""


def nginx_admin(load_text: Load, *lines: str) -> object:
    return load_text(NGINX.format(env="\n".join(lines))).admin


def test_nginx_conf_env_lines_set_the_admin_listener_and_its_token_file(
    load_text: Load, write: Write, tmp_path: Path
) -> None:
    write("admin.token", "s3cr3t-t0ken-of-enough-length\n")
    spec = nginx_admin(
        load_text,
        "env NONSTOP_ADMIN_LISTEN=0.0.0.0:9180;",
        "env NONSTOP_ADMIN_TOKEN_FILE=admin.token;",
    )
    assert spec.listen == "0.0.0.0:9180"  # type: ignore[attr-defined]
    assert spec.token == "s3cr3t-t0ken-of-enough-length"  # type: ignore[attr-defined]
    assert spec.socket == f"{tmp_path}/.nonstop/admin.sock"  # type: ignore[attr-defined]


def test_nginx_conf_without_env_lines_has_only_the_admin_socket(load_text: Load) -> None:
    spec = nginx_admin(load_text)
    assert spec.listen is None and spec.token is None  # type: ignore[attr-defined]


def test_other_env_lines_are_a_notice_as_nginx_passes_them_to_workers(load_text: Load) -> None:
    config = load_text(NGINX.format(env="env TZ;\nenv LANG=C;"))
    assert config.admin.listen is None
    assert [n for n in config.notices if '"env"' in n] == [
        f'directive "env" has no effect in nonstop ({config.path}:2)'
    ]


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        (["env NONSTOP_ADMIN_LISTEN=0.0.0.0:9180;"], 2, "not a loopback address"),
        (["env NONSTOP_ADMIN_LISTEN=9180;"], 2, "is not HOST:PORT"),
        (["env NONSTOP_ADMIN_LISTEN;"], 2, "needs a value: env NONSTOP_ADMIN_LISTEN=VALUE;"),
        (["env NONSTOP_ADMIN_LISTEN=127.0.0.1:1;", "env NONSTOP_ADMIN_LISTEN=127.0.0.1:2;"],
         3, '"env NONSTOP_ADMIN_LISTEN" is duplicate'),
        (["env NONSTOP_ADMIN_LISTN=127.0.0.1:1;"], 2, 'unknown nonstop setting "NONSTOP_ADMIN_L'),
        (["env NONSTOP_ADMIN_LISTEN=127.0.0.1:1;", "env NONSTOP_ADMIN_TOKEN_FILE=missing;"],
         3, "cannot read"),
        (["env NONSTOP_ADMIN_TOKEN=short;"], 2, "at least 16 characters"),
    ],
)  # fmt: skip
def test_a_bad_nonstop_env_line_names_its_file_and_line(
    load_text: Load, lines: list[str], line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        nginx_admin(load_text, *lines)
    assert message in str(refused.value)
    assert refused.value.where.endswith(f"nginx.conf:{line}")
