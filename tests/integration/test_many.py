"""get_many and save_many: many instances in one round trip per server, each one whole."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, Field
from sample_models import stored

from streamstore import BaseRedisModel
from streamstore.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    CorruptDocumentError,
    StoredDataError,
    UsageError,
)
from streamstore.projections.fold import fold


class Inner(BaseModel):
    note: str = ""


class Item(BaseRedisModel):
    name: str = ""
    ratio: float = 0.0
    tags: list[str] = Field(default_factory=list)
    inner: Inner = Field(default_factory=Inner)

    class Meta:
        key_prefix = "ManyItem"


class Other(BaseRedisModel):
    name: str = ""

    class Meta:
        key_prefix = "ManyOther"


async def saved_items(count: int) -> list[Item]:
    items = [Item(name=f"i{n}", tags=[str(n)]) for n in range(count)]
    return await Item.save_many(items)


async def test_get_many_returns_those_that_exist_in_the_order_asked(redis):
    items = await saved_items(20)  # spread over the class's 16 partitions
    wanted = [items[5].pk, "no-such-pk", items[0].pk, items[5].pk, items[19].pk]
    found = await Item.get_many(wanted)
    assert [item.pk for item in found] == [items[5].pk, items[0].pk, items[5].pk, items[19].pk]
    assert found[1] == items[0]
    assert found[1].key == items[0].key
    assert await Item.get_many([]) == []


async def test_get_many_reads_more_than_one_command_holds(redis):
    items = await saved_items(2_500)  # several JSON.MGET per slot
    found = await Item.get_many(item.pk for item in reversed(items))
    assert [item.name for item in found] == [item.name for item in reversed(items)]


@pytest.mark.parametrize(
    ("pk", "error"),
    [(7, ArgumentTypeError), (None, ArgumentTypeError), ("\ud800", ArgumentValueError)],
)
async def test_get_many_refuses_a_bad_pk_before_reading(redis, pk: Any, error: type[Exception]):
    with pytest.raises(error):
        await Item.get_many(["fine", pk])


async def test_get_many_names_a_document_that_does_not_validate(redis):
    (item,) = await saved_items(1)
    await redis.execute_command("JSON.SET", item.key, "$.tags", json.dumps("not a list"))
    with pytest.raises(CorruptDocumentError, match=item.key):
        await Item.get_many([item.pk])


async def test_save_many_writes_one_saved_event_each_and_the_models_know_their_version(redis):
    items = await saved_items(5)
    for item in items:
        assert item.version == 1
        events = await item.history()
        assert [event.type for event in events] == ["saved"]
        assert fold(events) == await stored(redis, item.key) == item.redis_dump()
    items[0].name = "renamed"
    await Item.save_many(items[:1])
    assert items[0].version == 2
    assert (await Item.get(items[0].key)).name == "renamed"


async def test_save_many_takes_a_ttl_for_every_model(redis):
    items = await Item.save_many([Item(name="a"), Item(name="b")], ttl=100)
    for item in items:
        assert 0 < await redis.ttl(item.key) <= 100
        assert 0 < await redis.ttl(item.stream_key) <= 100


async def test_save_many_keeps_what_redis_stored_for_floats(redis):
    (item,) = await Item.save_many([Item(ratio=2.06321047576396e47)])
    assert item.ratio == 2.0632104757639597e47 == (await stored(redis, item.key))["ratio"]


@pytest.mark.parametrize(
    ("models", "error"),
    [
        (lambda: [Item(), Other()], UsageError),
        (lambda: [Item(), "not a model"], UsageError),
        (lambda: [Item(), Item()], ArgumentValueError),  # ttl=0 below
    ],
    ids=["another class", "not a model", "bad ttl"],
)
async def test_save_many_refuses_bad_input_before_writing(redis, models: Any, error: Any):
    given = models()
    ttl = 0 if error is ArgumentValueError else None
    with pytest.raises(error):
        await Item.save_many(given, ttl=ttl)
    assert await redis.keys("{ManyItem*") == []


async def test_save_many_writes_the_others_when_one_is_refused(redis):
    good, bad = Item(name="good"), Item(name="bad")
    await redis.set(bad.key, "a string where a document belongs")
    with pytest.raises(StoredDataError, match=bad.key):
        await Item.save_many([good, bad])
    assert (await Item.get(good.key)).name == "good"
    assert good.version == 1
    assert await redis.xlen(bad.stream_key) == 0


class Pair(BaseRedisModel):
    name: str = ""

    class Meta:
        key_prefix = "ManyPair"
        partitions = 1  # one slot: a pipeline over both works on a cluster too


async def test_save_many_inside_a_pipeline_is_queued_with_the_rest(redis):
    first, second = await Pair.save_many([Pair(name="a"), Pair(name="b")])
    async with first.pipeline():  # refreshes first
        first.name, second.name = "one", "two"
        await Pair.save_many([first, second])
        assert await redis.xlen(first.stream_key) == 1  # nothing sent yet
    assert [pair.name for pair in await Pair.get_many([first.pk, second.pk])] == ["one", "two"]
    assert first.version == second.version == 2
