"""Run ``async def`` tests of this directory on a fresh uvloop loop, each under a deadline.

The protocol tests need a *running* loop: ``ProxyState`` takes its clock and its task
factory from it.  No plugin is needed for that; this hook runs the coroutine itself.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
import uvloop

TEST_DEADLINE = 3.0  # seconds; every protocol test is far faster than this


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(func(**kwargs), TEST_DEADLINE))
    finally:
        loop.close()
    return True
