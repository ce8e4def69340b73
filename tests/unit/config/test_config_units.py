from __future__ import annotations

import pytest

from nonstop.config.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("1k", 1024),
        ("1K", 1024),
        ("10m", 10 * 1024 * 1024),
        ("10M", 10 * 1024 * 1024),
        ("2g", 2 * 1024**3),
        ("0", 0),
    ],
)
def test_size_accepts_nginx_suffixes_in_either_case(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "10mb", "1.5m", "-1", "k", "10 m x"])
def test_size_rejects_anything_nginx_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10", 10.0),
        ("10s", 10.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1m 30s", 90.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1w", 7 * 86400.0),
        ("1M", 30 * 86400.0),
        ("1y", 365 * 86400.0),
        ("1h30m15s500ms", 5415.5),
        ("10m", 600.0),
    ],
)
def test_duration_reads_nginx_combined_forms(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "s", "1x", "30s1m", "1s1s", "1.5s", "10 20", "-1s"])
def test_duration_rejects_bad_order_units_and_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
