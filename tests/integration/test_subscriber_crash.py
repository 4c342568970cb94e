"""Subscribers under crashes, shutdowns and shared load: at-least-once, per-instance order, no loss.

The crash and SIGTERM tests fork consumers (`subscriber_workers`) that record every change they
handle into a Redis list (``pk:seq:deliveries``) before their handler returns, SIGKILL or
SIGTERM them, and check the records and the consumer group's state in Redis afterwards.

Set ``SUBSCRIBER_CRASH_SEED`` to the seed a run of the kill/restart test printed to replay its
random choices (kill points, kill modes, batch sizes, concurrency, writes; not its timing).
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from subscriber_workers import (
    CRASH_GROUP,
    TERM_GROUP,
    CrashItem,
    LoadItem,
    OnePartition,
    gate_key,
    record_key,
    run_crash_consumer,
    run_term_consumer,
    write_backlog,
)
from waiting import eventually

from streamstore import BaseRedisModel
from streamstore.keys import health_key
from streamstore.projections import Change, Runner, check_health, subscriber

#: Children are forked: they start in milliseconds with streamstore already imported.
FORK = multiprocessing.get_context("fork")

#: One event of one instance: (pk, seq).
Key = tuple[str, int]

POLL = 0.005  # seconds between two looks at Redis while waiting for a condition


# --- helpers -----------------------------------------------------------------------------------


def parse(raw: Iterable[str]) -> list[tuple[str, int, int]]:
    """Decode recorded ``pk:seq:deliveries`` entries."""
    found = []
    for entry in raw:
        pk, seq, deliveries = entry.rsplit(":", 2)
        found.append((pk, int(seq), int(deliveries)))
    return found


async def records_of(client: aioredis.Redis, label: str) -> list[tuple[str, int, int]]:
    """Return what the consumer ``label`` recorded, in the order it handled the changes."""
    return parse(await client.lrange(record_key(label), 0, -1))


def out_of_order(handled: Iterable[Key]) -> list[tuple[str, int, int]]:
    """Return ``(pk, previous seq, seq)`` wherever one pk's seqs do not strictly increase."""
    last: dict[str, int] = {}
    wrong = []
    for pk, seq in handled:
        if seq <= last.get(pk, 0):
            wrong.append((pk, last[pk], seq))
        last[pk] = seq
    return wrong


def every_event(written: dict[str, int]) -> set[Key]:
    """Return every (pk, seq) written, given each pk's number of events (seqs 1..n)."""
    return {(pk, seq) for pk, count in written.items() for seq in range(1, count + 1)}


async def pending_in_group(client: aioredis.Redis, model: type[BaseRedisModel], group: str) -> int:
    """Return how many feed entries the group read but did not acknowledge, on all partitions."""
    keys = model.__ss_meta__.keys
    total = 0
    for partition in range(keys.partitions):
        summary = await client.xpending(keys.feed(partition), group)
        total += int(summary["pending"])
    return total


async def last_delivered(
    client: aioredis.Redis, model: type[BaseRedisModel], group: str
) -> list[str]:
    """Return the group's last-delivered id on each partition's feed."""
    keys = model.__ss_meta__.keys
    found = []
    for partition in range(keys.partitions):
        (info,) = await client.xinfo_groups(keys.feed(partition))
        assert info["name"] == group
        found.append(info["last-delivered-id"])
    return found


async def lease_holders(
    client: aioredis.Redis, model: type[BaseRedisModel], group: str
) -> list[str | None]:
    """Return who holds each partition's lease of ``group`` (None: nobody)."""
    keys = model.__ss_meta__.keys
    leases = [keys.group_keys(p, group).lease for p in range(keys.partitions)]
    return [await client.get(lease) for lease in leases]  # one slot each: no MGET on a cluster


async def wait_for_leases_to_lapse(
    client: aioredis.Redis, model: type[BaseRedisModel], group: str, within: float
) -> None:
    """Wait until no partition of ``group`` is leased (a killed consumer's leases expired)."""

    async def lapsed() -> bool:
        return all(holder is None for holder in await lease_holders(client, model, group))

    await eventually(lapsed, f"the leases of group {group!r} to expire", within=within)


