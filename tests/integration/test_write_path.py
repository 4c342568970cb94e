"""The write path on a real Redis: one event per mutation, in stream and feed, fold = document."""

from __future__ import annotations

import asyncio
import json

import pytest
from golden_cases import BEFORE, CASES, Case, Sample

from streamstore import BaseRedisModel, DocumentNotFoundError
from streamstore.projections import fold


async def stored(redis, key: str):
    raw = await redis.execute_command("JSON.GET", key)
    return None if raw is None else json.loads(raw)


async def feed_entries(redis, model):
    return await redis.xrange(type(model).__ss_meta__.keys.for_pk(model.pk).feed)


async def run_case(case: Case) -> tuple[Sample, object, Sample]:
    """Save a default sample, run the case's mutation; return it, the result, and the target.

    The target is the instance whose stream gets the event: the sample, or the copy it returns.
    """
    model = Sample()
    await model.save()
    result = await case.mutate(model)
    return model, result, result if case.on_result else model


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_mutation_writes_exactly_its_golden_event_and_document(redis, case: Case):
    model, result, target = await run_case(case)
    events = await target.history()
    expected = [(2, case.type)] if not case.on_result else [(1, case.type)]
    assert [(e.seq, e.type) for e in events][-1:] == expected
    assert (events[-1].path, events[-1].data) == (case.path, case.data_for(model))
    assert await stored(redis, target.key) == case.after
    assert fold(events) == case.after
    if case.returns is not ...:
        assert result == case.returns


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_mutation_appends_the_same_event_to_the_partition_feed(redis, case: Case):
    _, _, target = await run_case(case)
    instance = await redis.xrange(target.stream_key)
    feed = [f for f in await feed_entries(redis, target) if f[1][b"pk"] == target.pk.encode()]
    assert len(feed) == len(instance) == (1 if case.on_result else 2)
    for (instance_id, fields), (_, feed_fields) in zip(instance, feed, strict=True):
        assert feed_fields[b"pk"] == target.pk.encode()
        assert feed_fields[b"id"] == instance_id
        assert {k: v for k, v in feed_fields.items() if k not in (b"pk", b"id")} == fields


@pytest.mark.parametrize("case", [c for c in CASES if c.after is not None], ids=lambda c: c.name)
async def test_local_state_matches_redis_after_the_mutation(redis, case: Case):
    _, _, target = await run_case(case)
    assert target.redis_dump() == await stored(redis, target.key)


async def test_stream_entry_fields_are_the_documented_flat_strings(redis_decoded):
    model = Sample()
    await model.save()
    await model.tags.aappend("c")
    (_, fields) = (await redis_decoded.xrange(model.stream_key))[-1]
    assert list(fields) == ["seq", "type", "path", "data", "ts", "meta", "v", "mv"]
    assert fields["seq"] == "2"
    assert fields["type"] == "list.append"
    assert fields["path"] == "$.tags"
    assert json.loads(fields["data"]) == {"value": "c"}
    assert fields["meta"] == "{}"
    assert fields["v"] == "1"
    assert fields["mv"] == "1"  # Meta.schema_version
    assert fields["ts"].isdigit()


async def test_event_ts_is_the_server_time_of_the_stream_id(redis):
    model = Sample()
    await model.save()
    (event,) = await model.history()
    assert str(event.ts) == event.id.split("-")[0]
    assert event.at.tzinfo is not None


async def test_first_field_operation_on_an_unsaved_model_saves_it_first(redis):
    model = Sample()
    await model.tags.aappend("c")
    events = await model.history()
    assert [(e.seq, e.type) for e in events] == [(1, "saved"), (2, "list.append")]
    assert events[0].data == BEFORE
    assert await stored(redis, model.key) == {**BEFORE, "tags": ["a", "b", "c"]}


async def test_field_operation_on_a_deleted_instance_writes_nothing(redis):
    model = Sample()
    await model.save()
    await Sample.try_delete(model.key)
    before = await redis.xrange(model.stream_key)

    with pytest.raises(DocumentNotFoundError):
        await model.tags.aappend("c")
    assert await redis.xrange(model.stream_key) == before
    assert await redis.exists(model.key) == 0


async def test_events_of_many_instances_share_a_partition_feed_in_write_order(redis):
    class Tiny(Sample):
        class Meta:
            partitions = 1

    first, second = Tiny(), Tiny()
    await first.save()
    await second.save()
    await first.name.set("again")
    feed = await redis.xrange(Tiny.__ss_meta__.keys.feed(0))
    assert [(f[b"pk"].decode(), f[b"type"]) for _, f in feed] == [
        (first.pk, b"saved"),
        (second.pk, b"saved"),
        (first.pk, b"set"),
    ]


async def test_a_thousand_concurrent_writes_and_reads_wait_for_connections(redis) -> None:
    """More concurrent calls than the pool has connections queue up; none fails."""

    class Crowd(BaseRedisModel):
        n: int = 0

    crowd = [Crowd(n=i) for i in range(1000)]
    await asyncio.gather(*(member.save() for member in crowd))
    loaded = await asyncio.gather(*(Crowd.get(member.key) for member in crowd))
    assert [member.n for member in loaded] == list(range(1000))


async def test_writes_beyond_a_full_pool_wait_their_turn(redis_url) -> None:
    """Two connections, fifty concurrent writes that each hold one: all get through, in turn."""

    class Queued(BaseRedisModel):
        n: int = 0

        class Meta:
            redis = f"{redis_url}?max_connections=2"

    queued = [Queued(n=i) for i in range(50)]
    await asyncio.gather(*(member.save() for member in queued))
    assert sorted([(await Queued.get(member.key)).n for member in queued]) == list(range(50))
