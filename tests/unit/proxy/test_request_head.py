"""Request-head rules as pure functions on a ``Request``: what nginx refuses, and how."""

from __future__ import annotations

import pytest

from nonstop.proxy.request import Request
from nonstop.proxy.request_head import (
    MAX_LINE,
    Rejected,
    check_head,
    header_name,
    mended,
    simple_request,
    special_header,
)


def request(url: bytes = b"/", **headers: bytes) -> Request:
    req = Request(None, url)
    for name, value in headers.items():
        lname = name.replace("_", "-").encode()
        req.headers.append((lname, lname, value))
        special_header(req, lname, value)
    return req


def status(fn: object, *args: object) -> int:
    with pytest.raises(Rejected) as refused:
        fn(*args)  # type: ignore[operator]
    return refused.value.status


def never_asked() -> str:
    raise AssertionError("the version was asked for")


def test_header_name_is_lowercased_whether_cached_or_not() -> None:
    assert header_name(b"X-Request-Thing") == b"x-request-thing"
    assert header_name(b"X-Request-Thing") == b"x-request-thing"  # from the cache
    assert header_name(b"X-" + b"Long" * 20) == b"x-" + b"long" * 20  # too long to cache


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        (b"transfer-encoding", b"gzip", 501),  # a coding nginx does not take
        (b"content-length", b"12a", 400),
        (b"host", b"a" * (MAX_LINE + 1), 494),
    ],
)
def test_special_header_refusals(name: bytes, value: bytes, code: int) -> None:
    assert status(special_header, Request(None, b"/"), name, value) == code


def test_duplicate_host_or_content_length_is_400() -> None:
    req = request(host=b"a.test", content_length=b"3")
    assert status(special_header, req, b"host", b"b.test") == 400
    assert status(special_header, req, b"content-length", b"3") == 400


def test_special_headers_are_recorded() -> None:
    req = request(
        host=b"a.test", transfer_encoding=b"Chunked", expect=b"100-continue", upgrade=b"ws"
    )
    assert (req.http_host, req.chunked, req.expect_continue, req.upgrade) == (
        b"a.test",
        True,
        True,
        b"ws",
    )


@pytest.mark.parametrize("method", [b"TRACE", b"CONNECT"])
def test_trace_and_connect_are_405(method: bytes) -> None:
    assert status(check_head, request(), method, True, never_asked) == 405


def test_kept_alive_request_without_connection_header_is_1_1_unasked() -> None:
    req = request()
    check_head(req, b"GET", True, never_asked)
    assert (req.method, req.version, req.keep_alive) == (b"GET", "1.1", True)


def test_version_2_is_505_and_chunked_1_0_is_400() -> None:
    assert status(check_head, request(), b"GET", False, lambda: "2.0") == 505
    chunked = request(transfer_encoding=b"chunked")
    assert status(check_head, chunked, b"POST", False, lambda: "1.0") == 400


def test_request_line_ending_in_a_lone_lf_is_mended() -> None:
    req = Request(None, b"/a")
    exc = ValueError("Expected CRLF after version")
    assert mended(req, b"GET /a HTTP/1.1\nHost: x\r\n\r\n", exc) == (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert mended(req, b"GET /a HTTP/1.1\r\n", exc) is None  # not a lone LF
    assert mended(req, b"GET /a HTTP/1.1\n", ValueError("other")) is None


def test_http_0_9_request_line_is_recognised() -> None:
    req = Request(None, b"/")
    assert simple_request(req, b"GET /\r\n", b"GET")
    assert not simple_request(req, b"GET / HTTP/1.1\r\n", b"GET")
