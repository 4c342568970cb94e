"""I7, checked before written: the function refuses a write whole, whatever Redis holds or is sent.

Each test makes one write fail on the server side (a pipeline over several instances with a
failing operation, a corrupt stream, keys of the wrong type, exhausted ids, an overflowing
increment, hand-made hostile arguments) and checks that it raises a `StreamStoreError` and
that the document, the stream and the feed are exactly as they were.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import pytest
from instance_state import instance_state
from pydantic import Field

from streamstore import (
    BaseRedisModel,
    CorruptEventError,
    KeyMissingError,
    StoredDataError,
    StreamStoreError,
    UsageError,
    ValueRangeError,
)
from streamstore import operations as ops
from streamstore.executor import run_plan, run_together
from streamstore.projections import fold

if TYPE_CHECKING:
    from streamstore.connection import Client
    from streamstore.plan import Plan


class Account(BaseRedisModel):
    """One partition: any two instances share a slot, so pipelines over them run on a cluster."""

    name: str = ""
    n: int = 0
    tags: list[str] = Field(default_factory=list)
    meta: dict[str, str] = Field(default_factory=dict)

    class Meta:
        partitions = 1
        key_prefix = "CheckedAccount"


async def assert_fold_is_document(redis: Client, model: Account) -> None:
    raw = await redis.execute_command("JSON.GET", model.key)
    assert fold(await model.history()) == (None if raw is None else json.loads(raw))


async def first_entry(redis: Client, model: Account, **changes: str) -> dict[str, Any]:
    """The fields of the model's first event, as text names, with ``changes`` made."""
    fields = (await redis.xrange(model.stream_key))[0][1]
    return {name.decode(): value for name, value in fields.items()} | changes


async def saved(**fields: Any) -> Account:
    model = Account(**fields)
    await model.save()
    return model


# --- a pipeline over several instances is all or nothing ---------------------------------------


async def test_a_pipeline_writes_no_instance_when_a_later_one_fails_inside_redis(redis):
    a, b = await saved(name="a"), await saved(name="b")
    before = await instance_state(redis, a, b)

    async def append_then_delete_missing() -> None:
        async with a.pipeline():
            await a.tags.aappend("t")
            await b.meta.adel_item("missing")

    with pytest.raises(KeyMissingError):
        await append_then_delete_missing()
    assert await instance_state(redis, a, b) == before
    assert a.tags == [] and b.meta == {}  # local state is back where it was before the block


async def test_a_pipeline_writes_no_instance_when_the_first_one_fails_inside_redis(redis):
    a, b = await saved(name="a"), await saved(name="b")
    before = await instance_state(redis, a, b)

    async def fail_first() -> None:
        async with a.pipeline():
            await a.meta.adel_item("missing")
            await b.tags.aextend(["x", "y"])
            await b.name.set("b2")

    with pytest.raises(KeyMissingError):
        await fail_first()
    assert await instance_state(redis, a, b) == before
    assert (b.tags, b.name) == ([], "b")


async def test_a_pipeline_over_several_instances_commits_them_in_one_call(redis):
    a, b, c = await saved(name="a"), await saved(name="b"), await saved(name="c")
    async with a.pipeline():
        await a.tags.aappend("1")
        await b.meta.aset_item("k", "v")
        await c.delete()
    assert [e.type for e in (await a.history())[1:]] == ["list.append"]
    assert [e.type for e in (await b.history())[1:]] == ["dict.set_item"]
    assert [e.type for e in (await c.history())[1:]] == ["deleted"]
    for model in (a, b, c):
        await assert_fold_is_document(redis, model)


async def test_a_batch_on_a_created_instance_leaves_no_document_when_it_fails(redis):
    fresh = Account(name="new")

    async def create_then_fail() -> None:
        async with fresh.pipeline():
            await fresh.tags.aappend("x")  # saves the model first, in the same call
            await fresh.meta.adel_item("missing")

    with pytest.raises(KeyMissingError):
        await create_then_fail()
    assert await redis.exists(fresh.key, fresh.stream_key) == 0


