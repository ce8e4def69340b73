"""An nginx.conf loaded for the nginx engine keeps what nonstop does not model, in its
block, and the renderer writes it back as written; the embedded engine refuses the same
directive with file, line and name."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from nonstop.config import load
from nonstop.engines.nginx.render import RenderOptions, render
from nonstop.errors import ConfigError

# (where it sits, the directive as written, what the embedded engine says of it)
CASES = {
    "main block": (
        "main",
        "stream {\n    server { listen 127.0.0.1:9001; proxy_pass 127.0.0.1:9; }\n}",
        'directive "stream" is outside the nonstop subset',
    ),
    "main": (
        "main",
        "thread_pool io threads=4;",
        'directive "thread_pool" is outside the nonstop subset',
    ),
    "events": (
        "events",
        "worker_aio_requests 32;",
        'unknown directive "worker_aio_requests"',
    ),
    "http": (
        "http",
        "proxy_cache_path cache keys_zone=one:1m;",
        'directive "proxy_cache_path" is outside the nonstop subset',
    ),
    "upstream": (
        "upstream",
        "zone backends 64k;",
        'directive "zone" is outside the nonstop subset',
    ),
    "server": (
        "server",
        "real_ip_header X-Real-IP;",
        'directive "real_ip_header" is outside the nonstop subset',
    ),
    "location": (
        "location",
        "sub_filter hello bye;",
        'directive "sub_filter" is outside the nonstop subset',
    ),
    "if": ("if", "limit_rate 10k;", 'directive "limit_rate" is outside the nonstop subset'),
    "location auth_request": (
        "location",
        "auth_request /auth;",
        'directive "auth_request" is outside the nonstop subset',
    ),
}


def _conf(where: str, directive: str) -> str:
    at = {
        w: (directive if w == where else "")
        for w in ("main", "events", "http", "upstream", "server", "location", "if")
    }
    return f"""worker_processes 1;
{at["main"]}
events {{ worker_connections 64; {at["events"]} }}
http {{
    {at["http"]}
    upstream backends {{ server 127.0.0.1:9; {at["upstream"]} }}
    server {{
        listen 127.0.0.1:8080;
        {at["server"]}
        location / {{
            proxy_pass http://backends;
            {at["location"]}
            if ($arg_slow) {{ {at["if"]} }}
        }}
    }}
}}
"""


def _write(tmp_path: Path, where: str, directive: str) -> tuple[Path, int]:
    conf = tmp_path / "nginx.conf"
    text = _conf(where, directive)
    conf.write_text(text)
    first = directive.split("\n", 1)[0]
    line = next(n for n, text_line in enumerate(text.splitlines(), 1) if first in text_line)
    return conf, line


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_embedded_engine_refuses_it_with_file_line_and_directive(
    tmp_path: Path, case: str
) -> None:
    where, directive, message = CASES[case]
    conf, line = _write(tmp_path, where, directive)
    with pytest.raises(ConfigError) as caught:
        load(str(conf))
    assert str(caught.value) == f"{conf}:{line}: {message}"


def _block(rendered: str, opener: str) -> str:
    """The text of the first block opened by a line starting with ``opener``."""
    lines = rendered.splitlines()
    start = next(i for i, text in enumerate(lines) if text.strip().startswith(opener))
    depth = len(lines[start]) - len(lines[start].lstrip())
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == " " * depth + "}")
    return "\n".join(lines[start : end + 1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_nginx_engine_renders_it_as_written_in_its_block(tmp_path: Path, case: str) -> None:
    where, directive, _ = CASES[case]
    conf, _ = _write(tmp_path, where, directive)
    rendered = render(load(str(conf), engine="nginx"), RenderOptions("/state/nginx")).main
    opener = {
        "events": "events",
        "http": "http",
        "upstream": "upstream",
        "server": "server",
        "location": "location",
        "if": "if ($arg_slow)",
    }
    scope = _block(rendered, opener[where]) if where in opener else rendered
    first = directive.split("\n", 1)[0].replace("cache keys", f"{tmp_path}/cache keys")
    assert first in scope
    if where == "main":  # outside every block nonstop renders
        assert first not in _block(rendered, "http")


def test_relative_paths_are_made_absolute_as_nginx_would_read_them(tmp_path: Path) -> None:
    text = _conf("http", "proxy_cache_path cache keys_zone=one:1m;").replace(
        "listen 127.0.0.1:8080;", "listen 127.0.0.1:8080; ssl_client_certificate ca.pem;"
    )
    text += "stream {\n    error_log logs/stream.log;\n}\n"
    (tmp_path / "nginx.conf").write_text(text)
    rendered = render(
        load(str(tmp_path / "nginx.conf"), str(tmp_path / "p"), engine="nginx"),
        RenderOptions("/state/nginx"),
    ).main
    assert f"proxy_cache_path {tmp_path}/p/cache keys_zone=one:1m;" in rendered  # the prefix
    assert f"ssl_client_certificate {tmp_path}/ca.pem;" in rendered  # the config's directory
    assert f"error_log {tmp_path}/p/logs/stream.log;" in rendered  # inside a passed block too


def test_directives_with_no_effect_in_nonstop_reach_nginx(tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text(_conf("http", "sendfile on; tcp_nopush on;"))
    config = load(str(tmp_path / "nginx.conf"), engine="nginx")
    assert "sendfile on;\n    tcp_nopush on;" in render(config, RenderOptions("/state/nginx")).main
    assert not config.notices


def test_worker_cpu_affinity_and_priority_reach_nginx(tmp_path: Path) -> None:
    text = _conf("main", "worker_cpu_affinity auto 0110; worker_priority -3;")
    (tmp_path / "nginx.conf").write_text(text.replace("worker_processes 1;", "worker_processes 2;"))
    main = render(load(str(tmp_path / "nginx.conf"), engine="nginx"), RenderOptions("/s")).main
    assert "worker_cpu_affinity auto 0110;\nworker_priority -3;" in main


def test_variables_of_modules_nonstop_does_not_model_are_left_to_nginx(tmp_path: Path) -> None:
    text = _conf("location", "add_header X-Cache $upstream_cache_status;")
    (tmp_path / "nginx.conf").write_text(
        text.replace("$upstream_cache_status", "$realip_remote_addr")
    )
    with pytest.raises(ConfigError, match='unknown "realip_remote_addr" variable'):
        load(str(tmp_path / "nginx.conf"))
    config = load(str(tmp_path / "nginx.conf"), engine="nginx")
    assert (
        "add_header X-Cache $realip_remote_addr;"
        in render(config, RenderOptions("/state/nginx")).main
    )


@pytest.mark.skipif(os.geteuid() != 0, reason='"user" takes effect only as root')
def test_user_is_nginx_s_workers_user_and_an_unknown_one_fails_as_nginx_would(
    tmp_path: Path,
) -> None:
    nogroup = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    (tmp_path / "nginx.conf").write_text(f"user nobody {nogroup};\n" + _conf("http", ""))
    config = load(str(tmp_path / "nginx.conf"), engine="nginx")
    assert config.worker_user is not None and config.worker_user.user == "nobody"
    assert config.state_dir_passable and not config.notices
    main = render(config, RenderOptions("/s", user=("nobody", nogroup))).main
    assert main.count("\nuser ") == 1 and f"\nuser nobody {nogroup};\n" in main
    (tmp_path / "nginx.conf").write_text("user no-such-user;\n" + _conf("http", ""))
    with pytest.raises(ConfigError, match=r'nginx\.conf:1: getpwnam\("no-such-user"\) failed'):
        load(str(tmp_path / "nginx.conf"), engine="nginx")
