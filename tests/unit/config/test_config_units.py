from __future__ import annotations

import pytest

from nonstop.config.units import (
    parse_cpu_affinity,
    parse_duration,
    parse_priority,
    parse_size,
    worker_cpus,
)


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


@pytest.mark.parametrize(
    ("words", "index", "cpus"),
    [
        (("auto",), 0, {0}),
        (("auto",), 1, {2}),  # the second of the CPUs this process may use
        (("auto",), 3, {0}),  # past them: round again, as nginx does
        (("auto", "1100"), 0, {2}),  # only those in the mask
        (("auto", "1100"), 1, {3}),
        (("0001", "0110"), 0, {0}),  # the last character is CPU 0
        (("0001", "0110"), 1, {1, 2}),
        (("0001", "0110"), 5, {1, 2}),  # past the masks: the last one
        (("10 01",), 0, {0, 3}),  # spaces in a quoted mask are skipped
    ],
)
def test_worker_cpus_reads_auto_and_masks_as_nginx(
    words: tuple[str, ...], index: int, cpus: set[int]
) -> None:
    spec = parse_cpu_affinity(words)
    assert worker_cpus(spec, index, [0, 2, 3]) == frozenset(cpus)


def test_worker_cpus_binds_nothing_without_the_directive_or_usable_cpus() -> None:
    assert worker_cpus((), 0, [0, 1]) is None
    assert worker_cpus(("auto", "1000"), 0, [0, 1]) is None  # CPU 3 is not this process's


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ((), "invalid number of arguments"),
        (("auto", "01", "10"), "invalid number of arguments"),
        (("012",), 'invalid character "2"'),
        (("auto", "x1"), 'invalid character "x"'),
        (("0000",), 'mask "0000" names no CPU'),
        (("1" * 1025,), "supports up to 1024 CPUs only"),
    ],
)
def test_cpu_affinity_refuses_what_nginx_refuses(words: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cpu_affinity(words)


def test_priority_is_a_nice_value() -> None:
    texts = ("0", "-5", "+5", "19", "20", "-20")
    assert [parse_priority(t) for t in texts] == [0, -5, 5, 19, 19, -20]
    for wrong in ("21", "-21", "high", "", "5.5"):
        with pytest.raises(ValueError, match="worker_priority"):
            parse_priority(wrong)