# --- what Redis holds: another program's keys and entries --------------------------------------


async def test_a_write_after_a_foreign_last_entry_is_refused_whole(redis):
    model = await saved(name="x")
    await redis.xadd(model.stream_key, {"hello": "world"})
    before = await instance_state(redis, model)
    with pytest.raises(CorruptEventError, match="not a streamstore event"):
        await model.name.set("y")
    assert await instance_state(redis, model) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "set", "seq": "2"},  # seq not first
        {"seq": "two", "type": "set"},
        {"seq": "0", "type": "set"},
        {"seq": "2", "type": "no.such.type"},
        {"seq": "2"},
    ],
    ids=["seq-not-first", "seq-not-int", "seq-zero", "unknown-type", "no-type"],
)
async def test_a_malformed_last_entry_stops_the_next_write(redis, fields):
    model = await saved(name="x")
    await redis.xadd(model.stream_key, fields)
    before = await instance_state(redis, model)
    with pytest.raises(CorruptEventError):
        await model.tags.aappend("t")
    assert await instance_state(redis, model) == before


async def test_a_last_entry_naming_a_field_twice_stops_the_next_write(redis):
    # Readers see the last value of a repeated field, the write function the first: refuse it.
    model = await saved(name="x")
    fields = {
        name.decode(): value for name, value in (await redis.xrange(model.stream_key))[0][1].items()
    }
    flat = [part for pair in fields.items() for part in pair] + ["seq", "7"]
    await redis.execute_command("XADD", model.stream_key, "*", *flat)
    before = await instance_state(redis, model)
    with pytest.raises(CorruptEventError, match="eight fields"):
        await model.tags.aappend("t")
    assert await instance_state(redis, model) == before


@pytest.mark.parametrize("which", ["feed", "index", "expiry", "doc"])
async def test_a_key_of_the_wrong_type_is_refused_before_anything_is_written(redis, which):
    model = Account(name="x")
    keys = model._ss_instance_keys()
    await redis.set(getattr(keys, which), "not ours")
    with pytest.raises(StoredDataError, match="nothing was written"):
        await model.save()
    assert await redis.exists(model.stream_key) == 0
    assert await redis.type(getattr(keys, which)) in ("string", b"string")


async def test_a_stream_with_no_room_for_newer_ids_is_refused(redis):
    model = await saved(name="x")
    await redis.xadd(
        model.stream_key, await first_entry(redis, model, seq="2"), id="9999999999999999-0"
    )
    before = await instance_state(redis, model)
    with pytest.raises(StoredDataError, match="no room"):
        await model.name.set("y")
    assert await instance_state(redis, model) == before


async def test_a_feed_whose_ids_are_exhausted_is_refused(redis):
    model = await saved(name="x")
    top = "18446744073709551615-18446744073709551615"
    await redis.xadd(model._ss_instance_keys().feed, {"pk": "other"}, id=top)
    before = await instance_state(redis, model)
    with pytest.raises(StoredDataError, match="no room"):
        await model.name.set("y")
    assert await instance_state(redis, model) == before


async def test_a_stream_whose_last_id_is_in_the_future_still_takes_writes_in_order(redis):
    model = await saved(name="x")
    document = json.loads(await redis.execute_command("JSON.GET", model.key))
    fields = await first_entry(
        redis, model, seq="2", type="snapshot", data=json.dumps({"document": document})
    )
    await redis.xadd(model.stream_key, fields, id="99999999999999-18446744073709551615")
    await model.name.set("y")
    ids = [entry_id for entry_id, _ in await redis.xrange(model.stream_key)]
    assert ids[-1] == "100000000000000-0" or ids[-1] == b"100000000000000-0"
    await assert_fold_is_document(redis, model)


