"""``charset`` on Content-Type and ``keepalive_timeout`` inside a location, through the
protocol (cases after nginx-tests' charset.t and http_keepalive.t)."""

from __future__ import annotations

from pathlib import Path

import pytest
from protocol_support import conf, get, make_proxy, ok

from nonstop.config import load
from nonstop.errors import ConfigError


@pytest.mark.parametrize(
    ("sent", "got"),
    [
        ("text/html", "text/html; charset=utf-8"),
        ("text/plain", "text/plain; charset=utf-8"),
        ("text/html; charset=koi8-r", "text/html; charset=koi8-r"),  # the upstream's kept
        ("application/json", "application/json"),  # not in charset_types
        ("image/png", "image/png"),
    ],
)
async def test_charset_is_added_to_the_types_it_applies_to(
    tmp_path: Path, sent: str, got: str
) -> None:
    proxy = make_proxy(tmp_path, conf(server="charset utf-8;"))
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(ok(b"x", f"Content-Type: {sent}"))
    [resp] = client.responses()
    assert resp.header("content-type") == got


async def test_charset_types_star_applies_to_any_type_and_off_turns_it_off(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(
        tmp_path,
        conf(
            server="charset utf-8; charset_types *;",
            extra_locations="location /off { charset off; proxy_pass http://app; }",
        ),
    )
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(ok(b"x", "Content-Type: application/json"))
    client.send(get("/off"))
    proxy.active().respond(ok(b"x", "Content-Type: text/html"))
    first, second = client.responses()
    assert first.header("content-type") == "application/json; charset=utf-8"
    assert second.header("content-type") == "text/html"


@pytest.mark.parametrize(("status", "added"), [(301, False), (302, False), (303, True)])
async def test_charset_leaves_a_proxied_301_and_302_alone(
    tmp_path: Path, status: int, added: bool
) -> None:
    """ngx_http_charset_header_filter: no charset on a 301 or 302, whoever answered."""
    proxy = make_proxy(tmp_path, conf(server="charset utf-8;"))
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(
        b"HTTP/1.1 %d Moved\r\nLocation: /there\r\nContent-Type: text/html\r\n"
        b"Content-Length: 1\r\n\r\nx" % status
    )
    [resp] = client.responses()
    assert resp.status == status
    assert resp.header("content-type") == ("text/html; charset=utf-8" if added else "text/html")


async def test_charset_names_the_charset_of_local_answers(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(server="charset utf-8;", location='return 200 "hi";'))
    client = proxy.client()
    client.send(get("/"))
    [resp] = client.responses()
    assert resp.header("content-type") == "text/plain; charset=utf-8"


def test_a_source_charset_that_would_need_recoding_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text(
        "events {}\nhttp { server { listen 127.0.0.1:1;\n"
        "charset utf-8; source_charset koi8-r; return 204; } }\n"
    )
    with pytest.raises(ConfigError, match=r"source_charset koi8-r.*needs recoding"):
        load(str(path))


async def test_keepalive_timeout_in_a_location_applies_after_a_request_that_ended_there(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(
        tmp_path,
        conf(
            server="keepalive_timeout 60s;",
            location="return 204;",
            extra_locations="location /short { keepalive_timeout 5s; return 204; }",
        ),
    )
    long, short = proxy.client(), proxy.client()
    long.send(get("/"))
    short.send(get("/short"))
    assert long.responses() and short.responses()
    proxy.clock.advance(6)
    proxy.tick()
    assert short.closed and not long.closed
    proxy.clock.advance(55)
    proxy.tick()
    assert long.closed


async def test_keepalive_timeout_0_in_a_location_closes_after_its_response(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(
        tmp_path,
        conf(
            location="return 204;",
            extra_locations="location /once { keepalive_timeout 0; return 204; }",
        ),
    )
    client = proxy.client()
    client.send(get("/once"))
    [resp] = client.responses()
    assert resp.header("connection") == "close"
    assert client.closed
