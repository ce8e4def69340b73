"""gzip's pure decisions against the rules of ngx_http_gzip_filter_module.c and
ngx_http_gzip_ok (ngx_http_core_module.c)."""

from __future__ import annotations

import gzip as gzip_lib
import os

import pytest

from nonstop.config.model import GzipSpec, Regex
from nonstop.proxy.gzip import Compressor, Gzip, accepts_gzip, weak_etag


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (b"gzip", True),
        (b"gzip, deflate, br", True),
        (b"GZIP", True),
        (b"deflate,gzip", True),
        (b"deflate, gzip", True),
        (b"gzip;q=0.5", True),
        (b"gzip; q=1", True),
        (b"gzip ; Q=0.001", True),
        (b"gzip;q=1.000", True),
        (b"gzip;", True),
        (b"gzip;q=0", False),  # refused
        (b"gzip; q=0.000", False),
        (b"gzip;q=0, deflate", False),
        (b"gzip;q=1.5", False),  # above 1: nginx reads no valid quantity
        (b"gzip;q=0.1234", False),  # more than 3 decimals
        (b"gzip;level=1", False),
        (b"x-gzip", False),  # a token of its own, not "gzip"
        (b"x-gzip, gzip", True),
        (b"gzipped", False),
        (b"deflate", False),
        (b"", False),
        (None, False),
    ],
)
def test_accept_encoding_is_read_as_nginx_reads_it(value: bytes | None, accepted: bool) -> None:
    assert accepts_gzip(value) is accepted


@pytest.mark.parametrize(
    ("etag", "weak"),
    [(b'"abc"', b'W/"abc"'), (b'W/"abc"', b'W/"abc"'), (b"abc", None)],
)
def test_a_strong_etag_becomes_weak_and_a_malformed_one_goes(
    etag: bytes, weak: bytes | None
) -> None:
    assert weak_etag(etag) == weak


def gzip(**settings: object) -> Gzip:
    return Gzip(GzipSpec(**settings))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "ctype", "length", "encoded", "eligible"),
    [
        (200, b"text/html", 1000, False, True),
        (200, b"TEXT/HTML; charset=utf-8", 1000, False, True),
        (200, b"text/html", -1, False, True),  # unknown length: compressed
        (200, b"text/html", 19, False, False),  # below gzip_min_length 20
        (200, b"text/html", 20, False, True),
        (403, b"text/html", 1000, False, True),
        (404, b"text/html", 1000, False, True),
        (206, b"text/html", 1000, False, False),  # a range is never compressed
        (204, b"text/html", -1, False, False),
        (304, b"text/html", -1, False, False),
        (500, b"text/html", 1000, False, False),
        (301, b"text/html", 1000, False, False),
        (200, b"text/html", 1000, True, False),  # already has a Content-Encoding
        (200, b"text/css", 1000, False, False),  # not in gzip_types
        (200, None, 1000, False, False),
    ],
)
def test_which_responses_may_be_compressed(
    status: int, ctype: bytes | None, length: int, encoded: bool, eligible: bool
) -> None:
    assert gzip().eligible(status, ctype, length, encoded) is eligible


def test_gzip_types_star_takes_any_type_and_text_html_is_always_in() -> None:
    assert gzip(types=frozenset({"*"})).eligible(200, b"image/png", 100, False)
    listed = gzip(types=frozenset({"text/html", "application/json"}))
    assert listed.eligible(200, b"application/json", 100, False)
    assert not listed.eligible(200, b"text/plain", 100, False)


def test_the_compressor_streams_and_its_output_is_the_body() -> None:
    body = os.urandom(300_000).hex().encode()  # 600 KB, compressible
    stream = Compressor(6)
    pieces = [stream.compress(body[i : i + 16384]) for i in range(0, len(body), 16384)]
    assert sum(map(len, pieces[:-1])) > 0, "output left before the input ended"
    out = b"".join(pieces) + stream.finish()
    assert gzip_lib.decompress(out) == body
    assert len(out) < len(body)


def test_gzip_disable_regexes_are_compiled_caseless() -> None:
    compiled = gzip(disable=(Regex("badbot", True),))
    assert compiled.disable[0].search("Mozilla BADBOT/1")
