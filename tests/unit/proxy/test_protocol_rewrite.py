"""Regex and named locations, rewrite, return, if, break and map regexes on fake transports.

The expected outcomes are nginx's (ngx_http_core_find_location, ngx_http_rewrite_module.c,
and the cases of nginx-tests' rewrite.t, rewrite_if.t and map.t): which location answers,
what reaches the upstream, which redirect the client gets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from protocol_support import LISTEN_PORT, FakeProxy, get, make_proxy, ok, request_head


def server(body: str, extra_http: str = "") -> str:
    return f"""
    {extra_http}
    upstream app {{ server 127.0.0.1:9001; keepalive 4; }}
    upstream other {{ server 127.0.0.1:9002; keepalive 4; }}
    server {{
        listen {LISTEN_PORT};
        server_name example.test;
        {body}
    }}
    """


def answer(proxy: FakeProxy, path: str, *headers: str, method: str = "GET") -> tuple[int, str]:
    """(status, body or Location) of a request the proxy answers itself."""
    client = proxy.client()
    client.send(get(path, *headers, method=method))
    [resp] = client.responses()
    location = resp.header("Location")
    return resp.status, location if location is not None else resp.body.decode()


def forwarded(proxy: FakeProxy, path: str, *headers: str) -> tuple[str, str]:
    """(upstream address, request line) of a request the proxy passes on."""
    client = proxy.client()
    client.send(get(path, *headers))
    up = proxy.active()
    line, _, _ = request_head(up.take())
    up.respond(ok())
    [resp] = client.responses()
    assert resp.status == 200
    return up.address, line


SELECTION = """
    location = /exact { return 200 "exact"; }
    location ^~ /static/ { return 200 "static prefix"; }
    location /images/ { return 200 "images prefix"; }
    location ~ \\.(gif|png)$ { return 200 "regex $1"; }
    location ~* \\.JPG$ { return 200 "caseless"; }
    location ~ ^/images/big { return 200 "second regex"; }
    location / { return 200 "root"; }
    location @named { return 200 "named"; }
