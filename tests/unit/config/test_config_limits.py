"""satisfy, auth_basic, limit_req and limit_conn from nginx.conf: values, inheritance, errors
(the checks nginx's own tests make of these directives: limit_req*.t, limit_conn*.t,
auth_basic.t)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nonstop.config import Config
from nonstop.config.limits import parse_htpasswd
from nonstop.config.model import LimitReq
from nonstop.errors import ConfigError

Load = Callable[..., Config]


def error(loader: Load, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loader(text)
    return info.value


ZONES = (
    "limit_req_zone $binary_remote_addr zone=one:1m rate=2r/s;\n"
    "limit_req_zone $http_x_key zone=slow:64k rate=30r/m;\n"
    "limit_conn_zone $binary_remote_addr zone=addr:32k;\n"
)


def test_zones_keep_nginx_rates_in_milli_requests_per_second(http: Load) -> None:
    cfg = http(ZONES + "server { return 204; }")
    one, slow, addr = cfg.zones
    assert (one.name, one.rate, one.size, one.key.raw) == (
        "one",
        2000,
        1 << 20,
        "$binary_remote_addr",
    )
    assert slow.rate == 500  # 30r/m: 30 * 1000 / 60
    assert (addr.name, addr.rate, addr.size) == ("addr", 0, 32768)


def test_limit_req_lists_are_inherited_only_by_a_level_with_none(http: Load) -> None:
    cfg = http(
        ZONES
        + "limit_req zone=one burst=5;\n"
        + "limit_req_status 429;\n"
        + "server {\n"
        + "  location / { return 204; }\n"
        + "  location /own { limit_req zone=slow nodelay; limit_req_log_level warn; return 204; }\n"
        + "  location /delay {\n"
        + "    limit_req zone=one burst=4 delay=2; limit_req_dry_run on; return 204;\n"
        + "  }\n"
        + "}"
    )
    inherited, own, delayed = cfg.servers[0].locations
    assert inherited.limits.reqs == (LimitReq("one", 5000, 0),)
    assert inherited.limits.req_status == 429 and inherited.limits.req_log_level == "error"
    [nodelay] = own.limits.reqs
    assert (nodelay.zone, nodelay.burst) == ("slow", 0) and nodelay.delay >= 2**62
    assert own.limits.req_log_level == "warn" and own.limits.req_status == 429
    assert delayed.limits.reqs == (LimitReq("one", 4000, 2000),) and delayed.limits.req_dry_run


def test_limit_conn_and_satisfy_inherit_from_the_innermost_level(http: Load) -> None:
    cfg = http(
        ZONES
        + "satisfy any;\n"
        + "server {\n"
        + "  limit_conn addr 2; limit_conn_status 429; limit_conn_dry_run on;\n"
        + "  location / { return 204; }\n"
        + "  location /one {\n"
        + "    satisfy all; limit_conn addr 1; limit_conn_log_level info; return 204;\n"
        + "  }\n"
        + "}"
    )
    server = cfg.servers[0]
    inherited, own = server.locations
    assert server.limits.satisfy_any and inherited.limits.satisfy_any
    assert inherited.limits.conns == (("addr", 2),) and inherited.limits.conn_dry_run
    assert not own.limits.satisfy_any and own.limits.conns == (("addr", 1),)
    assert own.limits.conn_status == 429 and own.limits.conn_log_level == "info"


def test_auth_basic_reads_the_user_file_at_load_relative_to_the_config(
    http: Load, tmp_path: Path
) -> None:
    (tmp_path / "users").write_text("# team\nann:{PLAIN}a:comment\nbob:$apr1$x$y\nann:second\n")
    cfg = http(
        'auth_basic "Team";\nauth_basic_user_file users;\n'
        "server {\n"
        "  location / { return 204; }\n"
        "  location /open { auth_basic off; return 204; }\n"
        "  location /realm { auth_basic 'Other'; return 204; }\n"
        "}"
    )
    closed, opened, realm = cfg.servers[0].locations
    assert closed.limits.auth is not None
    assert closed.limits.auth.realm == "Team" and closed.limits.auth.user_file == str(
        tmp_path / "users"
    )
    assert closed.limits.auth.users == (("ann", "{PLAIN}a"), ("bob", "$apr1$x$y"))
    assert opened.limits.auth is None
    assert realm.limits.auth is not None and realm.limits.auth.realm == "Other"


def test_auth_basic_without_a_user_file_checks_nothing_as_in_nginx(http: Load) -> None:
    cfg = http('server { auth_basic "Team"; location / { return 204; } }')
    assert cfg.servers[0].locations[0].limits.auth is None


def test_an_unreadable_user_file_is_an_error_naming_file_and_line(
    http: Load, tmp_path: Path
) -> None:
    failure = error(
        http, 'server {\n auth_basic "T";\n auth_basic_user_file missing;\n return 204; }'
    )
    assert failure.message == (
        f'open() "{tmp_path / "missing"}" failed (2: No such file or directory)'
    )
    assert failure.where == f"{tmp_path / 'nginx.conf'}:5"


def test_htpasswd_lines_are_read_as_nginx_reads_them() -> None:
    text = "#c\n\r\nann:{PLAIN}a\r\nbob:h1:comment\nnocolon\n:empty-user\nann:ignored\n"
    assert parse_htpasswd(text) == (("ann", "{PLAIN}a"), ("bob", "h1"), ("", "empty-user"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limit_req_zone $a zone=z:1m;", 'invalid number of arguments in "limit_req_zone"'),
        ("limit_req_zone $a rate=1r/s rate=2r/s;", '"limit_req_zone" must have "zone" parameter'),
        ("limit_req_zone $a zone=z:1m rate=0r/s;", 'invalid rate "rate=0r/s"'),
        ("limit_req_zone $a zone=z:1m rate=fast;", 'invalid rate "rate=fast"'),
        ("limit_req_zone $a zone=z:1k rate=1r/s;", 'zone "z" is too small'),
        ("limit_req_zone $a zone=z rate=1r/s;", 'invalid zone size "z"'),
        ("limit_req_zone $a zone=z:1m rate=1r/s burst=2;", 'invalid parameter "burst=2"'),
        (
            "limit_req_zone $a zone=z:1m rate=1r/s; limit_req_zone $b zone=z:1m rate=1r/s;",
            'limit_req_zone "z" is already bound to key "$a"',
        ),
        (
            "limit_req_zone $a zone=z:1m rate=1r/s; limit_conn_zone $a zone=z:1m;",
            'the shared memory zone "z" is already declared for a different use',
        ),
        ("limit_conn_zone $a size=1m;", 'invalid parameter "size=1m"'),
        ("server { limit_req zone=none; return 204; }", 'zero size shared memory zone "none"'),
        ("limit_conn_zone $a zone=c:1m; server { limit_req zone=c; }", "different use"),
        ("limit_req_zone $a zone=z:1m rate=1r/s; server { limit_conn z 1; }", "different use"),
        ("limit_req_zone $a zone=z:1m rate=1r/s; server { limit_req burst=1; }", "must have"),
        ("limit_req_zone $a zone=z:1m rate=1r/s; limit_req zone=z burst=0;", "invalid burst"),
        ("limit_req_zone $a zone=z:1m rate=1r/s; limit_req zone=z delay=x;", "invalid delay"),
        (
            "limit_req_zone $a zone=z:1m rate=1r/s; limit_req zone=z fast;",
            'invalid parameter "fast"',
        ),
        (
            "limit_req_zone $a zone=z:1m rate=1r/s; limit_req zone=z; limit_req zone=z;",
            '"limit_req" directive is duplicate',
        ),
        ("limit_req_status 399;", "value must be between 400 and 599"),
        ("limit_conn_status 600;", "value must be between 400 and 599"),
        ("limit_req_log_level debug;", 'invalid value "debug"'),
        ("limit_conn_dry_run yes;", "it must be"),
        ("limit_conn_zone $a zone=c:1m; limit_conn c 0;", 'invalid number of connections "0"'),
        ("satisfy some;", 'invalid value "some" in "satisfy" directive'),
        ("server { location / { limit_req_zone $a zone=z:1m rate=1r/s; } }", "not allowed here"),
    ],
)
def test_limit_errors_read_like_nginx(http: Load, text: str, message: str) -> None:
    assert message in error(http, text + " server { return 204; }").message


def test_limit_req_zone_sync_is_accepted_without_effect(http: Load) -> None:
    cfg = http("limit_req_zone $a zone=z:1m rate=1r/s sync; server { return 204; }")
    assert cfg.zones[0].sync
    [notice] = cfg.notices
    assert notice.startswith('"sync" of limit_req_zone has no effect in nonstop (')


def test_variables_in_the_realm_or_the_user_file_are_refused(http: Load) -> None:
    realm = error(http, 'server { auth_basic "R $host"; auth_basic_user_file f; return 204; }')
    assert realm.message == 'auth_basic "R $host" with variables is outside the subset'
    path = error(http, 'server { auth_basic "R"; auth_basic_user_file $arg_f; return 204; }')
    assert path.message == 'auth_basic_user_file "$arg_f" with variables is outside the subset'
