"""Waiting on a condition with a deadline: the one way tests wait for something to happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: How often a condition is checked again; a poll interval, never a synchronisation.
POLL = 0.01


def wait_until(condition: Callable[[], T], what: str, *, within: float = 20.0) -> T:
    """Check ``condition`` until it returns something true and return that; fail after ``within``."""
    deadline = time.monotonic() + within
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        time.sleep(POLL)
    return found


async def eventually(
    condition: Callable[[], Awaitable[T]], what: str, *, within: float = 20.0
) -> T:
    """`wait_until` for a coroutine condition, without blocking the event loop."""
    deadline = time.monotonic() + within
    while not (found := await condition()):
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(POLL)
    return found