async def save_all(items: Sequence[BaseRedisModel]) -> None:
    """Save ``items`` (event 1 of each), 50 at a time (the client's pool has room for that)."""
    for start in range(0, len(items), 50):
        await asyncio.gather(*(item.save() for item in items[start : start + 50]))


async def increase_each(items: Sequence[Any]) -> None:
    """Write one more event to each of ``items``, concurrently."""
    await asyncio.gather(*(item.n.increase(1) for item in items))


def fork(target: Callable[..., None], label: str, **kwargs: Any) -> Any:
    """Start ``target(label, **kwargs)`` in a forked child process."""
    child = FORK.Process(target=target, args=(label,), kwargs=kwargs, daemon=True)
    child.start()
    return child


def kill(child: Any) -> None:
    """SIGKILL a child (if it still runs) and reap it."""
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
    child.join(10)


async def drain(group: str, *, lease_ms: int, name: str = "drain") -> list[Change]:
    """Run a burst runner of ``group`` on `CrashItem` to its end; return the changes it handled."""
    handled: list[Change] = []

    async def keep(change: Change) -> None:
        handled.append(change)

    sub = subscriber(CrashItem, name=group, start="beginning")(keep)
    await asyncio.wait_for(Runner(sub, burst=True, lease_ms=lease_ms, name=name).async_run(), 30)
    return handled


# --- 1. SIGKILL mid-batch, restart, 100 times ------------------------------------------------

CYCLES = 100
CRASH_INSTANCES = 40
CRASH_EVENTS_EACH = 200  # save + 199 increments: 8,000 events to start with
CRASH_LEASE_MS = 200  # how long a killed consumer's partitions stay blocked: the cycle's pace
MAX_KILL_AFTER = 60  # a child is killed after handling 1..60 changes ...
AT_ONCE = 0.1  # ... or, one time in ten, as soon as it started (before it handled any)
WRITE_EVERY = 4  # every 4th cycle the test writes more events while the child consumes
CYCLE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Cycle:
    """One consumer's life: how it is configured, and when and how it is killed."""

    number: int
    kill_after: int  # changes handled before the kill (0: killed as soon as it started)
    self_kill: bool  # its handler SIGKILLs it right after the kill_after-th change
    batch: int
    concurrency: int
    write: bool  # the test writes more events while it consumes

    @classmethod
    def draw(cls, rng: random.Random, number: int, unhandled: int) -> Cycle:
        """Draw a cycle; it never waits for more changes than are left to handle."""
        at_once = unhandled == 0 or rng.random() < AT_ONCE
        kill_after = 0 if at_once else rng.randint(1, min(MAX_KILL_AFTER, unhandled))
        return cls(
            number=number,
            kill_after=kill_after,
            self_kill=kill_after > 0 and rng.random() < 0.5,
            batch=rng.choice((3, 10, 25)),
            concurrency=rng.choice((1, 4)),
            write=number % WRITE_EVERY == WRITE_EVERY - 1,
        )

    @property
    def label(self) -> str:
        return f"crash-{self.number}"

    @property
    def mode(self) -> str:
        if self.self_kill:
            return "killed itself mid-batch"
        return "killed from outside" if self.kill_after else "killed at once"


