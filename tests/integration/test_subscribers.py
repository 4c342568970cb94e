"""Subscribers: what reaches a handler, in what order, and what happens when it fails."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest
from clients import async_client
from pydantic import Field
from redis.exceptions import ConnectionError as RedisConnectionError
from waiting import eventually

from streamstore import BaseRedisModel, ConfigurationError, event_context, rename_field
from streamstore.projections import Change, Runner, check_health, subscriber
from streamstore.projections.consumer import GroupConsumer
from streamstore.projections.runner import catch_up


class Task(BaseRedisModel):
    title: str = ""
    done: bool = False
    tags: list[str] = Field(default_factory=list)

    class Meta:
        partitions = 4


async def tasks(count: int, appends: int = 2) -> list[Task]:
    """``count`` tasks, each with a saved event and ``appends`` list appends."""
    made = []
    for i in range(count):
        task = Task(title=f"t{i}")
        await task.save()
        for j in range(appends):
            await task.tags.aappend(f"tag{j}")
        made.append(task)
    return made


def recorder(**options):
    """A subscriber on Task that records every change it gets, and the list it records into."""
    seen: list[Change] = []

    @subscriber(Task, start="beginning", retry_delay=0.001, **options)
    async def record(change: Change) -> None:
        seen.append(change)

    return record, seen


async def burst(*subscribers, **options) -> Runner:
    runner = Runner(*subscribers, burst=True, lease_ms=1000, **options)
    await runner.async_run()
    return runner


def by_pk(seen: list[Change]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for change in seen:
        found[change.pk].append(change.seq)
    return found


async def test_every_change_reaches_the_handler_once_in_seq_order_per_instance(redis):
    made = await tasks(12)
    record, seen = recorder(name="all")
    runner = await burst(record)
    assert by_pk(seen) == {task.pk: [1, 2, 3] for task in made}
    assert runner.stats.handled == 36
    first = next(c for c in seen if c.pk == made[0].pk)
    assert (first.type, first.model, first.key, first.deliveries) == ("saved", Task, made[0].key, 1)
    assert first.data == {"title": "t0", "done": False, "tags": []}
    assert first.id == (await made[0].history())[0].id  # the instance stream's id
    for feed in (Task.__ss_meta__.keys.feed(p) for p in range(4)):
        assert (await redis.xpending(feed, "all"))["pending"] == 0  # everything acknowledged


async def test_a_group_resumes_where_it_stopped_and_groups_are_independent(redis):
    made = await tasks(3)
    first, first_seen = recorder(name="first")
    await burst(first)
    await made[0].done.set(True)
    await burst(first)
    assert [(c.pk, c.seq) for c in first_seen[-1:]] == [(made[0].pk, 4)]
    other, other_seen = recorder(name="other")
    await burst(other)
    assert len(other_seen) == 10 and len(first_seen) == 10


async def test_a_group_that_starts_now_sees_only_later_changes(redis):
    old = await tasks(2)
    record, seen = recorder(name="later")
    later = record.with_options(start="now")
    await burst(later)
    assert seen == []
    await old[1].title.set("new")
    await burst(later)
    assert [(c.pk, c.seq, c.type) for c in seen] == [(old[1].pk, 4, "set")]


async def test_type_and_field_filters_skip_the_rest_without_handling_them(redis):
    made = await tasks(2)
    await made[0].title.set("renamed")
    only_saves, saves = recorder(name="saves", types={"saved"})
    titles_only, titles = recorder(name="titles", paths=["title"])
    runner = await burst(only_saves, titles_only)
    assert [c.type for c in saves] == ["saved", "saved"]
    assert sorted((c.type, c.path) for c in titles) == [
        ("saved", "$"),
        ("saved", "$"),
        ("set", "$.title"),
    ]
    assert runner.stats.skipped == (7 - 2) + (7 - 3)


async def test_a_failing_handler_is_retried_then_succeeds_in_order(redis):
    made = await tasks(1, appends=3)
    attempts: list[int] = []
    seen: list[int] = []

    @subscriber(Task, name="flaky", start="beginning", retry_delay=0.001)
    async def flaky(change: Change) -> None:
        if change.seq == 2 and change.deliveries < 3:
            attempts.append(change.deliveries)
            raise ConnectionError("search index not reachable")
        seen.append(change.seq)

    runner = await burst(flaky)
    assert attempts == [1, 2] and seen == [1, 2, 3, 4]
    assert runner.stats.retried == 2 and made


async def test_after_max_deliveries_a_change_is_dead_lettered_and_the_rest_goes_on(redis):
    made = await tasks(1, appends=2)
    seen: list[int] = []

    @subscriber(Task, name="strict", start="beginning", max_deliveries=2, retry_delay=0.001)
    async def strict(change: Change) -> None:
        if change.seq == 2:
            raise ValueError("cannot index tag0")
        seen.append(change.seq)

    runner = await burst(strict)
    assert seen == [1, 3] and runner.stats.dead_lettered == 1
    keys = Task.__ss_meta__.keys.group_keys(Task.__ss_meta__.keys.partition(made[0].pk), "strict")
    ((_, parked),) = await redis.xrange(keys.dead)
    assert parked[b"pk"].decode() == made[0].pk and parked[b"seq"] == b"2"
    assert parked[b"deliveries"] == b"2" and b"cannot index tag0" in parked[b"error"]
    assert json.loads(parked[b"data"]) == {"value": "tag0"}
    assert b"ValueError" in parked[b"traceback"]
    assert (await redis.xpending(keys.feed, "strict"))["pending"] == 0


async def test_a_malformed_feed_entry_is_dead_lettered_and_does_not_stop_the_runner(redis):
    made = await tasks(1, appends=1)
    feed = Task.__ss_meta__.keys.feed(Task.__ss_meta__.keys.partition(made[0].pk))
    await redis.xadd(feed, {"pk": made[0].pk, "id": "1-0", "type": "no.such.type"})
    await made[0].done.set(True)
    record, seen = recorder(name="robust")
    runner = await burst(record)
    assert [c.seq for c in seen] == [1, 2, 3] and runner.stats.dead_lettered == 1
    dead = Task.__ss_meta__.keys.group_keys(Task.__ss_meta__.keys.partition(made[0].pk), "robust")
    ((_, parked),) = await redis.xrange(dead.dead)
    assert parked[b"type"] == b"no.such.type" and b"CorruptEventError" in parked[b"error"]


async def test_a_feed_entry_without_its_stream_id_is_dead_lettered_too(redis):
    made = await tasks(1, appends=0)
    feed = Task.__ss_meta__.keys.feed(Task.__ss_meta__.keys.partition(made[0].pk))
    await redis.xadd(feed, {"pk": made[0].pk, "seq": "9", "type": "set"})
    record, seen = recorder(name="no-id")
    runner = await burst(record)
    assert [c.seq for c in seen] == [1] and runner.stats.dead_lettered == 1


async def test_a_client_that_decodes_responses_gets_the_same_changes(redis_url, redis):
    await tasks(2)
    record, seen = recorder(name="decoded")
    client = async_client(redis_url, decode=True)
    try:
        await burst(record, redis=client)
    finally:
        await client.aclose()
    assert (
        sorted((c.seq, c.type) for c in seen)
        == [(1, "saved")] * 2 + [(2, "list.append")] * 2 + [(3, "list.append")] * 2
    )


async def test_dedupe_skips_changes_already_handled_when_they_come_again(redis):
    await tasks(2)
    deduped, seen = recorder(name="once", dedupe=True)
    await burst(deduped)
    assert len(seen) == 6
    # Redeliver everything, as after a crash between handling and acknowledging.
    for partition in range(4):
        await redis.xgroup_setid(Task.__ss_meta__.keys.feed(partition), "once", "0")
    runner = await burst(deduped)
    assert len(seen) == 6 and runner.stats.skipped == 6
    plain, plain_seen = recorder(name="twice")
    await burst(plain)
    for partition in range(4):
        await redis.xgroup_setid(Task.__ss_meta__.keys.feed(partition), "twice", "0")
    await burst(plain)
    assert len(plain_seen) == 12


async def test_handlers_get_changes_upcast_to_the_current_model(redis):
    class OldNote(BaseRedisModel):
        body: str = ""

        class Meta:
            key_prefix = "SubscriberNote"

    class Note(BaseRedisModel):
        text: str = ""

        class Meta:
            key_prefix = "SubscriberNote"
            schema_version = 2
            upcasters = {1: rename_field("body", "text")}  # noqa: RUF012

    old = OldNote(body="hi")
    await old.save()
    await old.body.set("hello")
    seen: list[Change] = []

    @subscriber(Note, name="notes", start="beginning")
    async def record(change: Change) -> None:
        seen.append(change)

    await burst(record)
    assert [(c.path, c.data, c.model_version) for c in seen] == [
        ("$", {"text": "hi"}, 2),
        ("$.text", {"value": "hello"}, 2),
    ]


async def test_metadata_of_the_write_reaches_the_handler(redis):
    task = Task()
    with event_context(actor="alice"):
        await task.save()
    record, seen = recorder(name="meta")
    await burst(record)
    assert seen[0].meta == {"actor": "alice"}


async def test_a_running_runner_reports_health_and_stops_cleanly(redis):
    record, seen = recorder(name="live")
    runner = Runner(record, lease_ms=600, block_ms=100, health_every=0.05)
    running = asyncio.create_task(runner.async_run())

    async def holds_every_partition() -> list:
        found = (await check_health(redis, [record]))["live"]
        return [r for r in found if sum(map(len, r["partitions"].values())) == 4]

    found = await eventually(holds_every_partition, "a health report with every partition held")
    assert found[0]["consumer"] == runner.name
    task = Task()
    await task.save()

    async def arrived() -> bool:
        return bool(seen)

    await eventually(arrived, "the change to reach the handler")
    runner.stop()
    await running
    assert (await check_health(redis, [record]))["live"] == []
    assert (
        await redis.exists(*(Task.__ss_meta__.keys.group_keys(p, "live").lease for p in range(4)))
        == 0
    )


async def test_a_burst_run_ends_when_its_cancelled_lease_renewal_ends_in_a_redis_error(
    redis: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst run returns even if cancelling a lease renewal in flight raises a Redis error.

    A cancellation that lands inside a Redis call can come out of the client as a connection
    or timeout error. The renewal loop outlives those errors, and a burst run never sets the
    runner's stop event, so the runner used to wait for that loop forever (a 1-in-10 hang of
    the crash test's final drain on a loaded cluster run).
    """
    real = GroupConsumer.keep_alive
    renewing = asyncio.Event()

    async def keep_alive(self: GroupConsumer) -> int:
        current = asyncio.current_task()
        if renewing.is_set() or current is None:
            return await real(self)
        if getattr(current.get_coro(), "__qualname__", "") != "Runner._keep_alive":
            return await real(self)  # the renewal `rebalance` makes
        live = await real(self)
        renewing.set()  # the first renewal of the runner's own clock: it will be cancelled
        try:
            await asyncio.Event().wait()  # a renewal still in flight when the burst ends
        except asyncio.CancelledError as exc:
            raise RedisConnectionError("connection closed while cancelled") from exc
        return live

    monkeypatch.setattr(GroupConsumer, "keep_alive", keep_alive)
    made = await tasks(3)
    seen: list[Change] = []

    @subscriber(Task, name="renewing", start="beginning")
    async def record(change: Change) -> None:
        await renewing.wait()  # the burst ends only once a renewal is in flight
        seen.append(change)

    await asyncio.wait_for(burst(record), 10)
    assert by_pk(seen) == {task.pk: [1, 2, 3] for task in made}


