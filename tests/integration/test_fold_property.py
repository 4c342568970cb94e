"""I1, property-based: for any operation sequence, folding the stream gives the stored document."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from streamstore import BaseRedisModel, StreamStoreError
from streamstore.projections import fold


class Box(BaseModel):
    items: list[int] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class Prop(BaseRedisModel):
    name: str = ""
    n: int = 0
    x: float = 0.0
    flag: bool = False
    tags: list[str] = Field(default_factory=list)
    m: dict[str, int] = Field(default_factory=dict)
    box: Box = Field(default_factory=Box)


# Keys full of JSONPath syntax; some of them (backslash, both quotes, leading space) are refused.
keys = st.one_of(
    st.sampled_from([".", "'", '"', "[", "]", "$", "*", "@", "", "a b", " lead", "\\", "'\"", "ü☃"]),
    st.text(max_size=5),
)
ints = st.integers(min_value=-(2**40), max_value=2**40)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
texts = st.text(max_size=8)
indexes = st.integers(min_value=-4, max_value=4)

operation = st.one_of(
    st.tuples(st.just("save")),
    st.tuples(st.just("delete")),
    st.tuples(st.just("set_name"), texts),
    st.tuples(st.just("set_flag"), st.booleans()),
    st.tuples(st.just("incr_n"), ints),
    st.tuples(st.just("incr_x"), st.one_of(floats, ints)),
    st.tuples(st.just("set_tags"), st.lists(texts, max_size=3)),
    st.tuples(st.just("append"), texts),
    st.tuples(st.just("extend"), st.lists(texts, max_size=3)),
    st.tuples(st.just("insert"), indexes, texts),
    st.tuples(st.just("pop"), indexes),
    st.tuples(st.just("clear_tags")),
    st.tuples(st.just("set_item"), keys, ints),
    st.tuples(st.just("update"), st.dictionaries(keys, ints, max_size=3)),
    st.tuples(st.just("del_item"), keys),
    st.tuples(st.just("pop_key"), keys, st.booleans()),
    st.tuples(st.just("popitem")),
    st.tuples(st.just("clear_m")),
    st.tuples(st.just("box_append"), ints),
    st.tuples(st.just("box_label"), keys, texts),
    st.tuples(st.just("box_pop"), indexes),
    st.tuples(st.just("aset"), texts, st.one_of(floats, ints), st.booleans()),
    st.tuples(st.just("aset_bad"), texts),
)


async def run(model: Prop, op: tuple[Any, ...]) -> None:
    match op:
        case ("save",):
            await model.save()
        case ("delete",):
            await model.delete()
        case ("set_name", value):
            await model.name.set(value)
        case ("set_flag", value):
            await model.flag.set(value)
        case ("incr_n", by):
            await model.n.increase(by)
        case ("incr_x", by):
            await model.x.increase(by)
        case ("set_tags", value):
            await model.tags.set(value)
        case ("append", value):
            await model.tags.aappend(value)
        case ("extend", values):
            await model.tags.aextend(values)
        case ("insert", index, value):
            await model.tags.ainsert(index, value)
        case ("pop", index):
            await model.tags.apop(index)
        case ("clear_tags",):
            await model.tags.aclear()
        case ("set_item", key, value):
            await model.m.aset_item(key, value)
        case ("update", items):
            await model.m.aupdate(items)
        case ("del_item", key):
            await model.m.adel_item(key)
        case ("pop_key", key, with_default):
            await (model.m.apop(key, None) if with_default else model.m.apop(key))
        case ("popitem",):
            await model.m.apopitem()
        case ("clear_m",):
            await model.m.aclear()
        case ("box_append", value):
            await model.box.items.aappend(value)
        case ("box_label", key, value):
            await model.box.labels.aset_item(key, value)
        case ("box_pop", index):
            await model.box.items.apop(index)
        case ("aset", name, x, flag):
            await model.aset(name=name, x=x, flag=flag)
        case ("aset_bad", name):
            await model.aset(name=name, n="not a number")


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def check(redis: aioredis.Redis, model: Prop, ops: list[tuple[Any, ...]]) -> None:
    # Two objects on one instance: each one's local view goes stale as the other writes.
    handles = [model, Prop()]
    handles[1].pk = model.pk
    for step, op in enumerate(ops):
        before = (await redis.xrange(model.stream_key), await redis.execute_command("JSON.GET", model.key))
        try:
            await run(handles[step % 2], op)
        except (StreamStoreError, OverflowError):
            # A refused operation writes nothing at all: no event, no document change.
            after = (await redis.xrange(model.stream_key), await redis.execute_command("JSON.GET", model.key))
            assert after == before, f"refused {op} wrote something"
        entries = await redis.xrange(model.stream_key)
        assert [int(f[b"seq"]) for _, f in entries] == list(range(1, len(entries) + 1))
        events = await model.history()
        raw = await redis.execute_command("JSON.GET", model.key)
        assert fold(events) == (None if raw is None else json.loads(raw)), f"after {ops[: step + 1]}"


@settings(
    max_examples=int(os.environ.get("STREAMSTORE_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(operation, max_size=25))
def test_fold_of_the_stream_equals_the_document_after_every_operation(
    loop: asyncio.AbstractEventLoop, redis_url: str, ops: list[tuple[Any, ...]]
) -> None:
    async def scenario() -> None:
        redis = aioredis.Redis.from_url(redis_url)
        try:
            await check(redis, Prop(), ops)
        finally:
            await redis.aclose()

    loop.run_until_complete(scenario())
