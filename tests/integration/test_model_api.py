"""The model API of the seed (redis-pydantic README), against a real Redis."""

from __future__ import annotations

import decimal
import enum
import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamstore import (
    BaseRedisModel,
    ConfigurationError,
    DocumentNotFoundError,
    EmptyContainerError,
    FieldTypeError,
    KeyMissingError,
    NotJSONError,
    RedisBool,
    RedisDict,
    RedisList,
    RedisStr,
    StreamStoreError,
    UnsafeKeyError,
    UsageError,
)
from streamstore import operations as ops


class UserProfile(BaseModel):
    bio: str = ""
    skills: list[str] = Field(default_factory=list)
    settings: dict[str, bool] = Field(default_factory=dict)


class Address(BaseModel):
    street: str
    city: str
    country: str = "US"


class UserStats(BaseRedisModel):
    login_count: int = 0
    preferences: dict[str, bool] = Field(default_factory=dict)


class User(BaseRedisModel):
    name: str
    age: int = 0
    is_active: bool = True
    data: bytes = b""
    seen: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    preferences: dict[str, list[str]] = Field(default_factory=dict)
    profile: UserProfile = Field(default_factory=UserProfile)
    address: Address = Field(default_factory=lambda: Address(street="1 Main St", city="Boston"))
    stats: UserStats = Field(default_factory=UserStats)


class InnerModel(BaseModel):
    items: list[str] = Field(default_factory=list)
    counter: int = 0


class MiddleModel(BaseModel):
    inner: InnerModel = Field(default_factory=InnerModel)
    tags: list[str] = Field(default_factory=list)


class OuterModel(BaseRedisModel):
    middle: MiddleModel = Field(default_factory=MiddleModel)
    data: dict[str, int] = Field(default_factory=dict)


async def stored(redis, key):
    raw = await redis.execute_command("JSON.GET", key)
    return None if raw is None else json.loads(raw)


class TestSaveGetDelete:
    async def test_get_returns_what_save_stored(self, redis):
        user = User(name="John", tags=["python"], metadata={"role": "developer"})
        await user.save()
        loaded = await User.get(user.key)
        assert loaded == user
        assert loaded.pk == user.pk

    async def test_document_is_plain_json_readable_from_redis_cli(self, redis):
        user = User(name="J", data=b"\x00\xffbin", seen=datetime(2024, 5, 1, 12, tzinfo=UTC))
        await user.save()
        document = await stored(redis, user.key)
        assert document["name"] == "J"
        assert document["data"] == "AP9iaW4="
        assert document["seen"] == "2024-05-01T12:00:00Z"
        assert document["profile"] == {"bio": "", "skills": [], "settings": {}}
        assert document["stats"] == {"login_count": 0, "preferences": {}}
        assert "pk" not in document

    async def test_key_names_the_class_and_pk_and_stream_key_shares_its_hash_tag(self):
        user = User(name="J")
        user.pk = "u1"
        assert user.key.startswith("{User:") and user.key.endswith("}:u1")
        tag = user.key.split("}")[0] + "}"
        assert user.stream_key.startswith(tag)
        assert User.key_for("u1") == user.key

    async def test_delete_removes_the_document_and_keeps_the_history(self, redis):
        user = User(name="J")
        await user.save()
        await user.delete()
        assert await redis.exists(user.key) == 0
        assert [e.type for e in await user.history()] == ["saved", "deleted"]
        with pytest.raises(DocumentNotFoundError):
            await User.get(user.key)

    async def test_delete_with_a_key_deletes_that_instance(self, redis):
        user, other = User(name="a"), User(name="b")
        await user.save()
        await other.save()
        await user.delete(other.key)
        assert await redis.exists(other.key) == 0
        assert await redis.exists(user.key) == 1

    async def test_try_delete_tells_whether_there_was_something_to_delete(self, redis):
        user = User(name="J")
        await user.save()
        assert await User.try_delete(user.key) is True
        assert await User.try_delete(user.key) is False
        assert [e.type for e in await user.history()] == ["saved", "deleted"]

    async def test_get_of_a_missing_key_is_a_key_error(self, redis):
        with pytest.raises(KeyError):
            await User.get(User.key_for("nobody"))

    async def test_get_of_something_that_is_not_a_key_says_so(self, redis):
        with pytest.raises(UsageError, match="is not a User key"):
            await User.get("some-pk")

    async def test_redis_dump_is_the_document(self, redis):
        user = User(name="J", data=b"\x01")
        await user.save()
        assert user.redis_dump() == await stored(redis, user.key)


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


