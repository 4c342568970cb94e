"""Saving, getting and deleting models; settings; JSON-only storage (seed API)."""

from __future__ import annotations

import decimal
import enum
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ConfigDict
from sample_models import (
    User,
    stored,
)

from streamstore import (
    BaseRedisModel,
    ConfigurationError,
    DocumentNotFoundError,
    NotJSONError,
    UsageError,
)


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


class TestMeta:
    async def test_meta_ttl_expires_document_and_stream_together(self, redis):
        class Session(BaseRedisModel):
            label: str = "t"

            class Meta:
                key_prefix = "LifecycleSession"
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

            class Meta:
                key_prefix = "LifecycleLoose"

        loose = Loose(thing=Opaque())
        with pytest.raises(NotJSONError, match="cannot store Loose as JSON"):
            await loose.save()
        with pytest.raises(TypeError, match="as JSON"):
            await loose.aset(thing=Opaque())
        assert await redis.exists(loose.key, loose.stream_key) == 0
