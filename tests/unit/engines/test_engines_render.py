"""The nginx renderer against golden files, and each golden config against a real nginx.

Set ``NONSTOP_UPDATE_GOLDEN=1`` to rewrite the golden files after a deliberate change.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nonstop.config import load
from nonstop.config.model import ServerSpec
from nonstop.engines.nginx import NginxEngine, SystemNginx, find_nginx, render
from nonstop.engines.nginx.render import RenderOptions, duration, quote, size

GOLDEN = Path(__file__).parent / "golden"
INPUTS = GOLDEN / "inputs"
WEB = (ServerSpec("127.0.0.1:8080", "127.0.0.1", 8080),)

CASES: dict[str, tuple[str, RenderOptions]] = {
    "product": ("product.toml", RenderOptions("/state/nginx", app_servers={"web": WEB})),
    "edge": (
        "edge.toml",
        RenderOptions(
            "/state/nginx",
            app_servers={"web": WEB},
            down=frozenset({("api", "127.0.0.1:9102"), ("web", "127.0.0.1:8080")}),
        ),
    ),
    "methods": ("methods.conf", RenderOptions("/state/nginx")),
    "seed_ip_hash": ("seed_ip_hash.conf", RenderOptions("/state/nginx")),
    "seed_blue_green": ("blue_green/nginx.conf", RenderOptions("/state/nginx", user="nobody")),
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


def test_an_app_without_servers_renders_a_down_placeholder_nginx_accepts() -> None:
    files = render(load(str(INPUTS / "edge.toml")), RenderOptions("/state/nginx")).files
    assert files["apps/web.conf"] == "server 127.0.0.1:8080 down;\n"
    assert "include apps/web.conf;" in files["nginx.conf"]


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
        engine.set_app_servers("web", options.app_servers.get("web", ()))
        for upstream, address in options.down:
            engine.set_down(upstream, address, True)
        await engine.settle()  # rendered, checked and written once already
        return await engine.check()

    assert "test is successful" in asyncio.run(check())
    assert (
        "include apps/web.conf" in (tmp_path / "home" / "conf" / "nginx.conf").read_text()
        or not config.apps
    )
