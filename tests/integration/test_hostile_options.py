"""Bad options, arguments, metadata, text and aliases: refused before anything is written."""

from __future__ import annotations

import datetime as dt
import enum
import math

import pytest
from pydantic import AliasChoices, BaseModel, Field

from streamstore import (
    ArgumentTypeError,
    ArgumentValueError,
    BaseRedisModel,
    ConfigurationError,
    NotJSONError,
    UsageError,
    event_context,
)
from streamstore.arguments import MAX_TTL
from streamstore.store import Store
from streamstore.table import TableModel


class Gadget(BaseRedisModel):
    name: str = "g"
    tags: list[str] = Field(default_factory=list)
    attrs: dict[str, int] = Field(default_factory=dict)

    class Meta:
        key_prefix = "HostileGadget"


class Shelf(TableModel):
    _primary_key_field: str = "title"
    title: str
    pages: int = 0

    class Meta:
        key_prefix = "HostileShelf"


async def snapshot(redis, model: BaseRedisModel) -> tuple:
    """What a refused write must leave as it was: key count, stream, document, local state."""
    return (
        await redis.dbsize(),
        await redis.xlen(model.stream_key),
        await redis.execute_command("JSON.GET", model.key),
        model.redis_dump(),
    )


async def saved_gadget(redis) -> Gadget:
    gadget = Gadget(name="kept", tags=["a"], attrs={"x": 1})
    await gadget.save()
    return gadget


# --- per-call numbers ----------------------------------------------------------------------

BAD_TTLS = [
    ("abc", ArgumentTypeError),
    (1.5, ArgumentTypeError),
    (2.0, ArgumentTypeError),
    (True, ArgumentTypeError),
    (10**20, ArgumentValueError),
    (MAX_TTL + 1, ArgumentValueError),
    (0, ArgumentValueError),
    (-5, ArgumentValueError),
]


@pytest.mark.parametrize(("ttl", "error"), BAD_TTLS, ids=repr)
async def test_save_with_a_bad_ttl_is_refused_and_writes_nothing(redis, ttl, error):
    gadget = await saved_gadget(redis)
    gadget.name = "changed"
    before = await snapshot(redis, gadget)
    with pytest.raises(error, match="ttl"):
        await gadget.save(ttl=ttl)
    assert await snapshot(redis, gadget) == before
    assert issubclass(error, UsageError)


async def test_save_with_the_largest_ttl_works_and_redis_keeps_it(redis):
    gadget = Gadget()
    await gadget.save(ttl=MAX_TTL)
    assert await redis.ttl(gadget.key) > MAX_TTL - 60
    assert await redis.ttl(gadget.stream_key) > MAX_TTL - 60


@pytest.mark.parametrize(
    ("version", "error"),
    [
        (True, ArgumentTypeError),
        ("1", ArgumentTypeError),
        (1.0, ArgumentTypeError),
        (-1, ArgumentValueError),
    ],
    ids=repr,
)
async def test_save_with_a_bad_expected_version_writes_nothing(redis, version, error):
    gadget = await saved_gadget(redis)
    before = await snapshot(redis, gadget)
    with pytest.raises(error, match="expected_version"):
        await gadget.save(expected_version=version)
    assert await snapshot(redis, gadget) == before


@pytest.mark.parametrize(
    ("count", "error"),
    [
        (True, ArgumentTypeError),
        (1.5, ArgumentTypeError),
        ("2", ArgumentTypeError),
        (-1, ArgumentValueError),
    ],
    ids=repr,
)
async def test_duplicate_many_with_a_bad_count_writes_nothing(redis, count, error):
    gadget = await saved_gadget(redis)
    before = await snapshot(redis, gadget)
    with pytest.raises(error, match="count"):
        await gadget.duplicate_many(count)
    assert await snapshot(redis, gadget) == before


async def test_duplicate_many_of_zero_copies_writes_nothing_and_returns_none(redis):
    gadget = await saved_gadget(redis)
    before = await snapshot(redis, gadget)
    assert await gadget.duplicate_many(0) == []
    assert await snapshot(redis, gadget) == before


