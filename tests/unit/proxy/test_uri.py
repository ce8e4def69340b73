"""nginx's reading of a request target and of a Host value, as pure functions."""

from __future__ import annotations

import pytest

from nonstop.proxy.uri import escape_uri, needs_parse, parse_target, valid_host


@pytest.mark.parametrize(
    ("target", "uri", "args"),
    [
        ("/x//..//admin/x", "/admin/x", ""),  # slashes merged before .. is resolved
        ("/a//b/../../secret", "/secret", ""),
        ("/a/..", "/", ""),
        ("/a/.", "/a/", ""),
        ("/a/./b", "/a/b", ""),
        ("/a/%2e%2e/b", "/b", ""),  # a decoded dot is a dot
        ("/a%2fb", "/a/b", ""),  # a decoded slash is a slash
        ("/secret#x", "/secret", ""),  # "#" ends the path ...
        ("/?a#b", "/", "a"),  # ... and the query
        ("/a#b?c", "/a", ""),
        ("/a/..?x", "/", "x"),
        ("/%3f?q", "/?", "q"),  # decoded delimiters are plain characters
        ("/%23x%25", "/#x%", ""),
        ("/a/...", "/a/...", ""),
        ("/a/..b/", "/a/..b/", ""),
        ("/.", "/", ""),
    ],
)
def test_parse_target_gives_nginx_uri_and_args(target: str, uri: str, args: str) -> None:
    assert parse_target(target) == (uri, args)


@pytest.mark.parametrize(
    "target", ["/..", "/../x", "/a/../../x", "/%2e%2e", "/%00", "/a%00b", "/%", "/%4", "/%zz"]
)
def test_parse_target_refuses_what_nginx_answers_400(target: str) -> None:
    assert parse_target(target) is None


def test_needs_parse_lets_clean_paths_through() -> None:
    assert not needs_parse(b"/a/b.c/d-e_f~g")
    assert all(needs_parse(p) for p in (b"/a%20", b"/a/./b", b"//a", b"/a#b"))


def test_escape_uri_encodes_what_nginx_encodes() -> None:
    assert escape_uri('/a b#%?\x7f\xe9"<>') == '/a%20b%23%25%3F%7F%E9"<>'


@pytest.mark.parametrize(
    ("value", "host"),
    [(b"Example.COM.", "example.com"), (b"a:80", "a"), (b"[::1]:80", "[::1]"), (b".a", ".a")],
)
def test_valid_host_gives_nginx_host(value: bytes, host: str) -> None:
    assert valid_host(value) == host


@pytest.mark.parametrize("value", [b"", b"a/b@c", b"a..b", b":80", b".", b"a b", b"a\x00"])
def test_valid_host_refuses_what_nginx_answers_400(value: bytes) -> None:
    assert valid_host(value) is None