class TestNesting:
    async def test_nested_model_fields_have_redis_operations(self, redis):
        user = User(name="John", address=Address(street="123 Main St", city="Boston"))
        await user.save()
        await user.profile.skills.aappend("Python")
        await user.profile.skills.aextend(["Redis", "AsyncIO"])
        await user.profile.settings.aupdate(dark_mode=True, notifications=False)
        await user.profile.skills.ainsert(0, "Leadership")
        assert await user.profile.skills.apop() == "AsyncIO"
        await user.profile.settings.aset_item("email_updates", True)
        await user.profile.settings.adel_item("notifications")
        await user.address.city.set("Seattle")
        document = await stored(redis, user.key)
        assert document["profile"]["skills"] == ["Leadership", "Python", "Redis"]
        assert document["profile"]["settings"] == {"dark_mode": True, "email_updates": True}
        assert document["address"]["city"] == "Seattle"
        assert [e.path for e in await user.history()][1:3] == ["$.profile.skills"] * 2

    async def test_nested_models_stay_instances_of_the_user_class(self):
        user = User(name="J", address=Address(street="s", city="c"))
        assert isinstance(user.address, Address)
        assert user.address == Address(street="s", city="c")
        assert type(user.address).__name__ == "Address"

    async def test_deep_nesting_at_any_level(self, redis):
        outer = OuterModel()
        await outer.save()
        await outer.middle.inner.items.aappend("deep_item")
        await outer.middle.tags.aextend(["tag1", "tag2"])
        await outer.data.aset_item("count", 42)
        assert await outer.middle.inner.counter.increase(3) == 3
        other = OuterModel()
        other.pk = outer.pk
        assert await other.middle.inner.items.load() == ["deep_item"]
        assert await other.middle.tags.load() == ["tag1", "tag2"]
        assert (await OuterModel.get(outer.key)) == outer

    async def test_nested_persistence_across_objects(self, redis):
        user1 = User(name="Alice", address=Address(street="456 Oak Ave", city="Seattle"))
        await user1.save()
        await user1.profile.skills.aextend(["JavaScript", "TypeScript"])
        user2 = User(name="x")
        user2.pk = user1.pk
        await user2.profile.skills.load()
        assert user2.profile.skills == ["JavaScript", "TypeScript"]
        await user2.profile.skills.aappend("React")
        await user1.profile.skills.load()
        assert user1.profile.skills == ["JavaScript", "TypeScript", "React"]

    async def test_nested_redis_model_is_stored_inline(self, redis):
        user = User(name="Bob")
        await user.save()
        await user.stats.preferences.aupdate(notifications=True, dark_mode=False)
        user.stats.login_count = 10
        await user.save()
        document = await stored(redis, user.key)
        assert document["stats"] == {
            "login_count": 10,
            "preferences": {"notifications": True, "dark_mode": False},
        }
        assert await redis.exists(user.stats.key) == 0

    async def test_nested_bytes_use_base64_like_top_level_bytes(self, redis):
        class Blob(BaseModel):
            raw: bytes = b""

        class Holder(BaseRedisModel):
            blob: Blob = Field(default_factory=Blob)
            blobs: list[Blob] = Field(default_factory=list)

        holder = Holder(blob=Blob(raw=b"\xff\xfe"), blobs=[Blob(raw=b"\x80")])
        await holder.save()
        document = await stored(redis, holder.key)
        assert document == {"blob": {"raw": "__4="}, "blobs": [{"raw": "gA=="}]}
        assert (await Holder.get(holder.key)).blob.raw == b"\xff\xfe"

    async def test_save_of_a_nested_redis_model_is_refused(self, redis):
        user = User(name="J")
        with pytest.raises(UsageError, match="top-level"):
            await user.stats.save()

    async def test_plain_model_outside_a_redis_model_has_no_redis_target(self):
        class Loose(BaseRedisModel):
            profile: UserProfile = Field(default_factory=UserProfile)

        detached = Loose().profile.model_copy()
        with pytest.raises(UsageError, match="not inside a BaseRedisModel"):
            await detached.skills.aappend("x")


