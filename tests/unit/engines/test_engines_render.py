"""The nginx renderer against golden files, and each golden config against a real nginx.

Set ``NONSTOP_UPDATE_GOLDEN=1`` to rewrite the golden files after a deliberate change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nonstop.config import load
from nonstop.engines.nginx import NginxEngine, SystemNginx, find_nginx, render
from nonstop.engines.nginx.render import RenderOptions, duration, quote, size

GOLDEN = Path(__file__).parent / "golden"
INPUTS = GOLDEN / "inputs"

CASES: dict[str, tuple[str, RenderOptions]] = {
    "product": ("product.toml", RenderOptions("/state/nginx")),
    "edge": (
        "edge.toml",
        RenderOptions("/state/nginx", down=frozenset({("api", "127.0.0.1:9102")})),
    ),
    "methods": ("methods.conf", RenderOptions("/state/nginx")),
    "seed_ip_hash": ("seed_ip_hash.conf", RenderOptions("/state/nginx")),
    "rewrites": ("rewrites.conf", RenderOptions("/state/nginx")),
    "files": ("files.conf", RenderOptions("/state/nginx")),
    "limits": ("limits.conf", RenderOptions("/state/nginx")),
    "filters": ("filters.conf", RenderOptions("/state/nginx")),
    "logs": ("logs.conf", RenderOptions("/state/nginx")),
    "seed_blue_green": ("blue_green/nginx.conf", RenderOptions("/state/nginx", user=("nobody",))),
}


def _dump(files: dict[str, str], inputs: Path) -> str:
    text = "".join(f"# ==== {name}\n{body}" for name, body in sorted(files.items()))
    return text.replace(str(inputs), "{inputs}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_the_golden_file(case: str) -> None:
    source, options = CASES[case]
    rendered = _dump(dict(render(load(str(INPUTS / source)), options).files), INPUTS)
    golden = GOLDEN / f"{case}.nginx.conf"
    if os.environ.get("NONSTOP_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_render_is_deterministic_for_the_same_config_and_state() -> None:
    config = load(str(INPUTS / "edge.toml"))
    options = CASES["edge"][1]
    assert render(config, options) == render(load(str(INPUTS / "edge.toml")), options)


def test_an_app_is_two_slot_upstreams_each_backed_by_the_other() -> None:
    main = render(load(str(INPUTS / "edge.toml")), RenderOptions("/state/nginx")).main
    blue = main[main.index("upstream web__slot0 {") :]
    blue = blue[: blue.index("}")]
    green = main[main.index("upstream web__slot1 {") :]
    green = green[: green.index("}")]
    assert "server 127.0.0.1:8080;" in blue and "server 127.0.0.1:8000 backup;" in blue
    assert "server 127.0.0.1:8000;" in green and "server 127.0.0.1:8080 backup;" in green
    assert "upstream web {" not in main  # no reload moves an app: the slot flag does


def test_a_server_passing_to_an_app_picks_the_slot_from_its_flag_file() -> None:
    main = render(load(str(INPUTS / "edge.toml")), RenderOptions("/state/nginx")).main
    assert "set $nonstop_app_web web__slot0;" in main
    assert "if (-f /state/nginx/slots/web.slot1) {" in main
    assert "set $nonstop_app_web web__slot1;" in main
    assert "proxy_pass http://$nonstop_app_web;" in main
    # each worker caches the flag's state for a second instead of a stat() per request
    assert "open_file_cache_valid 1s;" in main and "open_file_cache_errors on;" in main


def test_an_app_pass_sends_the_host_a_literal_pass_would_have_sent() -> None:
    config = load(str(INPUTS / "edge.toml"))
    server = config.servers[0]
    plain = dataclasses.replace(server.locations[0], set_headers=())
    config = dataclasses.replace(config, servers=(dataclasses.replace(server, locations=(plain,)),))
    main = render(config, RenderOptions("/s")).main
    assert "proxy_set_header Host web;" in main  # $proxy_host of http://web, not the slot's


def test_an_app_pass_with_a_uri_part_rewrites_as_nginx_would() -> None:
    config = load(str(INPUTS / "edge.toml"))
    web = next(u for u in config.upstreams if u.name == "web")
    server = config.servers[0]
    loc = server.locations[0]
    assert loc.proxy_pass is not None
    moved = dataclasses.replace(
        loc,
        path="/shop/",
        proxy_pass=dataclasses.replace(loc.proxy_pass, uri="/store/"),
    )
    config = dataclasses.replace(config, servers=(dataclasses.replace(server, locations=(moved,)),))
    main = render(config, RenderOptions("/s")).main
    assert web.app and "rewrite ^/shop/(.*)$ /store/$1 break;" in main


def test_worker_shutdown_timeout_is_the_longest_app_drain_timeout() -> None:
    main = render(load(str(INPUTS / "edge.toml")), RenderOptions("/s")).main
    assert "worker_shutdown_timeout 45s;" in main


def test_keepalive_upstreams_get_http_1_1_and_an_empty_connection_header() -> None:
    main = render(load(str(INPUTS / "methods.conf")), RenderOptions("/s")).main
    root = main[main.index("location / {") :]
    root = root[: root.index("}")]
    assert "proxy_http_version 1.1;" in root and 'proxy_set_header Connection "";' in root
    ws = main[main.index("location /ws {") :]
    ws = ws[: ws.index("}")]
    assert 'Connection "";' not in ws and "Connection $connection_upgrade;" in ws


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", "plain"),
        ("$host$request_uri", "$host$request_uri"),
        ("", '""'),
        ("two words", '"two words"'),
        ('say "hi"; now', '"say \\"hi\\"; now"'),
        ("back\\slash", '"back\\\\slash"'),
        ("{brace}", '"{brace}"'),
    ],
)
def test_quote_writes_what_nginx_reads_back(value: str, quoted: str) -> None:
    assert quote(value) == quoted


def test_durations_and_sizes_use_nginx_units() -> None:
    assert [duration(v) for v in (10.0, 0.5, 1.5, 0.0, 120.0)] == [
        "10s",
        "500ms",
        "1500ms",
        "0s",
        "120s",
    ]
    assert [size(v) for v in (1 << 20, 10 << 20, 2048, 1000, 0)] == ["1m", "10m", "2k", "1000", "0"]


def _certificate(where: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=example.com",
            "-days",
            "2",
            "-keyout",
            str(where / "key.pem"),
            "-out",
            str(where / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    for name in ("fullchain.pem", "privkey.pem"):
        shutil.copy(where / ("cert.pem" if name == "fullchain.pem" else "key.pem"), where / name)


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_golden_config_passes_nginx_t(case: str, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    shutil.copytree(INPUTS, inputs)
    _certificate(inputs)
    source, options = CASES[case]
    config = load(str(inputs / source))
    binary = find_nginx()
    assert binary is not None
    engine = NginxEngine(config, SystemNginx(binary), home=str(tmp_path / "home"))

    async def check() -> str:
        for upstream, address in options.down:
            engine.set_down(upstream, address, True)
        await engine.update()
        return await engine.check()

    assert "test is successful" in asyncio.run(check())
    assert (
        "web__slot1" in (tmp_path / "home" / "conf" / "nginx.conf").read_text() or not config.apps
    )


def test_access_log_off_stays_off_and_keeps_only_the_upstream_log(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events {}\nhttp {\n  upstream u { server 127.0.0.1:9; }\n"
        "  server { listen 127.0.0.1:8; access_log off; location / { proxy_pass http://u; } }\n}\n"
    )
    main = render(load(str(conf)), RenderOptions("/s")).main
    server = main[main.index("server {") :]
    assert "access_log off;" in server and "upstream.log" not in main
    toml = tmp_path / "nonstop.toml"
    toml.write_text(
        '[apps.web]\ncommand = "app"\nports = [9001, 9002]\n'
        '[[servers]]\nlisten = ["127.0.0.1:8"]\naccess_log = "off"\n'
        'locations = [{ path = "/", pass = "web" }]\n'
    )
    main = render(load(str(toml)), RenderOptions("/s")).main
    server = main[main.index("server {") :]
    assert "access_log off;" not in server  # it would silence the upstream log too
    assert "access_log /s/logs/upstream.log nonstop_upstream" in server
    assert "access_log /s/logs/access.log" not in server


def test_buffering_and_proxy_ssl_settings_reach_nginx_as_written(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events {}\nhttp {\n  upstream u { server 127.0.0.1:9; }\n"
        "  server { listen 127.0.0.1:8;\n"
        "    location / { proxy_pass https://u; proxy_buffering off; proxy_buffers 16 8k;\n"
        "      proxy_max_temp_file_size 0; proxy_ignore_headers X-Accel-Buffering;\n"
        "      proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.pem;\n"
        "      proxy_ssl_server_name on; proxy_ssl_name app.internal; }\n"
        "    location /plain { proxy_pass http://u; }\n  }\n}\n"
    )
    main = render(load(str(conf)), RenderOptions("/s")).main
    tls, plain = main.split("location /plain")
    for line in (
        "proxy_pass https://u;",
        "proxy_buffering off;",
        "proxy_buffers 16 8k;",
        "proxy_max_temp_file_size 0;",
        "proxy_ignore_headers X-Accel-Buffering;",
        "proxy_ssl_verify on;",
        f"proxy_ssl_trusted_certificate {tmp_path}/ca.pem;",
        "proxy_ssl_server_name on;",
        "proxy_ssl_name app.internal;",
    ):
        assert line in tls, line
    assert "proxy_buffer" not in plain and "proxy_ssl" not in plain  # defaults stay implicit


def test_a_resolver_reaches_nginx_beside_a_pass_with_variables(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events {}\nhttp {\n  resolver 127.0.0.1:5353 [::1] valid=10s ipv6=off;\n"
        "  server { listen 127.0.0.1:8; location / { proxy_pass http://$host:9000; } }\n}\n"
    )
    main = render(load(str(conf)), RenderOptions("/s")).main
    assert "resolver 127.0.0.1:5353 [::1]:53 valid=10s ipv6=off;" in main
    assert "resolver_timeout 30s;" in main
