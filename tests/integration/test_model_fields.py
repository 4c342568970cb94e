"""Field operations of the seed API: scalars, lists, dicts, type errors, several fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import Field, ValidationError
from sample_models import (
    User,
    stored,
)

from streamstore import (
    BaseRedisModel,
    EmptyContainerError,
    FieldTypeError,
    KeyMissingError,
    RedisBool,
    RedisDict,
    RedisList,
    RedisStr,
    StreamStoreError,
    UnsafeKeyError,
    UsageError,
)
from streamstore import operations as ops


class TestScalarFields:
    async def test_set_writes_redis_and_local_state(self, redis):
        user = User(name="John")
        await user.save()
        await user.name.set("John Doe")
        assert user.name == "John Doe"
        assert (await stored(redis, user.key))["name"] == "John Doe"

    async def test_load_reads_one_field_into_another_object(self, redis):
        user = User(name="John")
        await user.save()
        other = User(name="placeholder")
        other.pk = user.pk
        assert await other.name.load() == "John"
        assert other.name == "John"

    async def test_field_values_are_their_builtin_types(self, redis):
        user = User(name="John", is_active=False)
        assert isinstance(user.name, str) and isinstance(user.name, RedisStr)
        assert isinstance(user.tags, list) and isinstance(user.tags, RedisList)
        assert isinstance(user.metadata, dict) and isinstance(user.metadata, RedisDict)
        assert isinstance(user.is_active, RedisBool)
        assert user.is_active == False  # noqa: E712 (bool wrapper compares like a bool)
        assert not user.is_active
        assert f"{user.is_active}" == "False"
        assert repr(user.is_active) == "False"

    async def test_bool_set_and_load(self, redis):
        user = User(name="J")
        await user.save()
        await user.is_active.set(False)
        assert await user.is_active.load() is False

    async def test_bytes_round_trip_through_base64(self, redis):
        user = User(name="J")
        await user.save()
        await user.data.set(b"binary\x00\xff")
        assert await user.data.load() == b"binary\x00\xff"

    async def test_datetime_round_trips(self, redis):
        user = User(name="J", seen=datetime(2024, 1, 1, tzinfo=UTC))
        await user.save()
        when = datetime(2025, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
        await user.seen.set(when)
        assert await user.seen.load() == when

    async def test_increase_adds_in_redis_and_returns_the_new_value(self, redis):
        user = User(name="J", age=30)
        await user.save()
        assert await user.age.increase() == 31
        assert await user.age.increase(9) == 40
        assert user.age == 40
        assert (await stored(redis, user.key))["age"] == 40

    async def test_local_arithmetic_then_save_writes_the_result(self, redis):
        user = User(name="J", age=30)
        user.age += 1
        await user.save()
        assert (await User.get(user.key)).age == 31


class TestTypeErrors:
    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("age", "not_a_number", "Value must be int"),
            ("name", 42, "Value must be str"),
            ("is_active", "maybe", "Value must be bool"),
            ("data", 3.5, "Value must be bytes"),
        ],
    )
    async def test_bad_value_raises_type_error_and_writes_nothing(
        self, redis, field, value, message
    ):
        user = User(name="J")
        await user.save()
        before = await redis.xlen(user.stream_key)
        with pytest.raises(TypeError, match=f"^{message}$") as caught:
            await getattr(user, field).set(value)
        assert isinstance(caught.value, FieldTypeError)
        assert isinstance(caught.value, StreamStoreError)
        assert isinstance(caught.value.__cause__, ValidationError)
        assert await redis.xlen(user.stream_key) == before
        assert await stored(redis, user.key) == user.redis_dump()

    async def test_bad_list_item_and_dict_value_write_nothing(self, redis):
        class Typed(BaseRedisModel):
            numbers: list[int] = Field(default_factory=list)
            counts: dict[str, int] = Field(default_factory=dict)

        model = Typed()
        await model.save()
        with pytest.raises(TypeError, match="Value must be int"):
            await model.numbers.aappend("x")
        with pytest.raises(TypeError, match="Value must be int"):
            await model.numbers.aextend([1, "x"])
        with pytest.raises(TypeError, match="Value must be int"):
            await model.counts.aupdate(a=1, b="x")
        assert await redis.xlen(model.stream_key) == 1
        assert model.numbers == [] and model.counts == {}

    async def test_increase_by_a_non_number_is_a_type_error(self, redis):
        user = User(name="J")
        await user.save()
        with pytest.raises(TypeError, match="Value must be int"):
            await user.age.increase("1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Value must be int"):
            await user.age.increase(1.5)
        assert await redis.xlen(user.stream_key) == 1

    async def test_bad_construction_is_a_pydantic_validation_error(self):
        with pytest.raises(ValidationError):
            User(name="J", age="not a number")

    async def test_bad_assignment_fails_locally(self):
        user = User(name="J")
        with pytest.raises(ValidationError):
            user.age = "x"  # type: ignore[assignment]


class TestLists:
    async def test_list_operations_update_redis_and_local_list(self, redis):
        user = User(name="J", tags=["python"])
        await user.save()
        await user.tags.aappend("redis")
        await user.tags.aextend(["pydantic", "async"])
        await user.tags.ainsert(0, "first")
        assert await user.tags.apop() == "async"
        assert await user.tags.apop(0) == "first"
        assert user.tags == ["python", "redis", "pydantic"]
        assert (await stored(redis, user.key))["tags"] == user.tags
        await user.tags.aclear()
        assert user.tags == []
        assert (await stored(redis, user.key))["tags"] == []

    async def test_pop_from_an_empty_list_is_an_index_error_and_writes_nothing(self, redis):
        user = User(name="J")
        await user.save()
        with pytest.raises(IndexError) as caught:
            await user.tags.apop()
        assert isinstance(caught.value, EmptyContainerError)
        assert await redis.xlen(user.stream_key) == 1

    async def test_pop_out_of_range_is_an_index_error(self, redis):
        user = User(name="J", tags=["a"])
        await user.save()
        with pytest.raises(IndexError, match="out of range"):
            await user.tags.apop(5)

    async def test_pop_checks_the_stored_list_not_the_local_copy(self, redis):
        user = User(name="J", tags=["a"])
        await user.save()
        other = await User.get(user.key)
        await other.tags.apop()
        with pytest.raises(IndexError):
            await user.tags.apop()

    async def test_load_refreshes_the_list_in_place(self, redis):
        user = User(name="J", tags=["a"])
        await user.save()
        tags = user.tags
        other = await User.get(user.key)
        await other.tags.aappend("b")
        await tags.load()
        assert tags == ["a", "b"]
        assert user.tags is tags

    async def test_empty_extend_writes_nothing(self, redis):
        user = User(name="J")
        await user.save()
        await user.tags.aextend([])
        assert await redis.xlen(user.stream_key) == 1


class TestDicts:
    async def test_dict_operations_update_redis_and_local_dict(self, redis):
        user = User(name="J")
        await user.save()
        await user.metadata.aset_item("department", "engineering")
        await user.metadata.aupdate(role="developer", level="senior")
        await user.metadata.aupdate({"team": "core"})
        await user.metadata.adel_item("team")
        assert await user.metadata.apop("role") == "developer"
        assert await user.metadata.apop("role", "default") == "default"
        assert await user.metadata.apopitem() == ("level", "senior")
        assert user.metadata == {"department": "engineering"}
        assert (await stored(redis, user.key))["metadata"] == user.metadata
        await user.metadata.aclear()
        assert user.metadata == {}
        assert (await stored(redis, user.key))["metadata"] == {}

    async def test_pop_of_a_missing_key_is_a_key_error_and_writes_nothing(self, redis):
        user = User(name="J")
        await user.save()
        with pytest.raises(KeyError) as caught:
            await user.metadata.apop("nonexistent_key")
        assert isinstance(caught.value, KeyMissingError)
        assert caught.value.args == ("nonexistent_key",)
        assert await redis.xlen(user.stream_key) == 1

    async def test_pop_with_default_of_a_missing_key_writes_no_event(self, redis):
        user = User(name="J")
        await user.save()
        assert await user.metadata.apop("missing", None) is None
        assert await redis.xlen(user.stream_key) == 1

    async def test_popitem_of_an_empty_dict_is_a_key_error(self, redis):
        user = User(name="J")
        await user.save()
        with pytest.raises(KeyError, match="dictionary is empty"):
            await user.metadata.apopitem()

    async def test_del_item_of_a_missing_key_is_a_key_error(self, redis):
        user = User(name="J")
        await user.save()
        with pytest.raises(KeyError):
            await user.metadata.adel_item("missing")
        assert await redis.xlen(user.stream_key) == 1

    @pytest.mark.parametrize(
        "key",
        [
            ".",
            '"',
            "'",
            "]",
            "[",
            "$",
            "a b",
            "trailing ",
            "\t",
            "ünï☃",
            "",
            "a.b",
            "x['y']",
            "$..*",
            "@",
        ],
    )
    async def test_keys_with_jsonpath_characters_round_trip(self, redis, key):
        user = User(name="J")
        await user.save()
        await user.metadata.aset_item(key, "v")
        assert (await User.get(user.key)).metadata == {key: "v"}
        assert await user.metadata.apop(key) == "v"
        assert (await stored(redis, user.key))["metadata"] == {}

    @pytest.mark.parametrize("key", ["back\\slash", "both ' and \"", " leading space"])
    async def test_keys_redisjson_cannot_address_are_refused_before_writing(self, redis, key):
        user = User(name="J")
        await user.save()
        with pytest.raises(UnsafeKeyError):
            await user.metadata.aset_item(key, "v")
        with pytest.raises(ValueError, match="cannot be addressed"):
            await user.metadata.aupdate({"fine": "v", key: "v"})
        assert await redis.xlen(user.stream_key) == 1
        assert user.metadata == {}

    async def test_dict_of_lists(self, redis):
        user = User(name="J")
        await user.preferences.aset_item("languages", ["python", "rust"])
        assert (await User.get(user.key)).preferences == {"languages": ["python", "rust"]}


class TestSeveralFields:
    async def test_aset_writes_several_fields_in_one_atomic_step(self, redis):
        user = User(name="J")
        await user.save()
        await user.aset(name="K", age=7)
        assert (user.name, user.age) == ("K", 7)
        events = await user.history()
        assert [(e.type, e.path, e.data) for e in events[1:]] == [
            ("set", "$.name", {"value": "K"}),
            ("set", "$.age", {"value": 7}),
        ]
        assert events[1].ts == events[2].ts

    async def test_aset_sets_an_optional_field_that_holds_none(self, redis):
        user = User(name="J")
        await user.save()
        assert user.seen is None
        when = datetime(2024, 1, 1, tzinfo=UTC)
        await user.aset(seen=when)
        assert user.seen == when
        assert (await User.get(user.key)).seen == when

    async def test_aset_on_a_nested_model_writes_at_its_path(self, redis):
        user = User(name="J")
        await user.save()
        await user.profile.aset(bio="hi")
        assert (await user.history())[-1].path == "$.profile.bio"

    async def test_aset_with_one_bad_value_writes_nothing(self, redis):
        user = User(name="J")
        await user.save()
        with pytest.raises(TypeError, match="Value must be int"):
            await user.aset(name="K", age="x")
        with pytest.raises(UsageError, match="no field"):
            await user.aset(nope=1)
        assert user.name == "J"
        assert await redis.xlen(user.stream_key) == 1

    async def test_a_batch_failing_late_restores_the_document_exactly(self, redis):
        class Floats(BaseRedisModel):
            x: float = 2.0632104757639597e47
            tags: list[str] = Field(default_factory=list)

        model = Floats()
        await model.save()
        raw_before = await redis.execute_command("JSON.GET", model.key)
        # The second operation fails in Redis (pop from an empty list) after the first applied.
        batch = [ops.set_value(("x",), "0.1"), ops.list_pop(("tags",))]
        with pytest.raises(IndexError):
            await model._ss_apply(batch)
        assert await redis.execute_command("JSON.GET", model.key) == raw_before
        assert await redis.xlen(model.stream_key) == 1
        assert await redis.keys("*#undo:*") == []
