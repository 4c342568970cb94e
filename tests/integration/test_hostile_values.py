"""Hostile values: list indexes and numbers Redis cannot take are refused before anything is written."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from pydantic import BaseModel, Field

from streamstore import (
    BaseRedisModel,
    EmptyContainerError,
    FieldTypeError,
    IndexTypeError,
    StreamStoreError,
    ValueRangeError,
)
from streamstore.projections import fold

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

#: Each write is tried on its own and inside ``model.pipeline()``.
both_ways = pytest.mark.parametrize("pipelined", [False, True], ids=["direct", "pipelined"])


class HostileTags(BaseRedisModel):
    tags: list[str] = Field(default_factory=list)


class HostileDims(BaseModel):
    size: int = 0
    extra: Any = 0


class HostileWide(BaseRedisModel):
    count: int = 0
    ratio: float = 0.0
    anything: Any = 0
    numbers: list[int] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    dims: HostileDims = Field(default_factory=HostileDims)


class HostileKeys(BaseRedisModel):
    names: dict[int, str] = Field(default_factory=dict)


class Two:
    """An index-like object (as numpy integers are): it has ``__index__`` and nothing else."""

    def __index__(self) -> int:
        return 2


async def document(redis, key):
    raw = await redis.execute_command("JSON.GET", key)
    return None if raw is None else json.loads(raw)


async def state(redis, model):
    """What a refused write must leave alone: the stream, the document, the local values."""
    return (
        await redis.xlen(model.stream_key),
        await document(redis, model.key),
        model.redis_dump(),
    )


async def write(model, step, *, pipelined):
    """Run ``step(model)`` directly, or inside ``model.pipeline()``; return what it returns."""
    if not pipelined:
        return await step(model)
    async with model.pipeline() as queued:
        return await step(queued)


async def assert_replayable(redis, model):
    """The history still folds to the stored document, and that is the local model."""
    stored = await document(redis, model.key)
    assert fold(await model.history()) == stored == model.redis_dump()
    assert (await type(model).verify(model.pk)).equal


# --- list indexes ------------------------------------------------------------------------------


@both_ways
@pytest.mark.parametrize("method", ["apop", "ainsert"])
@pytest.mark.parametrize("index", [1.5, 1.0, "0", None, b"1"], ids=repr)
async def test_an_index_that_is_not_an_integer_raises_type_error_and_writes_nothing(
    redis, method, index, pipelined
):
    model = HostileTags(tags=["a", "b", "c"])
    await model.save()
    before = await state(redis, model)
    if method == "apop":
        step = lambda m: m.tags.apop(index)  # noqa: E731
    else:
        step = lambda m: m.tags.ainsert(index, "z")  # noqa: E731
    with pytest.raises(TypeError, match="cannot be interpreted as an integer") as caught:
        await write(model, step, pipelined=pipelined)
    assert isinstance(caught.value, IndexTypeError)
    assert isinstance(caught.value, StreamStoreError)
    assert await state(redis, model) == before
    assert model.tags == ["a", "b", "c"]
    await assert_replayable(redis, model)


@both_ways
@pytest.mark.parametrize("index", [2**63, INT64_MIN - 1, 10**30, -(10**30)], ids=str)
async def test_a_pop_index_beyond_64_bits_raises_index_error_and_writes_nothing(
    redis, index, pipelined
):
    model = HostileTags(tags=["a", "b", "c"])
    await model.save()
    before = await state(redis, model)
    with pytest.raises(IndexError, match="pop index out of range") as caught:
        await write(model, lambda m: m.tags.apop(index), pipelined=pipelined)
    assert isinstance(caught.value, EmptyContainerError)
    assert await state(redis, model) == before
    await assert_replayable(redis, model)


@both_ways
async def test_an_insert_index_beyond_64_bits_is_clamped_like_list_insert(redis, pipelined):
    model = HostileTags(tags=["a", "b"])
    await model.save()
    expected = ["a", "b"]
    for index, item in [(10**30, "end"), (-(10**30), "start"), (2**63, "z"), (INT64_MIN - 1, "0")]:
        # What list.insert does with an index it can take (beyond that it raises OverflowError)
        expected.insert(max(-sys.maxsize, min(index, sys.maxsize)), item)
        await write(model, lambda m, i=index, v=item: m.tags.ainsert(i, v), pipelined=pipelined)
    assert model.tags == expected == (await document(redis, model.key))["tags"]
    await assert_replayable(redis, model)


@both_ways
async def test_bools_and_index_like_objects_index_as_in_a_python_list(redis, pipelined):
    model = HostileTags(tags=["a", "b", "c", "d"])
    await model.save()
    expected = ["a", "b", "c", "d"]

    async def steps(m):
        popped = [await m.tags.apop(True), await m.tags.apop(Two())]
        await m.tags.ainsert(False, "first")
        await m.tags.ainsert(Two(), "two")
        return popped

    popped = await write(model, steps, pipelined=pipelined)
    assert popped == [expected.pop(True), expected.pop(Two())]
    expected.insert(False, "first")
    expected.insert(Two(), "two")
    assert model.tags == expected == (await document(redis, model.key))["tags"]
    indexes = [e.data["index"] for e in await model.history() if "index" in e.data]
    assert indexes == [1, 2, 0, 2]
    assert all(type(i) is int for i in indexes)
    await assert_replayable(redis, model)


# --- integers outside signed 64 bits -------------------------------------------------------------

WIDE_WRITES = {
    "int field set": lambda m: m.count.set(2**63),
    "int field set below": lambda m: m.count.set(INT64_MIN - 1),
    "Any field set": lambda m: m.anything.set(10**30),
    "Any field set, deep inside": lambda m: m.anything.set({"a": [1, {"b": INT64_MIN - 1}]}),
    "list append": lambda m: m.numbers.aappend(2**63),
    "list extend": lambda m: m.numbers.aextend([1, 2**64]),
    "list insert": lambda m: m.numbers.ainsert(0, 2**63),
    "dict set_item": lambda m: m.counts.aset_item("k", 2**63),
    "dict update": lambda m: m.counts.aupdate(k=1, j=INT64_MIN - 1),
    "nested model field set": lambda m: m.dims.size.set(2**63),
    "nested Any field set": lambda m: m.dims.extra.set([2**70]),
    "several fields at once": lambda m: m.aset(ratio=0.5, count=2**63),
    "int increase by": lambda m: m.count.increase(2**63),
    "float increase by a wide int": lambda m: m.ratio.increase(2**63),
}


@both_ways
@pytest.mark.parametrize("step", WIDE_WRITES.values(), ids=WIDE_WRITES.keys())
async def test_a_write_of_an_int_beyond_64_bits_is_refused_and_writes_nothing(
    redis, step, pipelined
):
    model = HostileWide()
    await model.save()
    before = await state(redis, model)
    with pytest.raises(TypeError, match="must fit in signed 64 bits") as caught:
        await write(model, step, pipelined=pipelined)
    assert isinstance(caught.value, ValueRangeError)
    assert isinstance(caught.value, FieldTypeError)
    assert await state(redis, model) == before
    await assert_replayable(redis, model)


WIDE_MODELS = {
    "int field": lambda: HostileWide(count=2**63),
    "Any field": lambda: HostileWide(anything=[{"x": INT64_MIN - 1}]),
    "list[int] field": lambda: HostileWide(numbers=[0, 10**20]),
    "dict field": lambda: HostileWide(counts={"k": 2**64}),
    "nested model": lambda: HostileWide(dims=HostileDims(size=2**63)),
}


@both_ways
@pytest.mark.parametrize("make", WIDE_MODELS.values(), ids=WIDE_MODELS.keys())
async def test_saving_a_model_holding_an_int_beyond_64_bits_writes_nothing(redis, make, pipelined):
    model = make()
    with pytest.raises(ValueRangeError, match="must fit in signed 64 bits"):
        await write(model, lambda m: m.save(), pipelined=pipelined)
    assert await redis.dbsize() == 0


async def test_saving_duplicating_or_unlocking_after_a_wide_assignment_writes_nothing(redis):
    """A wide value assigned locally is refused when save, duplicate or a lock exit writes it."""
    model = HostileWide(count=1)
    await model.save()
    model.numbers = [2**63]  # a local change only: checked when it would be written
    before = await state(redis, model)
    keys = await redis.dbsize()
    with pytest.raises(ValueRangeError):
        await model.save()
    with pytest.raises(ValueRangeError):
        await model.duplicate()
    assert await state(redis, model) == before
    with pytest.raises(ValueRangeError):
        async with model.lock():  # on entry: refreshed from Redis
            model.counts = {"k": INT64_MIN - 1}
    assert (await state(redis, model))[:2] == before[:2]  # the stream and the document
    assert await redis.dbsize() == keys


@both_ways
async def test_a_wide_int_dict_key_is_fine_as_it_is_stored_as_text(redis, pipelined):
    """JSON object keys are strings: an int key of any width is kept exactly."""
    model = HostileKeys(names={2**64: "wide"})
    await model.save()
    await write(model, lambda m: m.names.aset_item(-(10**30), "wider"), pipelined=pipelined)
    assert (await HostileKeys.get(model.key)).names == {2**64: "wide", -(10**30): "wider"}
    await assert_replayable(redis, model)


@both_ways
async def test_ints_at_the_64_bit_limits_are_stored_and_read_exactly(redis, pipelined):
    model = HostileWide(
        count=INT64_MAX,
        anything=[INT64_MIN, INT64_MAX],
        numbers=[INT64_MIN],
        counts={"max": INT64_MAX},
    )
    await model.save()

    async def steps(m):
        await m.dims.size.set(INT64_MIN)
        await m.numbers.aappend(INT64_MAX)
        await m.counts.aset_item("min", INT64_MIN)
        await m.count.increase(-1)
        await m.count.increase(1)

    await write(model, steps, pipelined=pipelined)
    assert model.count == INT64_MAX
    assert await HostileWide.get(model.key) == model
    await assert_replayable(redis, model)


@both_ways
@pytest.mark.parametrize(
    ("start", "by"),
    [(INT64_MAX, 1), (INT64_MIN, -1), (INT64_MAX - 5, 10), (-5, INT64_MIN)],
    ids=["max+1", "min-1", "near max+10", "-5+min"],
)
async def test_an_increase_whose_result_leaves_64_bits_is_refused(redis, start, by, pipelined):
    """RedisJSON would wrap the sum round (max + 1 gives min): the local value says it would."""
    model = HostileWide(count=start)
    await model.save()
    before = await state(redis, model)
    with pytest.raises(ValueRangeError, match="must fit in signed 64 bits"):
        await write(model, lambda m: m.count.increase(by), pipelined=pipelined)
    assert await state(redis, model) == before
    assert model.count == start
    await assert_replayable(redis, model)


@both_ways
@pytest.mark.parametrize(
    ("start", "by"),
    [
        (sys.float_info.max, sys.float_info.max),
        (0.0, float("inf")),
        (0.0, float("-inf")),
        (0.0, float("nan")),
    ],
    ids=["max+max", "inf", "-inf", "nan"],
)
async def test_a_float_increase_to_a_non_finite_value_is_refused(redis, start, by, pipelined):
    model = HostileWide(ratio=start)
    await model.save()
    before = await state(redis, model)
    with pytest.raises(ValueRangeError, match="finite"):
        await write(model, lambda m: m.ratio.increase(by), pipelined=pipelined)
    assert await state(redis, model) == before
    await assert_replayable(redis, model)


EXTREME_FLOATS = [1e308, sys.float_info.max, -sys.float_info.max, 5e-324, 1e22, 2.0**63]


@both_ways
async def test_extreme_floats_round_trip_exactly(redis, pipelined):
    """The largest and smallest doubles come back bit for bit, saved whole or set one by one."""
    model = HostileWide(anything=EXTREME_FLOATS)
    await model.save()
    assert (await HostileWide.get(model.key)).anything == EXTREME_FLOATS

    async def steps(m):
        for value in EXTREME_FLOATS:
            await m.ratio.set(value)
            await m.anything.set(value)

    await write(model, steps, pipelined=pipelined)
    assert (await HostileWide.get(model.key)).anything == EXTREME_FLOATS[-1]
    assert model.ratio == EXTREME_FLOATS[-1]
    await assert_replayable(redis, model)
