"""The pure parts of TLS: SNI name matching and ``ssl_session_cache`` parsing."""

from __future__ import annotations

import pytest

from nonstop.proxy.tls import SessionCache, SniTable, parse_session_cache


def table() -> SniTable[str]:
    return SniTable(
        [
            (("example.com", "www.example.com"), "main"),
            (("*.example.com",), "wild"),
            (("*.api.example.com",), "api-wild"),
            ((".example.org",), "org"),
            (("mail.*",), "mail"),
        ],
        default="default",
    )


@pytest.mark.parametrize(
    ("sni", "chosen"),
    [
        ("example.com", "main"),
        ("WWW.Example.COM", "main"),
        ("www.example.com.", "main"),
        ("shop.example.com", "wild"),
        ("v1.api.example.com", "api-wild"),
        ("example.org", "org"),
        ("a.b.example.org", "org"),
        ("mail.example.net", "mail"),
        ("example.net", "default"),
        ("notexample.com", "default"),
    ],
)
def test_sni_name_is_matched_exact_then_longest_wildcard_then_default(
    sni: str, chosen: str
) -> None:
    assert table().choose(sni) == chosen


@pytest.mark.parametrize("sni", [None, ""])
def test_missing_sni_gets_the_default_server(sni: str | None) -> None:
    assert table().choose(sni) == "default"


def test_first_server_keeps_a_name_two_servers_declare() -> None:
    names = SniTable([(("a.test",), "first"), (("a.test",), "second")], default="d")
    assert names.choose("a.test") == "first"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, SessionCache("none")),
        ("none", SessionCache("none")),
        ("off", SessionCache("off")),
        ("builtin", SessionCache("cache", builtin_size=20480)),
        ("builtin:1000", SessionCache("cache", builtin_size=1000)),
        ("shared:SSL:10m", SessionCache("cache", None, "SSL", 10 * 1024 * 1024)),
        ("builtin:1000 shared:SSL:1m", SessionCache("cache", 1000, "SSL", 1024 * 1024)),
    ],
)
def test_session_cache_values_nginx_accepts_are_parsed(
    text: str | None, expected: SessionCache
) -> None:
    assert parse_session_cache(text) == expected


@pytest.mark.parametrize(
    "text",
    ["on", "shared:SSL", "shared::10m", "shared:SSL:ten", "shared:SSL:1k", "builtin:x", "off none"],
)
def test_session_cache_values_nginx_refuses_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"session cache|zone size"):
        parse_session_cache(text)