"""


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/exact", "exact"),
        ("/exact/more", "root"),
        ("/static/a.png", "static prefix"),
        ("/images/a.png", "regex png"),
        ("/images/big.gif", "regex gif"),  # the first regex in config order wins
        ("/images/big.txt", "second regex"),
        ("/images/a.txt", "images prefix"),
        ("/x/photo.jpg", "caseless"),
        ("/x/photo.Jpg", "caseless"),
        ("/@named", "root"),  # a named location is never matched by a request
        ("/a%2Epng", "regex png"),  # regexes see the decoded $uri
    ],
)
async def test_locations_are_chosen_in_nginx_order(tmp_path: Path, path: str, body: str) -> None:
    proxy = make_proxy(tmp_path, server(SELECTION))
    assert answer(proxy, path) == (200, body)


async def test_named_captures_of_a_location_regex_are_variables(tmp_path: Path) -> None:
    loc = 'location ~ ^/u/(?<user>[a-z]+)/(\\d+)$ { return 200 "$user #$2"; }'
    proxy = make_proxy(tmp_path, server(loc))
    assert answer(proxy, "/u/ann/42") == (200, "ann #42")


async def test_rewrite_last_searches_the_locations_again(tmp_path: Path) -> None:
    body = """
        location /old/ { rewrite ^/old/(.*)$ /new/$1 last; return 200 "not reached"; }
        location /new/ { proxy_pass http://other; }
        location / { proxy_pass http://app; }
    """
    proxy = make_proxy(tmp_path, server(body))
    assert forwarded(proxy, "/old/a%20b?x=1") == ("127.0.0.1:9002", "GET /new/a%20b?x=1 HTTP/1.1")


async def test_rewrite_break_stays_and_passes_the_changed_uri_whole(tmp_path: Path) -> None:
    body = "location /api/ { rewrite ^/api/(.*)$ /v2/$1 break; proxy_pass http://app/ignored/; }"
    proxy = make_proxy(tmp_path, server(body))
    assert forwarded(proxy, "/api/items?q=1") == ("127.0.0.1:9001", "GET /v2/items?q=1 HTTP/1.1")


async def test_a_proxy_pass_uri_part_applies_after_rewrite_last(tmp_path: Path) -> None:
    body = """
        location /a/ { rewrite ^/a/(.*)$ /b/$1 last; }
        location /b/ { proxy_pass http://app/base/; }
    """
    proxy = make_proxy(tmp_path, server(body))
    assert forwarded(proxy, "/a/x") == ("127.0.0.1:9001", "GET /base/x HTTP/1.1")


async def test_rewrite_without_flag_goes_on_then_searches_again(tmp_path: Path) -> None:
    body = """
        location /one { rewrite ^/one(.*)$ /two$1; set $seen yes; rewrite ^/two(.*)$ /three$1; }
        location /three { return 200 "three $seen $uri"; }
    """
    proxy = make_proxy(tmp_path, server(body))
    assert answer(proxy, "/one/x") == (200, "three yes /three/x")


@pytest.mark.parametrize(
    ("rule", "path", "expected"),
    [
        (
            "rewrite ^/r/(.*)$ /s/$1 redirect;",
            "/r/a?q=1",
            (302, "http://example.test:8080/s/a?q=1"),
        ),
        ("rewrite ^/r/(.*)$ /s/$1 permanent;", "/r/a", (301, "http://example.test:8080/s/a")),
        ("rewrite ^ https://$host$uri;", "/r/a?q=1", (302, "https://example.test/r/a?q=1")),
        (
            "rewrite ^ /s?new=1 permanent;",
            "/r?old=2",
            (301, "http://example.test:8080/s?new=1&old=2"),
        ),
        ("rewrite ^ /s? permanent;", "/r?old=2", (301, "http://example.test:8080/s")),
        ("rewrite ^/nomatch /s permanent; return 200 $uri;", "/r/a", (200, "/r/a")),
    ],
)
async def test_rewrite_redirects_carry_the_arguments_unless_told_not_to(
    tmp_path: Path, rule: str, path: str, expected: tuple[int, str]
) -> None:
    proxy = make_proxy(tmp_path, server(f"location / {{ {rule} }}"))
    assert answer(proxy, path) == expected


async def test_replacement_arguments_come_before_the_requests(tmp_path: Path) -> None:
    body = """
        location /r { rewrite ^ /s?a=1 last; }
        location /q { rewrite ^ /s?a=1? last; }
        location /s { return 200 "$uri|$args"; }
    """
    proxy = make_proxy(tmp_path, server(body))
    assert answer(proxy, "/r?b=2") == (200, "/s|a=1&b=2")
    assert answer(proxy, "/q?b=2") == (200, "/s|a=1")


async def test_a_rewrite_cycle_ends_in_500(tmp_path: Path) -> None:
    body = "location / { rewrite ^(.*)$ $1 last; }"
    proxy = make_proxy(tmp_path, server(body))
    status, _ = answer(proxy, "/loop")
    assert status == 500


async def test_server_level_rewrite_runs_before_the_location_search(tmp_path: Path) -> None:
    body = """
        rewrite ^/legacy(/.*)$ $1;
        location /shop/ { return 200 "shop $uri $request_uri"; }
        location / { return 200 "root"; }
    """
    proxy = make_proxy(tmp_path, server(body))
    assert answer(proxy, "/legacy/shop/x") == (200, "shop /shop/x /legacy/shop/x")


async def test_if_request_method_options_answers_the_preflight(tmp_path: Path) -> None:
    body = """
        location / {
            if ($request_method = 'OPTIONS') {
                add_header Access-Control-Allow-Origin "*";
                return 204;
            }
            proxy_pass http://app;
        }
    """
    proxy = make_proxy(tmp_path, server(body))
    client = proxy.client()
    client.send(get("/api", method="OPTIONS"))
    [resp] = client.responses()
    assert resp.status == 204 and resp.header("Access-Control-Allow-Origin") == "*"
    assert proxy.written_upstream() == b""
    assert forwarded(proxy, "/api") == ("127.0.0.1:9001", "GET /api HTTP/1.1")


@pytest.mark.parametrize(
    ("condition", "path", "headers", "true"),
    [
        ("$arg_x", "/?x=1", (), True),
        ("$arg_x", "/?x=0", (), False),
        ("$arg_x", "/", (), False),
        ("$http_user_agent ~* bot", "/", ("User-Agent: GoogleBOT/2",), True),
        ("$http_user_agent !~* bot", "/", ("User-Agent: GoogleBOT/2",), False),
        ('$host != "example.test"', "/", (), False),
        ("$uri = /a", "/a", (), True),
        ("-f $tmp/file", "/", (), True),
        ("!-f $tmp/file", "/", (), False),
        ("-d $tmp", "/", (), True),
        ("-f $tmp", "/", (), False),
        ("-e $tmp/none", "/", (), False),
        ("!-e $tmp/none", "/", (), True),
    ],
)
async def test_if_conditions_test_as_nginx_does(
    tmp_path: Path, condition: str, path: str, headers: tuple[str, ...], true: bool
) -> None:
    (tmp_path / "file").write_text("x")
    body = f"""
        set $tmp {tmp_path};
        location / {{ if ({condition}) {{ return 200 "yes"; }} return 200 "no"; }}
    """
    proxy = make_proxy(tmp_path, server(body))
    assert answer(proxy, path, *headers) == (200, "yes" if true else "no")


async def test_if_regex_captures_feed_the_block(tmp_path: Path) -> None:
    body = """
        location / {
            if ($http_x_version ~ ^v(\\d+)$) { return 200 "version $1"; }
            return 200 "none";
        }
    """
    proxy = make_proxy(tmp_path, server(body))
    assert answer(proxy, "/", "X-Version: v7") == (200, "version 7")
    assert answer(proxy, "/", "X-Version: 7") == (200, "none")


async def test_proxy_pass_inside_if_sends_to_its_upstream(tmp_path: Path) -> None:
    body = """
        location / {
            if ($cookie_canary = "1") { proxy_pass http://other; }
            proxy_pass http://app;
        }
    """
    proxy = make_proxy(tmp_path, server(body))
    assert forwarded(proxy, "/p", "Cookie: canary=1")[0] == "127.0.0.1:9002"
    assert forwarded(proxy, "/p")[0] == "127.0.0.1:9001"


async def test_the_last_true_if_gives_the_configuration(tmp_path: Path) -> None:
    """nginx's "if is evil" case: only the second if's add_header reaches the client."""
    body = """
        location / {
            set $true 1;
            if ($true) { add_header X-First 1; }
            if ($true) { add_header X-Second 2; }
            return 204;
        }
    """
    proxy = make_proxy(tmp_path, server(body))
    client = proxy.client()
    client.send(get("/"))
    [resp] = client.responses()
    assert resp.header("X-First") is None and resp.header("X-Second") == "2"


async def test_break_ends_the_rewrite_directives(tmp_path: Path) -> None:
    body = 'location / { set $a 1; break; set $a 2; return 200 "a=$a"; }'
    proxy = make_proxy(tmp_path, server(body))
    # break skips the return too; with no proxy_pass nothing answers
    assert answer(proxy, "/")[0] == 404


async def test_set_and_return_run_in_the_order_written(tmp_path: Path) -> None:
    body = 'location / { set $a 1; rewrite ^/nomatch /x; return 200 "a=$a"; set $a 2; }'
    proxy = make_proxy(tmp_path, server(body))
    assert answer(proxy, "/") == (200, "a=1")


async def test_map_regex_keys_apply_in_order_after_exact_keys(tmp_path: Path) -> None:
    maps = """
    map $uri $section {
        /exact          "exact";
        ~^/docs/(?<page>.+)$  "docs:$page";
        ~*^/API/        "api";
        default         "other";
    }
    """
    proxy = make_proxy(tmp_path, server('location / { return 200 "$section"; }', maps))
    assert answer(proxy, "/exact") == (200, "exact")
    assert answer(proxy, "/docs/intro") == (200, "docs:intro")
    assert answer(proxy, "/api/v1") == (200, "api")
    assert answer(proxy, "/nowhere") == (200, "other")


# --------------------------------------------------------------------------- error_page

PAGES = """
    error_page 404 /not-found;
    error_page 500 502 =503 @down;
    error_page 418 = /teapot;
    error_page 410 https://example.org/gone;
    error_page 411 =301 /not-found;
    location = /not-found { return 200 "page for $uri from $request_uri"; }
    location = /teapot { return 202 "teapot"; }
    location @down { return 200 "down"; }
    location /missing { return 404; }
    location /boom { return 502; }
    location /tea { return 418; }
    location /gone { return 410; }
    location /moved { return 411; }
    location /loop { error_page 404 /loop2; return 404; }
    location /loop2 { return 404; }
    location /intercept {
        proxy_intercept_errors on; error_page 403 /not-found; proxy_pass http://app;
    }
    location /through { error_page 403 /not-found; proxy_pass http://app; }
"""


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/missing?a=1", 404, "page for /not-found from /missing?a=1"),
        ("/nowhere", 404, "page for /not-found from /nowhere"),  # no location: a 404 too
        ("/boom", 503, "down"),  # "=503" and a named location
        ("/tea", 202, "teapot"),  # "=": the page's own status
        ("/gone", 302, "https://example.org/gone"),
        ("/moved", 301, "page for /not-found from /moved"),  # a URI: =301 is only the status
        ("/loop", 404, None),  # one page per request (recursive_error_pages off)
    ],
)
async def test_error_page_answers_with_the_page_and_the_status_nginx_sends(
    tmp_path: Path, path: str, status: int, body: str | None
) -> None:
    proxy = make_proxy(tmp_path, server(PAGES))
    got_status, got_body = answer(proxy, path)
    assert got_status == status
    assert body is None or got_body == body


async def test_intercepted_upstream_errors_get_the_page(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, server(PAGES))
    for path, expected in (
        ("/intercept", b"page for /not-found from /intercept"),
        ("/through", b"no"),
    ):
        client = proxy.client()
        client.send(get(path))
        up = proxy.active()
        up.respond(ok(b"no", status="403 Forbidden"))
        [resp] = client.responses()
        assert (resp.status, resp.body) == (403, expected)


async def test_an_error_page_uri_is_proxied_as_a_get(tmp_path: Path) -> None:
    body = """
        error_page 404 /errors/404.html;
        location /errors/ { proxy_pass http://other; }
        location / { return 404; }
    """
    proxy = make_proxy(tmp_path, server(body))
    client = proxy.client()
    client.send(get("/x", method="DELETE"))
    up = proxy.active()
    line, _, _ = request_head(up.take())
    assert (up.address, line) == ("127.0.0.1:9002", "GET /errors/404.html HTTP/1.1")
    up.respond(ok(b"sorry"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (404, b"sorry")


# --------------------------------------------------------------------------- allow / deny

ACCESS = """
    allow 10.1.0.0/16;
    deny all;
    location / { return 200 "in"; }
    location /open/ { allow all; return 200 "open"; }
    location /v6/ { deny 10.1.2.3; allow 2001:db8::/32; deny all; proxy_pass http://app; }
    location /back/ { proxy_pass http://app; }
"""


@pytest.mark.parametrize(
    ("addr", "path", "status"),
    [
        ("10.1.2.3", "/back/x", 200),  # allowed: the upstream answers
        ("10.2.0.1", "/back/x", 403),
        ("::ffff:10.1.9.9", "/back/x", 200),  # IPv4-mapped: the IPv4 rules apply
        ("10.2.0.1", "/", 200),  # a return answers before the access phase, as in nginx
        ("10.2.0.1", "/open/", 200),
        ("10.1.2.3", "/v6/", 403),  # the first rule that matches decides
        ("2001:db8::1", "/v6/", 200),
        ("2001:db9::1", "/v6/", 403),
    ],
)
async def test_allow_and_deny_decide_in_order_after_the_rewrite_directives(
    tmp_path: Path, addr: str, path: str, status: int
) -> None:
    proxy = make_proxy(tmp_path, server(ACCESS))
    client = proxy.client(addr)
    client.send(get(path))
    if proxy.busy():
        proxy.active().respond(ok())
    [resp] = client.responses()
    assert resp.status == status
