"""nonstop's TOML format into the model: the documented example, defaults, key-path errors."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest

from nonstop.config import Config, HealthSpec, compile_template, load
from nonstop.errors import ConfigError

Load = Callable[..., Config]
FIXTURES = Path(__file__).parent / "fixtures"

MINIMAL_SERVER = """
[[servers]]
listen = ["127.0.0.1:8080"]
locations = [{ path = "/", pass = "http://127.0.0.1:9000" }]
"""


@pytest.fixture
def toml(load_text: Load) -> Load:
    def _load(text: str, prefix: str | None = None) -> Config:
        return load_text(text, "nonstop.toml", prefix)

    return _load


def error(loader: Load, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loader(text)
    return info.value


def test_the_documented_example_loads() -> None:
    path = FIXTURES / "product.toml"
    cfg = load(str(path))
    assert cfg.state_dir == str(FIXTURES / ".nonstop")
    assert cfg.admin.socket == str(FIXTURES / ".nonstop" / "admin.sock")
    api, web = cfg.upstreams
    assert (api.name, api.method, api.keepalive) == ("api", "round_robin", 64)
    a, b = api.servers
    assert (a.host, a.port, a.weight, a.fail_timeout, a.backup) == (
        "10.0.0.11",
        8080,
        5,
        10.0,
        False,
    )
    assert b.backup
    assert api.health == HealthSpec(path="/infra/health", interval=2.0, expect_body="UP")
    assert (web.name, web.app, web.servers, web.keepalive) == ("web", True, (), 64)
    [app] = cfg.apps
    assert app.ports == (8080, 8000)
    assert app.command == "java -jar {release}/app.jar --server.port={port}"
    assert (app.health.interval, app.health.timeout, app.health.start_timeout) == (0.5, 2.0, 120.0)
    assert (app.stop_signal, app.stop_timeout, app.drain_timeout, app.verify) == (
        "SIGTERM",
        30.0,
        30.0,
        10.0,
    )
    redirect, edge = cfg.servers
    assert redirect.ret is not None and redirect.ret.code == 301
    assert redirect.ret.text == compile_template("https://$host$request_uri")
    assert edge.listens[0].key == ("0.0.0.0", 443) and edge.listens[0].ssl
    assert edge.tls is not None and edge.tls.certificate == str(FIXTURES / "fullchain.pem")
    assert edge.server_names == ("example.com",)
    assert edge.client_max_body_size == 10 * 1024 * 1024
    [loc] = edge.locations
    assert loc.proxy_pass is not None
    assert (loc.proxy_pass.upstream, loc.proxy_pass.proxy_host) == ("web", "web")
    assert [(h.name, h.always) for h in loc.add_headers] == [("Strict-Transport-Security", True)]
    assert loc.client_max_body_size == 10 * 1024 * 1024
    assert cfg.files == (str(path),)


def test_location_defaults_pass_host_and_append_forwarded_for(toml: Load) -> None:
    cfg = toml(MINIMAL_SERVER)
    [loc] = cfg.servers[0].locations
    assert (loc.request_buffering, loc.client_body_buffer_size) == (True, 16 * 1024)
    assert [(h.name, h.value.raw) for h in loc.set_headers] == [
        ("Host", "$http_host"),
        ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        ("X-Forwarded-Proto", "$scheme"),
    ]
    assert loc.access_log is None
    assert loc.next_upstream == frozenset({"error", "timeout"})


@pytest.mark.parametrize(
    ("mode", "value"),
    [("replace", "$remote_addr"), ("append", "$proxy_add_x_forwarded_for"), ("off", None)],
)
def test_forwarded_for_modes(toml: Load, mode: str, value: str | None) -> None:
    cfg = toml(
        f"""
        [[servers]]
        locations = [{{ path = "/", pass = "http://127.0.0.1:9000", forwarded_for = "{mode}" }}]
        """
    )
    headers = {h.name: h.value.raw for h in cfg.servers[0].locations[0].set_headers}
    assert headers.get("X-Forwarded-For") == value


def test_set_headers_override_defaults_case_insensitively_and_add_more(toml: Load) -> None:
    cfg = toml(
        """
        [[servers]]
        [[servers.locations]]
        path = "/"
        pass = "http://127.0.0.1:9000"
        [servers.locations.set_headers]
        host = "$host"
        "X-Request-Start" = "t=$request_uri"
        "X-Forwarded-Proto" = ""
        """
    )
    headers = [(h.name, h.value.raw) for h in cfg.servers[0].locations[0].set_headers]
    assert headers == [
        ("host", "$host"),
        ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        ("X-Forwarded-Proto", ""),
        ("X-Request-Start", "t=$request_uri"),
    ]


def test_pass_url_makes_an_implicit_upstream(toml: Load) -> None:
    cfg = toml(MINIMAL_SERVER)
    [up] = cfg.upstreams
    assert (up.name, up.implicit, up.keepalive) == ("127.0.0.1:9000", True, 0)
    assert cfg.servers[0].listens[0].key == ("127.0.0.1", 8080)


def test_listen_defaults_to_80_or_443_with_tls(toml: Load) -> None:
    cfg = toml(
        """
        [[servers]]
        redirect = "https://$host$request_uri"
        [[servers]]
        tls = { certificate = "c.pem", certificate_key = "k.pem" }
        return = { code = 204 }
        """
    )
    plain, tls = cfg.servers
    assert plain.listens[0].key == ("0.0.0.0", 80) and not plain.listens[0].ssl
    assert tls.listens[0].key == ("0.0.0.0", 443) and tls.listens[0].ssl


def test_explicit_ssl_flags_choose_which_listens_use_tls(toml: Load) -> None:
    cfg = toml(
        """
        [[servers]]
        listen = ["8080", "[::1]:8443 ssl default_server"]
        tls = { certificate = "c.pem", certificate_key = "k.pem", protocols = ["TLSv1.3"] }
        return = { code = 200, text = "hi" }
        """
    )
    plain, secure = cfg.servers[0].listens
    assert (plain.port, plain.ssl) == (8080, False)
    assert (secure.host, secure.port, secure.ssl, secure.default_server) == (
        "::1",
        8443,
        True,
        True,
    )
    tls = cfg.servers[0].tls
    assert tls is not None and tls.protocols == ("TLSv1.3",)


def test_upstream_methods_and_pool_settings(toml: Load) -> None:
    cfg = toml(
        """
        [upstreams.h]
        method = "hash"
        hash_key = "$request_uri"
        consistent = true
        keepalive = 0
        keepalive_timeout = "5s"
        servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
        [upstreams.r]
        method = "random"
        two = true
        servers = [{ address = "pool.internal:9000", max_conns = 10 }]
        [[servers]]
        locations = [{ path = "/", pass = "h" }, { path = "/r", pass = "r" }]
        """
    )
    h, r = cfg.upstreams
    assert h.hash_key is not None and h.hash_key.raw == "$request_uri"
    assert (h.hash_consistent, h.keepalive, h.keepalive_timeout) == (True, 0, 5.0)
    assert (r.random_two, r.random_least_conn) == (True, True)
    assert [(s.host, s.max_conns) for s in r.servers] == [("10.0.0.21", 10), ("10.0.0.22", 10)]


def test_app_settings_and_paths(toml: Load, tmp_path: Path) -> None:
    cfg = toml(
        """
        state_dir = "state"
        error_log = "logs/error.log"
        error_log_level = "info"
        [apps.api]
        command = "gunicorn app:app -b 127.0.0.1:{port}"
        ports = [9001, 9002, 9003, 9004]
        env = { PYTHONUNBUFFERED = "1" }
        cwd = "srv"
        shell = true
        stop_signal = "INT"
        verify_max_5xx_ratio = 0.1
        method = "least_conn"
        [[servers]]
        access_log = "logs/access.log"
        locations = [
          { path = "/", pass = "api", access_log = "off" },
          { path = "/x", pass = "api" },
        ]
        """,
        prefix=str(tmp_path / "p"),
    )
    [app] = cfg.apps
    assert app.ports == (9001, 9002, 9003, 9004)
    assert app.env == (("PYTHONUNBUFFERED", "1"),)
    assert app.cwd == str(tmp_path / "p" / "srv")
    assert (app.shell, app.stop_signal, app.verify_max_5xx_ratio) == (True, "SIGINT", 0.1)
    assert cfg.upstream("api") is not None and cfg.upstreams[0].method == "least_conn"
    assert cfg.state_dir == str(tmp_path / "p" / "state")
    assert cfg.admin.socket == str(tmp_path / "p" / "state" / "admin.sock")
    assert cfg.error_log == str(tmp_path / "p" / "logs" / "error.log")
    off, inherited = cfg.servers[0].locations
    assert off.access_log == ()  # "off"
    assert inherited.access_log is not None
    assert inherited.access_log[0].path == str(tmp_path / "p" / "logs" / "access.log")


def test_location_settings(toml: Load) -> None:
    cfg = toml(
        """
        [[servers]]
        client_max_body_size = 1024
        headers = { X-A = "server", X-B = "server" }
        [[servers.locations]]
        path = "/exact"
        exact = true
        pass = "http://127.0.0.1:9000/base/"
        next_upstream = ["error", "timeout", "http_503", "non_idempotent"]
        next_upstream_tries = 3
        next_upstream_timeout = "2s"
        connect_timeout = 1
        read_timeout = "1m30s"
        send_timeout = 2.5
        http_version = "1.0"
        client_max_body_size = "0"
        request_buffering = false
        client_body_buffer_size = "64k"
        headers = { x-b = "location" }
        """
    )
    [loc] = cfg.servers[0].locations
    assert (loc.request_buffering, loc.client_body_buffer_size) == (False, 64 * 1024)
    assert (loc.path, loc.exact) == ("/exact", True)
    assert loc.proxy_pass is not None and loc.proxy_pass.uri == "/base/"
    assert loc.next_upstream == frozenset({"error", "timeout", "http_503", "non_idempotent"})
    assert (loc.next_upstream_tries, loc.next_upstream_timeout) == (3, 2.0)
    assert (loc.connect_timeout, loc.read_timeout, loc.send_timeout) == (1.0, 90.0, 2.5)
    assert (loc.http_version, loc.client_max_body_size) == ("1.0", 0)
    assert [(h.name, h.value.raw) for h in loc.add_headers] == [
        ("X-A", "server"),
        ("x-b", "location"),
    ]
    assert cfg.servers[0].client_max_body_size == 1024


def test_location_return_and_redirect(toml: Load) -> None:
    cfg = toml(
        """
        [[servers]]
        locations = [
          { path = "/old", redirect = "https://new.example$request_uri" },
          { path = "/gone", return = { code = 410, text = "gone" } },
        ]
        """
    )
    old, gone = cfg.servers[0].locations
    assert old.ret is not None and old.ret.code == 301
    assert gone.ret is not None and (gone.ret.code, gone.ret.text) == (
        410,
        compile_template("gone"),
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            '[[servers]]\nlocations = [{ path = "/", pass = "http://127.0.0.1:1" },'
            ' { path = "/b", pas = "x" }]',
            "servers[0].locations[1].pas",
            "unknown key",
        ),
        ("colour = 1\n" + MINIMAL_SERVER, "colour", "unknown key"),
        (
            '[upstreams.a]\nservers = [{ address = "127.0.0.1:1", wieght = 2 }]\n' + MINIMAL_SERVER,
            "upstreams.a.servers[0].wieght",
            "unknown key",
        ),
        (
            '[upstreams.a]\nservers = ["127.0.0.1:1"]\nkeepalive = "many"\n' + MINIMAL_SERVER,
            "upstreams.a.keepalive",
            "expected an integer, got a string",
        ),
        (
            '[[servers]]\nclient_max_body_size = "10x"\nreturn = { code = 204 }',
            "servers[0].client_max_body_size",
            'invalid size "10x"',
        ),
        (
            "[[servers]]\nkeepalive_timeout = true\nreturn = { code = 204 }",
            "servers[0].keepalive_timeout",
            "expected a string, an integer or a number, got a boolean",
        ),
        (
            '[[servers]]\nserver_name = ["a", 2]\nreturn = { code = 204 }',
            "servers[0].server_name[1]",
            "expected a string, got an integer",
        ),
        (
            '[[servers]]\nlocations = [{ path = "/", pass = "nope" }]',
            "servers[0].locations[0].pass",
            'no upstream or app named "nope"',
        ),
        (
            '[[servers]]\nlocations = [{ path = "/" }]',
            "servers[0].locations[0]",
            'a location needs "pass", "redirect" or "return"',
        ),
        (
            '[[servers]]\nlocations = [{ pass = "http://127.0.0.1:1" }]',
            "servers[0].locations[0].path",
            "required key is missing",
        ),
        (
            '[upstreams.a]\nservers = ["127.0.0.1"]\n' + MINIMAL_SERVER,
            "upstreams.a.servers[0].address",
            'no port in upstream "127.0.0.1"',
        ),
        (
            '[upstreams.a]\nservers = ["nowhere.invalid:80"]\n' + MINIMAL_SERVER,
            "upstreams.a.servers[0].address",
            'host not found in upstream "nowhere.invalid:80"',
        ),
        (
            '[upstreams.a]\nmethod = "ip_hash"\n'
            'servers = [{ address = "127.0.0.1:1", backup = true }]\n' + MINIMAL_SERVER,
            "upstreams.a.servers[0]",
            'balancing method does not support parameter "backup"',
        ),
        (
            "[upstreams.a]\nservers = []\n" + MINIMAL_SERVER,
            "upstreams.a.servers",
            'no servers are inside upstream "a"',
        ),
        (
            '[upstreams.a]\nmethod = "hash"\nservers = ["127.0.0.1:1"]\n' + MINIMAL_SERVER,
            "upstreams.a.hash_key",
            'method = "hash" and hash_key go together',
        ),
        (
            '[upstreams.a]\nmethod = "fastest"\nservers = ["127.0.0.1:1"]\n' + MINIMAL_SERVER,
            "upstreams.a.method",
            "must be one of",
        ),
        (
            '[apps.w]\ncommand = "x"\nports = [8080]\n' + MINIMAL_SERVER,
            "apps.w.ports",
            "list the blue and green port of each instance, in pairs",
        ),
        (
            "[apps.w]\nports = [8080, 8081]\n" + MINIMAL_SERVER,
            "apps.w.command",
            "required key is missing",
        ),
        (
            '[apps.w]\ncommand = "x"\nports = [8080, 8081]\nstop_signal = "SIGNOPE"\n'
            + MINIMAL_SERVER,
            "apps.w.stop_signal",
            'unknown signal "SIGNOPE"',
        ),
        (
            '[[servers]]\nlisten = ["80 ssl"]\nreturn = { code = 204 }',
            "servers[0].listen[0]",
            '"ssl" needs a tls table',
        ),
        (
            '[[servers]]\nlisten = ["80 http2"]\nreturn = { code = 204 }',
            "servers[0].listen[0]",
            'listen parameter "http2" is outside the nonstop subset',
        ),
        ("[[servers]]\nreturn = { code = 301 }", "servers[0].return.text", "a 301 needs the URL"),
        (
            '[[servers]]\nlocations = [{ path = "/", pass = "http://127.0.0.1:1",'
            ' forwarded_for = "yes" }]',
            "servers[0].locations[0].forwarded_for",
            'must be "append", "replace" or "off"',
        ),
        (
            '[[servers]]\nheaders = { X = "$nope" }\nreturn = { code = 204 }',
            "servers[0]",
            'unknown "nope" variable',
        ),
        ("servers = 3", "servers", "expected an array, got an integer"),
        (
            "[upstreams]\na = 1\n" + MINIMAL_SERVER,
            "upstreams.a",
            "expected a table, got an integer",
        ),
    ],
)
def test_errors_name_the_key_path(
    toml: Load, tmp_path: Path, text: str, key: str, message: str
) -> None:
    err = error(toml, text)
    assert err.where == f"{tmp_path / 'nonstop.toml'}: {key}"
    assert err.message.startswith(message)


def test_toml_syntax_error_names_the_line(toml: Load, tmp_path: Path) -> None:
    err = error(toml, "engine = 'embedded'\nstate_dir = \n")
    assert err.where == f"{tmp_path / 'nonstop.toml'}:2"


def test_a_toml_config_needs_a_server(toml: Load) -> None:
    assert error(toml, 'engine = "nginx"').message == 'no "server" block in configuration'


def test_app_ports_must_not_clash_with_each_other_or_listeners(toml: Load) -> None:
    err = error(toml, '[apps.a]\ncommand = "x"\nports = [8080, 8081]\n' + MINIMAL_SERVER)
    assert err.message == 'port 8080 of app "a" is also a "listen" port of nonstop'
    err = error(
        toml,
        '[apps.a]\ncommand = "x"\nports = [9001, 9002]\n'
        '[apps.b]\ncommand = "x"\nports = [9002, 9003]\n' + MINIMAL_SERVER,
    )
    assert err.message == 'port 9002 of app "b" is already used by app "a"'


def test_an_app_and_an_upstream_cannot_share_a_name(toml: Load) -> None:
    err = error(
        toml,
        '[upstreams.web]\nservers = ["127.0.0.1:1"]\n'
        '[apps.web]\ncommand = "x"\nports = [9001, 9002]\n' + MINIMAL_SERVER,
    )
    assert err.message == 'duplicate upstream "web"'


def test_the_nginx_table_names_a_system_pid_file_under_the_prefix(
    toml: Load, tmp_path: Path
) -> None:
    body = '[[servers]]\nlocations = [{ path = "/", pass = "http://127.0.0.1:9" }]\n'
    cfg = toml('engine = "nginx"\n[nginx]\npid = "run/nginx.pid"\n' + body, str(tmp_path))
    assert cfg.nginx.pid == str(tmp_path / "run" / "nginx.pid")
    assert toml(body).nginx.pid is None
    exc = error(toml, '[nginx]\npidfile = "/run/nginx.pid"\n' + body)
    assert "nginx.pidfile: unknown key" in str(exc)


# one server answering 204: the smallest config the top-level keys' tests add to
SERVER_204 = """
[[servers]]
listen = ["127.0.0.1:8080"]
locations = [ { path = "/", return = { code = 204 } } ]
"""


def test_workers_and_max_open_files_are_read(toml: Load) -> None:
    body = SERVER_204
    cfg = toml("workers = 2\nmax_open_files = 8192\n" + body)
    assert (cfg.workers, cfg.max_open_files) == (2, 8192)
    assert toml('workers = "auto"\n' + body).workers == len(os.sched_getaffinity(0))
    assert (toml(body).workers, toml(body).max_open_files) == (1, None)
    for wrong in ("workers = 0", 'workers = "many"', "workers = true"):
        assert "workers: " in str(error(toml, wrong + "\n" + body))


def test_master_process_false_serves_from_one_process(toml: Load) -> None:
    body = SERVER_204
    assert toml(body).master_process and toml(body).separate_workers
    off = toml("master_process = false\n" + body)
    assert not off.master_process and not off.separate_workers
    many = toml("master_process = false\nworkers = 3\n" + body)
    (notice,) = many.notices
    assert notice.startswith('"master_process off": one process serves and drives the proxy')
    assert '"worker_processes 3" has no effect' in notice and notice.endswith(f"({many.path})")
    nginx = toml('engine = "nginx"\nmaster_process = false\n' + body)
    assert nginx.notices[-1].startswith('"master_process off" has no effect with the nginx')
    assert "master_process: " in str(error(toml, 'master_process = "off"\n' + body))


def test_cpu_affinity_and_worker_priority_are_read(toml: Load) -> None:
    body = SERVER_204
    cfg = toml('workers = 2\ncpu_affinity = "auto 0110"\nworker_priority = 5\n' + body)
    assert (cfg.cpu_affinity, cfg.worker_priority) == (("auto", "0110"), 5)
    assert toml('cpu_affinity = ["01", "10"]\n' + body).cpu_affinity == ("01", "10")
    assert (toml(body).cpu_affinity, toml(body).worker_priority) == ((), 0)
    assert 'cpu_affinity: invalid character "x"' in str(error(toml, 'cpu_affinity = "0x"\n' + body))
    assert "worker_priority: invalid number" in str(error(toml, "worker_priority = 99\n" + body))


@pytest.mark.skipif(os.geteuid() != 0, reason="worker_user takes effect when nonstop runs as root")
def test_worker_user_is_nginx_confs_user(toml: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    body = SERVER_204
    nobody = pwd.getpwnam("nobody")
    config = toml('worker_user = "nobody"\n' + body)  # the tests run as root
    assert config.worker_user is not None and config.separate_workers
    assert (config.worker_user.uid, config.worker_user.gid) == (nobody.pw_uid, nobody.pw_gid)
    group = grp.getgrgid(nobody.pw_gid).gr_name  # Debian's nogroup
    named = toml(f'worker_user = "nobody"\nworker_group = "{group}"\n' + body).worker_user
    assert named is not None and named.gid == nobody.pw_gid
    assert 'worker_group: no group "users-x"' in str(
        error(toml, 'worker_user = "nobody"\nworker_group = "users-x"\n' + body)
    )
    assert toml(body).worker_user is None
    assert 'worker_user: no user "no-such-user"' in str(
        error(toml, 'worker_user = "no-such-user"\n' + body)
    )
    assert "worker_group: needs worker_user" in str(error(toml, 'worker_group = "x"\n' + body))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ignored = toml('worker_user = "nobody"\n' + body)
    assert ignored.worker_user is None
    assert any("only when nonstop runs as root, ignored" in n for n in ignored.notices)


def test_the_file_group_is_read_and_must_exist(toml: Load) -> None:
    body = SERVER_204
    assert toml('group = "nogroup"\n' + body).group == "nogroup"
    assert toml(body).group is None
    assert 'group: no group "no-such-group"' in str(error(toml, 'group = "no-such-group"\n' + body))


def test_an_apps_user_and_group_must_exist_and_name_their_key(load_text: Load) -> None:
    base = '[apps.web]\ncommand = "app {port}"\nports = [8000, 8001]\n'
    servers = (
        '[[servers]]\nlisten = ["127.0.0.1:8080"]\nlocations = [{ path = "/", pass = "web" }]\n'
    )
    config = load_text(base + 'user = "nobody"\ngroup = "nogroup"\n' + servers, name="n.toml")
    assert (config.apps[0].user, config.apps[0].group) == ("nobody", "nogroup")
    with pytest.raises(ConfigError, match=r'apps\.web\.user.*no user "no-such-user"'):
        load_text(base + 'user = "no-such-user"\n' + servers, name="n.toml")
    with pytest.raises(ConfigError, match=r'apps\.web\.group.*no group "no-such-group"'):
        load_text(base + 'group = "no-such-group"\n' + servers, name="n.toml")
    # names no lookup can take are unknown all the same, not a crash of the loader
    with pytest.raises(ConfigError, match=r"apps\.web\.user.*no user"):
        load_text(base + 'user = "a\\u0000b"\n' + servers, name="n.toml")
    with pytest.raises(ConfigError, match=r"apps\.web\.group.*no group"):
        load_text(base + 'group = "99999999999999999999"\n' + servers, name="n.toml")


def test_access_log_format_is_per_server_and_a_location_may_change_it(toml: Load) -> None:
    cfg = toml(
        """
        [[servers]]
        access_log = "logs/access.log"
        access_log_format = "json"
        [[servers.locations]]
        path = "/"
        pass = "http://127.0.0.1:9000"
        [[servers.locations]]
        path = "/old"
        pass = "http://127.0.0.1:9000"
        access_log_format = "combined"
        [[servers.locations]]
        path = "/own"
        pass = "http://127.0.0.1:9000"
        access_log = "logs/own.log"
        """
    )
    block = cfg.servers[0]
    assert block.access_log is not None and block.access_log[0].format.name == "json"
    inherits, changed, own = block.locations
    assert inherits.access_log == block.access_log
    assert changed.access_log is not None and changed.access_log[0].format.name == "combined"
    assert changed.access_log[0].path == block.access_log[0].path
    assert own.access_log is not None and own.access_log[0].format.name == "json"
    assert own.access_log[0].path.endswith("own.log")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('access_log = "a.log"\naccess_log_format = "main"', 'must be "combined" or "json"'),
        ('access_log_format = "json"', "needs an access_log file"),
    ],
)
def test_access_log_format_errors_say_what_is_allowed(toml: Load, lines: str, message: str) -> None:
    text = f'[[servers]]\n{lines}\nlocations = [{{ path = "/", return = {{ code = 204 }} }}]\n'
    assert message in str(error(toml, text))