async def test_a_group_behind_the_feed_s_retention_is_reported_and_can_catch_up(redis):
    made = await tasks(3)
    record, seen = recorder(name="slow")
    await burst(record)
    for task in made:
        await task.done.set(True)
    for partition in range(4):  # the feed loses what the group has not read yet
        feed = Task.__ss_meta__.keys.feed(partition)
        await redis.xtrim(feed, maxlen=0, approximate=False)
    runner = Runner(record, burst=True, lease_ms=1000, health_every=0.01)
    await runner.async_run()
    assert len(seen) == 9  # the trimmed changes never came through the feed
    partitions = sorted({Task.__ss_meta__.keys.partition(t.pk) for t in made})
    assert runner.behind_retention() == {("slow", "Task"): partitions}
    since = (await made[0].history())[-1].at
    assert await catch_up(record, since=since) == 3
    assert sorted((c.pk, c.seq) for c in seen[9:]) == sorted((t.pk, 4) for t in made)


def test_subscriber_settings_are_checked_when_it_is_made():
    async def handle(change: Change) -> None:
        return None

    with pytest.raises(ConfigurationError, match="letters, digits"):
        subscriber(Task, name="no spaces")(handle)
    with pytest.raises(ConfigurationError, match="at least one model"):
        subscriber(name="x")(handle)
    with pytest.raises(ConfigurationError, match="max_deliveries"):
        subscriber(Task, max_deliveries=0)(handle)
    with pytest.raises(ConfigurationError, match="names must differ"):
        Runner(subscriber(Task, name="a")(handle), subscriber(Task, name="a")(handle))