@pytest.mark.parametrize(("ttl", "error"), BAD_TTLS, ids=repr)
async def test_table_insert_and_update_with_a_bad_life_span_write_nothing(redis, ttl, error):
    await Shelf.insert(Shelf(title="kept", pages=1))
    size = await redis.dbsize()
    stream = Shelf.key_for("kept").replace("}:", "}#events:", 1)
    length = await redis.xlen(stream)
    with pytest.raises(error, match="life_span_seconds"):
        await Shelf.insert([Shelf(title="new")], life_span_seconds=ttl)
    with pytest.raises(error, match="life_span_seconds"):
        await Shelf.update("kept", {"pages": 2}, life_span_seconds=ttl)
    assert (await redis.dbsize(), await redis.xlen(stream)) == (size, length)
    assert (await Shelf.select(ids=["kept"]))[0].pages == 1


@pytest.mark.parametrize(("ttl", "_"), BAD_TTLS, ids=repr)
def test_a_store_with_a_bad_life_span_is_a_configuration_error(ttl, _):
    with pytest.raises(ConfigurationError, match="life_span_in_seconds"):
        Store(name="hostile", life_span_in_seconds=ttl)


@pytest.mark.parametrize(("skip", "limit"), [(True, None), (None, "3"), (-1, None), (None, 1.5)])
async def test_select_with_bad_paging_is_a_usage_error(redis, skip, limit):
    with pytest.raises(UsageError, match=r"skip|limit"):
        await Shelf.select(skip=skip, limit=limit)


def model_in(module: str, name: str, **meta: object) -> type[BaseRedisModel]:
    """Make a model class ``name`` with these ``Meta`` options, as if defined in ``module``."""
    names = {"__module__": module, "__qualname__": f"{name}.Meta"}
    namespace = {
        "__module__": module,
        "__qualname__": name,
        "__annotations__": {"x": int},
        "x": 0,
        "Meta": type("Meta", (), {**names, **meta}),
    }
    return type(name, (BaseRedisModel,), namespace)


# --- Meta options --------------------------------------------------------------------------

BAD_OPTIONS = [
    ("ttl", True, "Meta.ttl must be an int"),
    ("ttl", 0, "Meta.ttl must be from 1"),
    ("ttl", 1.5, "Meta.ttl must be an int"),
    ("ttl", 10**20, "Meta.ttl must be from 1"),
    ("feed_maxlen", -1, "Meta.feed_maxlen must be from 1"),
    ("feed_maxlen", 0, "Meta.feed_maxlen must be from 1"),
    ("feed_maxlen", "100", "Meta.feed_maxlen must be an int"),
    ("snapshot_every", True, "Meta.snapshot_every must be an int"),
    ("snapshot_every", -1, "Meta.snapshot_every must be from 0"),
    ("partitions", True, "Meta.partitions must be an int"),
    ("partitions", 0, "Meta.partitions must be from 1"),
    ("partitions", 16385, "Meta.partitions must be from 1 to 16384"),
    ("schema_version", True, "Meta.schema_version must be an int"),
    ("schema_version", 0, "Meta.schema_version must be from 1"),
    ("key_prefix", 3, "Meta.key_prefix must be a str"),
    ("key_prefix", "", "bad Meta.key_prefix"),
    ("key_prefix", "a{b", "bad Meta.key_prefix"),
    ("key_prefix", "a\ud800", "Meta.key_prefix .* lone surrogate"),
    ("upcasters", [print], "Meta.upcasters must be a dict"),
    ("primary_key", 3, "Meta.primary_key must be a field name"),
    ("primary_key", "nope", "primary key 'nope' is not a field"),
    ("durability", "aof", "Meta.durability must be a Durability"),
    ("redis", 6379, "Meta.redis must be a URL"),
    ("ttl_seconds", 10, r"unknown option Meta.ttl_seconds \(did you mean 'ttl'\?\)"),
    ("life_span", 10, "unknown option Meta.life_span"),
]


