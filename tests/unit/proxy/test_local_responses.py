"""The one builder of the responses the proxy writes itself, as a pure function."""

from __future__ import annotations

import email.utils
import random

from nonstop.proxy.responses import error_page, http_date, local_response, return_response

DATE = b"Date: Fri, 04 Dec 2026 16:00:00 GMT\r\n"


def test_error_answer_has_nginx_head_and_page() -> None:
    page = error_page(502)
    assert local_response(502, page, b"text/html", DATE, keep=False) == (
        b"HTTP/1.1 502 Bad Gateway\r\nServer: nonstop\r\n"
        + DATE
        + b"Content-Type: text/html\r\nContent-Length: %d\r\n" % len(page)
        + b"Connection: close\r\n\r\n"
        + page
    )


def test_kept_connection_says_keep_alive() -> None:
    out = local_response(404, error_page(404), b"text/html", DATE, keep=True)
    assert b"\r\nConnection: keep-alive\r\n\r\n<html>" in out


def test_head_request_gets_the_length_of_the_body_but_not_the_body() -> None:
    body = b"hello\n"
    out = local_response(200, body, b"text/plain", DATE, True, head_only=True)
    assert out.endswith(b"Content-Length: 6\r\nConnection: keep-alive\r\n\r\n")


def test_no_content_without_a_body_has_no_type_or_length() -> None:
    out = local_response(204, b"", b"text/html", DATE, True)
    assert b"Content-Type" not in out and b"Content-Length" not in out


def test_extra_lines_come_before_connection() -> None:
    extra = b"Location: http://a.test/x\r\nX-A: 1\r\n"
    out = local_response(301, error_page(301), b"text/html", DATE, False, extra)
    assert b"\r\n" + extra + b"Connection: close\r\n\r\n<html>" in out


def test_relative_redirect_is_made_absolute_with_a_port_other_than_the_default() -> None:
    body, ctype, extra = return_response(302, "/login", "http", "a.test", 8080)
    assert extra == b"Location: http://a.test:8080/login\r\n"
    assert (body, ctype) == (error_page(302), b"text/html")
    _, _, extra = return_response(302, "/login", "https", "a.test", 443)
    assert extra == b"Location: https://a.test/login\r\n"


def test_return_with_text_answers_it_as_plain_text() -> None:
    assert return_response(200, "ok\n", "http", "a.test", 80) == (b"ok\n", b"text/plain", b"")


def test_return_without_text_answers_nginx_page_or_nothing() -> None:
    assert return_response(403, None, "http", "a.test", 80) == (
        error_page(403),
        b"text/html",
        b"",
    )
    assert return_response(204, None, "http", "a.test", 80) == (b"", b"text/html", b"")


def test_http_dates_read_as_the_standard_library_writes_them() -> None:
    # the proxy formats IMF-fixdates itself (email.utils costs each process ~0.7 MiB)
    rng = random.Random(7)
    moments = [0, 59, 86_399, 951_782_400, 1_733_400_000, 2**31 - 1, 4_102_444_800]
    moments += [rng.randrange(0, 2**34) for _ in range(2_000)]
    for seconds in moments:
        expected = email.utils.formatdate(seconds, usegmt=True).encode()
        assert http_date(seconds + 0.75) == expected, seconds
