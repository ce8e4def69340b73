"""Prometheus' text exposition format (version 0.0.4), written directly.

prometheus_client's ``generate_latest`` validates and escapes every label name of every
sample through several calls; with 100 upstream servers (about a thousand samples) that
alone took 60 ms a scrape on the benchmark machine (docs/benchmarks.md).  The format is
small -- ``# HELP``, ``# TYPE``, then ``name{label="value"} number`` lines -- and our
names and label names are constants, so only label values need escaping.  The tests
read what this writes with prometheus_client's own parser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["Family", "pairs", "render"]


class Family:
    """One metric: its name, type, help text, label names and samples."""

    __slots__ = ("help", "kind", "labels", "lines", "name")

    def __init__(self, name: str, kind: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.kind = kind  # "counter", "gauge" or "histogram"
        self.help = help
        self.labels = tuple(labels)
        self.lines: list[str] = []

    def add(self, values: Sequence[str], value: float, suffix: str = "") -> None:
        """One sample; ``suffix`` for a histogram's ``_bucket``, ``_sum``, ``_count``."""
        self.lines.append(f"{self.name}{suffix}{_labels(self.labels, values)} {_number(value)}")

    def add_text(self, labels: str, value: float) -> None:
        """One sample whose labels are already written out (``pairs``): a server's
        ``upstream="…",server="…"`` is escaped once for all its samples."""
        self.lines.append(f"{self.name}{{{labels}}} {_number(value)}")

    def add_histogram(
        self, values: Sequence[str], buckets: Sequence[tuple[float, int]], total: float
    ) -> None:
        """A histogram's samples from its cumulative ``(upper bound, count)`` buckets."""
        names = (*self.labels, "le")
        for bound, count in buckets:
            le = "+Inf" if math.isinf(bound) else repr(float(bound))
            self.lines.append(f"{self.name}_bucket{_labels(names, (*values, le))} {count}")
        self.add(values, total, "_sum")
        self.add(values, buckets[-1][1] if buckets else 0, "_count")


def render(families: Iterable[Family]) -> bytes:
    """The exposition text of ``families``, each with its HELP and TYPE lines."""
    out: list[str] = []
    for family in families:
        out.append(f"# HELP {family.name} {_help(family.help)}")
        out.append(f"# TYPE {family.name} {family.kind}")
        out.extend(family.lines)
    return ("\n".join(out) + "\n").encode()


def pairs(names: Sequence[str], values: Sequence[str]) -> str:
    """``name="value",...``, the values escaped."""
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    return "{" + pairs(names, values) + "}" if names else ""


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