@pytest.mark.parametrize(("option", "value", "message"), BAD_OPTIONS, ids=repr)
async def test_a_bad_meta_option_refuses_the_class_naming_it(redis, option, value, message):
    with pytest.raises(ConfigurationError, match=f"^Odd: .*{message}"):
        model_in(__name__, "Odd", **{option: value})
    assert await redis.dbsize() == 0


def test_int_like_options_are_taken_as_plain_ints():
    class Seconds(enum.IntEnum):
        MINUTE = 60

    class Counted(BaseRedisModel):
        class Meta:
            key_prefix = "HostileCounted"
            ttl = Seconds.MINUTE

    assert Counted.__ss_meta__.ttl == 60
    assert type(Counted.__ss_meta__.ttl) is int


# --- one key prefix, one model ------------------------------------------------------------


async def test_a_same_named_class_of_another_module_is_refused(redis):
    model_in("app_one.models", "Clash")
    with pytest.raises(ConfigurationError, match=r"app_two\.models\.Clash would share the keys"):
        model_in("app_two.models", "Clash")
    assert await redis.dbsize() == 0


def test_another_module_cannot_take_a_name_derived_prefix_explicitly_either():
    model_in("app_one.models", "Taken")
    with pytest.raises(ConfigurationError, match=r"app_one\.models\.Taken"):
        model_in("app_two.models", "Copy", key_prefix="Taken")


def test_both_naming_the_prefix_explicitly_share_it_on_purpose():
    first = model_in("writer.models", "Shared", key_prefix="SharedThing")
    copy = model_in("reader.models", "Shared", key_prefix="SharedThing")
    assert first.key_for("p") == copy.key_for("p")


def test_a_class_made_again_in_its_own_module_keeps_working():
    first = model_in("reloaded.models", "Again")
    again = model_in("reloaded.models", "Again")
    assert first.key_for("p") == again.key_for("p")


# --- event metadata ------------------------------------------------------------------------


class Opaque:
    pass


cyclic: dict = {}
cyclic["self"] = cyclic

BAD_META = [
    ({"x": math.nan}, ArgumentValueError, "no JSON form"),
    ({"x": math.inf}, ArgumentValueError, "no JSON form"),
    ({"x": [1, -math.inf]}, ArgumentValueError, "no JSON form"),
    ({"x": {(1, 2): "tuple key"}}, ArgumentTypeError, "JSON object keys are str"),
    ({"x": {1: "int key"}}, ArgumentTypeError, "JSON object keys are str"),
    ({"x": {True: "bool key"}}, ArgumentTypeError, "JSON object keys are str"),
    ({"x": cyclic}, ArgumentValueError, "cycle"),
    ({"x": Opaque()}, ArgumentTypeError, "no JSON form"),
    ({"x": {1, 2}}, ArgumentTypeError, "no JSON form"),
    ({"x": b"bytes"}, ArgumentTypeError, "no JSON form"),
    ({"x": 2**64}, ArgumentValueError, "signed 64 bits"),
    ({"x": "lone \ud800"}, ArgumentValueError, "lone surrogate"),
    ({"x": {"\udc00": 1}}, ArgumentValueError, "lone surrogate"),
    ({"\ud800": 1}, ArgumentValueError, "lone surrogate"),
]


@pytest.mark.parametrize(("meta", "error", "message"), BAD_META, ids=repr)
async def test_metadata_without_a_strict_json_form_is_refused_before_any_write(
    redis, meta, error, message
):
    gadget = await saved_gadget(redis)
    before = await snapshot(redis, gadget)
    with pytest.raises(error, match=message), event_context(**meta):
        await gadget.tags.aappend("never")
    assert await snapshot(redis, gadget) == before


async def test_dates_and_tuples_in_metadata_are_stored_as_json_text_and_arrays(redis):
    gadget = await saved_gadget(redis)
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with event_context(at=when, pair=(1, 2)) as merged:
        await gadget.tags.aappend("b")
    assert dict(merged) == {"at": "2026-01-02T03:04:05+00:00", "pair": [1, 2]}
    (last,) = await gadget.history(reverse=True, limit=1)
    assert last.meta == dict(merged)