class TestJSONOnly:
    async def test_richer_types_are_stored_in_pydantic_json_form_and_come_back(self, redis):
        class Color(enum.Enum):
            RED = "red"

        class Rich(BaseRedisModel):
            id: uuid.UUID = uuid.UUID(int=1)
            price: decimal.Decimal = decimal.Decimal("1.10")
            color: Color = Color.RED

        rich = Rich()
        await rich.save()
        assert await stored(redis, rich.key) == {
            "id": "00000000-0000-0000-0000-000000000001", "price": "1.10", "color": "red",
        }  # fmt: skip
        assert await Rich.get(rich.key) == rich

    async def test_a_value_without_a_json_form_is_refused_before_writing(self, redis):
        class Opaque:
            pass

        class Loose(BaseRedisModel):
            model_config = ConfigDict(arbitrary_types_allowed=True)
            thing: Opaque | None = None

        loose = Loose(thing=Opaque())
        with pytest.raises(NotJSONError, match="cannot store Loose as JSON"):
            await loose.save()
        with pytest.raises(TypeError, match="as JSON"):
            await loose.aset(thing=Opaque())
        assert await redis.exists(loose.key, loose.stream_key) == 0


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


class TestForwardReferences:
    async def test_a_nested_model_defined_below_its_user_gets_redis_operations(self, redis):
        class Later(BaseRedisModel):
            part: Part = Field(default_factory=lambda: Part())  # noqa: PLW0108 (Part comes later)

        class Part(BaseModel):
            items: list[int] = Field(default_factory=list)
            raw: bytes = b""

        Later.model_rebuild()
        later = Later(part=Part(raw=b"\xff"))
        await later.part.items.aappend(1)
        assert isinstance(later.part, Part)
        assert (await stored(redis, later.key))["part"] == {"items": [1], "raw": "_w=="}


class TestMeta:
    async def test_meta_ttl_expires_document_and_stream_together(self, redis):
        class Session(BaseRedisModel):
            label: str = "t"

            class Meta:
                ttl = 100

        session = Session()
        await session.save()
        await session.label.set("u")
        assert 0 < await redis.ttl(session.key) <= 100
        assert 0 < await redis.ttl(session.stream_key) <= 100

    async def test_meta_key_prefix_and_partitions_shape_the_keys(self):
        class Thing(BaseRedisModel):
            class Meta:
                key_prefix = "app:thing"
                partitions = 1

        thing = Thing()
        thing.pk = "p"
        assert thing.key == "{app:thing:0}:p"
        assert thing.stream_key == "{app:thing:0}#events:p"

    async def test_meta_is_inherited_and_can_be_overridden(self):
        class Base(BaseRedisModel):
            class Meta:
                ttl = 5
                partitions = 2

        class Child(Base):
            class Meta:
                partitions = 4

        assert Child.__ss_meta__.ttl == 5
        assert Child.__ss_meta__.partitions == 4
        assert Child.__ss_meta__.key_prefix == "Child"

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"partitions": 0}, "partitions"),
            ({"ttl": -1}, "ttl"),
            ({"key_prefix": "a{b"}, "key_prefix"),
        ],
    )
    async def test_bad_meta_is_refused_when_the_class_is_made(self, options, message):
        meta = type("Meta", (), {**options, "__qualname__": "Bad.Meta", "__module__": __name__})
        with pytest.raises(ConfigurationError, match=message):
            type(
                "Bad",
                (BaseRedisModel,),
                {"Meta": meta, "__qualname__": "Bad", "__module__": __name__},
            )
