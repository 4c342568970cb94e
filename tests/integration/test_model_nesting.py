"""Nested models at any depth, including ones defined after their user (seed API)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field
from sample_models import (
    Address,
    OuterModel,
    User,
    UserProfile,
    stored,
)

from streamstore import (
    BaseRedisModel,
    UsageError,
)


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
