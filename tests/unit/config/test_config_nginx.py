"""nginx.conf into the model: the seed's configs, inheritance, upstreams, maps, errors."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest

from nonstop.config import Config, compile_template, load
from nonstop.config.model import (
    AccessRule,
    BreakSpec,
    Condition,
    ErrorPage,
    IfSpec,
    Regex,
    ReturnSpec,
    RewriteSpec,
    SetSpec,
)
from nonstop.errors import ConfigError

Write = Callable[[str, str], Path]
Load = Callable[..., Config]
FIXTURES = Path(__file__).parent / "fixtures"


def error(loader: Load, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loader(text)
    return info.value


# --------------------------------------------------------------------------- the seed


def test_seed_ip_hash_config_loads_with_tls_redirect_and_hsts() -> None:
    cfg = load(str(FIXTURES / "seed_ip_hash.conf"))
    [app] = cfg.upstreams
    assert app.method == "ip_hash"
    assert [(s.host, s.port) for s in app.servers] == [("127.0.0.1", 8080), ("127.0.0.1", 8000)]
    redirect, edge = cfg.servers
    assert redirect.listens[0].key == ("0.0.0.0", 80)
    assert redirect.ret is not None and redirect.ret.code == 301
    assert redirect.ret.text == compile_template("https://nolto.kro.kr")
    assert edge.listens[0].ssl and edge.tls is not None
    assert edge.tls.protocols == ("TLSv1", "TLSv1.1", "TLSv1.2")
    assert edge.tls.prefer_server_ciphers is True
    assert edge.tls.session_cache == "shared:SSL:10m"
    assert edge.tls.session_timeout == 600.0
    assert edge.client_max_body_size == 10 * 1024 * 1024
    [hsts] = edge.add_headers
    assert (hsts.name, hsts.value.raw, hsts.always) == (
        "Strict-Transport-Security",
        "max-age=31536000",
        True,
    )
    [loc] = edge.locations
    assert loc.ret is not None and loc.ret.code == 403
    assert [(h.name, h.value.raw) for h in loc.set_headers] == [
        ("X-Forwarded-For", "$remote_addr"),
        ("X-Forwarded-Proto", "$scheme"),
        ("Host", "$http_host"),
    ]
    assert loc.client_max_body_size == 10 * 1024 * 1024
    assert loc.add_headers == edge.add_headers
    assert cfg.error_log == "/var/log/nginx/error.log"
    assert loc.access_log is not None
    assert [log.path for log in loc.access_log] == ["/var/log/nginx/access.log"]


def test_seed_blue_green_config_passes_to_the_url_in_the_included_set() -> None:
    cfg = load(str(FIXTURES / "blue_green" / "nginx.conf"))
    [server] = cfg.servers
    [loc] = server.locations
    assert loc.sets == (("service_port", compile_template("http://127.0.0.1:8081")),)
    assert loc.proxy_pass is not None
    assert loc.proxy_pass.url.variables == ("service_port",)
    assert loc.proxy_pass.upstream is None
    assert cfg.upstreams == ()
    assert [Path(f).name for f in cfg.files] == ["nginx.conf", "service-url.inc"]


def test_seed_script_bug_set_without_variable_is_refused(write: Write, load_text: Load) -> None:
    inc = write("conf.d/service-url.inc", "set  http://127.0.0.1:8081;\n")
    text = (FIXTURES / "blue_green" / "nginx.conf").read_text()
    with pytest.raises(ConfigError) as info:
        load_text(text)
    assert info.value.message == 'invalid number of arguments in "set" directive'
    assert info.value.where == f"{inc}:1"


def test_seed_prose_variant_set_to_bare_port_is_refused_at_load(
    write: Write, load_text: Load
) -> None:
    inc = write("conf.d/service-url.inc", "set $service_port 8081;\n")
    text = (FIXTURES / "blue_green" / "nginx.conf").read_text()
    with pytest.raises(ConfigError) as info:
        load_text(text)
    assert info.value.message.startswith('invalid URL prefix in "8081"')
    assert info.value.where == f"{inc}:1"


# --------------------------------------------------------------------------- upstreams


def test_upstream_server_parameters_are_read(http: Load) -> None:
    cfg = http(
        """
        upstream api {
          least_conn;
          server 127.0.0.1:8080 weight=5 max_fails=3 fail_timeout=30s max_conns=100;
          server 127.0.0.1:8081 backup;
          server [::1]:8082 down;
          server unix:/run/app.sock;
          keepalive 16;
          keepalive_requests 500;
          keepalive_timeout 30s;
        }
        server { listen 80; location / { proxy_pass http://api/; } }
        """
    )
    api = cfg.upstream("api")
    assert api is not None and api.method == "least_conn"
    a, b, c, d = api.servers
    assert (a.weight, a.max_fails, a.fail_timeout, a.max_conns) == (5, 3, 30.0, 100)
    assert b.backup and not a.backup
    assert (c.host, c.port, c.address, c.down) == ("::1", 8082, "[::1]:8082", True)
    assert d.is_unix and d.host == "/run/app.sock" and d.port == 0
    assert (api.keepalive, api.keepalive_requests, api.keepalive_timeout) == (16, 500, 30.0)
    assert a.source is not None and a.source.line == 6


def test_upstream_defaults_match_nginx(http: Load) -> None:
    cfg = http("upstream u { server 127.0.0.1; }\nserver { location / { proxy_pass http://u; } }")
    u = cfg.upstream("u")
    assert u is not None
    [s] = u.servers
    assert (s.port, s.weight, s.max_fails, s.fail_timeout, s.max_conns) == (80, 1, 1, 10.0, 0)
    assert (u.method, u.keepalive) == ("round_robin", 0)


@pytest.mark.parametrize(
    ("line", "method", "key", "consistent", "two"),
    [
        ("ip_hash;", "ip_hash", None, False, False),
        ("hash $request_uri;", "hash", "$request_uri", False, False),
        ("hash $remote_addr consistent;", "hash", "$remote_addr", True, False),
        ("random;", "random", None, False, False),
        ("random two;", "random", None, False, True),
        ("random two least_conn;", "random", None, False, True),
    ],
)
def test_balancing_methods_are_read(
    http: Load, line: str, method: str, key: str | None, consistent: bool, two: bool
) -> None:
    cfg = http(
        f"upstream u {{ {line} server 127.0.0.1:1; }}\n"
        "server { location / { proxy_pass http://u; } }"
    )
    u = cfg.upstream("u")
    assert u is not None
    assert u.method == method
    assert (u.hash_key.raw if u.hash_key else None) == key
    assert (u.hash_consistent, u.random_two, u.random_least_conn) == (consistent, two, two)


@pytest.mark.parametrize("method", ["ip_hash;", "hash $remote_addr;", "random;"])
def test_backup_is_refused_by_methods_that_ignore_it(http: Load, method: str) -> None:
    err = error(
        http,
        f"upstream u {{\n{method}\nserver 127.0.0.1:1;\nserver 127.0.0.1:2 backup;\n}}\n"
        "server { location / { proxy_pass http://u; } }",
    )
    assert err.message == 'balancing method does not support parameter "backup"'
    assert err.where.endswith(":6")


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("weight=0", 'invalid parameter "weight=0"'),
        ("weight=x", 'invalid parameter "weight=x"'),
        ("fail_timeout=abc", 'invalid parameter "fail_timeout=abc"'),
        ("slow_start=10s", 'invalid parameter "slow_start=10s"'),
    ],
)
def test_bad_server_parameters_are_refused(http: Load, param: str, message: str) -> None:
    err = error(
        http,
        f"upstream u {{ server 127.0.0.1:1 {param}; }}\nserver {{ location / {{ return 204; }} }}",
    )
    assert err.message == message


def test_a_name_resolving_to_several_addresses_gives_one_peer_each(http: Load) -> None:
    cfg = http(
        "upstream u { server pool.internal:8080 weight=3; }\n"
        "server { location / { proxy_pass http://u; } }"
    )
    u = cfg.upstream("u")
    assert u is not None
    assert [(s.host, s.port, s.weight, s.address) for s in u.servers] == [
        ("10.0.0.21", 8080, 3, "pool.internal:8080"),
        ("10.0.0.22", 8080, 3, "pool.internal:8080"),
    ]


def test_localhost_is_127_0_0_1_without_asking_the_resolver(http: Load) -> None:
    cfg = http(
        "upstream u { server localhost:9000; }\nserver { location / { proxy_pass http://u; } }"
    )
    u = cfg.upstream("u")
    assert u is not None and u.servers[0].host == "127.0.0.1"


def test_unknown_host_in_upstream_is_an_error(http: Load) -> None:
    err = error(http, "upstream u { server nowhere.invalid:80; }\nserver { return 204; }")
    assert err.message == 'host not found in upstream "nowhere.invalid:80"'


@pytest.mark.parametrize(
    ("url", "uri"),
    [
        ("http://unix:/run/app.sock:", None),
        ("http://unix:/run/app.sock", None),
        ("http://unix:/run/app.sock:/api/", "/api/"),
    ],
)
def test_proxy_pass_to_a_unix_socket_makes_an_implicit_upstream_on_it(
    http: Load, url: str, uri: str | None
) -> None:
    cfg = http(f"server {{ location / {{ proxy_pass {url}; }} }}")
    [up] = cfg.upstreams
    assert up.implicit and up.name == "unix:/run/app.sock"
    [peer] = up.servers
    assert peer.is_unix and peer.host == "/run/app.sock" and peer.port == 0
    proxy = cfg.servers[0].locations[0].proxy_pass
    assert proxy is not None
    assert (proxy.upstream, proxy.uri, proxy.proxy_host) == ("unix:/run/app.sock", uri, "localhost")


def test_proxy_pass_to_a_relative_unix_socket_path_is_refused(http: Load) -> None:
    err = error(http, "server {\n location / { proxy_pass http://unix:run/app.sock:; } }")
    assert err.message == 'invalid unix socket path in upstream "unix:run/app.sock:"'
    assert err.where.endswith(":4")  # the proxy_pass line, after the http wrapper


def test_empty_upstream_and_duplicate_upstream_are_errors(http: Load) -> None:
    assert "no servers are inside upstream" in error(http, "upstream u { }").message
    err = error(
        http,
        "upstream u { server 127.0.0.1:1; }\nupstream u { server 127.0.0.1:2; }\n"
        "server { return 204; }",
    )
    assert err.message == 'duplicate upstream "u"'


# --------------------------------------------------------------------------- proxy_pass


def test_proxy_pass_to_a_declared_upstream_keeps_the_uri(http: Load) -> None:
    cfg = http(
        """
        server {
          location /api/ { proxy_pass http://backend/v1/; }
          location / { proxy_pass http://backend; }
        }
        upstream backend { server 127.0.0.1:9000; }
        """
    )
    api, root = cfg.servers[0].locations
    assert api.proxy_pass is not None and root.proxy_pass is not None
    assert (api.proxy_pass.upstream, api.proxy_pass.uri, api.proxy_pass.proxy_host) == (
        "backend",
        "/v1/",
        "backend",
    )
    assert (root.proxy_pass.upstream, root.proxy_pass.uri) == ("backend", None)


def test_proxy_pass_to_an_address_makes_one_implicit_upstream(http: Load) -> None:
    cfg = http(
        """
        server {
          location /a { proxy_pass http://127.0.0.1:8080; }
          location /b { proxy_pass http://127.0.0.1:8080/b/; }
          location /c { proxy_pass http://127.0.0.1; }
        }
        """
    )
    a, b, c = cfg.servers[0].locations
    assert [u.name for u in cfg.upstreams] == ["127.0.0.1:8080", "127.0.0.1:80"]
    implicit = cfg.upstreams[0]
    assert implicit.implicit and implicit.keepalive == 0
    assert [(s.host, s.port) for s in implicit.servers] == [("127.0.0.1", 8080)]
    assert a.proxy_pass is not None and b.proxy_pass is not None and c.proxy_pass is not None
    assert (a.proxy_pass.upstream, a.proxy_pass.proxy_host) == ("127.0.0.1:8080", "127.0.0.1:8080")
    assert b.proxy_pass.uri == "/b/"
    assert (c.proxy_pass.upstream, c.proxy_pass.proxy_host) == ("127.0.0.1:80", "127.0.0.1")


def test_proxy_pass_to_an_ipv6_address(http: Load) -> None:
    cfg = http("server { location / { proxy_pass http://[::1]:8080/; } }")
    [up] = cfg.upstreams
    assert up.name == "[::1]:8080" and up.servers[0].host == "::1"


def test_proxy_pass_to_an_undeclared_name_is_host_not_found(http: Load) -> None:
    err = error(http, "server { location / { proxy_pass http://bakend; } }")
    assert err.message == 'host not found in upstream "bakend"'


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:8080", 'invalid URL prefix in "127.0.0.1:8080"'),
        ("fastcgi://x", 'invalid URL prefix in "fastcgi://x"'),
    ],
)
def test_bad_proxy_pass_urls_are_refused(http: Load, url: str, message: str) -> None:
    err = error(http, f"server {{\nlocation / {{\nproxy_pass {url};\n}}\n}}")
    assert err.message.startswith(message)
    assert err.where.endswith(":5")


# --------------------------------------------------------------------------- inheritance


def test_proxy_settings_inherit_from_http_to_server_to_location(http: Load) -> None:
    cfg = http(
        """
        proxy_read_timeout 30s;
        proxy_connect_timeout 5s;
        client_max_body_size 2m;
        proxy_next_upstream error timeout http_502;
        server {
          proxy_read_timeout 20s;
          client_max_body_size 0;
          location /a { proxy_pass http://127.0.0.1:1; }
          location /b {
            proxy_pass http://127.0.0.1:1;
            proxy_read_timeout 500ms;
            proxy_next_upstream off;
            proxy_next_upstream_tries 2;
            proxy_next_upstream_timeout 3s;
            proxy_http_version 1.0;
            proxy_send_timeout 7s;
          }
        }
        """
    )
    a, b = cfg.servers[0].locations
    assert (a.read_timeout, a.connect_timeout, a.client_max_body_size) == (20.0, 5.0, 0)
    assert a.next_upstream == frozenset({"error", "timeout", "http_502"})
    assert (b.read_timeout, b.connect_timeout, b.send_timeout) == (0.5, 5.0, 7.0)
    assert b.next_upstream == frozenset()
    assert (b.next_upstream_tries, b.next_upstream_timeout, b.http_version) == (2, 3.0, "1.0")
    assert cfg.servers[0].client_max_body_size == 0


def test_defaults_without_any_directive_are_nginx_defaults(http: Load) -> None:
    cfg = http("server { location / { proxy_pass http://127.0.0.1:1; } }")
    server = cfg.servers[0]
    [loc] = server.locations
    assert server.listens[0].key == ("0.0.0.0", 80)
    assert (loc.connect_timeout, loc.read_timeout, loc.send_timeout) == (60.0, 60.0, 60.0)
    assert loc.next_upstream == frozenset({"error", "timeout"})
    assert loc.client_max_body_size == 1024 * 1024
    assert (server.keepalive_timeout, server.keepalive_requests) == (75.0, 1000)
    assert loc.access_log is None and loc.set_headers == () and loc.add_headers == ()


def test_array_directives_are_inherited_only_by_levels_without_their_own(http: Load) -> None:
    cfg = http(
        """
        proxy_set_header X-From http;
        add_header X-H http;
        server {
          proxy_set_header X-From server;
          proxy_set_header X-Two server;
          location /inherits { proxy_pass http://127.0.0.1:1; }
          location /own {
            proxy_pass http://127.0.0.1:1;
            proxy_set_header X-Only location;
            add_header X-L loc always;
          }
        }
        """
    )
    inherits, own = cfg.servers[0].locations
    assert [(h.name, h.value.raw) for h in inherits.set_headers] == [
        ("X-From", "server"),
        ("X-Two", "server"),
    ]
    assert [h.name for h in inherits.add_headers] == ["X-H"]
    assert [(h.name, h.value.raw) for h in own.set_headers] == [("X-Only", "location")]
    assert [(h.name, h.always) for h in own.add_headers] == [("X-L", True)]


def test_access_log_inherits_and_off_turns_it_off(http: Load) -> None:
    cfg = http(
        """
        access_log logs/access.log combined;
        server {
          location /a { proxy_pass http://127.0.0.1:1; }
          location /b { proxy_pass http://127.0.0.1:1; access_log off; }
        }
        """
    )
    a, b = cfg.servers[0].locations
    assert a.access_log is not None
    assert [log.path for log in a.access_log] == [str(Path(cfg.prefix) / "logs" / "access.log")]
    assert b.access_log == ()  # "off"


def test_relative_log_paths_resolve_against_the_prefix(load_text: Load, tmp_path: Path) -> None:
    cfg = load_text(
        "events {}\nerror_log logs/error.log warn;\n"
        "http { server { access_log a.log; return 204; } }\n",
        prefix=str(tmp_path / "pfx"),
    )
    assert cfg.error_log == str(tmp_path / "pfx" / "logs" / "error.log")
    assert cfg.error_log_level == "warn"
    assert cfg.servers[0].access_log is not None
    assert cfg.servers[0].access_log[0].path == str(tmp_path / "pfx" / "a.log")
    assert cfg.state_dir == str(tmp_path / "pfx" / ".nonstop")


def test_a_location_with_nothing_else_serves_files_from_prefix_html(
    load_text: Load, tmp_path: Path
) -> None:
    # the Django guide's "location = /favicon.ico { access_log off; log_not_found off; }"
    cfg = load_text(
        "events {}\nhttp { server { listen 8080; location = /favicon.ico {"
        " access_log off; log_not_found off; } location / { return 204; } } }\n",
        prefix=str(tmp_path / "pfx"),
    )
    favicon = cfg.servers[0].locations[0]
    assert favicon.files is not None and favicon.files.root == str(tmp_path / "pfx" / "html")


def test_ssl_paths_resolve_against_the_config_directory(load_text: Load, tmp_path: Path) -> None:
    cfg = load_text(
        "events {}\nhttp { ssl_certificate certs/a.pem; server { listen 443 ssl;\n"
        "ssl_certificate_key certs/a.key; return 204; } }\n",
        prefix="/elsewhere",
    )
    tls = cfg.servers[0].tls
    assert tls is not None
    assert tls.certificate == str(tmp_path / "certs" / "a.pem")
    assert tls.certificate_key == str(tmp_path / "certs" / "a.key")


def test_client_side_timeouts_are_read_at_server_level(http: Load) -> None:
    cfg = http(
        """
        keepalive_timeout 10s;
        server {
          keepalive_requests 50;
          client_header_timeout 5s;
          client_body_timeout 6s;
          send_timeout 7s;
          return 204;
        }
        """
    )
    s = cfg.servers[0]
    assert (s.keepalive_timeout, s.keepalive_requests) == (10.0, 50)
    assert (s.client_header_timeout, s.client_body_timeout, s.send_timeout) == (5.0, 6.0, 7.0)


def test_server_level_set_and_return(http: Load) -> None:
    cfg = http("server { set $x 1; return 301 https://$host$request_uri; }")
    s = cfg.servers[0]
    assert s.sets == (("x", compile_template("1")),)
    assert s.ret is not None and s.ret.code == 301
    assert s.ret.text is not None and s.ret.text.variables == ("host", "request_uri")


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        ("444", 444, None),
        ("200 ok", 200, "ok"),
        ("https://example.com/", 302, "https://example.com/"),
        ("$scheme://example.com", 302, "$scheme://example.com"),
        ("307 /elsewhere", 307, "/elsewhere"),
    ],
)
def test_return_forms(http: Load, args: str, code: int, text: str | None) -> None:
    cfg = http(f"server {{ location / {{ return {args}; }} }}")
    ret = cfg.servers[0].locations[0].ret
    assert ret is not None and ret.code == code
    assert (ret.text.raw if ret.text else None) == text


def test_return_with_a_bad_code_is_an_error(http: Load) -> None:
    assert error(http, "server { return 1000; }").message == 'invalid return code "1000"'
    assert error(http, "server { return ok; }").message == 'invalid return code "ok"'


# --------------------------------------------------------------------------- listen


@pytest.mark.parametrize(
    ("arg", "host", "port"),
    [
        ("8080", "0.0.0.0", 8080),
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("127.0.0.1", "127.0.0.1", 80),
        ("*:80", "0.0.0.0", 80),
        ("[::1]:8080", "::1", 8080),
        ("[::]:80", "::", 80),
        ("localhost:8080", "127.0.0.1", 8080),
    ],
)
def test_listen_addresses(http: Load, arg: str, host: str, port: int) -> None:
    cfg = http(f"server {{ listen {arg}; return 204; }}")
    assert cfg.servers[0].listens[0].key == (host, port)


def test_listen_flags_ssl_and_default_server(http: Load) -> None:
    cfg = http(
        "server { listen 443 ssl default_server; ssl_certificate c; ssl_certificate_key k;"
        " return 204; }"
    )
    listen = cfg.servers[0].listens[0]
    assert listen.ssl and listen.default_server


@pytest.mark.parametrize("flag", ["http2", "reuseport", "backlog=511", "proxy_protocol"])
def test_other_listen_flags_are_outside_the_subset(http: Load, flag: str) -> None:
    err = error(http, f"server {{ listen 80 {flag}; return 204; }}")
    assert err.message == f'listen parameter "{flag}" is outside the nonstop subset'


def test_ssl_on_a_port_in_one_server_only_is_an_error(http: Load) -> None:
    err = error(
        http,
        "server { listen 443 ssl; ssl_certificate c; ssl_certificate_key k; return 204; }\n"
        "server { listen 443; server_name b; return 204; }",
    )
    assert "0.0.0.0:443" in err.message and '"ssl"' in err.message


def test_ssl_listen_without_certificate_is_an_error(http: Load) -> None:
    err = error(http, "server { listen 443 ssl; return 204; }")
    assert err.message.startswith('no "ssl_certificate" is defined')


def test_two_default_servers_on_one_port_is_an_error(http: Load) -> None:
    err = error(
        http,
        "server { listen 80 default_server; return 204; }\n"
        "server { listen 80 default_server; server_name b; return 204; }",
    )
    assert err.message == "a duplicate default server for 0.0.0.0:80"


def test_the_same_name_on_the_same_port_is_a_warning(http: Load) -> None:
    cfg = http(
        "server { server_name a.example; return 204; }\n"
        "server { server_name A.example; return 204; }"
    )
    assert any('conflicting server name "a.example" on 0.0.0.0:80' in n for n in cfg.notices)


# --------------------------------------------------------------------------- map


def test_map_with_exact_keys_and_default(http: Load) -> None:
    cfg = http(
        """
        map $http_upgrade $connection_upgrade {
          default upgrade;
          ''      close;
          WebSocket websocket;
          \\default literal;
        }
        server {
          location / {
            proxy_pass http://127.0.0.1:1;
            proxy_set_header Connection $connection_upgrade;
          }
        }
        """
    )
    [m] = cfg.maps
    assert (m.source, m.target, m.default.raw) == ("http_upgrade", "connection_upgrade", "upgrade")
    assert [(k, v.raw) for k, v in m.entries] == [
        ("", "close"),
        ("websocket", "websocket"),
        ("default", "literal"),
    ]


def test_map_without_default_maps_to_empty(http: Load) -> None:
    cfg = http("map $host $x { a b; }\nserver { return 200 $x; }")
    assert cfg.maps[0].default.raw == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("hostnames; a b;", 'map "hostnames" is outside the nonstop subset'),
        (
            "~^(a b;",
            'pcre_compile() failed: missing ), unterminated subpattern at position 1 in "^(a"',
        ),
        ("a b c;", "invalid number of the map parameters"),
        ("a b; a c;", 'conflicting parameter "a"'),
    ],
)
def test_map_outside_the_subset_is_an_error(http: Load, body: str, message: str) -> None:
    err = error(http, f"map $host $x {{ {body} }}\nserver {{ return 204; }}")
    assert err.message == message


def test_map_onto_a_builtin_variable_is_an_error(http: Load) -> None:
    err = error(http, "map $uri $host { a b; }\nserver { return 204; }")
    assert err.message == 'the duplicate "host" variable'


# --------------------------------------------------------------------------- directives


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server { foo bar; }", 'unknown directive "foo"'),
        ("server { limit_except GET { } }", 'directive "limit_except" is outside the nonstop'),
        ("gzip maybe;", 'invalid value "maybe" in "gzip" directive, it must be "on" or "off"'),
        ("gzip_comp_level 10;", '"gzip_comp_level" must be between 1 and 9'),
        ("gzip_proxied sometimes;", 'invalid value "sometimes" in "gzip_proxied" directive'),
        ("gzip_http_version 2.0;", 'invalid value "2.0" in "gzip_http_version" directive'),
        ("gzip_buffers 0 4k;", 'invalid value "0 4k" in "gzip_buffers" directive'),
        ("gzip_disable ~(;", "pcre_compile() failed: missing ), unterminated"),
        ("proxy_redirect sometimes;", 'invalid parameter "sometimes"'),
        (
            "proxy_redirect off; proxy_redirect / /x;",
            '"off" cannot be used with other "proxy_redirect" directives',
        ),
        (
            "server { location / { set $u http://127.0.0.1:1; proxy_pass $u;"
            " proxy_redirect default; } }",
            '"proxy_redirect default" cannot be used with "proxy_pass" directive with variables',
        ),
        ("proxy_cookie_path on;", 'invalid parameter "on"'),
        ("server { proxy_cookie_domain a b c; }", 'invalid number of arguments in "proxy_co'),
        ("server { listen; }", 'invalid number of arguments in "listen" directive'),
        ("proxy_pass http://127.0.0.1:1;", '"proxy_pass" directive is not allowed here'),
        ("server { location / { location /x { } } }", "nested locations are outside"),
        ("server { location ~ ( { } }", "pcre_compile() failed: missing ), unterminated"),
        (
            "server { location ~ x { proxy_pass http://127.0.0.1:1/x; } }",
            '"proxy_pass" cannot have URI part in location given by regular expression',
        ),
        (
            "server { location @n { proxy_pass http://127.0.0.1:1/x; } }",
            '"proxy_pass" cannot have URI part in location given by regular expression',
        ),
        (
            "server { location / { if ($a) { proxy_pass http://127.0.0.1:1/x; } } }",
            '"proxy_pass" cannot have URI part inside "if" statement',
        ),
        ("server { location @n { return 204; } location @n { return 204; } }", "duplicate loc"),
        ("server { rewrite ^ /x forever; }", 'invalid parameter "forever"'),
        ("server { if $a { return 204; } }", 'invalid condition "$a"'),
        ("server { if ($a { return 204; } }", 'invalid condition "($a"'),
        ("server { if ($a =) { return 204; } }", 'unexpected "=" in condition'),
        ("server { if ($a <> b) { return 204; } }", 'unexpected "<>" in condition'),
        ("server { if (a = b) { return 204; } }", 'invalid condition "a"'),
        ("server { if (-f) { return 204; } }", 'invalid condition "(-f)"'),
        ("server { if ($a) { proxy_pass http://u; } }", '"proxy_pass" directive is not allowed'),
        ("server { location / { if ($a) { if ($b) { } } } }", '"if" directive is not allowed'),
        ("server { location / { if ($a) { proxy_set_header A b; } } }", '"proxy_set_header" di'),
        ("server { client_max_body_size 10x; }", '"client_max_body_size" directive invalid'),
        ("server { proxy_read_timeout 1q; }", '"proxy_read_timeout" directive invalid'),
        ("server { listen 80 { } }", 'directive "listen" is not terminated by ";"'),
        ("server;", 'directive "server" has no opening "{"'),
        (
            "server { location / { proxy_pass http://127.0.0.1:1;"
            " proxy_pass http://127.0.0.1:2; } }",
            '"proxy_pass" directive is duplicate',
        ),
        ("server { proxy_next_upstream error bogus; }", 'invalid value "bogus"'),
        ("server { access_log x.log main; }", 'unknown log format "main"'),
        ("server { ssl_prefer_server_ciphers yes; }", 'invalid value "yes" in "ssl_prefer'),
        ("server { set x 1; }", 'invalid variable name "x"'),
        ("server { return 200 $nope; }", 'unknown "nope" variable'),
        ("server { }", 'a server needs a "location", a "return" or a "root"'),
        (
            "server { location / { return 204; } location / { return 204; } }",
            'duplicate location "/"',
        ),
        ("log_format main escape=xml '$remote_addr';", 'unknown log format escaping "xml"'),
        ("log_format combined '$remote_addr';", 'duplicate "log_format" name "combined"'),
        ("server { log_format main '$remote_addr'; }", '"log_format" directive is not allowed'),
        ("server { server_name ~^www; return 204; }", 'regex server_name "~^www" is outside'),
    ],
)
def test_directive_errors_read_like_nginx(http: Load, text: str, message: str) -> None:
    assert error(http, text).message.startswith(message)


def test_error_names_the_file_and_line(load_text: Load, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text("events {}\nhttp {\n  server {\n    listen 80;\n    proxy_pas x;\n  }\n}\n")
    assert info.value.where == f"{tmp_path / 'nginx.conf'}:5"
    assert str(info.value) == f'{tmp_path / "nginx.conf"}:5: unknown directive "proxy_pas"'


def test_missing_events_is_an_error(load_text: Load) -> None:
    with pytest.raises(ConfigError, match='no "events" section'):
        load_text("http { server { return 204; } }\n")


def test_a_config_without_servers_is_an_error(load_text: Load) -> None:
    with pytest.raises(ConfigError, match='no "server" block'):
        load_text("events {}\nhttp { }\n")


def test_process_model_directives_are_noticed_once_each(load_text: Load) -> None:
    cfg = load_text(
        """\
        daemon off;
        worker_processes auto;
        pid /run/nginx.pid;
        events { worker_connections 1024; multi_accept on; }
        http {
          sendfile on;
          tcp_nopush on;
          types_hash_max_size 2048;
          default_type application/octet-stream;
          include mime.types;
          types { text/html html; }
          server_tokens off;
          server { sendfile off; return 204; }
        }
        """
    )
    names = [n.split('"')[1] for n in cfg.notices if n.startswith("directive")]
    assert names == [
        "daemon",
        "pid",
        "multi_accept",
        "sendfile",
        "tcp_nopush",
        "types_hash_max_size",
        "server_tokens",
    ]
    assert cfg.max_connections == 1024  # worker_connections bounds client connections
    assert cfg.workers == len(os.sched_getaffinity(0))  # worker_processes auto: one per core
    [notice] = [n for n in cfg.notices if '"pid"' in n]
    assert notice.startswith('directive "pid" has no effect in nonstop (')
    assert notice.endswith("nginx.conf:3)")
    assert any("mime.types" in n for n in cfg.notices)


@pytest.mark.skipif(not Path("/etc/nginx/mime.types").exists(), reason="no Debian mime.types")
def test_debians_mime_types_file_gives_the_types_of_served_files(
    write: Write, load_text: Load
) -> None:
    write("mime.types", Path("/etc/nginx/mime.types").read_text())
    cfg = load_text(
        "events {}\nhttp { include mime.types; types { application/wasm wasm; }\n"
        "default_type application/octet-stream;\n"
        "server { root www; location /x/ { types { text/plain md; } } } }\n"
    )
    assert len(cfg.files) == 2
    files = cfg.servers[0].files
    assert files is not None and files.default_type == "application/octet-stream"
    types = dict(files.types)
    assert (types["html"], types["jpg"], types["wasm"]) == (
        "text/html",
        "image/jpeg",
        "application/wasm",
    )
    [loc] = cfg.servers[0].locations
    assert loc.files is not None and loc.files.types == (("md", "text/plain"),)


def test_process_directive_in_the_wrong_context_is_an_error(http: Load) -> None:
    assert "not allowed here" in error(http, "worker_processes 2;").message


def test_caret_tilde_location_is_a_plain_prefix(http: Load) -> None:
    cfg = http("server { location ^~ /static/ { return 204; } location =/x { return 200; } }")
    a, b = cfg.servers[0].locations
    assert (a.path, a.exact) == ("/static/", False)
    assert (b.path, b.exact) == ("/x", True)


def test_only_the_first_return_counts(http: Load) -> None:
    cfg = http("server { location / { return 204; return 500; } }")
    ret = cfg.servers[0].locations[0].ret
    assert ret is not None and ret.code == 204


def test_server_name_collects_every_name_lowercased(http: Load) -> None:
    cfg = http("server { server_name Example.com www.example.com; server_name _; return 204; }")
    assert cfg.servers[0].server_names == ("example.com", "www.example.com", "_")


def test_request_buffering_directives_inherit_and_default_to_nginx(http: Load) -> None:
    cfg = http(
        """
        client_body_buffer_size 64k;
        server {
          location /a { proxy_pass http://127.0.0.1:1; }
          location /b {
            proxy_pass http://127.0.0.1:1;
            proxy_request_buffering off;
            client_body_buffer_size 8k;
          }
        }
        server { location / { proxy_pass http://127.0.0.1:1; } }
        """
    )
    a, b = cfg.servers[0].locations
    [c] = cfg.servers[1].locations
    assert (a.request_buffering, a.client_body_buffer_size) == (True, 64 * 1024)
    assert (b.request_buffering, b.client_body_buffer_size) == (False, 8 * 1024)
    assert (c.request_buffering, c.client_body_buffer_size) == (True, 64 * 1024)


def test_request_buffering_takes_only_on_or_off(http: Load) -> None:
    err = error(http, "proxy_request_buffering maybe;")
    assert "it must be" in err.message


def test_worker_processes_and_worker_rlimit_nofile_are_read(load_text: Load) -> None:
    body = "events {}\nhttp { server { return 204; } }\n"
    cfg = load_text("worker_processes 3;\nworker_rlimit_nofile 4096;\n" + body)
    assert (cfg.workers, cfg.max_open_files) == (3, 4096)
    assert not [n for n in cfg.notices if "worker_" in n]
    default = load_text(body)
    assert (default.workers, default.max_open_files) == (1, None)
    assert load_text("worker_processes auto;\n" + body).workers == len(os.sched_getaffinity(0))
    bad = error(load_text, "worker_processes 0;\n" + body)
    assert bad.message == 'invalid value "0" in "worker_processes" directive'
    assert "invalid number" in error(load_text, "worker_rlimit_nofile many;\n" + body).message


def test_worker_cpu_affinity_and_priority_are_read_with_file_and_line_for_errors(
    load_text: Load,
) -> None:
    body = "events {}\nhttp { server { return 204; } }\n"
    cfg = load_text("worker_processes 2;\nworker_cpu_affinity 01 10;\nworker_priority -5;\n" + body)
    assert (cfg.cpu_affinity, cfg.worker_priority) == (("01", "10"), -5)
    assert not [n for n in cfg.notices if "worker_" in n]
    assert load_text("worker_processes 2;\nworker_cpu_affinity auto;\n" + body).cpu_affinity == (
        "auto",
    )
    default = load_text(body)
    assert (default.cpu_affinity, default.worker_priority) == ((), 0)
    bad = error(load_text, "worker_processes 2;\nworker_cpu_affinity 0102;\n" + body)
    assert (bad.message, bad.where.rsplit(":", 1)[1]) == (
        'invalid character "2" in "worker_cpu_affinity"',
        "2",
    )
    assert "expected -20 to 20" in error(load_text, "worker_priority 40;\n" + body).message
    one = load_text("worker_cpu_affinity auto;\n" + body)  # one worker process, bound too
    assert one.cpu_affinity == ("auto",) and one.separate_workers
    assert not [n for n in one.notices if "worker_" in n], one.notices


def test_master_process_off_serves_from_one_process_and_says_what_it_gives_up(
    load_text: Load,
) -> None:
    body = "events {}\nhttp { server { return 204; } }\n"
    default = load_text(body)
    assert default.master_process and default.separate_workers and not default.notices
    assert load_text("master_process on;\n" + body).separate_workers
    off = load_text("master_process off;\nworker_processes 4;\nworker_cpu_affinity auto;\n" + body)
    assert not off.master_process and not off.separate_workers
    (notice,) = off.notices
    assert notice.startswith('"master_process off": one process serves and drives the proxy')
    assert '"worker_processes 4" has no effect' in notice
    assert "cuts every connection" in notice and notice.endswith(":1)")
    bad = error(load_text, "master_process yes;\n" + body)
    assert (
        bad.message == 'invalid value "yes" in "master_process" directive, it must be "on" or "off"'
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="user takes effect when nonstop runs as root")
def test_user_names_the_workers_account_and_unknown_names_are_errors(load_text: Load) -> None:
    """Started as root (as the tests run), ``user`` takes effect; GROUP defaults to the
    group named as USER, which Debian does not have for nobody: nginx refuses that too."""
    site = "events {}\nhttp { server { listen 127.0.0.1:8080; return 200; } }\n"
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name  # Debian's nogroup
    config = load_text(f"user nobody {group};\n" + site)
    assert config.worker_user is not None
    assert (config.worker_user.uid, config.worker_user.gid) == (nobody.pw_uid, nobody.pw_gid)
    assert config.separate_workers and config.workers == 1
    assert not any("user" in n for n in config.notices), config.notices
    assert load_text(site).worker_user is None
    unknown = error(load_text, "user no-such-user;\n" + site)
    assert str(unknown).endswith('nginx.conf:1: getpwnam("no-such-user") failed')
    no_group = error(load_text, "user nobody no-such-group;\n" + site)
    assert str(no_group).endswith('nginx.conf:1: getgrnam("no-such-group") failed')
    wrong = error(load_text, "user a b c;\n" + site)
    assert 'invalid number of arguments in "user" directive' in str(wrong)


def test_user_is_ignored_with_nginx_s_warning_when_not_root(
    load_text: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    site = "events {}\nhttp { server { listen 127.0.0.1:8080; return 200; } }\n"
    config = load_text("user no-such-user;\n" + site)
    assert config.worker_user is None
    assert config.notices == (
        'the "user" directive makes sense only if the master process runs with super-user'
        f" privileges, ignored ({config.path}:1)",
    )


def test_rewrite_directives_become_a_program_in_the_order_written(http: Load) -> None:
    cfg = http(
        "server {\n"
        "  location ~* \\.(png|jpg)$ { proxy_pass http://127.0.0.1:9000; }\n"
        "  location @fallback { return 204; }\n"
        "  location / {\n"
        "    set $a 1;\n"
        "    rewrite ^/old/(.*)$ /new/$1 last;\n"
        "    if ($request_method = 'OPTIONS') { add_header X-Pre 1; return 204; }\n"
        "    break;\n"
        "    proxy_pass http://127.0.0.1:9000/base/;\n"
        "  }\n"
        "}"
    )
    regex, named, root = cfg.servers[0].locations
    assert (regex.modifier, regex.path, regex.is_regex) == ("~*", "\\.(png|jpg)$", True)
    assert (named.modifier, named.path, named.is_named) == ("@", "@fallback", True)
    set_a, rewrite, cond, brk = root.steps
    assert isinstance(set_a, SetSpec) and set_a.name == "a"
    assert isinstance(rewrite, RewriteSpec)
    assert (rewrite.regex, rewrite.replacement.raw, rewrite.flag) == (
        Regex("^/old/(.*)$"),
        "/new/$1",
        "last",
    )
    assert isinstance(cond, IfSpec)
    assert cond.condition == Condition(
        "=", compile_template("$request_method"), compile_template("OPTIONS")
    )
    assert cond.steps == (ReturnSpec(204),)
    assert cond.location is not None
    assert [h.name for h in cond.location.add_headers] == ["X-Pre"]
    # the if inherits the location's pass without its URI part, as nginx does
    assert cond.location.proxy_pass is not None and cond.location.proxy_pass.uri is None
    assert isinstance(brk, BreakSpec)
    assert root.sets == (("a", compile_template("1")),)


def test_a_level_with_only_set_and_return_keeps_no_program(http: Load) -> None:
    cfg = http("server { set $a 1; location / { set $b 2; return 200 $a$b; } }")
    [loc] = cfg.servers[0].locations
    assert loc.steps == () and cfg.servers[0].steps == ()
    assert loc.ret == ReturnSpec(200, compile_template("$a$b"))


def test_captures_and_named_groups_are_known_variables(http: Load) -> None:
    http('server { location ~ ^/(?<user>\\w+)/(\\d+) { return 200 "$user $1 $2"; } }')
    err = error(http, 'server { location / { return 200 "$usr"; } }')
    assert err.message == 'unknown "usr" variable'


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("($a)", Condition("", compile_template("$a"))),
        ("( $a )", Condition("", compile_template("$a"))),
        ("($a != 'x y')", Condition("!=", compile_template("$a"), compile_template("x y"))),
        ('($a ~* "^b(c)")', Condition("~*", compile_template("$a"), regex=Regex("^b(c)", True))),
        ("($a !~ ^b)", Condition("!~", compile_template("$a"), regex=Regex("^b"))),
        ("(!-f /srv$uri)", Condition("!-f", compile_template("/srv$uri"))),
        ("(-d /srv)", Condition("-d", compile_template("/srv"))),
    ],
)
def test_if_conditions_parse_as_nginx_reads_them(
    http: Load, condition: str, expected: Condition
) -> None:
    cfg = http(f"server {{ set $a 1; if {condition} {{ return 204; }} return 200; }}")
    cond = cfg.servers[0].steps[1]
    assert isinstance(cond, IfSpec) and cond.condition == expected
    assert cond.location is None  # a server-level if keeps the server's configuration


def test_regex_map_keys_are_kept_in_order_after_exact_ones(http: Load) -> None:
    cfg = http(
        'map $uri $s { /a "A"; ~^/b(?<rest>.*) "B$rest"; ~*^/C "C"; default "D"; }\n'
        "server { return 200 $s; }"
    )
    [m] = cfg.maps
    assert m.entries == (("/a", compile_template("A")),)
    assert m.regexes == (
        (Regex("^/b(?<rest>.*)"), compile_template("B$rest")),
        (Regex("^/C", True), compile_template("C")),
    )


def test_error_pages_are_inherited_as_one_list_by_a_level_with_none(http: Load) -> None:
    cfg = http(
        "error_page 404 /404;\n"
        "server {\n"
        "  error_page 500 502 =503 @down;\n"
        "  location / { proxy_intercept_errors on; error_page 418 = /tea; return 418; }\n"
        "  location /b { return 404; }\n"
        "  location @down { return 204; }\n"
        "}"
    )
    srv = cfg.servers[0]
    a, b, _ = srv.locations
    assert srv.error_pages == (ErrorPage((500, 502), compile_template("@down"), 503),)
    assert a.error_pages == (ErrorPage((418,), compile_template("/tea"), 0),)
    assert a.intercept_errors and not b.intercept_errors
    assert b.error_pages == srv.error_pages


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("error_page 200 /x;", 'value "200" must be between 300 and 599'),
        ("error_page =404 /x;", 'invalid number of arguments in "error_page" directive'),
        ("error_page 404 =x /x;", 'invalid value "=x"'),
    ],
)
def test_error_page_errors_read_like_nginx(http: Load, line: str, message: str) -> None:
    assert error(http, f"server {{ {line} return 204; }}").message == message


def test_allow_and_deny_keep_their_order_and_are_inherited_as_one_list(http: Load) -> None:
    cfg = http(
        "allow 10.0.0.1;\n"
        "server {\n"
        "  location / { deny 192.168.1.0/24; allow 2001:db8::/32; deny all; return 204; }\n"
        "  location /b { return 204; }\n"
        "}"
    )
    a, b = cfg.servers[0].locations
    assert a.access == (
        AccessRule(False, "192.168.1.0/24"),
        AccessRule(True, "2001:db8::/32"),
        AccessRule(False, "all"),
    )
    assert b.access == (AccessRule(True, "10.0.0.1/32"),)
    assert error(http, "server { deny 10.0.0.300; return 204; }").message == (
        'invalid parameter "10.0.0.300"'
    )


def test_proxy_hide_header_names_are_inherited_as_one_list(http: Load) -> None:
    cfg = http(
        "proxy_hide_header X-Powered-By;\n"
        "server {\n"
        "  location / { proxy_pass http://127.0.0.1:1; }\n"
        "  location /b { proxy_hide_header ETag; proxy_hide_header Server; return 204; }\n"
        "}"
    )
    a, b = cfg.servers[0].locations
    assert a.hide_headers == ("x-powered-by",)
    assert b.hide_headers == ("etag", "server")


def test_access_log_takes_the_json_format_and_names_the_formats_it_knows(http: Load) -> None:
    cfg = http("server { access_log logs/a.log json; return 204; }")
    assert cfg.servers[0].access_log is not None
    assert cfg.servers[0].access_log[0].format.name == "json"
    with pytest.raises(ConfigError, match=r'unknown log format "main"'):
        http("server { access_log logs/a.log main; return 204; }")


# --------------------------------------------------------------------------- gzip, proxy_redirect


def test_the_gzip_family_is_inherited_directive_by_directive(http: Load) -> None:
    cfg = http(
        """
        gzip_types application/json;
        gzip_comp_level 6;
        gzip_disable msie6 "^curl";
        server {
          gzip on;
          gzip_vary on;
          location /a { return 204; }
          location /b { gzip off; return 204; }
          location /c { gzip_types text/css; gzip_proxied expired no-cache; return 204; }
        }
        """
    )
    [server] = cfg.servers
    a, b, c = server.locations
    assert a.gzip is not None and b.gzip is None and c.gzip is not None
    assert a.gzip.types == {"text/html", "application/json"}
    assert (a.gzip.comp_level, a.gzip.vary, a.gzip.min_length) == (6, True, 20)
    assert a.gzip.disable_msie6 and a.gzip.disable == (Regex("^curl", True),)
    assert c.gzip.types == {"text/html", "text/css"}  # a level's own list replaces
    assert c.gzip.proxied == {"expired", "no-cache"} and a.gzip.proxied == {"off"}
    assert server.gzip is not None  # files a server answers itself are compressed too


def test_proxy_redirect_default_is_the_pass_url_with_the_location_prefix(http: Load) -> None:
    cfg = http(
        """
        server {
          location /one/ { proxy_pass http://127.0.0.1:9000/base/; }
          location / { proxy_pass http://127.0.0.1:9000; }
          location /var/ { set $u http://127.0.0.1:9000; proxy_pass $u; }
          location /off/ { proxy_pass http://127.0.0.1:9000; proxy_redirect off; }
        }
        """
    )
    one, root, var, off = cfg.servers[0].locations
    rule = one.redirects[0]
    assert rule.pattern is not None and rule.pattern.raw == "http://127.0.0.1:9000/base/"
    assert rule.replacement.raw == "/one/"
    rule = root.redirects[0]
    assert rule.pattern is not None and rule.pattern.raw == "http://127.0.0.1:9000/"
    assert rule.replacement.raw == "/"
    assert var.redirects == () and off.redirects == ()


def test_proxy_redirect_and_cookie_rules_are_inherited_only_by_a_level_without_any(
    http: Load,
) -> None:
    cfg = http(
        """
        proxy_redirect http://a/ /a/;
        proxy_redirect ~*^http://(b)/ /$1/;
        proxy_cookie_domain .Example.com $host;
        proxy_pass_header Server;
        server {
          location /x { proxy_pass http://127.0.0.1:9000; }
          location /y {
            proxy_pass http://127.0.0.1:9000;
            proxy_redirect default;
            proxy_cookie_domain off;
            proxy_pass_header X-Accel-Buffering;
          }
        }
        """
    )
    x, y = cfg.servers[0].locations
    assert [r.regex is not None for r in x.redirects] == [False, True]
    assert x.redirects[1].regex == Regex("^http://(b)/", True)
    [domain] = x.cookie_domains
    assert domain.pattern is not None and domain.pattern.raw == "Example.com"  # dot dropped
    assert x.pass_headers == ("server",)
    [default] = y.redirects
    assert default.pattern is not None and default.pattern.raw == "http://127.0.0.1:9000/"
    assert y.cookie_domains == () and y.pass_headers == ("x-accel-buffering",)