async def live_and_die(
    client: aioredis.Redis, cycle: Cycle, rng: random.Random, items: Sequence[CrashItem], why: str
) -> tuple[list[Key], list[CrashItem]]:
    """Run one consumer of `CRASH_GROUP` and SIGKILL it as ``cycle`` says.

    Returns what it recorded, and the instances the test gave one more event meanwhile.
    """
    label, kill_after = cycle.label, cycle.kill_after
    child = fork(
        run_crash_consumer,
        label,
        die_after=kill_after if cycle.self_kill else 0,
        lease_ms=CRASH_LEASE_MS,
        batch=cycle.batch,
        concurrency=cycle.concurrency,
    )
    where = f"{cycle} {why}"
    written = rng.sample(items, 10) if cycle.write else []
    writer = asyncio.create_task(increase_each(written))  # while the child consumes

    async def died() -> bool:
        return not child.is_alive()

    async def reached() -> bool:
        assert child.is_alive(), f"the child exited by itself ({child.exitcode}), {where}"
        return await client.llen(record_key(label)) >= kill_after

    try:
        if cycle.self_kill:
            await eventually(died, f"the child to die, {where}", within=CYCLE_TIMEOUT)
        elif kill_after:
            await eventually(reached, f"{kill_after} handled, {where}", within=CYCLE_TIMEOUT)
            await asyncio.sleep(rng.random() * 0.01)  # a random kill point, not a sync
    except AssertionError as exc:  # it could not get k changes: were some left stuck?
        pending = await pending_in_group(client, CrashItem, CRASH_GROUP)
        count = await client.llen(record_key(label))
        raise AssertionError(f"{exc}; it handled {count}, {pending} entries pending") from exc
    finally:
        kill(child)
        await writer
    assert child.exitcode == -signal.SIGKILL, f"the child did not die by SIGKILL, {where}"
    records = [(pk, seq) for pk, seq, _ in await records_of(client, label)]
    if cycle.self_kill and cycle.concurrency == 1:
        assert len(records) == kill_after, where
    else:  # concurrent handlers (of other instances) may record more before the kill lands
        assert len(records) >= kill_after, where
    return records, written


async def test_sigkill_mid_batch_and_restart_100_times_loses_nothing_and_keeps_instance_order(
    redis_decoded,
):
    """SIGKILL a consumer at a random point, start another; 100 times; then drain.

    Each cycle forks a non-burst `Runner.run` consumer of one group (random batch size and
    concurrency) and SIGKILLs it once it handled a random number k of changes (1..60): half
    the time its handler kills its own process right after recording the k-th change (in the
    middle of a batch, which is then never acknowledged), otherwise the test kills it from
    outside once k changes are recorded, plus a random 0-10 ms (whatever the consumer is doing
    then: reading, acknowledging, renewing leases, waiting for a dead one's leases). One cycle
    in ten the test kills it as soon as it started instead (k = 0). Every 4th cycle the test
    writes more events while the child consumes. Each new child must wait for the dead one's
    leases to expire, claim what it read but did not acknowledge and handle that first. After
    the last cycle a burst runner drains what is left.

    Then every event written was handled at least once, each consumer handled each instance's
    events in strictly increasing seq order, and the group has nothing pending.
    """
    client = redis_decoded
    seed = int(os.environ.get("SUBSCRIBER_CRASH_SEED") or random.randrange(2**32))
    print(f"SUBSCRIBER_CRASH_SEED={seed}")
    rng = random.Random(seed)
    why = f"(replay with SUBSCRIBER_CRASH_SEED={seed})"
    started = time.monotonic()

    items = [CrashItem() for _ in range(CRASH_INSTANCES)]
    await save_all(items)
    await write_backlog(items, CRASH_EVENTS_EACH - 1)
    written = dict.fromkeys((item.pk for item in items), CRASH_EVENTS_EACH)

    handled: set[Key] = set()  # every (pk, seq) some consumer recorded
    by_consumer: dict[str, list[Key]] = {}
    modes: Counter[str] = Counter()
    for number in range(CYCLES):
        cycle = Cycle.draw(rng, number, sum(written.values()) - len(handled))
        modes[cycle.mode] += 1
        records, more = await live_and_die(client, cycle, rng, items, why)
        for item in more:
            written[item.pk] += 1
        by_consumer[cycle.label] = records
        handled.update(records)
    cycles_took = time.monotonic() - started

    # A killed consumer counts as live until its heartbeat and leases expire, and a burst runner
    # leaves live consumers' partitions alone (see the first reproduction below): wait for that.
    await wait_for_leases_to_lapse(client, CrashItem, CRASH_GROUP, within=10)
    drained = [
        (change.pk, change.seq) for change in await drain(CRASH_GROUP, lease_ms=CRASH_LEASE_MS)
    ]
    by_consumer["drain"] = drained
    handled.update(drained)

    expected = every_event(written)
    total = sum(len(records) for records in by_consumer.values())
    print(
        f"{CYCLES} cycles in {cycles_took:.1f}s ({dict(modes)}); {len(expected)} events, "
        f"{total} handled ({total - len(expected)} again after a crash), {len(drained)} by the drain"
    )
    missing = expected - handled
    assert not missing, f"{len(missing)} events never handled, e.g. {sorted(missing)[:5]} {why}"
    assert handled == expected, f"handled events that were never written {why}"
    for label, records in by_consumer.items():
        wrong = out_of_order(records)
        assert not wrong, f"{label} handled out of order (pk, before, then): {wrong[:5]} {why}"
    assert await pending_in_group(client, CrashItem, CRASH_GROUP) == 0, why