# --- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("stored", "by"), [(2**63 - 2, 5), (-(2**63) + 1, -2)], ids=str)
async def test_an_increment_that_overflows_64_bits_is_refused_and_the_value_kept(redis, stored, by):
    model = await saved(n=stored)
    stale = Account()  # a second handle whose local value (0) cannot see the overflow coming
    stale.pk = model.pk
    before = await instance_state(redis, model)
    with pytest.raises(ValueRangeError, match="out of range"):
        await stale.n.increase(by)
    assert await instance_state(redis, model) == before
    assert stale.n == 0


async def test_an_extend_far_beyond_luas_unpack_limit_is_one_event(redis):
    model = await saved()
    items = [str(i) for i in range(10_000)]
    await model.tags.aextend(items)
    assert model.tags == items
    (event,) = (await model.history())[1:]
    assert event.type == "list.extend" and len(event.data["values"]) == 10_000
    await assert_fold_is_document(redis, model)


# --- hostile arguments: the function's own checks, for callers that bypass Python's ------------


def hand_made(plan: Plan, position: int, value: str) -> Plan:
    """Return ``plan`` with one argument replaced, as a hostile or broken client would send it."""
    args = list(plan.args)
    args[position] = value
    return dataclasses.replace(plan, args=tuple(args))


# Argument positions in an instance's part of the call (see apply.lua): pk 0, meta 1, layout
# version 2, model version 3, ttl 4, feed maxlen 5, expected seq 6, create 7, snapshot every 8,
# op count 9, then per op: type 10, paths 11-12, flags 13, count 14, arguments from 15.
HOSTILE = [
    (1, "[]"),
    (3, "x"),
    (4, "abc"),
    (4, "1.5"),
    (4, "100000000000000000000"),
    (4, "-2"),
    (5, "-1"),
    (5, "0"),
    (6, "1e3"),
    (7, "not json"),
    (8, "true"),
    (9, "7"),
    (10, "no.such.op"),
    (11, "tags"),
    (13, "z"),
    (14, "9"),
    (15, "1.5"),
    (15, "0x10"),
]


@pytest.mark.parametrize(("position", "value"), HOSTILE)
async def test_hostile_arguments_are_refused_before_anything_is_written(redis, position, value):
    model = await saved(tags=["a", "b"])
    plan = model._ss_plan([ops.list_pop(("tags",), 0)], create=False)
    before = await instance_state(redis, model)
    with pytest.raises(UsageError, match="refused by the server before writing"):
        await run_plan(type(model)._ss_client(), hand_made(plan, position, value))
    assert await instance_state(redis, model) == before


async def test_trailing_arguments_are_refused(redis):
    model = await saved()
    plan = model._ss_plan([ops.list_clear(("tags",))], create=False)
    with pytest.raises(UsageError):
        await run_plan(type(model)._ss_client(), dataclasses.replace(plan, args=(*plan.args, "x")))


async def test_an_instance_of_a_call_that_fails_is_named_in_the_error(redis):
    a, b = await saved(name="a"), await saved(name="b")
    plans = [
        a._ss_plan([ops.set_value(("name",), '"a2"')], create=False),
        b._ss_plan([ops.dict_del_item(("meta",), "gone")], create=False),
    ]
    before = await instance_state(redis, a, b)
    with pytest.raises(StreamStoreError, match="gone"):
        await run_together(type(a)._ss_client(), plans)
    assert await instance_state(redis, a, b) == before


async def test_one_instance_through_two_objects_in_a_pipeline_is_refused_before_sending(redis):
    # Two parts of one call for one instance would each take the same next seq.
    a = await saved(name="a")
    other = Account(name="a")
    other.pk = a.pk
    before = await instance_state(redis, a)

    async def two_objects() -> None:
        async with a.pipeline():
            await a.tags.aappend("x")
            await other.meta.aset_item("k", "v")

    with pytest.raises(UsageError, match="two different objects"):
        await two_objects()
    assert await instance_state(redis, a) == before
    assert (a.tags, other.meta) == ([], {})
