"""Which location a target reaches, and what is forwarded for it.

nginx routes on ``$uri``, the target percent-decoded with slashes merged and dot segments
resolved (ngx_http_parse_complex_uri), and refuses a target whose ``..`` climbs above the
root or that decodes to a NUL.  A ``location`` that answers 403 is a security boundary:
no spelling of a path under it may reach the backend through ``location /``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.proxy.protocol_support import conf, get, make_proxy, ok, request_head

GUARDED = conf(
    extra_locations="""
        location /admin/ { return 403; }
        location = /secret { return 403; }
        location /api/ { proxy_pass http://app/v2/; }
    """,
)


def outcome(tmp_path: Path, target: str) -> tuple[int, str]:
    """(status, request line sent upstream or "") for one GET of ``target``."""
    proxy = make_proxy(tmp_path, GUARDED)
    client = proxy.client()
    client.send(get(target))
    sent = proxy.written_upstream()
    if sent:
        proxy.active().respond(ok(b"app"))
    [resp] = client.responses()
    line = request_head(sent)[0] if sent else ""
    return resp.status, line


@pytest.mark.parametrize(
    "target",
    [
        "/admin/x",
        "/x//..//admin/x",
        "/a//b/../../admin/x",
        "/a/%2e%2e/admin/x",
        "/a/%2E%2E%2fadmin/x",
        "//admin//x",
        "/./admin/x",
        "/%61dmin/x",
        "/admin%2fx",
        "/admin/x#frag",
        "/b/..//admin/",
    ],
)
async def test_every_spelling_of_a_guarded_path_gets_its_location(
    tmp_path: Path, target: str
) -> None:
    assert outcome(tmp_path, target) == (403, "")


@pytest.mark.parametrize("target", ["/secret#x", "/secret?a#b", "/x/../secret", "/%73ecret"])
async def test_an_exact_location_matches_the_normalised_path(tmp_path: Path, target: str) -> None:
    assert outcome(tmp_path, target) == (403, "")


@pytest.mark.parametrize(
    "target",
    [
        "/..",
        "/../admin/x",
        "/a/../../admin/x",
        "/%2e%2e/admin/x",
        "/a/%2e%2e%2f..%2fx",
        "/%00/admin/x",
        "/secret%00",
        "/bad%2",
        "/bad%zz",
    ],
)
async def test_a_target_above_the_root_or_with_a_nul_or_a_broken_escape_gets_400(
    tmp_path: Path, target: str
) -> None:
    assert outcome(tmp_path, target) == (400, "")


async def test_a_proxying_location_name_without_its_slash_is_redirected(tmp_path: Path) -> None:
    assert outcome(tmp_path, "/api?q=1") == (301, "")  # nginx's auto_redirect


@pytest.mark.parametrize(
    ("target", "line"),
    [
        ("/a/./b?x=1", "GET /a/./b?x=1 HTTP/1.1"),  # no URI part: the target as it came
        ("/p%20q", "GET /p%20q HTTP/1.1"),
        ("/a#frag", "GET /a#frag HTTP/1.1"),
        ("/api/a/../c?q=1", "GET /v2/c?q=1 HTTP/1.1"),  # URI part: the rewritten $uri
        ("/api/a%20b?q", "GET /v2/a%20b?q HTTP/1.1"),
        ("/api/%41%3f", "GET /v2/A%3F HTTP/1.1"),
        ("/api/x?", "GET /v2/x HTTP/1.1"),
        ("/api/x?a#b", "GET /v2/x?a HTTP/1.1"),
        ("/api//x", "GET /v2/x HTTP/1.1"),
    ],
)
async def test_forwarded_target_is_what_nginx_forwards(
    tmp_path: Path, target: str, line: str
) -> None:
    assert outcome(tmp_path, target) == (200, line)


# -- property: the location reached is the one the normalised path selects ------------

SEGMENTS = ["admin", "secret", "api", "a", "", ".", "..", "%2e", "%2E%2e", "%2f", "%61dmin"]
TAILS = ["", "?q=1", "#f", "?a#b", "/"]


def reference_uri(target: str) -> str | None:
    """An independent reading of nginx's $uri: decode, cut, merge slashes, resolve dots.

    Decoded ``%``, ``#`` and ``?`` stay plain characters; ``None`` means 400.
    """
    chars: list[str] = []
    i = 0
    while i < len(target):
        c = target[i]
        if c in "?#":
            break
        if c == "%":
            code = int(target[i + 1 : i + 3], 16)
            if code == 0:
                return None
            chars.append(chr(code))
            i += 3
            continue
        chars.append(c)
        i += 1
    path = "".join(chars)
    while "//" in path:
        path = path.replace("//", "/")
    segments = path.split("/")[1:]
    out: list[str] = []
    for n, seg in enumerate(segments):
        last = n == len(segments) - 1
        if seg in (".", ".."):
            if seg == "..":
                if not out:
                    return None
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def expected(target: str) -> int:
    uri = reference_uri(target)
    if uri is None:
        return 400
    if uri.startswith("/admin/") or uri == "/secret":
        return 403
    if uri == "/api":
        return 301  # nginx's auto_redirect to the proxying "location /api/"
    return 200


@st.composite
def targets(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=7))
    return "/" + "/".join(parts) + draw(st.sampled_from(TAILS))


@settings(
    max_examples=int(os.environ.get("NONSTOP_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("NONSTOP_FUZZ_RANDOM") is None,
)
@given(target=targets())
def test_no_target_reaches_a_location_other_than_its_normalised_path_selects(
    target: str, tmp_path: Path
) -> None:
    async def run() -> tuple[int, str]:
        return outcome(tmp_path, target)

    loop = uvloop.new_event_loop()
    try:
        status, line = loop.run_until_complete(asyncio.wait_for(run(), 3))
    finally:
        loop.close()
    assert status == expected(target), (target, line)
    if status == 200 and not line.startswith("GET /v2/"):
        assert line == f"GET {target} HTTP/1.1"