# --- 2. two groups, three consumers in one, 50,000 events ------------------------------------

LOAD_INSTANCES = 200
LOAD_EVENTS_EACH = 250  # 50,000 events
LOAD_LEASE_MS = 1500
LOAD_TIMEOUT = 60.0


async def test_three_consumers_share_a_group_and_another_group_sees_everything_too(
    redis_decoded,
):
    """3 runners in group A and 1 in group B, together over 50,000 events of 200 instances.

    Each group handles every event exactly once (no crash here, so no redelivery), each of A's
    consumers handles a real share (> 10%), and each consumer handles each instance's events in
    seq order; across A's consumers too, by one clock: a partition passes from one consumer to
    another only after everything read from it was handled.
    """
    client = redis_decoded
    started = time.monotonic()
    items = [LoadItem() for _ in range(LOAD_INSTANCES)]
    await save_all(items)
    await write_backlog(items, LOAD_EVENTS_EACH - 1)
    expected = every_event(dict.fromkeys((item.pk for item in items), LOAD_EVENTS_EACH))
    total = len(expected)
    wrote = time.monotonic() - started

    tick = itertools.count()  # one clock for every handler: the order they ran in
    seen: dict[str, list[tuple[str, int, int]]] = {}  # consumer -> (pk, seq, tick)

    def consumer(label: str, group: str) -> Runner:
        seen[label] = log = []

        async def handle(change: Change) -> None:
            log.append((change.pk, change.seq, next(tick)))

        sub = subscriber(LoadItem, name=group, start="beginning")(handle)
        return Runner(sub, lease_ms=LOAD_LEASE_MS, name=label)

    groups = {"load-A": ["A-0", "A-1", "A-2"], "load-B": ["B-0"]}
    runners = [consumer(label, group) for group, labels in groups.items() for label in labels]
    tasks = [asyncio.create_task(runner.async_run()) for runner in runners]

    async def everything_handled() -> bool:
        for task in tasks:
            if task.done():
                task.result()  # a runner that stopped by itself: raise its error
                raise AssertionError("a runner stopped before it was asked to")
        return all(sum(len(seen[label]) for label in labels) >= total for labels in groups.values())

    try:
        await eventually(everything_handled, "both groups", within=LOAD_TIMEOUT)
    finally:
        for runner in runners:
            runner.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    took = time.monotonic() - started - wrote
    shares = {label: len(log) for label, log in seen.items()}
    print(
        f"wrote {total} events in {wrote:.1f}s; both groups handled them in {took:.1f}s: {shares}"
    )

    for group, labels in groups.items():
        times = Counter((pk, seq) for label in labels for pk, seq, _ in seen[label])
        assert set(times) == expected, f"{group} missed {len(expected - set(times))} events"
        again = [key for key, n in times.items() if n > 1]
        assert not again, f"{group} handled {len(again)} events twice, e.g. {again[:5]}"
        for label in labels:
            wrong = out_of_order((pk, seq) for pk, seq, _ in seen[label])
            assert not wrong, f"{label} handled out of order (pk, before, then): {wrong[:5]}"
        in_time = sorted((t, pk, seq) for label in labels for pk, seq, t in seen[label])
        wrong = out_of_order((pk, seq) for _, pk, seq in in_time)
        assert not wrong, f"{group} handled out of order across consumers: {wrong[:5]}"
        assert await pending_in_group(client, LoadItem, group) == 0
    for label in groups["load-A"]:
        assert shares[label] > total / 10, f"{label} handled too small a share: {shares}"
    assert [runner.stats.handled for runner in runners] == list(shares.values())


