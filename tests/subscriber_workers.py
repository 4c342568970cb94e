"""Models, a backlog writer and child-process consumers for tests/integration/test_subscriber_crash.py.

Children are forked from the test process (`multiprocessing` "fork" context), so they start in
milliseconds with everything imported; each runs `Runner.run` in its own event loop, with its
own connections, against the session's Redis (``REDIS_URL`` is inherited from the parent).
Their handlers record every change into a Redis list *before* returning, so what a consumer
recorded is a superset of what it acknowledged.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

import redis.asyncio as aioredis

from streamstore import BaseRedisModel
from streamstore import operations as ops
from streamstore.connection import resolve_client
from streamstore.executor import run_plans
from streamstore.projections import Change, Runner, subscriber

#: Operations per script call, and calls per pipelined round trip, when writing a backlog.
OPS_PER_CALL = 10
CALLS_PER_ROUND_TRIP = 500

#: The consumer groups of the child consumers below.
CRASH_GROUP = "crash-test"
TERM_GROUP = "term-test"


class CrashItem(BaseRedisModel):
    """The model the child consumers subscribe to: each event after `save` is an increment."""

    n: int = 0


class LoadItem(BaseRedisModel):
    """The model of the load-sharing test."""

    n: int = 0


class OnePartition(BaseRedisModel):
    """A model whose instances all share one feed partition, so one lease."""

    n: int = 0

    class Meta:
        partitions = 1


async def write_backlog(items: Sequence[BaseRedisModel], events_each: int) -> None:
    """Give each of ``items`` (saved already: seq 1) ``events_each`` more events, interleaved.

    Plans of one instance stay in order in the pipeline, so each instance's seqs stay in order
    in its feed partition, while instances interleave in the feeds as real traffic would.
    """
    if not items:
        return
    client = type(items[0])._ss_client()
    plans = []
    left = events_each
    while left > 0:
        take = min(OPS_PER_CALL, left)
        left -= take
        increments = [ops.number_incr(("n",), "1") for _ in range(take)]
        plans += [item._ss_plan(increments, create=False) for item in items]
    for start in range(0, len(plans), CALLS_PER_ROUND_TRIP):
        await run_plans(client, plans[start : start + CALLS_PER_ROUND_TRIP])


def record_key(label: str) -> str:
    """Return the list where the consumer ``label`` records each change it handled."""
    return f"test:handled:{label}"


def gate_key(label: str) -> str:
    """Return the list the test pushes to, to let the held consumer ``label`` go on."""
    return f"test:gate:{label}"


def record(change: Change) -> str:
    """Return how a handled change is recorded: ``pk:seq:deliveries``."""
    return f"{change.pk}:{change.seq}:{change.deliveries}"


class _Child:
    """What the handler of a forked consumer knows (set once per child, before it runs)."""

    label = ""
    handled = 0
    #: After recording this many changes (0: never), the handler SIGKILLs its own process
    #: (`run_crash_consumer`) or waits for the test to open its gate (`run_term_consumer`).
    stop_at = 0


async def _record(change: Change) -> aioredis.Redis:
    client: aioredis.Redis = resolve_client(None)  # the runner's own client, in this loop
    await client.rpush(record_key(_Child.label), record(change))  # type: ignore[misc]
    _Child.handled += 1
    return client


async def _record_then_maybe_die(change: Change) -> None:
    await _record(change)
    if _Child.handled == _Child.stop_at:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-batch: the batch is never acknowledged


async def _record_then_maybe_hold(change: Change) -> None:
    client = await _record(change)
    if _Child.handled == _Child.stop_at:
        # Mid-batch (read, not acknowledged), reading nothing new: the moment for SIGTERM.
        await client.blpop([gate_key(_Child.label)], timeout=60)  # type: ignore[misc]


def run_crash_consumer(
    label: str, *, die_after: int, lease_ms: int, batch: int, concurrency: int
) -> None:
    """Child process: a non-burst consumer of `CRASH_GROUP` until killed.

    ``die_after`` > 0: the handler SIGKILLs the process right after recording that many changes.
    """
    _Child.label, _Child.handled, _Child.stop_at = label, 0, die_after
    sub = subscriber(CrashItem, name=CRASH_GROUP, start="beginning")(_record_then_maybe_die)
    Runner(sub, lease_ms=lease_ms, batch=batch, concurrency=concurrency, name=label).run()


def run_term_consumer(label: str, *, hold_at: int, lease_ms: int, batch: int) -> None:
    """Child process: a non-burst consumer of `TERM_GROUP` until SIGTERM (or SIGINT).

    The handler holds the ``hold_at``-th change until the test pushes to `gate_key`.
    """
    _Child.label, _Child.handled, _Child.stop_at = label, 0, hold_at
    sub = subscriber(CrashItem, name=TERM_GROUP, start="beginning")(_record_then_maybe_hold)
    Runner(sub, lease_ms=lease_ms, batch=batch, concurrency=4, name=label).run()
