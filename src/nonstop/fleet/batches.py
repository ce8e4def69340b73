"""Which hosts deploy together: ``batches`` and the host list -> the batch sequence.

The semantics are Ansible's ``serial`` (and Kamal's percentage limits), which a user of
either expects:

- each entry is a host count (``1``) or a percentage of the *whole* fleet (``"50%"``);
- a percentage rounds down, but a batch is never empty (at least one host);
- entries are used in order; the last one repeats until every host is in a batch;
- a batch never takes more hosts than are left, so the last batch takes the rest.

``[1, "50%"]`` over 20 hosts gives batches of 1, 10, 9; over 3 hosts 1, 1, 1 (50% of 3
rounds down to 1); ``["100%"]`` is the whole fleet at once.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Batch", "Percent", "batch_sizes", "plan_batches"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Percent:
    """A batch size written as a percentage of every host in the fleet (1 to 100)."""

    value: int

    def __str__(self) -> str:
        return f"{self.value}%"


Batch = int | Percent


def batch_sizes(batches: Sequence[Batch], total: int) -> list[int]:
    """The size of each batch for ``total`` hosts; they add up to ``total``."""
    if not batches:
        raise ValueError("batches must not be empty")
    sizes: list[int] = []
    left = total
    index = 0
    while left > 0:
        entry = batches[min(index, len(batches) - 1)]
        wanted = entry if isinstance(entry, int) else total * entry.value // 100
        size = min(max(wanted, 1), left)
        sizes.append(size)
        left -= size
        index += 1
    return sizes


def plan_batches(batches: Sequence[Batch], hosts: Sequence[T]) -> list[tuple[T, ...]]:
    """``hosts`` cut into batches, in their order."""
    out: list[tuple[T, ...]] = []
    start = 0
    for size in batch_sizes(batches, len(hosts)):
        out.append(tuple(hosts[start : start + size]))
        start += size
    return out