# --- 3. SIGTERM drains -----------------------------------------------------------------------

TERM_INSTANCES = 10
TERM_EVENTS_EACH = 100
TERM_LEASE_MS = 1000
TERM_AT = 25  # the handler holds its 25th change until the test has sent SIGTERM


def term_subscriber() -> Any:
    """The SIGTERM test's subscriber as `check_health` needs it (by name only)."""

    async def unused(change: Change) -> None:
        raise AssertionError(change)

    return subscriber(CrashItem, name=TERM_GROUP)(unused)


async def test_sigterm_drains_the_batch_in_hand_and_exits_cleanly(redis_decoded):
    """SIGTERM on a `Runner.run` child mid-batch: it finishes the batch and exits with code 0.

    The child's handler holds its 25th change until the test has sent SIGTERM, so the signal
    lands while a batch is read and not acknowledged. Afterwards: exit code 0; that batch was
    handled to its end and acknowledged (nothing pending, and every entry the group ever
    delivered was recorded); nothing was read after the signal (each partition's last-delivered
    id is where it was); the child's leases, group membership and health key are gone.
    """
    client = redis_decoded
    items = [CrashItem() for _ in range(TERM_INSTANCES)]
    await save_all(items)
    await write_backlog(items, TERM_EVENTS_EACH - 1)
    total = TERM_INSTANCES * TERM_EVENTS_EACH
    label = "term-0"
    child = fork(run_term_consumer, label, hold_at=TERM_AT, lease_ms=TERM_LEASE_MS, batch=10)

    async def holding() -> bool:
        assert child.is_alive(), f"the child exited by itself ({child.exitcode})"
        return await client.llen(record_key(label)) >= TERM_AT

    try:
        await eventually(holding, f"the child to hold change {TERM_AT}", within=20)
        # In the middle of a batch: it holds leases, reports its health, has entries unacked.
        assert label in await lease_holders(client, CrashItem, TERM_GROUP)
        health = await check_health(client, [term_subscriber()])
        assert [report["consumer"] for report in health[TERM_GROUP]] == [label]
        in_hand = await pending_in_group(client, CrashItem, TERM_GROUP)
        assert in_hand > 0
        read_before = await last_delivered(client, CrashItem, TERM_GROUP)
        os.kill(child.pid, signal.SIGTERM)
        await client.rpush(gate_key(label), "go")
        await asyncio.to_thread(child.join, 20)
        assert not child.is_alive(), "the child did not exit within 20s of SIGTERM"
    finally:
        kill(child)
    assert child.exitcode == 0

    recorded = [(pk, seq) for pk, seq, _ in await records_of(client, label)]
    print(f"{in_hand} entries in hand at SIGTERM; {len(recorded)} of {total} handled in all")
    assert len(set(recorded)) == len(recorded) < total
    assert not out_of_order(recorded)
    assert await pending_in_group(client, CrashItem, TERM_GROUP) == 0
    assert await last_delivered(client, CrashItem, TERM_GROUP) == read_before
    keys = CrashItem.__ss_meta__.keys
    delivered: set[Key] = set()  # every entry up to each partition's last-delivered id
    for partition, last in enumerate(read_before):
        if last != "0-0":
            entries = await client.xrange(keys.feed(partition), "-", last)
            delivered |= {(fields["pk"], int(fields["seq"])) for _, fields in entries}
    assert set(recorded) == delivered
    assert set(await lease_holders(client, CrashItem, TERM_GROUP)) == {None}
    assert await client.zscore(keys.members(TERM_GROUP), label) is None
    assert not await client.exists(health_key(TERM_GROUP, label))
    assert (await check_health(client, [term_subscriber()]))[TERM_GROUP] == []


# --- reproductions of bugs found while writing the tests above -------------------------------

REPRO_LEASE_MS = 1000


async def crash_after_one(client: aioredis.Redis, label: str) -> list[tuple[str, int, int]]:
    """Fork a consumer of `CRASH_GROUP` that SIGKILLs itself after handling one change."""
    child = fork(
        run_crash_consumer,
        label,
        die_after=1,
        lease_ms=REPRO_LEASE_MS,
        batch=10,
        concurrency=1,
    )
    try:
        await asyncio.to_thread(child.join, 20)
    finally:
        kill(child)
    assert child.exitcode == -signal.SIGKILL
    return await records_of(client, label)


