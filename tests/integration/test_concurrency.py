"""I3 (no lost updates) and I4 (ordered, gapless history) under many concurrent writers."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from pydantic import Field

from streamstore import BaseRedisModel, Event
from streamstore.projections import fold

TASKS = 20
PROCESSES = 4
MUTATIONS = 250
# Appends and pops weigh the same, so the list keeps running dry and racing pops get refused.
WEIGHTS = {"append": 3, "pop": 3, "set_item": 2, "increase": 1, "set": 1}

#: One call a writer made: ``(kind, *what)``. Acknowledged kinds are ``append`` (token),
#: ``set_item`` (key, value), ``increase`` (the new value it returned), ``set`` (value) and
#: ``pop`` (the value it returned); ``refused_pop`` is a pop that raised IndexError.
Record = tuple[Any, ...]


class Ledger(BaseRedisModel):
    """The one instance every writer hammers; module level so spawned children can import it."""

    name: str = ""
    counter: int = 0
    tags: list[str] = Field(default_factory=list)
    meta: dict[str, str] = Field(default_factory=dict)

    class Meta:
        key_prefix = "ConcurrencyLedger"


async def mutate(
    key: str, worker: int, count: int, ready: Callable[[], Awaitable[Any]]
) -> list[Record]:
    """Do ``count`` mixed mutations on a handle of our own; return what each call did."""
    handle = await Ledger.get(key)
    kinds = random.Random(worker).choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=count)
    log: list[Record] = []
    await ready()
    for i, kind in enumerate(kinds):
        token = f"w{worker}-{i}"
        if kind == "append":
            await handle.tags.aappend(token)
            log.append(("append", token))
        elif kind == "set_item":
            await handle.meta.aset_item(token, f"v{worker}-{i}")
            log.append(("set_item", token, f"v{worker}-{i}"))
        elif kind == "increase":
            log.append(("increase", await handle.counter.increase(1)))
        elif kind == "set":
            await handle.name.set(token)
            log.append(("set", token))
        else:
            try:
                popped = await handle.tags.apop()
            except IndexError:
                log.append(("refused_pop", token))
            else:
                log.append(("pop", popped))
    return log


_start_line: Any = None  # the pool's multiprocessing Barrier, set in each child


def _join_start_line(barrier: Any) -> None:
    """Pool initializer: keep the shared barrier, so all processes start writing together."""
    global _start_line  # noqa: PLW0603 (a pool initializer's only way to hand state to tasks)
    _start_line = barrier


def mutate_in_process(redis_url: str, key: str, worker: int, count: int) -> list[Record]:
    """Run `mutate` in this process's own event loop and connection, against ``redis_url``."""
    os.environ["REDIS_URL"] = redis_url
    barrier = _start_line
    assert barrier is not None

    async def ready() -> None:
        await asyncio.to_thread(barrier.wait, 60)

    return asyncio.run(mutate(key, worker, count, ready))


def event_identity(event: Event) -> Record:
    """What identifies an event among the writers' records (anything else stays distinct)."""
    identity: Record = ("unexpected", event.type, event.path, json.dumps(event.data))
    match event.type, event.path, event.data:
        case "saved", "$", _:
            identity = ("saved",)
        case "list.append", "$.tags", {"value": value}:
            identity = ("append", value)
        case "list.pop", "$.tags", {"value": value}:
            identity = ("pop", value)
        case "dict.set_item", "$.meta", {"key": key, "value": value}:
            identity = ("set_item", key, value)
        case "number.incr", "$.counter", {"by": 1, "value": value}:
            identity = ("increase", value)
        case "set", "$.name", {"value": value}:
            identity = ("set", value)
    return identity


async def assert_invariants(
    redis: aioredis.Redis, ledger: Ledger, logs: list[list[Record]], count: int
) -> None:
    """Check I3 and I4 of the ledger's stream and document against every writer's log."""
    assert [len(log) for log in logs] == [count] * len(logs)  # every call returned or refused
    records = [record for log in logs for record in log]
    acknowledged = [("saved",)] + [r for r in records if r[0] != "refused_pop"]
    by_kind = {kind: [r[1:] for r in acknowledged if r[0] == kind] for kind in WEIGHTS}

    # I4: seq is 1..N without gaps, in stream order, both as stored and as read by history().
    entries = await redis.xrange(ledger.stream_key)
    assert [int(fields[b"seq"]) for _, fields in entries] == list(range(1, len(entries) + 1))
    events = await ledger.history()
    assert [e.seq for e in events] == list(range(1, len(entries) + 1))
    assert [e.id for e in events] == [entry_id.decode() for entry_id, _ in entries]

    # I3: every acknowledged mutation is in the stream exactly once, and nothing else is.
    assert len(set(acknowledged)) == len(acknowledged)  # tokens are unique: no value popped twice
    in_stream = Counter(event_identity(e) for e in events)
    missing = Counter(acknowledged) - in_stream
    unacknowledged = in_stream - Counter(acknowledged)
    assert not missing, f"acknowledged but not in the stream: {sorted(missing)[:10]}"
    assert not unacknowledged, (
        f"in the stream but never acknowledged: {sorted(unacknowledged)[:10]}"
    )
    assert len(events) == len(acknowledged)

    # The document is the fold of the stream, and holds exactly what the writers did.
    document = json.loads(await redis.execute_command("JSON.GET", ledger.key))
    assert fold(events) == document
    increases = len(by_kind["increase"])
    assert document["counter"] == increases == sum(e.type == "number.incr" for e in events)
    assert sorted(value for (value,) in by_kind["increase"]) == list(range(1, increases + 1))
    appended = Counter(token for (token,) in by_kind["append"])
    popped = Counter(value for (value,) in by_kind["pop"])
    assert not popped - appended
    assert Counter(document["tags"]) == appended - popped
    assert document["meta"] == dict(by_kind["set_item"])
    names = [e.data["value"] for e in events if e.type == "set"]
    assert document["name"] == (names[-1] if names else "")


async def test_twenty_tasks_with_their_own_handles_lose_no_update_and_leave_a_gapless_history(
    redis,
):
    ledger = Ledger()
    await ledger.save()
    start_line = asyncio.Barrier(TASKS)
    logs = await asyncio.gather(
        *(mutate(ledger.key, worker, MUTATIONS, start_line.wait) for worker in range(TASKS))
    )
    await assert_invariants(redis, ledger, logs, MUTATIONS)


async def test_four_spawned_processes_lose_no_update_and_leave_a_gapless_history(redis, redis_url):
    ledger = Ledger()
    await ledger.save()
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(PROCESSES)
    args = [(redis_url, ledger.key, worker, MUTATIONS) for worker in range(PROCESSES)]
    # Each task waits at the barrier until all four are running, so each runs in its own process.
    with spawn.Pool(PROCESSES, initializer=_join_start_line, initargs=(barrier,)) as pool:
        logs = await asyncio.to_thread(pool.starmap, mutate_in_process, args)
    await assert_invariants(redis, ledger, logs, MUTATIONS)