# --- lone surrogates in keys and text ------------------------------------------------------


async def test_a_pk_with_a_lone_surrogate_is_refused_everywhere_before_sending(redis):
    gadget = Gadget()
    with pytest.raises(ArgumentValueError, match="lone surrogate"):
        gadget.pk = "bad\ud800"
    with pytest.raises(ArgumentValueError, match="lone surrogate"):
        Gadget.key_for("bad\ud800")
    key = "{HostileGadget:1}:bad\ud800"
    for call in (Gadget.get(key), Gadget.try_delete(key), gadget.delete(key)):
        with pytest.raises(ArgumentValueError, match="lone surrogate"):
            await call
    with pytest.raises(ArgumentValueError, match="lone surrogate"):
        await Shelf.update("bad\udfff", {"pages": 1})
    with pytest.raises(ArgumentTypeError, match="pk must be a str"):
        Gadget.key_for(3)  # type: ignore[arg-type]
    assert await redis.dbsize() == 0


async def test_lone_surrogates_in_values_and_dict_keys_write_nothing(redis):
    gadget = await saved_gadget(redis)
    before = await snapshot(redis, gadget)
    with pytest.raises(NotJSONError):
        await gadget.name.set("x\ud800")
    with pytest.raises(NotJSONError):
        await gadget.tags.aappend("\udc00")
    with pytest.raises(NotJSONError):
        await Gadget(name="\ud800").save()
    with pytest.raises(ArgumentValueError, match="dict key"):
        await gadget.attrs.aset_item("k\ud800", 1)
    with pytest.raises(ArgumentValueError, match="dict key"):
        await gadget.attrs.aupdate({"ok": 2, "k\ud800": 1})
    assert await snapshot(redis, gadget) == before


# --- aliases -------------------------------------------------------------------------------


class Tagged(BaseModel):
    label: str = Field(alias="Label")


class Aliased(BaseRedisModel):
    name: str = Field(alias="Name")  # required and aliased
    score: float = Field(default=0.5, serialization_alias="Score")
    code: str = Field(default="c", validation_alias=AliasChoices("Code", "CODE"))
    tag: Tagged = Field(default_factory=lambda: Tagged(Label="t"))

    class Meta:
        key_prefix = "HostileAliased"


async def test_aliased_fields_survive_save_get_set_refresh_fold_and_as_of(redis):
    model = Aliased(Name="Ann", Code="X")
    await model.save()
    stored = await redis.execute_command("JSON.GET", model.key)
    assert b'"name":"Ann"' in stored and b'"code":"X"' in stored  # documents hold field names
    loaded = await Aliased.get(model.key)
    assert (loaded.name, loaded.code, loaded.tag.label) == ("Ann", "X", "t")
    await model.name.set("Bo")
    await model.tag.label.set("u")
    await model.score.set(0.25)
    await loaded.refresh()
    assert (loaded.name, loaded.tag.label, loaded.score) == ("Bo", "u", 0.25)
    assert loaded.redis_dump() == model.redis_dump()
    assert (await Aliased.verify(model.pk)).equal
    past = await Aliased.as_of(model.pk, seq=1)
    assert (past.name, past.code) == ("Ann", "X")
    assert [e.path for e in await model.history()][1:] == ["$.name", "$.tag.label", "$.score"]


async def test_aliases_still_name_fields_in_your_own_input(redis):
    model = Aliased(Name="Ann", CODE="Y")
    await model.tag.aset(label="v")  # field names work too
    assert (model.name, model.code, model.tag.label) == ("Ann", "Y", "v")
    assert (await Aliased.get(model.key)).tag.label == "v"


def test_an_alias_that_is_another_field_s_name_is_refused():
    with pytest.raises(ConfigurationError, match="alias 'b', which is another field's name"):

        class Swapped(BaseRedisModel):
            a: int = Field(default=0, alias="b")
            b: int = Field(default=0, alias="a")

            class Meta:
                key_prefix = "HostileSwapped"
