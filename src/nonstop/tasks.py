"""``TaskOwner``: every background task has an owner that ends it (STYLE.md, point 7).

A task started with ``spawn`` is kept until it finishes; ``close`` cancels the ones still
running and waits for them, so nothing outlives the part of nonstop that started it and
no exception is lost (a task's failure is logged when nobody awaited it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from nonstop.errors import NonstopError

__all__ = ["TaskOwner"]

log = logging.getLogger("nonstop")

T = TypeVar("T")


class TaskOwner:
    """The tasks one part of nonstop started, ended together by ``close``."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        # retrieved here, so a failure whose caller went away (a held deploy's) is not
        # lost; a NonstopError is an outcome its caller reports (refused, rolled back)
        exc = task.exception()
        if exc is not None and not isinstance(exc, NonstopError):
            log.error("%s: task %s failed: %r", self.owner, task.get_name(), exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task still running and wait until all have ended."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
