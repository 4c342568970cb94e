"""I1, property-based: for any operation sequence, folding the stream gives the stored document;
and the read side built on the fold (as_of, verify, rebuild, compaction) agrees with Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from clients import async_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from streamstore import BaseRedisModel, DocumentNotFoundError, StreamStoreError
from streamstore.projections import fold
from streamstore.projections.diff import differences


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
    st.sampled_from(
        [".", "'", '"', "[", "]", "$", "*", "@", "", "a b", " lead", "\\", "'\"", "ü☃"]
    ),
    st.text(max_size=5),
)
ints = st.integers(min_value=-(2**40), max_value=2**40)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
texts = st.text(max_size=8)
indexes = st.integers(min_value=-4, max_value=4)


async def pipelined(model: Prop, value: str, key: str, number: int) -> None:
    """Three operations in one pipeline: all applied at exit, or none (a refused key, a pop)."""
    async with model.pipeline() as pipe:
        await pipe.tags.aappend(value)
        await pipe.m.aset_item(key, number)
        await pipe.tags.apop(0)


# Each action: the strategies of its arguments, and the call it makes on a model.
ACTIONS: dict[str, tuple[tuple[st.SearchStrategy[Any], ...], Callable[..., Awaitable[Any]]]] = {
    "save": ((), lambda m: m.save()),
    "delete": ((), lambda m: m.delete()),
    "set_name": ((texts,), lambda m, v: m.name.set(v)),
    "set_flag": ((st.booleans(),), lambda m, v: m.flag.set(v)),
    "incr_n": ((ints,), lambda m, by: m.n.increase(by)),
    "incr_x": ((st.one_of(floats, ints),), lambda m, by: m.x.increase(by)),
    "set_tags": ((st.lists(texts, max_size=3),), lambda m, v: m.tags.set(v)),
    "append": ((texts,), lambda m, v: m.tags.aappend(v)),
    "extend": ((st.lists(texts, max_size=3),), lambda m, vs: m.tags.aextend(vs)),
    "insert": ((indexes, texts), lambda m, i, v: m.tags.ainsert(i, v)),
    "pop": ((indexes,), lambda m, i: m.tags.apop(i)),
    "clear_tags": ((), lambda m: m.tags.aclear()),
    "set_item": ((keys, ints), lambda m, k, v: m.m.aset_item(k, v)),
    "update": ((st.dictionaries(keys, ints, max_size=3),), lambda m, items: m.m.aupdate(items)),
    "del_item": ((keys,), lambda m, k: m.m.adel_item(k)),
    "pop_key": ((keys,), lambda m, k: m.m.apop(k)),
    "pop_key_default": ((keys,), lambda m, k: m.m.apop(k, None)),
    "popitem": ((), lambda m: m.m.apopitem()),
    "clear_m": ((), lambda m: m.m.aclear()),
    "box_append": ((ints,), lambda m, v: m.box.items.aappend(v)),
    "box_label": ((keys, texts), lambda m, k, v: m.box.labels.aset_item(k, v)),
    "box_pop": ((indexes,), lambda m, i: m.box.items.apop(i)),
    "aset": (
        (texts, st.one_of(floats, ints), st.booleans()),
        lambda m, name, x, flag: m.aset(name=name, x=x, flag=flag),
    ),
    "aset_bad": ((texts,), lambda m, name: m.aset(name=name, n="not a number")),
    "pipeline": ((texts, keys, ints), pipelined),
}
operation = st.one_of(*(st.tuples(st.just(name), *args) for name, (args, _) in ACTIONS.items()))


async def run(model: Prop, op: tuple[Any, ...]) -> None:
    name, *args = op
    await ACTIONS[name][1](model, *args)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def check(redis: aioredis.Redis, model: Prop, ops: list[tuple[Any, ...]]) -> None:
    # Two objects on one instance: each one's local view goes stale as the other writes.
    handles = [model, type(model)()]
    handles[1].pk = model.pk
    for step, op in enumerate(ops):
        before = (
            await redis.xrange(model.stream_key),
            await redis.execute_command("JSON.GET", model.key),
        )
        try:
            await run(handles[step % 2], op)
        except (StreamStoreError, OverflowError):
            # A refused operation writes nothing at all: no event, no document change.
            after = (
                await redis.xrange(model.stream_key),
                await redis.execute_command("JSON.GET", model.key),
            )
            assert after == before, f"refused {op} wrote something"
        entries = await redis.xrange(model.stream_key)
        assert [int(f[b"seq"]) for _, f in entries] == list(range(1, len(entries) + 1))
        events = await model.history()
        raw = await redis.execute_command("JSON.GET", model.key)
        assert fold(events) == (None if raw is None else json.loads(raw)), (
            f"after {ops[: step + 1]}"
        )


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
        redis = async_client(redis_url)
        try:
            await check(redis, Prop(), ops)
        finally:
            await redis.aclose()

    loop.run_until_complete(scenario())


class Snapped(Prop):
    """Prop with a snapshot every 3 events, so replay starts from snapshots and can compact."""

    class Meta:
        snapshot_every = 3


async def compact(model: Prop) -> None:
    await model.compact()


REPLAY_ACTIONS = {**ACTIONS, "compact": ((), compact)}
replay_operation = st.one_of(
    *(st.tuples(st.just(name), *args) for name, (args, _) in REPLAY_ACTIONS.items())
)


async def check_replay(redis: aioredis.Redis, model: Snapped, ops: list[tuple[Any, ...]]) -> None:
    # The document after each step, by the seq it was at: what as_of(seq=...) must give back.
    at_seq: dict[int, Any] = {}
    for op in ops:
        name, *args = op
        with contextlib.suppress(StreamStoreError, OverflowError):  # refusals: tested above
            await REPLAY_ACTIONS[name][1](model, *args)
        last = await redis.xrevrange(model.stream_key, count=1)
        if last:
            raw = await redis.execute_command("JSON.GET", model.key)
            at_seq[int(last[0][1][b"seq"])] = None if raw is None else json.loads(raw)
    if not at_seq:
        return
    assert (await Snapped.verify(model.pk)).equal
    first = await redis.xrange(model.stream_key, count=1)
    kept_from = int(first[0][1][b"seq"])
    for seq, document in at_seq.items():
        if seq < kept_from:
            continue
        if document is None:
            with pytest.raises(DocumentNotFoundError):
                await Snapped.replayer().as_of(model.pk, seq=seq)
        else:
            found = await Snapped.replayer().as_of(model.pk, seq=seq)
            assert list(differences(found, document)) == [], f"as_of seq {seq} after {ops}"
    # Damage the document (or remove it); rebuild must bring back exactly what was stored.
    stored = await redis.execute_command("JSON.GET", model.key)
    await redis.execute_command("JSON.SET", model.key, "$", '{"name": "damaged"}')
    report = await Snapped.rebuild(model.pk)
    assert report.rewritten and report.differences
    restored = await redis.execute_command("JSON.GET", model.key)
    if stored is None:
        assert restored is None
    else:
        assert list(differences(json.loads(restored), json.loads(stored))) == []
    assert (await Snapped.verify(model.pk)).equal


@settings(
    max_examples=int(os.environ.get("STREAMSTORE_PROPERTY_EXAMPLES", "200")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(replay_operation, min_size=1, max_size=25))
def test_as_of_verify_and_rebuild_agree_with_what_redis_stored_at_every_step(
    loop: asyncio.AbstractEventLoop, redis_url: str, ops: list[tuple[Any, ...]]
) -> None:
    async def scenario() -> None:
        redis = async_client(redis_url)
        try:
            await check_replay(redis, Snapped(), ops)
        finally:
            await redis.aclose()

    loop.run_until_complete(scenario())