async def test_a_burst_runner_started_right_after_a_crash_handles_the_dead_consumers_backlog(
    redis_decoded,
):
    """A burst runner must not return while a crashed consumer's partitions are left unhandled.

    `GroupConsumer.settled` treats a partition as another consumer's while its lease holder has
    a fresh heartbeat, and a consumer SIGKILLed less than ``lease_ms`` ago still has one: a
    burst runner started then returns at once, having handled nothing.
    """
    client = redis_decoded
    items = [CrashItem() for _ in range(4)]
    await save_all(items)
    await write_backlog(items, 9)
    assert len(await crash_after_one(client, "dies")) == 1
    handled = {
        (change.pk, change.seq) for change in await drain(CRASH_GROUP, lease_ms=REPRO_LEASE_MS)
    }
    assert handled == every_event(dict.fromkeys((item.pk for item in items), 10))
    assert await pending_in_group(client, CrashItem, CRASH_GROUP) == 0


async def test_a_change_redelivered_after_its_consumer_was_killed_counts_two_deliveries(
    redis_decoded,
):
    """`Change.deliveries` is 1 the first time and 2 on the redelivery after a crash.

    The killed consumer had read a batch of 10 changes of one instance and handled the first;
    the next consumer gets all 10 again, each delivered for the second time.
    """
    client = redis_decoded
    item = CrashItem()
    await item.save()
    await write_backlog([item], 9)
    assert await crash_after_one(client, "dies") == [(item.pk, 1, 1)]
    await wait_for_leases_to_lapse(client, CrashItem, CRASH_GROUP, within=10)
    again = await drain(CRASH_GROUP, lease_ms=REPRO_LEASE_MS)
    assert [(change.seq, change.deliveries) for change in again] == [(s, 2) for s in range(1, 11)]


async def test_a_batch_that_outlasts_the_lease_is_not_handled_by_a_second_consumer_meanwhile(
    redis_decoded,
):
    """While a live consumer handles a batch, no other consumer handles the same instance.

    Leases are renewed only between two polls (`Runner._consume` calls `rebalance`), so when
    one batch takes longer than ``lease_ms`` (here 40 changes of 20 ms against a 300 ms lease;
    in production e.g. 16 partitions x 100 changes x 10 ms against the default 10 s) the lease
    expires under the consumer still handling it: another takes the partition over, claims the
    very entries being handled and handles them again, concurrently and out of order.
    """
    item = OnePartition()
    await item.save()
    await write_backlog([item], 39)
    running: dict[str, tuple[str, int]] = {}  # pk -> (consumer, seq) of the handler running now
    overlaps: list[tuple[str, int, tuple[str, int]]] = []
    handled: list[tuple[str, int]] = []

    def consumer(label: str) -> Runner:
        async def handle(change: Change) -> None:
            if change.pk in running:
                overlaps.append((label, change.seq, running[change.pk]))
            running[change.pk] = (label, change.seq)
            handled.append((label, change.seq))
            await asyncio.sleep(0.02)  # a handler doing 20 ms of I/O
            running.pop(change.pk, None)

        sub = subscriber(OnePartition, name="slow", start="beginning")(handle)
        return Runner(sub, lease_ms=300, batch=50, name=label)

    first, second = consumer("first"), consumer("second")
    tasks = [asyncio.create_task(first.async_run())]

    async def first_is_handling() -> bool:
        return bool(handled)

    async def all_handled() -> bool:
        return len({seq for _, seq in handled}) == 40

    try:
        await eventually(first_is_handling, "the first consumer to start", within=10)
        tasks.append(asyncio.create_task(second.async_run()))
        await eventually(all_handled, "all 40 changes handled", within=20)
    finally:
        first.stop()
        second.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert overlaps == [], (
        f"(consumer, seq) started while (consumer, seq) of the pk ran: {overlaps}"
    )
    assert [seq for _, seq in handled] == list(range(1, 41))
